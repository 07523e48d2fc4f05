/*-------------------------------------------------------------------------
 *
 * cmd_listen.c
 *		gate-bridge listen: print every incident event as one JSON line.
 *
 * The timeline, gate_bridge.incident_events, is the source of truth; a
 * NOTIFY on the channel is only a wake-up.  We remember the last event id
 * printed and read "id > last ORDER BY id" after every wake-up, every
 * --interval seconds (acked and resolved events are not notified), and
 * after every reconnect, so an event is printed once, in id order, and
 * none is lost while the connection is down.  Each line is rendered by the
 * server (row_to_json) and printed as it arrives.
 *
 * Ids are handed out when a row is inserted, not when it commits, so a
 * committed id may be visible while a smaller one is still in flight; that
 * smaller one would be skipped forever once "last" moved past it.  So we
 * print only up to the first gap, and skip a gap only when we know it will
 * not fill.  Let U be the highest id a poll's snapshot S shows.  Whoever
 * holds an id below U took it before U was taken, so before S; and an
 * inserting transaction holds RowExclusiveLock on incident_events from
 * before it takes an id until it ends.  So right after S we note the
 * sessions' transactions that hold a writer's lock on the table (pg_locks,
 * readable by anyone); once none of them is running any more (they hold no
 * lock at all, not even on their own virtual transaction id), a snapshot
 * taken after that shows every id below U that committed, and a gap below
 * U that is still missing then was rolled back.  Usually no writer is
 * running at all, and the next poll settles the gap at once.
 *
 * cli/cmd_listen.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>

#include "gate_bridge_cli.h"

#define BATCH			500
#define BATCH_TEXT		"500"	/* the same, for the query */
#define GAP_RECHECK		0.1		/* seconds between polls while a gap is open */
#define BACKOFF_FIRST	0.25
#define BACKOFF_MAX		10.0

typedef enum
{
	GAP_NONE,					/* no gap seen */
	GAP_WAITING,				/* writers that may fill it are running */
	GAP_SETTLED					/* they have ended: a snapshot taken now
								 * shows every id that will ever fill it */
} GapState;

typedef struct ListenState
{
	int64_t		last;			/* every id <= last is printed or never will be */
	GapState	gap;			/* about the gaps below gap_upper */
	int64_t		gap_upper;		/* the highest id the snapshot that showed
								 * a gap showed */
	PQExpBufferData gap_writers;	/* GAP_WAITING: the writers'
									 * transactions, "vxid,vxid,..." */
	bool		once;
	char		channel[64];
} ListenState;

typedef enum
{
	POLL_DONE,					/* caught up */
	POLL_MORE,					/* a full batch: poll again now */
	POLL_GAP,					/* waiting for a gap to fill or settle */
	POLL_LOST,					/* the connection broke */
	POLL_ERROR					/* the server refused, or stdout failed */
} PollResult;

/* an event's fields in its JSON line; e is the event, i its incident */
#define EVENT_FIELDS \
"e.id, e.event, e.incident_id," \
" pg_catalog.to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS at," \
" e.actor, i.kind, i.key, i.agent, i.severity, i.summary," \
" CASE e.event WHEN 'created' THEN 'open' WHEN 'acked' THEN 'ack'" \
"              WHEN 'resolved' THEN 'resolved' ELSE i.status END AS status"

/* "note" is there only when the event has one */
static const char *const events_query =
"SELECT e.id,"
"       CASE WHEN e.detail->>'note' IS NULL"
"            THEN (SELECT pg_catalog.row_to_json(l) FROM (SELECT " EVENT_FIELDS ") AS l)"
"            ELSE (SELECT pg_catalog.row_to_json(l)"
"                    FROM (SELECT " EVENT_FIELDS ", e.detail->>'note' AS note) AS l)"
"       END::pg_catalog.text AS line"
"  FROM gate_bridge.incident_events e"
"  JOIN gate_bridge.incidents i ON i.id = e.incident_id"
" WHERE e.id > $1::pg_catalog.int8"
" ORDER BY e.id"
" LIMIT " BATCH_TEXT;

/*
 * The transactions (virtual transaction ids, which prepared transactions
 * have too) of the other sessions that hold a lock allowing them to insert
 * into the timeline.
 */
static const char *const writers_query =
"SELECT pg_catalog.string_agg(DISTINCT l.virtualtransaction, ',')"
"  FROM pg_catalog.pg_locks l"
" WHERE l.locktype = 'relation'"
"   AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d"
"                      WHERE d.datname = pg_catalog.current_database())"
"   AND l.relation = 'gate_bridge.incident_events'::pg_catalog.regclass"
"   AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()"
"   AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')";

