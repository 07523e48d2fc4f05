/*-------------------------------------------------------------------------
 *
 * main.c
 *		gate-bridge: the command line of the gate_bridge extension.
 *
 *	gate-bridge [-d CONNINFO] COMMAND [OPTIONS]
 *
 * Global options come before the command; -d is also accepted after it.
 * Each command parses its own options with getopt_long.
 *
 * cli/main.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <getopt.h>
#include <string.h>

typedef struct GBCommand
{
	const char *name;
	int			(*run) (int argc, char **argv, const GBGlobal *g);
	const char *summary;
} GBCommand;

static const GBCommand commands[] = {
	{"run-gates", gb_cmd_run_gates,
	"evaluate every agent's budgets over a lookback window"},
	{"listen", gb_cmd_listen,
	"print incident events as JSON lines as they happen"},
	{"incidents", gb_cmd_incidents,
	"list incidents"},
	{"ack", gb_cmd_ack,
	"acknowledge an open incident"},
	{"resolve", gb_cmd_resolve,
	"resolve an open or acknowledged incident"},
};

#define NCOMMANDS ((int) (sizeof(commands) / sizeof(commands[0])))

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
		fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
			"\n"
			"Options:\n"
			"  -d, --dbname=CONNINFO  connection string or URI (also accepted after COMMAND)\n"
			"  -h, --help             show this help, then exit\n"
			"  -V, --version          show the version, then exit\n"
			"\n"
			"Connection: -d CONNINFO, else $DATABASE_URL, else libpq's PGHOST, PGPORT,\n"
			"PGDATABASE, PGUSER, ... and defaults.  The client encoding is always UTF8.\n"
			"\n"
			"Exit status:\n"
			"  0   success; run-gates: every gate passed (or warnings only)\n"
			"  1   run-gates: a critical or error violation; other commands: the server\n"
			"      refused the request (its message is printed)\n"
			"  2   run-gates: warnings only, and --fail-on-warning was given\n"
			"  3   could not connect to the server, or the connection broke\n"
			"  64  bad command line (unknown option, bad value) or bad environment\n"
			"\n"
			"Run \"%s COMMAND --help\" for a command's options.\n", GB_PROGNAME);
}

static const GBCommand *
find_command(const char *name)
{
	int			i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
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
	GBGlobal	g = {NULL};
	const GBCommand *cmd;
	int			c;
	int			first;

	argv[0] = GB_PROGNAME;
	/* "+": stop at the command; its options are its own */
	while ((c = getopt_long(argc, argv, "+d:hV", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				g.conninfo = optarg;
				break;
			case 'h':
				help(stdout);
				return GB_EXIT_OK;
			case 'V':
				printf("%s %s\n", GB_PROGNAME, GB_CLI_VERSION);
				return GB_EXIT_OK;
			default:
				return gb_bad_option(NULL);
		}
	}

	if (optind >= argc)
		return gb_usage_error(NULL, "no command given");

	if (strcmp(argv[optind], "help") == 0)
	{
		char	   *hargv[3];

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
		hargv[0] = (char *) cmd->name;
		hargv[1] = "--help";
		hargv[2] = NULL;
		gb_getopt_reset();
		return cmd->run(2, hargv, &g);
	}

	cmd = find_command(argv[optind]);
	if (cmd == NULL)
		return gb_usage_error(NULL, "unknown command \"%s\"", argv[optind]);

	first = optind;
	gb_getopt_reset();
	return cmd->run(argc - first, argv + first, &g);
}
