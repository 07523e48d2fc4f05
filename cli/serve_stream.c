/*-------------------------------------------------------------------------
 *
 * serve_stream.c
 *		The event stream of gate-bridge serve: one LISTEN connection for
 *		any number of Server-Sent Events clients.
 *
 * The listener thread reads gate_bridge.events_after(head) after every
 * notification on gate_bridge.events_channel (a wake-up only) and every
 * second, and appends each event, already formatted as an SSE frame
 * (id: position, event: kind, data: JSON line), to a ring that holds
 * every event after position "base" up to "head".  Each client keeps the
 * position of the last frame it was sent; when it has nothing to send,
 * its connection is suspended, and new frames resume it.  So one query
 * serves every browser, however many there are, and memory is the ring
 * plus a few kilobytes per client.
 *
 * A client that asks to resume (Last-Event-ID, or ?after=) is first sent
 * what it missed straight from events_after() on a pool connection, page
 * by page, then joins the ring: it gets exactly the events after its
 * position, in order, also when they are older than the ring.  A client
 * that falls so far behind that the ring no longer holds its next event
 * is dropped (it can resume with Last-Event-ID), and so is one that stops
 * reading: libmicrohttpd closes a connection that makes no progress for
 * --client-timeout seconds.  Neither slows anybody else.
 *
 * When the database goes away the listener reconnects with backoff
 * (0.25 s doubling to 10 s) and goes on after the last position it read:
 * nothing is lost or repeated.  Clients are told with a "status" frame
 * (no id, so Last-Event-ID is not moved).  When the server no longer holds
 * our position (SR001: a failover to a standby that was behind, a restore,
 * a TRUNCATE), the ring starts again at events_resume_point() and every
 * client is dropped, so that each resumes from its own position.
 *
 * cli/serve_stream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gate_bridge_cli.h"
#include "serve.h"

#define HEARTBEAT_SECS	15
#define CLIENT_FILL		(16 * 1024)	/* bytes a client is given at a time */
#define BACKOFF_FIRST	0.25
#define BACKOFF_MAX		10.0

static const char *const events_query =
GB_EVENTS_QUERY(GB_EVENT_FIELDS ", e.silenced");

typedef struct Frame
{
	int64_t		position;
	char	   *text;
	size_t		len;
} Frame;

typedef struct Client Client;
struct Client
{
	struct MHD_Connection *connection;
	Client	   *prev;
	Client	   *next;
	int64_t		cursor;			/* the last position sent */
	bool		from_now;		/* start at the head once it is known */
	bool		catching_up;	/* read from the database before the ring */
	bool		suspended;
	bool		dropped;		/* counted as dropped */
	uint64_t	epoch;
	uint64_t	status_seen;
	uint64_t	beat_seen;
	char	   *buf;			/* what is to be sent next */
	size_t		len;
	size_t		off;
	size_t		cap;
};

static struct
{
	pthread_mutex_t lock;
	Frame	   *ring;
	int			cap;
	int			first;			/* index of the oldest frame */
	int			count;
	int64_t		base;			/* the ring holds every event after this */
	int64_t		head;			/* the newest position read */
	bool		have_head;
	bool		database_up;
	uint64_t	epoch;			/* a rewind: every client is dropped */
	uint64_t	status_gen;
	uint64_t	beat_gen;
	uint64_t	events_total;
	uint64_t	dropped_total;
	int			nclients;
	Client	   *clients;
	bool		stopping;
	/* the listener thread */
	pthread_t	thread;
	int			wake[2];		/* a byte here wakes the listener */
	PGconn	   *conn;
	char		channel[64];
	bool		listening;
	bool		tick_refused;
} st = {.lock = PTHREAD_MUTEX_INITIALIZER};

static double
now_secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Every connection serve opens: UTC times, a name in pg_stat_activity. */
void
gb_serve_connection_setup(PGconn *conn)
{
	PGresult   *res = PQexec(conn,
							 "SET TimeZone TO 'UTC'; SET application_name TO 'gate-bridge serve'");

	PQclear(res);
}