/* How many of those transactions still hold any lock, i.e. still run. */
static const char *const writers_alive_query =
"SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks l"
" WHERE l.virtualtransaction = ANY (pg_catalog.string_to_array($1, ','))";

static volatile sig_atomic_t stop_requested = 0;

static void
on_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/* The first line of a libpq message, for one-line progress reports. */
static void
print_first_line(FILE *out, const char *msg)
{
	size_t		len = strcspn(msg, "\n");

	fprintf(out, "%.*s", (int) len, msg);
}

/* Sleep, returning early when a signal arrives. */
static void
pause_for(double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t) seconds;
	tv.tv_usec = (suseconds_t) ((seconds - (double) tv.tv_sec) * 1e6);
	(void) select(0, NULL, NULL, NULL, &tv);
}

/*
 * Per connection: find the channel, LISTEN.  Returns GB_EXIT_OK, or the
 * exit status of the failure (already reported).
 */
static int
setup_connection(PGconn *conn, ListenState *st)
{
	PGresult   *res;
	char	   *ident;
	PQExpBufferData sql;
	int			rc = GB_EXIT_OK;
	const char *channel;

	/* NULL when this backend has not loaded the library and nothing set it */
	res = gb_exec(conn,
				  "SELECT pg_catalog.current_setting('gate_bridge.notify_channel', true)",
				  0, NULL, &rc);
	if (res == NULL)
		return rc;
	channel = gb_value(res, 0, 0);
	if (channel == NULL || channel[0] == '\0')
		channel = "incident_created";
	snprintf(st->channel, sizeof(st->channel), "%s", channel);
	PQclear(res);

	ident = PQescapeIdentifier(conn, st->channel, strlen(st->channel));
	if (ident == NULL)
	{
		gb_report_result_error(conn, NULL);
		return gb_connection_lost(conn) ? GB_EXIT_CONNECT : GB_EXIT_FAIL;
	}
	initPQExpBuffer(&sql);
	appendPQExpBuffer(&sql, "LISTEN %s", ident);
	PQfreemem(ident);
	gb_check_buffer(&sql);
	res = gb_exec(conn, sql.data, 0, NULL, &rc);
	termPQExpBuffer(&sql);
	if (res == NULL)
		return rc;
	PQclear(res);
	return GB_EXIT_OK;
}

/* After a failed statement: the connection broke, or the server refused. */
static PollResult
poll_failed(PGconn *conn, PGresult *res)
{
	PollResult	r;

	if (gb_connection_lost(conn))
		r = POLL_LOST;
	else
	{
		gb_report_result_error(conn, res);
		r = POLL_ERROR;
	}
	PQclear(res);
	return r;
}

/*
 * A gap was seen below st->gap_upper: note which writers may still fill it.
 * Runs after the snapshot that showed the gap.
 */
static PollResult
note_gap_writers(PGconn *conn, ListenState *st)
{
	PGresult   *res = PQexec(conn, writers_query);
	const char *writers;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return poll_failed(conn, res);
	writers = gb_value(res, 0, 0);
	resetPQExpBuffer(&st->gap_writers);
	if (writers == NULL)
		st->gap = GAP_SETTLED;	/* none: the next snapshot decides */
	else
	{
		appendPQExpBufferStr(&st->gap_writers, writers);
		gb_check_buffer(&st->gap_writers);
		st->gap = GAP_WAITING;
	}
	PQclear(res);
	return POLL_DONE;
}

