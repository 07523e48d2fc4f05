/*-------------------------------------------------------------------------
 *
 * cmd_listen.c
 *		gate-bridge listen: print every incident event as one JSON line.
 *
 * Events are read with gate_bridge.events_after(position), the stream the
 * extension keeps in commit order: it returns committed events only, and
 * no event can later appear at or below the last one it returned.  So we
 * remember the position of the last line printed and ask for what follows
 * it, after every wake-up, every --interval seconds and after every
 * reconnect: each event is printed once, in position order, and a
 * transaction that has not committed holds back nobody.  A NOTIFY on
 * gate_bridge.events_channel only wakes us up (it is lost while we are
 * disconnected and skipped when the server's queue is nearly full), hence
 * the polling.  Each line is rendered by the server (row_to_json).
 *
 * Without --since we start "from now": after LISTEN, at events_head(), the
 * newest committed position.  An event still in flight then gets a higher
 * position when it commits, so it is printed.
 *
 * Failures are sorted by what cures them (retry.c):
 *	- the connection broke, the server is shutting down, crashed or is
 *	  starting (57P01, 57P02, 57P03, class 08), or it is a standby (25006:
 *	  LISTEN is refused during recovery): connect again, so that a
 *	  multi-host connection string with target_session_attrs=read-write
 *	  finds the primary;
 *	- a deadlock, a serialization failure, a cancelled query (statement
 *	  timeout, pg_cancel_backend) or a lock timeout (40P01, 40001, 57014,
 *	  55P03): run it again on the same connection;
 *	- SR001, the server no longer holds our position (a failover to a
 *	  standby that was behind, a crash with asynchronous commit, a restore,
 *	  a TRUNCATE): warn, naming both positions, and go on after
 *	  events_resume_point(ours), the last position it holds before ours;
 *	  nothing the server holds is skipped;
 *	- anything else (permission denied, no extension, a version without
 *	  the stream) is reported and ends the command with status 1.
 * Retries wait 0.25 s, doubling up to 10 s, and start over after a
 * success; an outage is reported with one line, however long it lasts.
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

#define BATCH			GB_EVENTS_BATCH
#define BACKOFF_FIRST	GB_BACKOFF_FIRST
#define BACKOFF_TEXT	GB_BACKOFF_TEXT

static const char *const events_query = GB_EVENTS_QUERY(GB_EVENT_FIELDS);

static const char *const head_query =
"SELECT gate_bridge.events_head()";

static const char *const resume_query =
"SELECT gate_bridge.events_resume_point($1::pg_catalog.int8)";

/* what to do after a step */
typedef enum
{
	STEP_DONE,					/* caught up */
	STEP_MORE,					/* there may be more: poll again now */
	STEP_RETRY,					/* transient: the same statement again, later */
	STEP_RECONNECT,				/* transient: a new connection, later */
	STEP_FATAL					/* reported; exit 1 */
} Step;

typedef struct ListenState
{
	int64_t		last;			/* the position printed last, or the start */
	bool		have_start;		/* "last" is known (--since, or the head read) */
	bool		listening;		/* LISTEN done on this connection */
	bool		once;
	bool		in_outage;		/* the current outage has been reported */
	double		delay;			/* the next retry's wait */
	char		channel[64];
	char		fatal[256];		/* why the server closed the connection,
								 * when it said so between queries */
} ListenState;

static volatile sig_atomic_t stop_requested = 0;

static void
on_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/*
 * Notices as libpq prints them, except the server's word on why it closes
 * the connection, which arrives between queries: a FATAL error
 * (terminated, shut down), or a WARNING of class 57P (an immediate
 * shutdown, a crash of another server process).  That is kept for the one
 * line that reports the outage.
 */
static void
receive_notice(void *arg, const PGresult *res)
{
	ListenState *st = (ListenState *) arg;
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (primary != NULL &&
		((severity != NULL &&
		  (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)) ||
		 (state != NULL && strncmp(state, "57P", 3) == 0)))
		snprintf(st->fatal, sizeof(st->fatal), "%s (SQLSTATE %s)",
				 primary, state ? state : "unknown");
	else
		fprintf(stderr, "%s", PQresultErrorMessage(res));
}

