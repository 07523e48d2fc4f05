/*-------------------------------------------------------------------------
 *
 * gate_bridge_cli.h
 *		Shared declarations of the gate-bridge command line.
 *
 * The command line talks to the extension through libpq only: every value
 * goes to the server as a query parameter, and every JSON line it prints is
 * rendered by the server (row_to_json) and printed as received.
 *
 * Each command is a GBCommand: its options, its checks before connecting,
 * and what it does once connected.  command.c parses the command line,
 * prints --help, connects and reports failures the same way for all of
 * them.
 *
 * cli/gate_bridge_cli.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_CLI_H
#define GATE_BRIDGE_CLI_H

/* postgres_fe.h comes first, in each file, as in PostgreSQL's own programs */
#include "libpq-fe.h"
#include "pqexpbuffer.h"

/*
 * One version number: the Makefile passes the control file's
 * default_version, so the client is always the version of the extension it
 * was built with.
 */
#ifndef GB_CLI_VERSION
#error "GB_CLI_VERSION is not defined: build gate-bridge with make, which takes it from gate_bridge.control"
#endif

#define GB_PROGNAME "gate-bridge"
#define GB_EXTENSION "gate_bridge"

/*
 * Exit statuses.  They are listed in "gate-bridge --help"; keep the two in
 * step.  2 belongs to run-gates (warnings only, with --fail-on-warning), so
 * usage errors take 64, sysexits.h's EX_USAGE.
 */
#define GB_EXIT_OK			0	/* success; run-gates: no failing gate */
#define GB_EXIT_FAIL		1	/* a gate failed, or the server refused */
#define GB_EXIT_WARN		2	/* run-gates: warnings only, --fail-on-warning */
#define GB_EXIT_CONNECT		3	/* could not connect, or the connection broke */
#define GB_EXIT_UNJUDGED	4	/* run-gates: a gate had too little to judge */
#define GB_EXIT_USAGE		64	/* bad command line or environment */

/*
 * SQL: a timestamptz column as UTC text, 2026-12-03T07:00:00Z, the way the
 * tables and JSON lines show times
 */
#define GB_SQL_UTC(col) "pg_catalog.to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/*
 * The event stream as listen and serve read it: the events after a
 * position, each with its JSON line.  In the fields, e is the event and i
 * its incident; "note" is added when the event has one.  One statement, so
 * one snapshot serves events_after() (a STABLE function) and the join.
 */
#define GB_EVENTS_BATCH 500
#define GB_EVENT_FIELDS \
"e.id, e.position, e.event, e.incident_id," \
" pg_catalog.to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS at," \
" e.actor, i.kind, i.key, i.agent, i.severity, i.summary," \
" CASE e.event WHEN 'created' THEN 'open' WHEN 'acked' THEN 'ack'" \
"              WHEN 'resolved' THEN 'resolved' ELSE i.status END AS status"
#define GB_EVENTS_QUERY(fields) \
"SELECT e.position, e.event, e.incident_id," \
"       CASE WHEN e.detail->>'note' IS NULL" \
"            THEN (SELECT pg_catalog.row_to_json(l) FROM (SELECT " fields ") AS l)" \
"            ELSE (SELECT pg_catalog.row_to_json(l)" \
"                    FROM (SELECT " fields ", e.detail->>'note' AS note) AS l)" \
"       END::pg_catalog.text AS line" \
"  FROM gate_bridge.events_after($1::pg_catalog.int8, 500) AS e" \
"  JOIN gate_bridge.incidents i ON i.id = e.incident_id" \
" ORDER BY e.position"

/* A connection setting a command wants unless the connection string says otherwise. */
typedef struct GBConnExtra
{
	const char *keyword;
	const char *value;
} GBConnExtra;

/*
 * One option of a command, for getopt_long and for --help.  key is the
 * short option's letter, or GB_LONG_ONLY + n for an option that has only a
 * long name.  Every command also takes -d/--dbname and -h/--help, which the
 * skeleton adds; their letters are taken.
 */
typedef struct GBOption
{
	const char *name;			/* long name, without "--" */
	int			key;
	const char *arg;			/* the argument's name in --help, or NULL
								 * for an option without an argument */
	const char *help;			/* --help text ("\n" continues it on the
								 * next line), or NULL: not listed */
} GBOption;

#define GB_LONG_ONLY 256

/* the most arguments a command takes after its options */
#define GB_MAX_OPERANDS 2

typedef struct GBCommand GBCommand;

/* What a command works with once it is connected. */
typedef struct GBSession
{
	const GBCommand *cmd;
	const char *conninfo;		/* what was connected to; NULL for libpq's
								 * defaults */
	PGconn	   *conn;			/* the command may replace it (listen
								 * reconnects) or set it to NULL */
} GBSession;

struct GBCommand
{
	const char *name;
	const char *summary;		/* one line in "gate-bridge --help" */
	const char *description;	/* the first paragraph of its --help */
	const char *synopsis;		/* after "gate-bridge NAME " in --help */
	const GBOption *options;	/* ends with an entry whose name is NULL */

