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
 * none is lost while the connection is down.
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
#include "gate_bridge_cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>

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
	GBBuf		gap_writers;	/* GAP_WAITING: the writers' transactions,
								 * "vxid,vxid,..." */
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

enum
{
	COL_ID, COL_EVENT, COL_INCIDENT_ID, COL_AT, COL_ACTOR, COL_KIND, COL_KEY,
	COL_AGENT, COL_SEVERITY, COL_SUMMARY, COL_STATUS, COL_NOTE
};

static const char *const events_query =
"SELECT e.id, e.event, e.incident_id,"
"       pg_catalog.to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
"       e.actor, i.kind, i.key, i.agent, i.severity, i.summary,"
"       CASE e.event WHEN 'created' THEN 'open' WHEN 'acked' THEN 'ack'"
"                    WHEN 'resolved' THEN 'resolved' ELSE i.status END,"
"       e.detail->>'note'"
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

static void
help(FILE *out)
{
	fprintf(out,
			"Print every incident event (created, acked, resolved, ...) as one JSON line,\n"
			"in event id order, as it happens.  NOTIFY only wakes the listener up: events\n"
			"are read from gate_bridge.incident_events, so after a lost connection (a\n"
			"server restart, say) it reconnects with backoff and first prints what it\n"
			"missed, without repeats.\n"
			"\n"
			"Usage:\n"
			"  %s listen [OPTIONS]\n"
			"\n"
			"Options:\n"
			"      --since=ID          start after event ID (default: after the newest event)\n"
			"      --once              print the events there are, then exit\n"
			"      --interval=SECONDS  poll at least this often (default 1); acked and\n"
			"                          resolved events are not notified, polling finds them\n"
			"  -d, --dbname=CONNINFO   connection string or URI\n"
			"  -h, --help              show this help, then exit\n"
			"\n"
			"Each line: {\"id\",\"event\",\"incident_id\",\"at\",\"actor\",\"kind\",\"key\",\"agent\",\n"
			"\"severity\",\"summary\",\"status\"} and \"note\" when the event has one; \"status\" is\n"
			"the incident's status after the event, \"at\" is UTC.\n"
			"\n"
			"SIGINT or SIGTERM end it with exit status 0.  Exit status 1: the server\n"
			"refused a query; 3: the first connection failed (later ones are retried).\n",
			GB_PROGNAME);
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
	GBBuf		sql;
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
	gb_buf_init(&sql);
	gb_buf_puts(&sql, "LISTEN ");
	gb_buf_puts(&sql, ident);
	PQfreemem(ident);
	res = gb_exec(conn, sql.data, 0, NULL, &rc);
	gb_buf_free(&sql);
	if (res == NULL)
		return rc;
	PQclear(res);
	return GB_EXIT_OK;
}