static void
watch_connection(PGconn *conn, ListenState *st)
{
	st->fatal[0] = '\0';
	st->listening = false;
	PQsetNoticeReceiver(conn, receive_notice, st);
}

/* The first line of a message, for one-line reports. */
static void
print_first_line(FILE *out, const char *msg)
{
	char		line[1024];

	gb_first_line(msg, line, sizeof(line));
	fputs(line, out);
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

/* What a failed statement calls for (retry.c sorts them). */
static Step
classify_failure(PGconn *conn, const PGresult *res, bool *rewound)
{
	*rewound = false;
	switch (gb_classify_failure(conn, res))
	{
		case GB_FAILURE_RECONNECT:
			return STEP_RECONNECT;
		case GB_FAILURE_RETRY:
			return STEP_RETRY;
		case GB_FAILURE_REWOUND:
			*rewound = true;
			return STEP_MORE;
		case GB_FAILURE_FATAL:
			break;
	}
	return STEP_FATAL;
}

/*
 * The start of an outage: one line on stderr, which names the failure and
 * says that it is retried.  Later failures of the same outage say nothing.
 */
static void
report_outage(ListenState *st, PGconn *conn, const PGresult *res, Step step)
{
	char		where[512];
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (st->in_outage)
		return;
	st->in_outage = true;
	gb_describe_server(conn, where, sizeof(where));
	if (state != NULL && strcmp(state, "25006") == 0)
		fprintf(stderr, "%s: %s is read-only (a standby): %s (SQLSTATE %s); "
				"looking for a primary (with several hosts, target_session_attrs=read-write picks it)",
				GB_PROGNAME, where, primary ? primary : "", state);
	else
	{
		if (gb_connection_lost(conn))
			fprintf(stderr, "%s: lost the connection to %s: ", GB_PROGNAME, where);
		else
			fprintf(stderr, "%s: reading the event stream from %s failed: ",
					GB_PROGNAME, where);
		if (primary != NULL && state != NULL)
			fprintf(stderr, "%s (SQLSTATE %s)", primary, state);
		else if (st->fatal[0] != '\0')
			fputs(st->fatal, stderr);
		else
			print_first_line(stderr, PQerrorMessage(conn));
	}
	fprintf(stderr, "; %s with backoff (" BACKOFF_TEXT ")\n",
			step == STEP_RETRY ? "retrying" : "reconnecting");
}

/* A failure that ends the command: the server's message, and why. */
static void
report_fatal(PGconn *conn, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char		where[512];

	if (state != NULL && strcmp(state, "42883") == 0)
	{
		gb_describe_server(conn, where, sizeof(where));
		fprintf(stderr,
				"%s: the %s extension in %s has no event stream (%s)\n"
				"HINT:  listen reads gate_bridge.events_after(), which version 1.2 brings: update the extension with ALTER EXTENSION %s UPDATE.\n",
				GB_PROGNAME, GB_EXTENSION, where,
				PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), GB_EXTENSION);
		return;
	}
	gb_report_result_error(conn, res);
	if (state != NULL && strcmp(state, "42501") == 0)
		fprintf(stderr,
				"HINT:  listen needs USAGE on schema gate_bridge, SELECT on gate_bridge.incidents and gate_bridge.incident_events, and EXECUTE on gate_bridge.events_after(bigint, integer), gate_bridge.events_head() and gate_bridge.events_resume_point(bigint).\n");
}

/*
 * After a failed statement: what next.  SR001 is dealt with by the caller
 * (rewound is set); transient failures start or continue an outage.
 */
static Step
failed(ListenState *st, PGconn *conn, PGresult *res, bool *rewound)
{
	Step		step = classify_failure(conn, res, rewound);

	if (step == STEP_FATAL)
		report_fatal(conn, res);
	else if (!*rewound)
		report_outage(st, conn, res, step);
	PQclear(res);
	return step;
}

