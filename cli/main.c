/*-------------------------------------------------------------------------
 *
 * main.c
 *		gate-bridge: the command line of the gate_bridge extension.
 *
 *	gate-bridge [-d CONNINFO] COMMAND [OPTIONS]
 *
 * Global options come before the command; -d is also accepted after it.
 * The commands are in the table below; command.c runs them.
 *
 * cli/main.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <getopt.h>
#include <string.h>

#include "gate_bridge_cli.h"

static const GBCommand *const commands[] = {
	&gb_command_run_gates,
	&gb_command_listen,
	&gb_command_incidents,
	&gb_command_ack,
	&gb_command_resolve,
	&gb_command_snooze,
	&gb_command_silence,
	&gb_command_unsilence,
	&gb_command_silences,
	&gb_command_deliveries,
	&gb_command_redeliver,
	&gb_command_serve,
	&gb_command_deliver,
};

#define NCOMMANDS ((int) lengthof(commands))

/* gives an unreachable server a few seconds, not libpq's unlimited wait */
static const GBConnExtra version_extra[] = {
	{"connect_timeout", "5"},
	{NULL, NULL}
};

static void
help(FILE *out)
{
	int			i;

	fprintf(out,
			"%s turns the gate_bridge extension's incidents and gates into commands.\n"
			"\n"
			"Usage:\n"
			"  %s [-d CONNINFO] COMMAND [OPTIONS]\n"
			"  %s help COMMAND\n"
			"\n"
			"Commands:\n", GB_PROGNAME, GB_PROGNAME, GB_PROGNAME);
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-11s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out,
			"\n"
			"Options:\n"
			"  -d, --dbname=CONNINFO  connection string or URI (also accepted after COMMAND)\n"
			"  -h, --help             show this help, then exit\n"
			"  -V, --version          show the version, then exit; with a connection given\n"
			"                         (-d, DATABASE_URL, PGHOST, PGDATABASE, ...) also the\n"
			"                         version of the extension installed there\n"
			"\n"
			"Connection: -d CONNINFO, else $DATABASE_URL, else libpq's PGHOST, PGPORT,\n"
			"PGDATABASE, PGUSER, ... and defaults.  CONNINFO and DATABASE_URL are a\n"
			"postgresql:// (or postgres://) URL or key=value settings.  The client\n"
			"encoding is always UTF8.  When the database's gate_bridge extension is not\n"
			"version %s, a warning says so.\n"
			"\n"
			"Exit status:\n"
			"  0   success; run-gates: every gate passed (or warnings only)\n"
			"  1   run-gates: a critical or error violation; other commands: the server\n"
			"      refused the request (its message is printed), or the database has no\n"
			"      gate_bridge extension\n"
			"  2   run-gates: warnings only, and --fail-on-warning was given\n"
			"  3   could not connect to the server, or the connection broke\n"
			"  64  bad command line (unknown option, bad value) or bad environment\n"
			"      (a DATABASE_URL that is not a PostgreSQL URL, say)\n"
			"\n"
			"Run \"%s COMMAND --help\" for a command's options.\n",
			GB_CLI_VERSION, GB_PROGNAME);
}

static const GBCommand *
find_command(const char *name)
{
	int			i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

/*
 * --version: the client's version, and, when a connection is given, the
 * version of the extension installed there.  The client's version is the
 * answer asked for, so the exit status is 0 even when the server cannot
 * tell; what kept it from telling goes to stderr.
 */
static int
show_version(const char *given)
{
	const char *conninfo;
	const char *source;
	char		problem[512];
	char		where[512];
	char		version[64];
	bool		installed;
	PGconn	   *conn;

	printf("%s %s\n", GB_PROGNAME, GB_CLI_VERSION);
	if (fflush(stdout) == EOF)
		return GB_EXIT_FAIL;
	if (!gb_connection_configured(given))
		return GB_EXIT_OK;

	conninfo = gb_conninfo(given, &source);
	if (gb_conninfo_problem(conninfo, source, problem, sizeof(problem)))
	{
		fprintf(stderr, "%s: not asking a server for its version: %s\n",
				GB_PROGNAME, problem);
		return GB_EXIT_OK;
	}
	conn = gb_connect(conninfo, version_extra, true);
	if (PQstatus(conn) == CONNECTION_OK &&
		gb_extension_version(conn, version, sizeof(version), &installed) == GB_EXIT_OK)
	{
		gb_describe_server(conn, where, sizeof(where));
		if (installed)
			printf("extension %s %s in %s\n", GB_EXTENSION, version, where);
		else
			printf("extension %s is not installed in %s\n", GB_EXTENSION, where);
		if (fflush(stdout) == EOF)
		{
			PQfinish(conn);
			return GB_EXIT_FAIL;
		}
		if (installed)
			gb_warn_version_mismatch(conn, version);
	}
	PQfinish(conn);
	return GB_EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	const char *conninfo = NULL;
	const GBCommand *cmd;
	bool		version = false;
	int			c;

	argv[0] = GB_PROGNAME;
	/* "+": stop at the command; its options are its own */
	while ((c = getopt_long(argc, argv, "+d:hV", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'h':
				help(stdout);
				return GB_EXIT_OK;
			case 'V':
				version = true;	/* after the other options: -V -d X */
				break;
			default:
				return gb_bad_option(NULL);
		}
	}
	if (version)
	{
		if (optind < argc)
			return gb_usage_error(NULL, "--version takes no command");
		return show_version(conninfo);
	}

	if (optind >= argc)
		return gb_usage_error(NULL, "no command given");

	if (strcmp(argv[optind], "help") == 0)
	{
		if (optind + 1 >= argc)
		{
			help(stdout);
			return GB_EXIT_OK;
		}
		if (optind + 2 < argc)
			return gb_usage_error(NULL, "help takes one command name");
		cmd = find_command(argv[optind + 1]);
		if (cmd == NULL)
			return gb_usage_error(NULL, "unknown command \"%s\"", argv[optind + 1]);
		gb_command_help(cmd, stdout);
		return GB_EXIT_OK;
	}

	cmd = find_command(argv[optind]);
	if (cmd == NULL)
		return gb_usage_error(NULL, "unknown command \"%s\"", argv[optind]);
	return gb_run_command(cmd, argc - optind, argv + optind, conninfo);
}