/* Append to a client's buffer; false when out of memory. */
static bool
client_append(Client *c, const char *data, size_t len)
{
	if (c->len + len > c->cap)
	{
		size_t		cap = c->cap ? c->cap : 4096;
		char	   *buf;

		while (cap < c->len + len)
			cap *= 2;
		buf = realloc(c->buf, cap);
		if (buf == NULL)
			return false;
		c->buf = buf;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	return true;
}

/* A buffer that grew for a large catch-up is given back. */
static void
client_shrink(Client *c)
{
	if (c->cap > 4 * CLIENT_FILL)
	{
		free(c->buf);
		c->buf = NULL;
		c->cap = 0;
	}
	c->len = c->off = 0;
}

/* An SSE frame of one event: id, event and data lines. */
static char *
format_frame(int64_t position, const char *event, const char *line, size_t *len)
{
	size_t		size = strlen(event) + strlen(line) + 64;
	char	   *text = malloc(size);
	int			n;

	if (text == NULL)
		return NULL;
	/* the JSON line has no newline: row_to_json escapes them */
	n = snprintf(text, size, "id: %" PRId64 "\nevent: %s\ndata: %s\n\n",
				 position, event, line);
	*len = (size_t) n;
	return text;
}

static void
status_frame(Client *c)
{
	char		text[160];
	int			n;

	n = snprintf(text, sizeof(text),
				 "event: status\ndata: {\"database\":\"%s\",\"position\":%" PRId64 "}\n\n",
				 st.database_up ? "up" : "down", st.head);
	client_append(c, text, (size_t) n);
}

/* Resume every suspended client: there is something for them.  Locked. */
static void
wake_clients(void)
{
	Client	   *c;

	for (c = st.clients; c != NULL; c = c->next)
		if (c->suspended)
		{
			c->suspended = false;
			MHD_resume_connection(c->connection);
		}
}

static void
set_database_up(bool up)
{
	pthread_mutex_lock(&st.lock);
	if (st.database_up != up)
	{
		st.database_up = up;
		st.status_gen++;
		wake_clients();
	}
	pthread_mutex_unlock(&st.lock);
}

/* The frames of events after c->cursor from the ring, up to CLIENT_FILL.  Locked. */
static void
fill_from_ring(Client *c)
{
	int			lo = 0;
	int			hi = st.count;

	/* binary search: the first frame after the cursor */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (st.ring[(st.first + mid) % st.cap].position <= c->cursor)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < st.count && c->len < CLIENT_FILL; lo++)
	{
		Frame	   *f = &st.ring[(st.first + lo) % st.cap];

		if (!client_append(c, f->text, f->len))
			break;
		c->cursor = f->position;
	}
}

/*
 * What a resuming client missed, from the database: one page of
 * events_after(cursor).  Not locked: it runs on a pool connection in the
 * client's own request thread.  Returns false when the database is away
 * (the client waits for the next status change or heartbeat).
 */