/* Per connection: find the channel, LISTEN. */
static Step
setup_connection(PGconn *conn, ListenState *st)
{
	PGresult   *res;
	char	   *ident;
	PQExpBufferData sql;
	const char *channel;
	bool		rewound;

	/* NULL when this backend has not loaded the library and nothing set it */
	res = PQexec(conn,
				 "SELECT pg_catalog.current_setting('gate_bridge.events_channel', true)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return failed(st, conn, res, &rewound);
	channel = gb_value(res, 0, 0);
	if (channel == NULL || channel[0] == '\0')
		channel = "incident_events";
	snprintf(st->channel, sizeof(st->channel), "%s", channel);
	PQclear(res);

	ident = PQescapeIdentifier(conn, st->channel, strlen(st->channel));
	if (ident == NULL)
		return failed(st, conn, NULL, &rewound);
	initPQExpBuffer(&sql);
	appendPQExpBuffer(&sql, "LISTEN %s", ident);
	PQfreemem(ident);
	gb_check_buffer(&sql);
	res = PQexec(conn, sql.data);
	termPQExpBuffer(&sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return failed(st, conn, res, &rewound);
	PQclear(res);
	st->listening = true;
	return STEP_DONE;
}

/* Run a query that returns one bigint; *out receives it. */
static Step
query_position(PGconn *conn, ListenState *st, const char *sql,
			   const char *param, int64_t *out)
{
	const char *params[1] = {param};
	PGresult   *res = PQexecParams(conn, sql, param ? 1 : 0, NULL, params,
								   NULL, NULL, 0);
	bool		rewound;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return failed(st, conn, res, &rewound);
	if (PQntuples(res) != 1 || !gb_parse_id(gb_value(res, 0, 0), out))
	{
		fprintf(stderr, "%s: the server answered \"%s\" with no stream position\n",
				GB_PROGNAME, sql);
		PQclear(res);
		return STEP_FATAL;
	}
	PQclear(res);
	return STEP_DONE;
}

/*
 * The server does not hold st->last: warn, and go on from the last
 * position it holds before it.
 */
static Step
resume_after_rewind(PGconn *conn, ListenState *st)
{
	char		last[32];
	int64_t		resume;
	Step		step;

	snprintf(last, sizeof(last), "%" PRId64, st->last);
	step = query_position(conn, st, resume_query, last, &resume);
	if (step != STEP_DONE)
		return step;
	fprintf(stderr,
			"%s: warning: the event stream has no position %" PRId64 " any more: it was rewound "
			"(a failover to a standby that was behind, a crash with asynchronous commit, a restore or a TRUNCATE); "
			"continuing after position %" PRId64 ", the last one the server holds before it\n",
			GB_PROGNAME, st->last, resume);
	st->last = resume;
	return STEP_MORE;
}

/* Read and print the events after st->last. */
static Step
poll_events(PGconn *conn, ListenState *st)
{
	PGresult   *res;
	char		last[32];
	const char *params[1] = {last};
	int			col_position;
	int			col_line;
	const GBColumn columns[] = {
		{"position", &col_position}, {"line", &col_line}, {NULL, NULL}
	};
	Step		step = STEP_DONE;
	bool		rewound;
	int			n;
	int			r;

	snprintf(last, sizeof(last), "%" PRId64, st->last);
	res = PQexecParams(conn, events_query, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		step = failed(st, conn, res, &rewound);
		return rewound ? resume_after_rewind(conn, st) : step;
	}
	if (!gb_find_columns(res, columns))
	{
		PQclear(res);
		return STEP_FATAL;
	}

	n = PQntuples(res);
	for (r = 0; r < n; r++)
	{
		int64_t		position;

		if (!gb_parse_id(gb_value(res, r, col_position), &position))
		{
			fprintf(stderr, "%s: an event without a stream position\n", GB_PROGNAME);
			step = STEP_FATAL;
			break;
		}
		if (!gb_print_line(PQgetvalue(res, r, col_line)))
		{
			step = STEP_FATAL;
			break;
		}
		st->last = position;
	}
	if (step == STEP_DONE && n == BATCH)
		step = STEP_MORE;
	PQclear(res);
	return step;
}

/*
 * Wait for a notification or the timeout.  Returns false when the
 * connection broke.  Notifications only wake us up; their payloads are not
 * needed.  One that arrived while a query ran is already buffered.
 */
static bool
wait_for_wakeup(PGconn *conn, double timeout)
{
	int			sock = PQsocket(conn);
	fd_set		rfds;
	struct timeval tv;
	PGnotify   *note;
	bool		woken = false;
	int			ready;

	while ((note = PQnotifies(conn)) != NULL)
	{
		PQfreemem(note);
		woken = true;
	}
	if (woken)
		return true;
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

/* One step of the listener on a connection that is up. */
static Step
listen_step(PGconn *conn, ListenState *st)
{
	Step		step;

	/* --once reads and leaves: no LISTEN, so it also runs on a standby */
	if (!st->listening && !st->once)
	{
		step = setup_connection(conn, st);
		if (step != STEP_DONE)
			return step;
	}
	if (!st->have_start)
	{
		step = query_position(conn, st, head_query, NULL, &st->last);
		if (step != STEP_DONE)
			return step;
		st->have_start = true;
	}
	return poll_events(conn, st);
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
	{"since", OPT_SINCE, "POSITION", "start after stream position POSITION (0: from the\n"
	"beginning; default: the newest committed event)"},
	{"once", OPT_ONCE, NULL, "print the events there are, then exit"},
	{"interval", OPT_INTERVAL, "SECONDS", "poll at least this often (default 1); a\n"
	"notification wakes it up sooner"},
	{NULL, 0, NULL, NULL}
};

static int
listen_option(int key, const char *arg)
{
	switch (key)
	{
		case OPT_SINCE:
			if (!gb_parse_id(arg, &since))
				return gb_usage_error("listen", "invalid --since \"%s\": expected a stream position (0 or more)",
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
	int			rc = GB_EXIT_OK;

	memset(&st, 0, sizeof(st));
	st.last = since;
	st.have_start = have_since;
	st.once = once;
	st.delay = BACKOFF_FIRST;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;			/* no SA_RESTART: select() must return */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	watch_connection(s->conn, &st);
	while (!stop_requested)
	{
		Step		step;

		if (s->conn == NULL)
		{
			s->conn = gb_connect(s->conninfo, listen_extra, false);
			watch_connection(s->conn, &st);
			if (PQstatus(s->conn) != CONNECTION_OK)
			{
				report_outage(&st, s->conn, NULL, STEP_RECONNECT);
				step = STEP_RECONNECT;
			}
			else
				step = listen_step(s->conn, &st);
		}
		else
			step = listen_step(s->conn, &st);

		if (step == STEP_DONE || step == STEP_MORE)
		{
			st.in_outage = false;
			st.delay = BACKOFF_FIRST;
			if (step == STEP_MORE)
				continue;
			if (st.once)
				break;
			if (wait_for_wakeup(s->conn, interval))
				continue;
			report_outage(&st, s->conn, NULL, STEP_RECONNECT);
			step = STEP_RECONNECT;
		}
		if (step == STEP_FATAL)
		{
			rc = GB_EXIT_FAIL;
			break;
		}
		/* transient: wait, then the same statement or a new connection */
		if (step == STEP_RECONNECT)
		{
			PQfinish(s->conn);
			s->conn = NULL;
		}
		pause_for(st.delay);
		st.delay = gb_backoff_next(st.delay);
	}
	return rc;
}

const GBCommand gb_command_listen = {
	.name = "listen",
	.summary = "print incident events as JSON lines as they happen",
	.description =
	"Print every incident event (created, acked, resolved, ...) as one JSON line,\n"
	"in stream position (commit) order, as it commits.  Events are read with\n"
	"gate_bridge.events_after(); a notification on gate_bridge.events_channel only\n"
	"wakes it up.  Transient failures (a lost connection, a server restart, a\n"
	"standby, a deadlock, a cancelled query) are retried with backoff, and it\n"
	"goes on after the last event it printed: none is lost or repeated.",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"Each line: {\"id\",\"position\",\"event\",\"incident_id\",\"at\",\"actor\",\"kind\",\"key\",\n"
	"\"agent\",\"severity\",\"summary\",\"status\"} and \"note\" when the event has one;\n"
	"\"status\" is the incident's status after the event, \"at\" is UTC.  Give\n"
	"the last \"position\" printed to --since to go on where it stopped.\n"
	"\n"
	"For a failover, list the servers and ask for the primary:\n"
	"  -d 'host=db1,db2 dbname=app target_session_attrs=read-write'\n"
	"\n"
	"SIGINT or SIGTERM end it with exit status 0.  Exit status 1: the server\n"
	"refused a query for good (permission denied, no stream in this version);\n"
	"3: the first connection failed (later ones are retried).\n",
	.conn_extra = listen_extra,
	.option = listen_option,
	.run = listen_run,
};