/* GAP_WAITING: have those writers all ended? */
static PollResult
check_gap_writers(PGconn *conn, ListenState *st)
{
	const char *params[1] = {st->gap_writers.data};
	PGresult   *res = PQexecParams(conn, writers_alive_query, 1, NULL, params,
								   NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return poll_failed(conn, res);
	if (strcmp(PQgetvalue(res, 0, 0), "0") == 0)
		st->gap = GAP_SETTLED;
	PQclear(res);
	return POLL_DONE;
}

/*
 * Read and print the events after st->last, up to the first gap that may
 * still fill.
 */
static PollResult
poll_events(PGconn *conn, ListenState *st)
{
	PGresult   *res;
	char		last[32];
	const char *params[1] = {last};
	PollResult	result = POLL_DONE;
	int			col_id;
	int			col_line;
	const GBColumn columns[] = {
		{"id", &col_id}, {"line", &col_line}, {NULL, NULL}
	};
	int			n;
	int			r;

	/* before the snapshot below, so that it sees what they committed */
	if (st->gap == GAP_WAITING)
	{
		result = check_gap_writers(conn, st);
		if (result != POLL_DONE)
			return result;
	}

	snprintf(last, sizeof(last), "%" PRId64, st->last);
	res = PQexecParams(conn, events_query, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return poll_failed(conn, res);
	if (!gb_find_columns(res, columns))
	{
		PQclear(res);
		return POLL_ERROR;
	}

	n = PQntuples(res);
	for (r = 0; r < n; r++)
	{
		int64_t		id;

		if (!gb_parse_id(gb_value(res, r, col_id), &id))
			continue;
		if (id != st->last + 1 &&
			!(st->gap == GAP_SETTLED && id <= st->gap_upper))
		{
			if (st->gap != GAP_NONE && id <= st->gap_upper)
			{
				result = POLL_GAP;	/* its writers are still running */
				break;
			}
			/* a new gap: every gap below the highest id shown settles together */
			if (!gb_parse_id(gb_value(res, n - 1, col_id), &st->gap_upper))
				st->gap_upper = id;
			result = note_gap_writers(conn, st);
			if (result == POLL_DONE)
				result = st->gap == GAP_SETTLED ? POLL_MORE : POLL_GAP;
			break;
		}
		if (!gb_print_line(PQgetvalue(res, r, col_line)))
		{
			result = POLL_ERROR;
			break;
		}
		st->last = id;
		if (st->last >= st->gap_upper)
			st->gap = GAP_NONE;
	}
	if (result == POLL_DONE && n == BATCH)
		result = POLL_MORE;
	PQclear(res);
	return result;
}

/*
 * Wait for a notification or the timeout.  Returns false when the
 * connection broke.  Notifications only wake us up; their payloads are not
 * needed.
 */
static bool
wait_for_wakeup(PGconn *conn, double timeout)
{
	int			sock = PQsocket(conn);
	fd_set		rfds;
	struct timeval tv;
	PGnotify   *note;
	int			ready;

	if (sock < 0)
		return false;
	FD_ZERO(&rfds);
	FD_SET(sock, &rfds);
	tv.tv_sec = (time_t) timeout;
	tv.tv_usec = (suseconds_t) ((timeout - (double) tv.tv_sec) * 1e6);
	ready = select(sock + 1, &rfds, NULL, NULL, &tv);
	if (ready < 0)
		return errno == EINTR;
	if (ready == 0)
		return true;
	if (!PQconsumeInput(conn) || gb_connection_lost(conn))
		return false;
	while ((note = PQnotifies(conn)) != NULL)
		PQfreemem(note);
	return true;
}

static const GBConnExtra listen_extra[] = {
	{"connect_timeout", "10"},
	{"keepalives_idle", "30"},
	{"keepalives_interval", "10"},
	{"keepalives_count", "3"},
	{NULL, NULL}
};

/*
 * Connect again after a lost connection, with exponential backoff.
 * Returns NULL when asked to stop (*rc GB_EXIT_OK) or on a failure that a
 * retry will not cure (*rc set, reported).
 */
static PGconn *
reconnect(const char *conninfo, ListenState *st, int *rc)
{
	double		delay = BACKOFF_FIRST;

	*rc = GB_EXIT_OK;
	for (;;)
	{
		PGconn	   *conn;
		char		where[512];
		int			src;

		fprintf(stderr, "%s: reconnecting in %.2f s\n", GB_PROGNAME, delay);
		pause_for(delay);
		if (stop_requested)
			return NULL;
		delay = delay * 2 > BACKOFF_MAX ? BACKOFF_MAX : delay * 2;

		conn = gb_connect(conninfo, listen_extra, false);
		gb_describe_server(conn, where, sizeof(where));
		if (PQstatus(conn) != CONNECTION_OK)
		{
			fprintf(stderr, "%s: could not reconnect to %s: ", GB_PROGNAME, where);
			print_first_line(stderr, PQerrorMessage(conn));
			fputc('\n', stderr);
			PQfinish(conn);
			continue;
		}
		src = setup_connection(conn, st);
		if (src == GB_EXIT_CONNECT)
		{
			PQfinish(conn);
			continue;
		}
		if (src != GB_EXIT_OK)
		{
			PQfinish(conn);
			*rc = src;
			return NULL;
		}
		fprintf(stderr, "%s: reconnected to %s; catching up after event %" PRId64 "\n",
				GB_PROGNAME, where, st->last);
		/* transactions noted on the old connection may mean nothing now */
		st->gap = GAP_NONE;
		return conn;
	}
}

static void
report_lost(PGconn *conn)
{
	char		where[512];

	gb_describe_server(conn, where, sizeof(where));
	fprintf(stderr, "%s: lost the connection to %s: ", GB_PROGNAME, where);
	print_first_line(stderr, PQerrorMessage(conn));
	fputc('\n', stderr);
}

enum
{
	OPT_SINCE = GB_LONG_ONLY,
	OPT_ONCE,
	OPT_INTERVAL
};

/* the command line of this run */
static int64_t since = 0;
static bool have_since = false;
static bool once = false;
static double interval = 1.0;

static const GBOption options[] = {
	{"since", OPT_SINCE, "ID", "start after event ID (default: after the newest event)"},
	{"once", OPT_ONCE, NULL, "print the events there are, then exit"},
	{"interval", OPT_INTERVAL, "SECONDS", "poll at least this often (default 1); acked and\n"
	"resolved events are not notified, polling finds them"},
	{NULL, 0, NULL, NULL}
};

static int
listen_option(int key, const char *arg)
{
	switch (key)
	{
		case OPT_SINCE:
			if (!gb_parse_id(arg, &since))
				return gb_usage_error("listen", "invalid --since \"%s\": expected an event id (0 or more)",
									  arg);
			have_since = true;
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_INTERVAL:
			if (!gb_parse_seconds(arg, &interval))
				return gb_usage_error("listen", "invalid --interval \"%s\": expected seconds, more than 0",
									  arg);
			break;
	}
	return GB_EXIT_OK;
}

static int
listen_run(GBSession *s)
{
	ListenState st;
	struct sigaction sa;
	int			rc;

	memset(&st, 0, sizeof(st));
	st.gap = GAP_NONE;
	st.last = since;
	st.once = once;
	initPQExpBuffer(&st.gap_writers);
	rc = setup_connection(s->conn, &st);
	if (rc != GB_EXIT_OK)
	{
		termPQExpBuffer(&st.gap_writers);
		return rc;
	}
	if (!have_since)
	{
		PGresult   *res = gb_exec(s->conn,
								  "SELECT COALESCE(pg_catalog.max(e.id), 0)"
								  "  FROM gate_bridge.incident_events e",
								  0, NULL, &rc);

		if (res == NULL || !gb_parse_id(PQgetvalue(res, 0, 0), &st.last))
		{
			PQclear(res);
			termPQExpBuffer(&st.gap_writers);
			return rc == GB_EXIT_OK ? GB_EXIT_FAIL : rc;
		}
		PQclear(res);
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;			/* no SA_RESTART: select() must return */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	while (!stop_requested)
	{
		PollResult	pr;
		double		timeout = interval;

		if (s->conn == NULL)
		{
			s->conn = reconnect(s->conninfo, &st, &rc);
			if (s->conn == NULL)
				break;
		}

		pr = poll_events(s->conn, &st);
		if (pr == POLL_ERROR)
		{
			rc = GB_EXIT_FAIL;
			break;
		}
		if (pr == POLL_LOST)
		{
			report_lost(s->conn);
			PQfinish(s->conn);
			s->conn = NULL;
			continue;
		}
		if (pr == POLL_MORE)
			continue;
		if (pr == POLL_DONE && st.once)
			break;
		if (pr == POLL_GAP)
			timeout = GAP_RECHECK;
		if (stop_requested)
			break;
		if (!wait_for_wakeup(s->conn, timeout))
		{
			report_lost(s->conn);
			PQfinish(s->conn);
			s->conn = NULL;
		}
	}
	termPQExpBuffer(&st.gap_writers);
	return rc;
}

const GBCommand gb_command_listen = {
	.name = "listen",
	.summary = "print incident events as JSON lines as they happen",
	.description =
	"Print every incident event (created, acked, resolved, ...) as one JSON line,\n"
	"in event id order, as it happens.  NOTIFY only wakes the listener up: events\n"
	"are read from gate_bridge.incident_events, so after a lost connection (a\n"
	"server restart, say) it reconnects with backoff and first prints what it\n"
	"missed, without repeats.",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"Each line: {\"id\",\"event\",\"incident_id\",\"at\",\"actor\",\"kind\",\"key\",\"agent\",\n"
	"\"severity\",\"summary\",\"status\"} and \"note\" when the event has one; \"status\" is\n"
	"the incident's status after the event, \"at\" is UTC.\n"
	"\n"
	"SIGINT or SIGTERM end it with exit status 0.  Exit status 1: the server\n"
	"refused a query; 3: the first connection failed (later ones are retried).\n",
	.conn_extra = listen_extra,
	.option = listen_option,
	.run = listen_run,
};