static bool
catch_up(Client *c, int64_t base)
{
	PGconn	   *conn = gb_pool_acquire();
	PGresult   *res;
	char		after[32];
	const char *params[1] = {after};
	int			n;
	int			r;

	if (conn == NULL)
		return false;
	snprintf(after, sizeof(after), "%" PRId64, c->cursor);
	res = gb_pool_exec(conn, events_query, 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && strcmp(state, "SR001") == 0)
		{
			/* the server no longer holds the client's position */
			PQclear(res);
			res = PQexecParams(conn, "SELECT gate_bridge.events_resume_point($1::pg_catalog.int8)",
							   1, NULL, params, NULL, NULL, 0);
			if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
			{
				int64_t		resume;

				if (gb_parse_id(PQgetvalue(res, 0, 0), &resume))
				{
					gb_serve_log("an SSE client resumed at position %" PRId64
								 ", which the server no longer holds; it goes on after %" PRId64,
								 c->cursor, resume);
					c->cursor = resume;
					PQclear(res);
					gb_pool_release(conn);
					return true;
				}
			}
		}
		gb_serve_log("reading the events after %s for an SSE client failed: %s",
					 after, PQresultErrorMessage(res));
		PQclear(res);
		gb_pool_release(conn);
		return false;
	}
	n = PQntuples(res);
	for (r = 0; r < n; r++)
	{
		int64_t		position;
		size_t		len;
		char	   *text;

		if (!gb_parse_id(PQgetvalue(res, r, 0), &position))
			continue;
		text = format_frame(position, PQgetvalue(res, r, 1), PQgetvalue(res, r, 3), &len);
		if (text == NULL || !client_append(c, text, len))
		{
			free(text);
			break;
		}
		free(text);
		c->cursor = position;
	}
	/*
	 * A short page holds every committed event after the cursor, among them
	 * every one up to base (read by the listener before this query): the
	 * ring takes over.
	 */
	if (r == n && n < GB_EVENTS_BATCH)
	{
		c->catching_up = false;
		if (c->cursor < base)
			c->cursor = base;
	}
	PQclear(res);
	gb_pool_release(conn);
	return true;
}

/*
 * libmicrohttpd asks for the next bytes of a client's stream.  With
 * nothing to send the connection is suspended (and 0 returned, as the
 * library prescribes), until wake_clients() resumes it.
 */
