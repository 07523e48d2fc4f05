/*-------------------------------------------------------------------------
 *
 * gate_bridge_cli.h
 *		Shared declarations of the gate-bridge command line.
 *
 * The command line talks to the extension through libpq only: every value
 * goes to the server as a query parameter, and every JSON line it prints is
 * built with the small encoder in json.c.
 *
 * cli/gate_bridge_cli.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_CLI_H
#define GATE_BRIDGE_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "libpq-fe.h"

#ifndef GB_CLI_VERSION
#define GB_CLI_VERSION "1.0"
#endif

#define GB_PROGNAME "gate-bridge"

/*
 * Exit statuses.  They are listed in "gate-bridge --help"; keep the two in
 * step.  2 belongs to run-gates (warnings only, with --fail-on-warning), so
 * usage errors take 64, sysexits.h's EX_USAGE.
 */
#define GB_EXIT_OK			0	/* success; run-gates: no failing gate */
#define GB_EXIT_FAIL		1	/* a gate failed, or the server refused */
#define GB_EXIT_WARN		2	/* run-gates: warnings only, --fail-on-warning */
#define GB_EXIT_CONNECT		3	/* could not connect, or the connection broke */
#define GB_EXIT_USAGE		64	/* bad command line or environment */

/* Options that come before the subcommand. */
typedef struct GBGlobal
{
	const char *conninfo;		/* -d, or NULL */
} GBGlobal;

/* Subcommands: argv[0] is the subcommand's name. */
extern int	gb_cmd_run_gates(int argc, char **argv, const GBGlobal *g);
extern int	gb_cmd_listen(int argc, char **argv, const GBGlobal *g);
extern int	gb_cmd_incidents(int argc, char **argv, const GBGlobal *g);
extern int	gb_cmd_ack(int argc, char **argv, const GBGlobal *g);
extern int	gb_cmd_resolve(int argc, char **argv, const GBGlobal *g);

/* options.c: argument parsing shared by the subcommands */
extern char **gb_subcommand_argv(int argc, char **argv);
extern void gb_getopt_reset(void);
extern int	gb_usage_error(const char *cmd, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern int	gb_bad_option(const char *cmd);
extern bool gb_parse_id(const char *s, int64_t *out);
extern bool gb_parse_seconds(const char *s, double *out);
extern bool gb_lookback_to_interval(const char *s, char *out, size_t outlen);
extern int	gb_env_interventions_enabled(const char **value);

/* conn.c: connecting, running queries, reporting errors */
typedef struct GBConnExtra
{
	const char *keyword;
	const char *value;
} GBConnExtra;

extern const char *gb_conninfo(const GBGlobal *g, const char *local);
extern PGconn *gb_connect(const char *conninfo, const GBConnExtra *extra,
						  bool report);
extern void gb_report_connect_failure(PGconn *conn);
extern void gb_describe_server(PGconn *conn, char *buf, size_t len);
extern PGresult *gb_exec(PGconn *conn, const char *sql, int nparams,
						 const char *const *params, int *exit_code);
extern void gb_report_result_error(PGconn *conn, const PGresult *res);
extern bool gb_connection_lost(PGconn *conn);
extern const char *gb_value(const PGresult *res, int row, int col);

/* json.c: a growable buffer and a JSON encoder writing into it */
typedef struct GBBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} GBBuf;

extern void gb_buf_init(GBBuf *b);
extern void gb_buf_free(GBBuf *b);
extern void gb_buf_reset(GBBuf *b);
extern void gb_buf_putc(GBBuf *b, char c);
extern void gb_buf_append(GBBuf *b, const char *s, size_t n);
extern void gb_buf_puts(GBBuf *b, const char *s);
extern void gb_buf_printf(GBBuf *b, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

#define GB_JSON_MAX_DEPTH 32

typedef struct GBJson
{
	GBBuf	   *buf;
	int			depth;
	bool		after_key;
	bool		first[GB_JSON_MAX_DEPTH];
} GBJson;

extern void gb_json_init(GBJson *j, GBBuf *buf);
extern void gb_json_object_begin(GBJson *j);
extern void gb_json_object_end(GBJson *j);
extern void gb_json_array_begin(GBJson *j);
extern void gb_json_array_end(GBJson *j);
extern void gb_json_key(GBJson *j, const char *key);
extern void gb_json_string(GBJson *j, const char *s);
extern void gb_json_int(GBJson *j, int64_t v);
extern void gb_json_bool(GBJson *j, bool v);
extern void gb_json_null(GBJson *j);
extern bool gb_json_number_text(GBJson *j, const char *text);
extern bool gb_json_is_number(const char *text);
extern void gb_json_escape(GBBuf *b, const char *s);
extern bool gb_write_line(GBBuf *b);

/* text.c: plain-text output helpers */
extern bool gb_parse_text_array(const char *lit, char ***elems, int *nelems);
extern void gb_free_text_array(char **elems, int nelems);
extern void gb_print_sanitized(FILE *out, const char *s);
extern int	gb_display_width(const char *s);
extern void gb_print_padded(FILE *out, const char *s, int width);
extern void gb_format_number(const char *text, char *out, size_t outlen);

#endif							/* GATE_BRIDGE_CLI_H */