static bool
print_event(const PGresult *res, int row, int64_t id)
{
	GBBuf		buf;
	GBJson		j;
	int64_t		incident_id;
	bool		ok;
	int			k;
	static const struct
	{
		const char *name;
		int			col;
	}			texts[] = {
		{"at", COL_AT}, {"actor", COL_ACTOR}, {"kind", COL_KIND},
		{"key", COL_KEY}, {"agent", COL_AGENT}, {"severity", COL_SEVERITY},
		{"summary", COL_SUMMARY}, {"status", COL_STATUS}
	};

	gb_buf_init(&buf);
	gb_json_init(&j, &buf);
	gb_json_object_begin(&j);
	gb_json_key(&j, "id");
	gb_json_int(&j, id);
	gb_json_key(&j, "event");
	gb_json_string(&j, gb_value(res, row, COL_EVENT));
	gb_json_key(&j, "incident_id");
	if (gb_parse_id(gb_value(res, row, COL_INCIDENT_ID), &incident_id))
		gb_json_int(&j, incident_id);
	else
		gb_json_null(&j);
	for (k = 0; k < (int) (sizeof(texts) / sizeof(texts[0])); k++)
	{
		gb_json_key(&j, texts[k].name);
		gb_json_string(&j, gb_value(res, row, texts[k].col));
	}
	if (!PQgetisnull(res, row, COL_NOTE))
	{
		gb_json_key(&j, "note");
		gb_json_string(&j, gb_value(res, row, COL_NOTE));
	}
	gb_json_object_end(&j);
	ok = gb_write_line(&buf);
	gb_buf_free(&buf);
	return ok;
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
	gb_buf_reset(&st->gap_writers);
	if (writers == NULL)
		st->gap = GAP_SETTLED;	/* none: the next snapshot decides */
	else
	{
		gb_buf_puts(&st->gap_writers, writers);
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

	n = PQntuples(res);
	for (r = 0; r < n; r++)
	{
		int64_t		id;

		if (!gb_parse_id(gb_value(res, r, COL_ID), &id))
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
			if (!gb_parse_id(gb_value(res, n - 1, COL_ID), &st->gap_upper))
				st->gap_upper = id;
			result = note_gap_writers(conn, st);
			if (result == POLL_DONE)
				result = st->gap == GAP_SETTLED ? POLL_MORE : POLL_GAP;
			break;
		}
		if (!print_event(res, r, id))
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

int
gb_cmd_listen(int argc, char **argv, const GBGlobal *g)
{
	static const struct option longopts[] = {
		{"since", required_argument, NULL, 's'},
		{"once", no_argument, NULL, 'o'},
		{"interval", required_argument, NULL, 'i'},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *cmd = "listen";
	const char *conninfo_opt = NULL;
	const char *conninfo;
	char	  **av = gb_subcommand_argv(argc, argv);
	ListenState st;
	bool		have_since = false;
	double		interval = 1.0;
	struct sigaction sa;
	PGconn	   *conn;
	int			rc = GB_EXIT_OK;
	int			c;

	memset(&st, 0, sizeof(st));
	st.gap = GAP_NONE;
	gb_buf_init(&st.gap_writers);
	while ((c = getopt_long(argc, av, "d:h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 's':
				if (!gb_parse_id(optarg, &st.last))
					return gb_usage_error(cmd, "invalid --since \"%s\": expected an event id (0 or more)",
										  optarg);
				have_since = true;
				break;
			case 'o':
				st.once = true;
				break;
			case 'i':
				if (!gb_parse_seconds(optarg, &interval))
					return gb_usage_error(cmd, "invalid --interval \"%s\": expected seconds, more than 0",
										  optarg);
				break;
			case 'd':
				conninfo_opt = optarg;
				break;
			case 'h':
				help(stdout);
				return GB_EXIT_OK;
			default:
				return gb_bad_option(cmd);
		}
	}
	if (optind < argc)
		return gb_usage_error(cmd, "unexpected argument \"%s\"", av[optind]);

	conninfo = gb_conninfo(g, conninfo_opt);
	conn = gb_connect(conninfo, listen_extra, true);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		PQfinish(conn);
		return GB_EXIT_CONNECT;
	}
	rc = setup_connection(conn, &st);
	if (rc != GB_EXIT_OK)
	{
		PQfinish(conn);
		return rc;
	}
	if (!have_since)
	{
		PGresult   *res = gb_exec(conn,
								  "SELECT COALESCE(pg_catalog.max(e.id), 0)"
								  "  FROM gate_bridge.incident_events e",
								  0, NULL, &rc);

		if (res == NULL || !gb_parse_id(PQgetvalue(res, 0, 0), &st.last))
		{
			PQclear(res);
			PQfinish(conn);
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

		if (conn == NULL)
		{
			conn = reconnect(conninfo, &st, &rc);
			if (conn == NULL)
				break;
		}

		pr = poll_events(conn, &st);
		if (pr == POLL_ERROR)
		{
			rc = GB_EXIT_FAIL;
			break;
		}
		if (pr == POLL_LOST)
		{
			report_lost(conn);
			PQfinish(conn);
			conn = NULL;
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
		if (!wait_for_wakeup(conn, timeout))
		{
			report_lost(conn);
			PQfinish(conn);
			conn = NULL;
		}
	}
	if (conn != NULL)
		PQfinish(conn);
	gb_buf_free(&st.gap_writers);
	return rc;
}
