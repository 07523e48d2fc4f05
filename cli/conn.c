/*-------------------------------------------------------------------------
 *
 * conn.c
 *		Connecting to the server, running queries, reporting errors.
 *
 * The connection string is -d CONNINFO, else DATABASE_URL, else nothing
 * (libpq's PG* variables and defaults).  The client encoding is always
 * UTF8: the JSON lines are UTF-8 whatever the server's encoding.  After
 * connecting, the installed extension's version is compared with the
 * client's.
 *
 * cli/conn.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate_bridge_cli.h"

/*
 * The connection string: -d (before or after the command), else
 * DATABASE_URL, else NULL (libpq's PG* variables and defaults).  *source
 * names where it came from, for messages.
 */
const char *
gb_conninfo(const char *given, const char **source)
{
	const char *url;

	*source = "-d";
	if (given != NULL)
		return given;
	*source = "DATABASE_URL";
	url = getenv("DATABASE_URL");
	if (url != NULL && *url != '\0')
		return url;
	*source = NULL;
	return NULL;
}

/*
 * Is this a connection string libpq would misread?  libpq takes a
 * postgresql:// or postgres:// URI, or key=value settings, and anything
 * else as a database name: a DATABASE_URL meant for another program
 * ("mysql://u@h/db") would be tried as a database of that name, and
 * "http://x?a=b" would fail as bad key=value syntax.  Any other scheme is
 * therefore refused before connecting.  Only the scheme goes into the
 * message: the rest may hold a password.
 */
bool
gb_conninfo_problem(const char *conninfo, const char *source, char *msg,
					size_t len)
{
	size_t		n;

	if (conninfo == NULL)
		return false;
	/* RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
	n = strspn(conninfo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
	if (n == 0 || !isalpha((unsigned char) conninfo[0]) ||
		strncmp(conninfo + n, "://", 3) != 0)
		return false;
	if ((n == 10 && strncmp(conninfo, "postgresql", n) == 0) ||
		(n == 8 && strncmp(conninfo, "postgres", n) == 0))
		return false;
	if ((n == 10 && strncasecmp(conninfo, "postgresql", n) == 0) ||
		(n == 8 && strncasecmp(conninfo, "postgres", n) == 0))
		snprintf(msg, len,
				 "%s starts with \"%.*s://\": write the scheme in lower case, postgresql:// or postgres://",
				 source, (int) n, conninfo);
	else
		snprintf(msg, len,
				 "%s is a \"%.*s://\" URL, not a PostgreSQL one: expected a postgresql:// or postgres:// URL, or key=value settings such as \"host=db1 dbname=app\"",
				 source, (int) n, conninfo);
	return true;
}

/*
 * Was a connection asked for, rather than left to libpq's defaults?  (For
 * --version, which asks the server only then.)
 */
bool
gb_connection_configured(const char *given)
{
	static const char *const vars[] = {
		"DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE",
		"PGUSER", "PGSERVICE"
	};
	size_t		i;

	if (given != NULL)
		return true;
	for (i = 0; i < lengthof(vars); i++)
	{
		const char *v = getenv(vars[i]);

		if (v != NULL && *v != '\0')
			return true;
	}
	return false;
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

/*
 * An interval from the command line: given as the user wrote it, interval
 * as it goes to the server, what names it in messages ("--lookback",
 * "DURATION"), and noun says what it is ("window").  The server parses it,
 * and it must be longer than zero; anything else is a usage error of cmd.
 * Returns GB_EXIT_OK, or the exit status of a failure, already reported.
 */
int
gb_check_interval(PGconn *conn, const char *cmd, const char *what,
				  const char *given, const char *interval, const char *noun)
{
	const char *params[1] = {interval};
	PGresult   *res;
	const char *msg;
	int			rc = GB_EXIT_OK;

	res = PQexecParams(conn,
					   "SELECT $1::pg_catalog.interval > '0'::pg_catalog.interval",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (gb_connection_lost(conn))
		{
			gb_report_result_error(conn, res);
			rc = GB_EXIT_CONNECT;
		}
		else
		{
			msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
			rc = gb_usage_error(cmd, "invalid %s \"%s\": %s", what, given,
								msg ? msg : PQerrorMessage(conn));
		}
	}
	else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		rc = gb_usage_error(cmd, "invalid %s \"%s\": the %s must be longer than zero",
							what, given, noun);
	PQclear(res);
	return rc;
}

/*
 * The version of the extension installed in the connected database
 * (*installed false when there is none).  Returns GB_EXIT_OK, or the exit
 * status of a failure, already reported.
 */
int
gb_extension_version(PGconn *conn, char *version, size_t len, bool *installed)
{
	const char *params[1] = {GB_EXTENSION};
	int			rc = GB_EXIT_OK;
	PGresult   *res;

	res = gb_exec(conn,
				  "SELECT e.extversion FROM pg_catalog.pg_extension e"
				  " WHERE e.extname = $1::pg_catalog.name",
				  1, params, &rc);
	if (res == NULL)
		return rc;
	*installed = PQntuples(res) == 1;
	snprintf(version, len, "%s", *installed ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);
	return GB_EXIT_OK;
}

/*
 * A client and an extension of different versions mostly work together,
 * but not always (a function that changed its result columns): say so,
 * once per run, whatever the command does after it.
 */
void
gb_warn_version_mismatch(PGconn *conn, const char *version)
{
	static bool warned = false;
	char		where[512];

	if (warned || strcmp(version, GB_CLI_VERSION) == 0)
		return;
	warned = true;
	gb_describe_server(conn, where, sizeof(where));
	fprintf(stderr,
			"%s: warning: this %s is version %s, but the %s extension in %s is version %s\n"
			"HINT:  Some commands may fail.  Update the extension (ALTER EXTENSION %s UPDATE) or use the %s built with version %s.\n",
			GB_PROGNAME, GB_PROGNAME, GB_CLI_VERSION, GB_EXTENSION, where, version,
			GB_EXTENSION, GB_PROGNAME, version);
}

/*
 * Find the columns a command reads by their names.  The queries name every
 * column, so a missing one means this client and the server's objects do
 * not fit together; say which.
 */
bool
gb_find_columns(const PGresult *res, const GBColumn *columns)
{
	for (; columns->name != NULL; columns++)
	{
		*columns->col = PQfnumber(res, columns->name);
		if (*columns->col < 0)
		{
			fprintf(stderr, "%s: the server's result has no column \"%s\"\n",
					GB_PROGNAME, columns->name);
			return false;
		}
	}
	return true;
}

/* A column's text, or NULL for SQL NULL. */
const char *
gb_value(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return PQgetvalue(res, row, col);
}
