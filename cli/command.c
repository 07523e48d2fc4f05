/*-------------------------------------------------------------------------
 *
 * command.c
 *		The skeleton every command runs in.
 *
 * A command describes itself in a GBCommand (see gate_bridge_cli.h); here
 * its options are handed to getopt_long together with the two that every
 * command takes (-d/--dbname, -h/--help), its --help is printed from the
 * same table, its operands are counted, and then, in this order: the
 * command's own checks, the connection string's (a usage error, 64), the
 * connection (a failure is reported and exits 3), the extension's presence
 * and version, and the command itself.
 *
 * cli/command.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gate_bridge_cli.h"

/* the options every command takes, after its own */
static const GBOption common_options[] = {
	{"dbname", 'd', "CONNINFO", "connection string or URI"},
	{"help", 'h', NULL, "show this help, then exit"},
	{NULL, 0, NULL, NULL}
};

/* --help: where an option's description starts */
#define HELP_COLUMN 26

int
gb_usage_error(const char *cmd, const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s%s%s: ", GB_PROGNAME, cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return gb_bad_option(cmd);
}

/* After getopt has complained: point at --help. */
int
gb_bad_option(const char *cmd)
{
	fprintf(stderr, "Try \"%s%s%s --help\" for more information.\n",
			GB_PROGNAME, cmd ? " " : "", cmd ? cmd : "");
	return GB_EXIT_USAGE;
}

static void
help_option(FILE *out, const GBOption *o)
{
	char		left[128];
	const char *line;
	int			len;

	if (o->key < GB_LONG_ONLY)
		len = snprintf(left, sizeof(left), "  -%c, --%s%s%s", o->key, o->name,
					   o->arg ? "=" : "", o->arg ? o->arg : "");
	else
		len = snprintf(left, sizeof(left), "      --%s%s%s", o->name,
					   o->arg ? "=" : "", o->arg ? o->arg : "");
	/* a long option and argument take a line of their own */
	if (len > HELP_COLUMN - 2)
		fprintf(out, "%s\n%*s", left, HELP_COLUMN, "");
	else
		fprintf(out, "%-*s", HELP_COLUMN, left);
	for (line = o->help;;)
	{
		size_t		n = strcspn(line, "\n");

		fprintf(out, "%.*s\n", (int) n, line);
		if (line[n] == '\0')
			break;
		line += n + 1;
		fprintf(out, "%*s", HELP_COLUMN, "");
	}
}

void
gb_command_help(const GBCommand *cmd, FILE *out)
{
	const GBOption *o;

	fprintf(out, "%s\n\nUsage:\n  %s %s %s\n\nOptions:\n",
			cmd->description, GB_PROGNAME, cmd->name, cmd->synopsis);
	for (o = cmd->options; o->name != NULL; o++)
		if (o->help != NULL)
			help_option(out, o);
	for (o = common_options; o->name != NULL; o++)
		help_option(out, o);
	if (cmd->help_tail != NULL)
		fprintf(out, "\n%s", cmd->help_tail);
}

/* Make getopt_long start over on a new argument vector. */
static void
getopt_reset(void)
{
#ifdef __GLIBC__
	optind = 0;					/* glibc: also re-reads its settings */
#else
	optind = 1;
#endif
}

/*
 * The command's options and the common ones, as getopt_long wants them.
 * Returns the arrays, allocated; exits when out of memory.
 */