static ssize_t
client_read(void *cls, uint64_t pos, char *out, size_t max)
{
	Client	   *c = cls;
	size_t		n;

	(void) pos;
	pthread_mutex_lock(&st.lock);
	for (;;)
	{
		if (st.stopping)
		{
			pthread_mutex_unlock(&st.lock);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (c->off < c->len)
			break;
		client_shrink(c);
		if (c->epoch != st.epoch)
		{
			/* the stream was rewound: the client resumes on its own */
			pthread_mutex_unlock(&st.lock);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (c->status_seen != st.status_gen)
		{
			c->status_seen = st.status_gen;
			status_frame(c);
		}
		if (c->from_now && st.have_head)
		{
			c->from_now = false;
			c->cursor = st.head;
		}
		if (c->catching_up)
		{
			int64_t		base = st.base;
			bool		ok;

			if (c->len > 0)
				break;			/* the status frame first */
			pthread_mutex_unlock(&st.lock);
			ok = catch_up(c, base);
			pthread_mutex_lock(&st.lock);
			if (c->len > 0)
				break;
			if (ok && c->catching_up)
				continue;		/* an empty page of a rewound history */
			if (!ok)
			{
				c->beat_seen = st.beat_gen;
				c->suspended = true;
				MHD_suspend_connection(c->connection);
				pthread_mutex_unlock(&st.lock);
				return 0;
			}
		}
		else if (!c->from_now)
		{
			if (c->cursor < st.base)
			{
				/* the ring no longer holds its next event */
				if (!c->dropped)
				{
					c->dropped = true;
					st.dropped_total++;
				}
				pthread_mutex_unlock(&st.lock);
				gb_serve_log("dropped an SSE client that fell behind the stream at position %" PRId64
							 " (it can resume with Last-Event-ID)", c->cursor);
				return MHD_CONTENT_READER_END_WITH_ERROR;
			}
			fill_from_ring(c);
		}
		if (c->len == 0 && c->beat_seen != st.beat_gen)
			client_append(c, ": keep-alive\n\n", 14);
		c->beat_seen = st.beat_gen;
		if (c->len > 0)
			break;
		c->suspended = true;
		MHD_suspend_connection(c->connection);
		pthread_mutex_unlock(&st.lock);
		return 0;
	}
	n = Min(max, c->len - c->off);
	memcpy(out, c->buf + c->off, n);
	c->off += n;
	pthread_mutex_unlock(&st.lock);
	return (ssize_t) n;
}

/* The response is done with: the client leaves. */
static void
client_free(void *cls)
{
	Client	   *c = cls;

	pthread_mutex_lock(&st.lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		st.clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	st.nclients--;
	pthread_mutex_unlock(&st.lock);
	free(c->buf);
	free(c);
}

/*
 * A request of /events ended; timed_out: libmicrohttpd closed it because
 * it made no progress (a client that stopped reading).
 */
void
gb_stream_request_done(void *cls, bool timed_out)
{
	(void) cls;
	if (timed_out)
	{
		pthread_mutex_lock(&st.lock);
		st.dropped_total++;
		pthread_mutex_unlock(&st.lock);
		gb_serve_log("dropped an SSE client that stopped reading");
	}
}

/*
 * GET /events: a stream from "after" (Last-Event-ID or ?after=), checked
 * by the caller, or from now (NULL).
 */
enum MHD_Result
gb_stream_respond(struct MHD_Connection *connection, const char *after)
{
	Client	   *c = calloc(1, sizeof(Client));
	struct MHD_Response *response;
	enum MHD_Result ret;

	if (c == NULL)
		return MHD_NO;
	c->connection = connection;
	if (after != NULL)
	{
		if (!gb_parse_id(after, &c->cursor))
		{
			free(c);
			return MHD_NO;
		}
		c->catching_up = true;
	}
	else
	{
		/*
		 * From now: after the newest position committed now, as the database
		 * has it (the listener may not have read the last events yet, and
		 * they are history to this client).  With the database away, from
		 * the listener's head once it has one.
		 */
		PGconn	   *conn = gb_pool_acquire();
		PGresult   *res = conn ? gb_pool_exec(conn, "SELECT gate_bridge.events_head()", 0, NULL) : NULL;

		if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			gb_parse_id(PQgetvalue(res, 0, 0), &c->cursor))
			c->from_now = false;
		else
			c->from_now = true;
		PQclear(res);
		if (conn)
			gb_pool_release(conn);
	}
	client_append(c, "retry: 2000\n\n", 13);

	response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
												 client_read, c, client_free);
	if (response == NULL)
	{
		free(c->buf);
		free(c);
		return MHD_NO;
	}
	MHD_add_response_header(response, "Content-Type", "text/event-stream; charset=utf-8");
	MHD_add_response_header(response, "Cache-Control", "no-cache");
	MHD_add_response_header(response, "X-Accel-Buffering", "no");

	pthread_mutex_lock(&st.lock);
	c->epoch = st.epoch;
	c->status_seen = st.status_gen - 1;	/* a status frame first */
	c->beat_seen = st.beat_gen;
	c->next = st.clients;
	if (st.clients)
		st.clients->prev = c;
	st.clients = c;
	st.nclients++;
	pthread_mutex_unlock(&st.lock);

	ret = MHD_queue_response(connection, MHD_HTTP_OK, response);
	MHD_destroy_response(response);
	return ret;
}

void
gb_stream_stats(GBStreamStats *out)
{
	pthread_mutex_lock(&st.lock);
	out->database_up = st.database_up;
	out->have_head = st.have_head;
	out->position = st.head;
	out->events_total = st.events_total;
	out->dropped_total = st.dropped_total;
	out->clients = st.nclients;
	pthread_mutex_unlock(&st.lock);
}

/* Add a frame to the ring, the oldest leaving it when it is full.  Locked. */
static void
ring_push(int64_t position, char *text, size_t len)
{
	Frame	   *f;

	if (st.count == st.cap)
	{
		Frame	   *old = &st.ring[st.first];

		st.base = old->position;
		free(old->text);
		st.first = (st.first + 1) % st.cap;
		st.count--;
	}
	f = &st.ring[(st.first + st.count) % st.cap];
	f->position = position;
	f->text = text;
	f->len = len;
	st.count++;
	st.head = position;
	st.events_total++;
}

/* Empty the ring: it starts again after position "at".  Locked. */
static void
ring_reset(int64_t at)
{
	while (st.count > 0)
	{
		free(st.ring[st.first].text);
		st.first = (st.first + 1) % st.cap;
		st.count--;
	}
	st.first = 0;
	st.base = st.head = at;
}

/* ------------------------------------------------------------------------
 * The listener thread
 * ------------------------------------------------------------------------
 */

typedef enum
{
	L_DONE,						/* caught up */
	L_MORE,						/* a full page: read again */
	L_RECONNECT					/* the connection is in trouble */
} LStep;

static void
log_failure(const char *what, PGresult *res)
{
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (primary != NULL)
		gb_serve_log("%s failed: %s (SQLSTATE %s)", what, primary, state ? state : "?");
	else
		gb_serve_log("%s failed: %s", what,
					 st.conn ? PQerrorMessage(st.conn) : "no connection");
}

/* LISTEN on the events channel; the head when we have none. */
static LStep
listener_setup(void)
{
	PGresult   *res;
	char	   *ident;
	char		sql[160];
	const char *channel;

	res = PQexec(st.conn,
				 "SELECT pg_catalog.current_setting('gate_bridge.events_channel', true)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_failure("reading gate_bridge.events_channel", res);
		PQclear(res);
		return L_RECONNECT;
	}
	channel = PQgetisnull(res, 0, 0) || PQgetvalue(res, 0, 0)[0] == '\0'
		? "incident_events" : PQgetvalue(res, 0, 0);
	snprintf(st.channel, sizeof(st.channel), "%s", channel);
	PQclear(res);
	ident = PQescapeIdentifier(st.conn, st.channel, strlen(st.channel));
	if (ident == NULL)
		return L_RECONNECT;
	snprintf(sql, sizeof(sql), "LISTEN %s", ident);
	PQfreemem(ident);
	res = PQexec(st.conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		log_failure("LISTEN", res);
		PQclear(res);
		return L_RECONNECT;
	}
	PQclear(res);
	st.listening = true;

	if (!st.have_head)
	{
		int64_t		head;

		res = PQexec(st.conn, "SELECT gate_bridge.events_head()");
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
			!gb_parse_id(PQgetvalue(res, 0, 0), &head))
		{
			log_failure("reading gate_bridge.events_head()", res);
			PQclear(res);
			return L_RECONNECT;
		}
		PQclear(res);
		pthread_mutex_lock(&st.lock);
		ring_reset(head);
		st.have_head = true;
		wake_clients();
		pthread_mutex_unlock(&st.lock);
	}
	return L_DONE;
}

