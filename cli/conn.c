/*-------------------------------------------------------------------------
 *
 * conn.c
 *		Connecting to the server, running queries, reporting errors.
 *
 * The connection string is -d CONNINFO, else DATABASE_URL, else nothing
 * (libpq's PG* variables and defaults).  The client encoding is always
 * UTF8: the JSON lines are UTF-8 whatever the server's encoding.
 *
 * cli/conn.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <stdlib.h>
#include <string.h>

/* -d given to the subcommand, else -d given before it, else DATABASE_URL. */
const char *
gb_conninfo(const GBGlobal *g, const char *local)
{
	const char *url;

	if (local != NULL)
		return local;
	if (g->conninfo != NULL)
		return g->conninfo;
	url = getenv("DATABASE_URL");
	if (url != NULL && *url != '\0')
		return url;
	return NULL;
}

/*
 * Connect.  extra holds settings the caller wants unless the connection
 * string says otherwise (so they come before "dbname", which libpq expands
 * in place).  On failure, the error is printed when report is set, and the
 * dead connection is returned all the same so that the caller can describe
 * it; check PQstatus().
 */
PGconn *
gb_connect(const char *conninfo, const GBConnExtra *extra, bool report)
{
	const char *keywords[16];
	const char *values[16];
	int			n = 0;
	PGconn	   *conn;

	for (; extra != NULL && extra->keyword != NULL && n < 10; extra++)
	{
		keywords[n] = extra->keyword;
		values[n] = extra->value;
		n++;
	}
	keywords[n] = "fallback_application_name";
	values[n++] = GB_PROGNAME;
	if (conninfo != NULL)
	{
		keywords[n] = "dbname";
		values[n++] = conninfo;
	}
	keywords[n] = "client_encoding";
	values[n++] = "UTF8";
	keywords[n] = NULL;
	values[n] = NULL;

	conn = PQconnectdbParams(keywords, values, 1);
	if (conn == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
	if (PQstatus(conn) != CONNECTION_OK && report)
		gb_report_connect_failure(conn);
	return conn;
}

/* The value libpq settled on for a connection option, or NULL. */
static const char *
option_value(PQconninfoOption *opts, const char *keyword)
{
	PQconninfoOption *o;

	for (o = opts; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, keyword) == 0 && o->val != NULL && o->val[0] != '\0')
			return o->val;
	return NULL;
}

/*
 * "database "app" on host "db1" port 5432": what we tried to reach (or
 * reached).  PQhost() and friends answer for the host libpq last tried;
 * where they have nothing, the connection's options and libpq's defaults
 * say what was meant.
 */
void
gb_describe_server(PGconn *conn, char *buf, size_t len)
{
	PQconninfoOption *opts = PQconninfo(conn);
	const char *host = PQhost(conn);
	const char *port = PQport(conn);
	const char *db = PQdb(conn);

	if (host == NULL || host[0] == '\0')
		host = option_value(opts, "host");
	if (host == NULL)
		host = option_value(opts, "hostaddr");
	if (port == NULL || port[0] == '\0')
		port = option_value(opts, "port");
	if (db == NULL || db[0] == '\0')
		db = option_value(opts, "dbname");

	snprintf(buf, len, "database \"%s\" on %s \"%s\" port %s",
			 db ? db : "(default)",
			 host && host[0] == '/' ? "socket" : "host",
			 host ? host : "(default)",
			 port ? port : "(default)");
	if (opts)
		PQconninfoFree(opts);
}

/* libpq's messages end with a newline; ours add their own. */
static void
print_trimmed(FILE *out, const char *msg)
{
	size_t		len = strlen(msg);

	while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		len--;
	fprintf(out, "%.*s", (int) len, msg);
}

void
gb_report_connect_failure(PGconn *conn)
{
	char		where[512];

	gb_describe_server(conn, where, sizeof(where));
	fprintf(stderr, "%s: could not connect to %s: ", GB_PROGNAME, where);
	print_trimmed(stderr, PQerrorMessage(conn));
	fputc('\n', stderr);
}

bool
gb_connection_lost(PGconn *conn)
{
	return PQstatus(conn) == CONNECTION_BAD;
}

/*
 * Print a failed query's error as the server phrased it: the message, then
 * DETAIL and HINT lines when the server gave them.
 */
void
gb_report_result_error(PGconn *conn, const PGresult *res)
{
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *detail;
	const char *hint;

	if (gb_connection_lost(conn))
	{
		char		where[512];

		gb_describe_server(conn, where, sizeof(where));
		fprintf(stderr, "%s: lost the connection to %s: ", GB_PROGNAME, where);
		print_trimmed(stderr, PQerrorMessage(conn));
		fputc('\n', stderr);
		return;
	}
	if (primary == NULL)
	{
		fprintf(stderr, "%s: ", GB_PROGNAME);
		print_trimmed(stderr, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		fputc('\n', stderr);
		return;
	}
	fprintf(stderr, "%s: %s\n", GB_PROGNAME, primary);
	detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	if (detail)
		fprintf(stderr, "DETAIL:  %s\n", detail);
	if (hint)
		fprintf(stderr, "HINT:  %s\n", hint);
}

/*
 * Run one statement with text parameters (NULL pointers are SQL NULLs).
 * Returns the result, or NULL after printing the error; *exit_code then
 * says whether the connection broke (GB_EXIT_CONNECT) or the server refused
 * the statement (GB_EXIT_FAIL).
 */
PGresult *
gb_exec(PGconn *conn, const char *sql, int nparams,
		const char *const *params, int *exit_code)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params,
								   NULL, NULL, 0);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	gb_report_result_error(conn, res);
	if (exit_code)
		*exit_code = gb_connection_lost(conn) ? GB_EXIT_CONNECT : GB_EXIT_FAIL;
	PQclear(res);
	return NULL;
}

/* A column's text, or NULL for SQL NULL. */
const char *
gb_value(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return PQgetvalue(res, row, col);
}
