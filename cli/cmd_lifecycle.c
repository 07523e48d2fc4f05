/*-------------------------------------------------------------------------
 *
 * cmd_lifecycle.c
 *		gate-bridge ack ID, gate-bridge resolve ID [--note TEXT].
 *
 * Both go through gate_bridge.ack() and gate_bridge.resolve(), which check
 * the move and write the timeline; a refused move (unknown id, already
 * resolved, ...) is printed with the server's message and exits 1.
 *
 * cli/cmd_lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void
help_ack(FILE *out)
{
	fprintf(out,
			"Acknowledge an open incident.\n"
			"\n"
			"Usage:\n"
			"  %s ack [OPTIONS] ID\n"
			"\n"
			"Options:\n"
			"      --actor=NAME       who acknowledges (default: the database user)\n"
			"  -d, --dbname=CONNINFO  connection string or URI\n"
			"  -h, --help             show this help, then exit\n"
			"\n"
			"Exit status: 0 acknowledged; 1 the server refused (unknown id, not open);\n"
			"3 connection failure; 64 bad command line.\n", GB_PROGNAME);
}

static void
help_resolve(FILE *out)
{
	fprintf(out,
			"Resolve an open or acknowledged incident.  A resolved incident is final;\n"
			"the next violation for its key opens a new one.\n"
			"\n"
			"Usage:\n"
			"  %s resolve [OPTIONS] ID\n"
			"\n"
			"Options:\n"
			"  -n, --note=TEXT        resolution note\n"
			"      --actor=NAME       who resolves (default: the database user)\n"
			"  -d, --dbname=CONNINFO  connection string or URI\n"
			"  -h, --help             show this help, then exit\n"
			"\n"
			"Exit status: 0 resolved; 1 the server refused (unknown id, already\n"
			"resolved); 3 connection failure; 64 bad command line.\n", GB_PROGNAME);
}

static int
lifecycle(int argc, char **argv, const GBGlobal *g, bool resolve)
{
	static const struct option longopts[] = {
		{"note", required_argument, NULL, 'n'},
		{"actor", required_argument, NULL, 'a'},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *cmd = resolve ? "resolve" : "ack";
	const char *conninfo = NULL;
	const char *note = NULL;
	const char *actor = NULL;
	const char *params[3];
	char	  **av = gb_subcommand_argv(argc, argv);
	int64_t		id;
	PGconn	   *conn;
	PGresult   *res;
	int			rc = GB_EXIT_OK;
	int			c;

	while ((c = getopt_long(argc, av, resolve ? "n:d:h" : "d:h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'n':
				if (!resolve)
					return gb_usage_error(cmd, "--note is only for resolve");
				note = optarg;
				break;
			case 'a':
				if (optarg[0] == '\0')
					return gb_usage_error(cmd, "--actor must not be empty");
				actor = optarg;
				break;
			case 'd':
				conninfo = optarg;
				break;
			case 'h':
				(resolve ? help_resolve : help_ack) (stdout);
				return GB_EXIT_OK;
			default:
				return gb_bad_option(cmd);
		}
	}
	if (optind >= argc)
		return gb_usage_error(cmd, "missing incident ID");
	if (optind + 1 < argc)
		return gb_usage_error(cmd, "unexpected argument \"%s\"", av[optind + 1]);
	if (!gb_parse_id(av[optind], &id) || id == 0)
		return gb_usage_error(cmd, "invalid incident ID \"%s\": expected a positive integer",
							  av[optind]);

	conn = gb_connect(gb_conninfo(g, conninfo), NULL, true);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		PQfinish(conn);
		return GB_EXIT_CONNECT;
	}

	params[0] = av[optind];
	params[1] = actor;
	params[2] = note;
	if (resolve)
		res = gb_exec(conn,
					  "SELECT gate_bridge.resolve($1::pg_catalog.int8,"
					  " COALESCE($2::pg_catalog.text, CURRENT_USER::pg_catalog.text),"
					  " $3::pg_catalog.text)",
					  3, params, &rc);
	else
		res = gb_exec(conn,
					  "SELECT gate_bridge.ack($1::pg_catalog.int8,"
					  " COALESCE($2::pg_catalog.text, CURRENT_USER::pg_catalog.text))",
					  2, params, &rc);
	if (res == NULL)
	{
		PQfinish(conn);
		return rc;
	}
	PQclear(res);

	/* Name the incident in the confirmation when we may read it. */
	res = PQexecParams(conn,
					   "SELECT i.key FROM gate_bridge.incidents i"
					   " WHERE i.id = $1::pg_catalog.int8",
					   1, NULL, params, NULL, NULL, 0);
	printf("Incident %" PRId64 " %s", id, resolve ? "resolved" : "acknowledged");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		printf(" (");
		gb_print_sanitized(stdout, PQgetvalue(res, 0, 0));
		printf(")");
	}
	printf(".\n");
	PQclear(res);
	PQfinish(conn);
	return GB_EXIT_OK;
}

int
gb_cmd_ack(int argc, char **argv, const GBGlobal *g)
{
	return lifecycle(argc, argv, g, false);
}

int
gb_cmd_resolve(int argc, char **argv, const GBGlobal *g)
{
	return lifecycle(argc, argv, g, true);
}