/* The server no longer holds our head: start again before it. */
static LStep
listener_rewound(int64_t head)
{
	char		pos[32];
	const char *params[1] = {pos};
	PGresult   *res;
	int64_t		resume;

	snprintf(pos, sizeof(pos), "%" PRId64, head);
	res = PQexecParams(st.conn, "SELECT gate_bridge.events_resume_point($1::pg_catalog.int8)",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
		!gb_parse_id(PQgetvalue(res, 0, 0), &resume))
	{
		log_failure("reading gate_bridge.events_resume_point()", res);
		PQclear(res);
		return L_RECONNECT;
	}
	PQclear(res);
	gb_serve_log("warning: the event stream has no position %" PRId64 " any more: it was rewound; "
				 "continuing after position %" PRId64 " and dropping every SSE client, "
				 "each resumes from its own position", head, resume);
	pthread_mutex_lock(&st.lock);
	ring_reset(resume);
	st.epoch++;
	wake_clients();
	pthread_mutex_unlock(&st.lock);
	return L_MORE;
}

static LStep
listener_poll(void)
{
	char		after[32];
	const char *params[1] = {after};
	PGresult   *res;
	int64_t		head;
	int			n;
	int			r;

	pthread_mutex_lock(&st.lock);
	head = st.head;
	pthread_mutex_unlock(&st.lock);
	snprintf(after, sizeof(after), "%" PRId64, head);
	res = PQexecParams(st.conn, events_query, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && strcmp(state, "SR001") == 0)
		{
			PQclear(res);
			return listener_rewound(head);
		}
		log_failure("reading the event stream", res);
		PQclear(res);
		return L_RECONNECT;
	}
	n = PQntuples(res);
	pthread_mutex_lock(&st.lock);
	for (r = 0; r < n; r++)
	{
		int64_t		position;
		size_t		len;
		char	   *text;

		if (!gb_parse_id(PQgetvalue(res, r, 0), &position) || position <= st.head)
			continue;
		text = format_frame(position, PQgetvalue(res, r, 1), PQgetvalue(res, r, 3), &len);
		if (text == NULL)
			break;				/* out of memory: read it again later */
		ring_push(position, text, len);
	}
	if (n > 0)
		wake_clients();
	pthread_mutex_unlock(&st.lock);
	PQclear(res);
	return n == GB_EVENTS_BATCH ? L_MORE : L_DONE;
}