static struct option *
getopt_table(const GBCommand *cmd, char **shortopts)
{
	const GBOption *const lists[] = {cmd->options, common_options};
	const GBOption *o;
	struct option *longopts;
	char	   *s;
	int			n = 0;
	int			k = 0;
	size_t		i;

	for (i = 0; i < lengthof(lists); i++)
		for (o = lists[i]; o->name != NULL; o++)
			n++;
	longopts = calloc((size_t) n + 1, sizeof(struct option));
	s = malloc((size_t) n * 2 + 1);
	if (longopts == NULL || s == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
	*shortopts = s;
	for (i = 0; i < lengthof(lists); i++)
		for (o = lists[i]; o->name != NULL; o++)
		{
			longopts[k].name = o->name;
			longopts[k].has_arg = o->arg ? required_argument : no_argument;
			longopts[k].flag = NULL;
			longopts[k].val = o->key;
			k++;
			if (o->key < GB_LONG_ONLY)
			{
				*s++ = (char) o->key;
				if (o->arg)
					*s++ = ':';
			}
		}
	*s = '\0';
	return longopts;
}

/*
 * Options, operand, checks, connection, the command.  argv[0] is the
 * command's name; global_conninfo is -d given before it, or NULL.
 */
static int
parse_and_run(const GBCommand *cmd, int argc, char **av,
			  const char *global_conninfo, struct option *longopts,
			  const char *shortopts)
{
	const char *given = global_conninfo;
	const char *operands[GB_MAX_OPERANDS] = {NULL};
	const char *source;
	char		problem[512];
	bool		installed;
	char		version[64];
	GBSession	s;
	int			rc;
	int			c;
	int			i;

	getopt_reset();
	while ((c = getopt_long(argc, av, shortopts, longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				given = optarg;
				break;
			case 'h':
				gb_command_help(cmd, stdout);
				return GB_EXIT_OK;
			case '?':
			case ':':
				return gb_bad_option(cmd->name);	/* getopt said why */
			default:
				rc = cmd->option(c, optarg);
				if (rc != GB_EXIT_OK)
					return rc;
				break;
		}
	}
	for (i = 0; i < GB_MAX_OPERANDS && cmd->operands[i] != NULL; i++)
	{
		if (optind >= argc)
			return gb_usage_error(cmd->name, "missing %s", cmd->operands[i]);
		operands[i] = av[optind++];
	}
	if (optind < argc)
		return gb_usage_error(cmd->name, "unexpected argument \"%s\"", av[optind]);
	if (cmd->prepare != NULL)
	{
		rc = cmd->prepare(operands);
		if (rc != GB_EXIT_OK)
			return rc;
	}

	s.cmd = cmd;
	s.conninfo = gb_conninfo(given, &source);
	if (gb_conninfo_problem(s.conninfo, source, problem, sizeof(problem)))
		return gb_usage_error(cmd->name, "%s", problem);
	s.conn = gb_connect(s.conninfo, cmd->conn_extra, true);
	if (PQstatus(s.conn) != CONNECTION_OK)
	{
		PQfinish(s.conn);
		return GB_EXIT_CONNECT;
	}

	rc = gb_extension_version(s.conn, version, sizeof(version), &installed);
	if (rc == GB_EXIT_OK && !installed)
	{
		char		where[512];

		gb_describe_server(s.conn, where, sizeof(where));
		fprintf(stderr, "%s: extension \"%s\" does not exist in %s\n"
				"HINT:  Connect to the database that has it (-d, DATABASE_URL, PGDATABASE), or install it there with CREATE EXTENSION %s.\n",
				GB_PROGNAME, GB_EXTENSION, where, GB_EXTENSION);
		rc = GB_EXIT_FAIL;
	}
	if (rc == GB_EXIT_OK)
	{
		gb_warn_version_mismatch(s.conn, version);
		rc = cmd->run(&s);
	}
	if (s.conn != NULL)
		PQfinish(s.conn);
	return rc;
}

int
gb_run_command(const GBCommand *cmd, int argc, char **argv,
			   const char *global_conninfo)
{
	char		progname[64];
	char	  **av;
	char	   *shortopts;
	struct option *longopts;
	int			rc;

	/*
	 * A copy of argv whose argv[0] is "gate-bridge CMD", so that getopt's own
	 * messages name the command; getopt_long reorders it.
	 */
	av = calloc((size_t) argc + 1, sizeof(char *));
	if (av == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
	snprintf(progname, sizeof(progname), "%s %s", GB_PROGNAME, cmd->name);
	av[0] = progname;
	memcpy(av + 1, argv + 1, sizeof(char *) * (size_t) (argc - 1));

	longopts = getopt_table(cmd, &shortopts);
	rc = parse_and_run(cmd, argc, av, global_conninfo, longopts, shortopts);
	free(longopts);
	free(shortopts);
	free(av);
	return rc;
}