	/*
	 * the arguments it takes after its options, each required, in order
	 * ("incident ID", "DURATION"); NULL after the last
	 */
	const char *operands[GB_MAX_OPERANDS];
	const char *help_tail;		/* --help after the options: environment,
								 * output, exit status */
	const GBConnExtra *conn_extra;	/* or NULL */

	/* one option from the command line: GB_EXIT_OK or a usage error */
	int			(*option) (int key, const char *arg);
	/*
	 * after the options, before connecting (or NULL): the operands (as many
	 * as operands names, then NULL), the environment
	 */
	int			(*prepare) (const char *const *operands);
	/* connected: returns the exit status */
	int			(*run) (GBSession *s);
};

extern const GBCommand gb_command_run_gates;
extern const GBCommand gb_command_listen;
extern const GBCommand gb_command_incidents;
extern const GBCommand gb_command_ack;
extern const GBCommand gb_command_resolve;
extern const GBCommand gb_command_snooze;
extern const GBCommand gb_command_silence;
extern const GBCommand gb_command_unsilence;
extern const GBCommand gb_command_silences;
extern const GBCommand gb_command_serve;
extern const GBCommand gb_command_deliver;
extern const GBCommand gb_command_deliveries;
extern const GBCommand gb_command_redeliver;

/* command.c: the skeleton every command runs in */
extern int	gb_run_command(const GBCommand *cmd, int argc, char **argv,
						   const char *global_conninfo);
extern void gb_command_help(const GBCommand *cmd, FILE *out);
extern int	gb_usage_error(const char *cmd, const char *fmt,...)
			pg_attribute_printf(2, 3);
extern int	gb_bad_option(const char *cmd);

/* options.c: parsing values of options and of the environment */
extern bool gb_parse_id(const char *s, int64_t *out);
extern bool gb_parse_seconds(const char *s, double *out);
extern bool gb_parse_int(const char *s, int min, int max, int *out);
extern bool gb_lookback_to_interval(const char *s, char *out, size_t outlen);
extern int	gb_env_interventions_enabled(const char **value);

/* conn.c: connecting, running queries, reporting errors */
extern const char *gb_conninfo(const char *given, const char **source);
extern bool gb_conninfo_problem(const char *conninfo, const char *source,
								char *msg, size_t len);
extern bool gb_connection_configured(const char *given);
extern PGconn *gb_connect(const char *conninfo, const GBConnExtra *extra,
						  bool report);
extern void gb_report_connect_failure(PGconn *conn);
extern void gb_describe_server(PGconn *conn, char *buf, size_t len);
extern int	gb_extension_version(PGconn *conn, char *version, size_t len,
								 bool *installed);
extern void gb_warn_version_mismatch(PGconn *conn, const char *version);
extern int	gb_check_interval(PGconn *conn, const char *cmd, const char *what,
							  const char *given, const char *interval,
							  const char *noun);
extern PGresult *gb_exec(PGconn *conn, const char *sql, int nparams,
						 const char *const *params, int *exit_code);
extern void gb_report_result_error(PGconn *conn, const PGresult *res);
extern bool gb_connection_lost(PGconn *conn);
extern const char *gb_value(const PGresult *res, int row, int col);

/* A result column a command reads, found by its name. */
typedef struct GBColumn
{
	const char *name;
	int		   *col;
} GBColumn;

extern bool gb_find_columns(const PGresult *res, const GBColumn *columns);

/* retry.c: what cures a failed statement, and the backoff between tries */
typedef enum
{
	GB_FAILURE_RECONNECT,		/* a new connection, later */
	GB_FAILURE_RETRY,			/* the same statement again, later */
	GB_FAILURE_REWOUND,			/* SR001: the stream no longer holds a position */
	GB_FAILURE_FATAL			/* for good */
} GBFailure;

#define GB_BACKOFF_FIRST	0.25
#define GB_BACKOFF_MAX		10.0
#define GB_BACKOFF_TEXT		"0.25 s doubling to 10 s"

extern GBFailure gb_classify_failure(PGconn *conn, const PGresult *res);
extern double gb_backoff_next(double delay);
extern void gb_first_line(const char *msg, char *out, size_t outlen);

/* text.c: output */
extern void gb_print_sanitized(FILE *out, const char *s);
extern int	gb_display_width(const char *s);
extern void gb_print_padded(FILE *out, const char *s, int width);
extern void gb_print_table(const PGresult *res, const char *const *titles,
						   const int *col, int ncols);
extern int	gb_print_listing(PGconn *conn, const char *sql, int nparams,
							 const char *const *params, const GBColumn *columns,
							 const char *const *titles, const int *col, int ncols,
							 const int *line, bool json, const char *one,
							 const char *many);
extern void gb_format_number(const char *text, char *out, size_t outlen);
extern bool gb_print_line(const char *line);
extern void gb_check_buffer(PQExpBuffer buf);
extern void gb_log_line(const char *who, const char *msg);

#endif							/* GATE_BRIDGE_CLI_H */