/* gate_bridge.tick(): the time-driven transitions, every --tick seconds. */
static LStep
listener_tick(void)
{
	PGresult   *res = PQexec(st.conn, "SELECT gate_bridge.tick()");
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		PQclear(res);
		return L_DONE;
	}
	if (state != NULL && strcmp(state, "42501") == 0)
	{
		st.tick_refused = true;
		gb_serve_log("gate_bridge.tick() is not allowed for this role; not calling it again "
					 "(GRANT EXECUTE ON FUNCTION gate_bridge.tick() to it, or schedule tick() with pg_cron)");
		PQclear(res);
		return L_DONE;
	}
	log_failure("gate_bridge.tick()", res);
	PQclear(res);
	return gb_connection_lost(st.conn) ? L_RECONNECT : L_DONE;
}

/* Empty the wake-up pipe (the bytes say only "look"). */
static void
drain_wake(void)
{
	char		b[64];

	if (read(st.wake[0], b, sizeof(b)) < 0 && errno != EINTR)
		gb_serve_log("could not read the wake-up pipe: %s", strerror(errno));
}

/*
 * Wait for a notification, a wake-up byte or the timeout.  False when the
 * connection broke.
 */
static bool
listener_wait(double timeout)
{
	struct pollfd fds[2];
	PGnotify   *note;
	int			ready;

	while ((note = PQnotifies(st.conn)) != NULL)
	{
		PQfreemem(note);
		timeout = 0;
	}
	fds[0].fd = PQsocket(st.conn);
	fds[0].events = POLLIN;
	fds[1].fd = st.wake[0];
	fds[1].events = POLLIN;
	if (fds[0].fd < 0)
		return false;
	ready = poll(fds, 2, (int) (timeout * 1000));
	if (ready < 0)
		return errno == EINTR;
	if (fds[1].revents & POLLIN)
	{
		drain_wake();
	}
	if (fds[0].revents & (POLLIN | POLLERR | POLLHUP))
	{
		if (!PQconsumeInput(st.conn) || gb_connection_lost(st.conn))
			return false;
		while ((note = PQnotifies(st.conn)) != NULL)
			PQfreemem(note);
	}
	return true;
}

/* Sleep until the timeout or a wake-up byte. */
static void
listener_pause(double seconds)
{
	struct pollfd fd = {.fd = st.wake[0],.events = POLLIN};

	if (poll(&fd, 1, (int) (seconds * 1000)) > 0)
	{
		drain_wake();
	}
}

static bool
stopping(void)
{
	bool		s;

	pthread_mutex_lock(&st.lock);
	s = st.stopping;
	pthread_mutex_unlock(&st.lock);
	return s;
}

static const GBConnExtra listener_extra[] = {
	{"connect_timeout", "10"},
	{"keepalives_idle", "30"},
	{"keepalives_interval", "10"},
	{"keepalives_count", "3"},
	{NULL, NULL}
};

static void *
listener_main(void *arg)
{
	double		delay = BACKOFF_FIRST;
	double		next_beat = now_secs() + HEARTBEAT_SECS;
	double		next_tick = gb_serve.tick_secs > 0 ? now_secs() : 0;
	bool		in_outage = false;

	(void) arg;
	while (!stopping())
	{
		LStep		step = L_DONE;
		double		now;

		if (st.conn == NULL)
		{
			st.conn = gb_connect(gb_serve.conninfo, listener_extra, false);
			if (PQstatus(st.conn) != CONNECTION_OK)
			{
				if (!in_outage)
				{
					const char *msg = PQerrorMessage(st.conn);

					gb_serve_log("the database is away: %.*s; reconnecting with backoff (0.25 s doubling to 10 s)",
								 (int) strcspn(msg, "\n"), msg);
				}
				in_outage = true;
				PQfinish(st.conn);
				st.conn = NULL;
				set_database_up(false);
				step = L_RECONNECT;
			}
			else
			{
				gb_serve_connection_setup(st.conn);
				st.listening = false;
			}
		}
		if (step == L_DONE && !st.listening)
			step = listener_setup();
		while (step == L_DONE || step == L_MORE)
		{
			step = listener_poll();
			if (step == L_DONE)
				break;
		}
		if (step == L_DONE)
		{
			if (in_outage)
				gb_serve_log("the database is back; the stream goes on after position %" PRId64,
							 st.head);
			in_outage = false;
			delay = BACKOFF_FIRST;
			set_database_up(true);
		}

		now = now_secs();
		if (now >= next_beat)
		{
			pthread_mutex_lock(&st.lock);
			st.beat_gen++;
			wake_clients();
			pthread_mutex_unlock(&st.lock);
			next_beat = now + HEARTBEAT_SECS;
		}
		if (step == L_DONE && gb_serve.tick_secs > 0 && !st.tick_refused && now >= next_tick)
		{
			step = listener_tick();
			next_tick = now + gb_serve.tick_secs;
			if (step == L_DONE)
				continue;		/* its events, at once */
		}

		if (step == L_DONE)
		{
			if (listener_wait(1.0))
				continue;
			step = L_RECONNECT;
		}
		/* L_RECONNECT */
		if (st.conn != NULL)
		{
			if (!in_outage)
				gb_serve_log("lost the connection to the database; reconnecting with backoff (0.25 s doubling to 10 s)");
			in_outage = true;
			PQfinish(st.conn);
			st.conn = NULL;
			set_database_up(false);
		}
		listener_pause(delay);
		delay = Min(delay * 2, BACKOFF_MAX);
	}
	if (st.conn != NULL)
		PQfinish(st.conn);
	st.conn = NULL;
	return NULL;
}

/*
 * Start the listener on the command's first connection.  False when the
 * thread cannot be started.
 */
bool
gb_stream_start(PGconn *conn)
{
	st.cap = gb_serve.ring_size;
	st.ring = calloc((size_t) st.cap, sizeof(Frame));
	if (st.ring == NULL || pipe(st.wake) != 0)
		return false;
	st.conn = conn;
	gb_serve_connection_setup(conn);
	st.database_up = true;
	/*
	 * LISTEN and the head before the first request: a client from now
	 * starts at a position read before it came, and the first status
	 * frame says where the stream is.
	 */
	if (listener_setup() != L_DONE)
	{
		if (PQstatus(conn) == CONNECTION_OK)
			return false;		/* refused for good: said why */
		PQfinish(conn);
		st.conn = NULL;			/* the listener connects again */
		st.database_up = false;
	}
	return pthread_create(&st.thread, NULL, listener_main, NULL) == 0;
}

/*
 * Stop: the listener ends, every SSE client is resumed and ends its
 * stream (libmicrohttpd must not be stopped with suspended connections).
 */
void
gb_stream_stop(void)
{
	int			i;

	pthread_mutex_lock(&st.lock);
	st.stopping = true;
	wake_clients();
	pthread_mutex_unlock(&st.lock);
	if (write(st.wake[1], "x", 1) != 1)
		gb_serve_log("could not wake the listener up: %s", strerror(errno));
	pthread_join(st.thread, NULL);
	/* let the resumed clients end their streams */
	for (i = 0; i < 50; i++)
	{
		int			n;

		pthread_mutex_lock(&st.lock);
		wake_clients();
		n = st.nclients;
		pthread_mutex_unlock(&st.lock);
		if (n == 0)
			break;
		usleep(20000);
	}
}
