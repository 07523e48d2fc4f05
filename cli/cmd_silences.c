/*-------------------------------------------------------------------------
 *
 * cmd_silences.c
 *		gate-bridge silence PATTERN DURATION --comment TEXT [--kind K]
 *		[--type T], gate-bridge unsilence ID, gate-bridge silences [--all]
 *		[--json].
 *
 * A silence is a maintenance window: from now for DURATION, the incidents
 * of the agents that PATTERN matches (of one kind, of one violation type)
 * are silenced.  silence and unsilence go through gate_bridge.silence()
 * and gate_bridge.unsilence(), which check what they are given; a refusal
 * is printed with the server's message and exits 1.  silences lists the
 * table gate_bridge.silences, as a table for people or one JSON object per
 * line, rendered by the server, for programs.
 *
 * cli/cmd_silences.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <inttypes.h>

#include "gate_bridge_cli.h"

/*
 * r is the JSON line's object; the table reads its columns too, and shows
 * a silence of any kind or violation type as "*".
 */
static const char *const list_query =
"SELECT r.id, r.agent_pattern,"
"       COALESCE(r.kind, '*') AS kind_cell,"
"       COALESCE(r.violation_type, '*') AS type_cell,"
"       r.starts_at, r.ends_at, r.created_by, r.comment,"
"       pg_catalog.row_to_json(r)::pg_catalog.text AS line"
"  FROM gate_bridge.silences s"
" CROSS JOIN LATERAL ("
"       SELECT s.id, s.agent_pattern, s.kind, s.violation_type, s.key,"
"              " GB_SQL_UTC("s.starts_at") " AS starts_at,"
"              " GB_SQL_UTC("s.ends_at") " AS ends_at,"
"              s.created_by, s.comment,"
"              " GB_SQL_UTC("s.created_at") " AS created_at) AS r"
" WHERE $1::pg_catalog.bool OR s.ends_at > pg_catalog.now()"
" ORDER BY s.created_at DESC, s.id DESC";

/* the command line of this run */
static const char *pattern = NULL;
static const char *duration = NULL;
static const char *comment = NULL;
static const char *kind = NULL;
static const char *violation_type = NULL;
static const char *id_text = NULL;
static int64_t id;
static bool all = false;
static bool json = false;

static const GBOption silence_options[] = {
	{"comment", 'c', "TEXT", "why (required): the change, the ticket"},
	{"kind", 'k', "KIND", "only incidents of this kind (budget, invariant,\nplanner; default: any)"},
	{"type", 't', "VIOLATION_TYPE", "only this violation type (quality, cost, ...;\ndefault: any)"},
	{NULL, 0, NULL, NULL}
};

static const GBOption unsilence_options[] = {
	{NULL, 0, NULL, NULL}
};

static const GBOption silences_options[] = {
	{"all", 'a', NULL, "also the silences that have ended"},
	{"json", 'j', NULL, "one JSON object per line instead of a table"},
	{NULL, 0, NULL, NULL}
};

static int
silence_option(int key, const char *arg)
{
	const char *name = key == 'c' ? "--comment" : key == 'k' ? "--kind" : "--type";

	if (arg[0] == '\0')
		return gb_usage_error("silence", "%s must not be empty", name);
	if (key == 'c')
		comment = arg;
	else if (key == 'k')
		kind = arg;
	else
		violation_type = arg;
	return GB_EXIT_OK;
}

static int
unsilence_option(int key, const char *arg)
{
	(void) key;
	(void) arg;
	return GB_EXIT_OK;			/* it has no options of its own */
}

static int
silences_option(int key, const char *arg)
{
	(void) arg;
	if (key == 'a')
		all = true;
	else
		json = true;
	return GB_EXIT_OK;
}

static int
silence_prepare(const char *const *operands)
{
	if (operands[0][0] == '\0')
		return gb_usage_error("silence", "PATTERN must not be empty");
	if (operands[1][0] == '\0')
		return gb_usage_error("silence", "invalid DURATION \"\": expected 24h, 30min, 2d or an interval");
	if (comment == NULL)
		return gb_usage_error("silence", "--comment is required: say why the incidents are silenced");
	pattern = operands[0];
	duration = operands[1];
	return GB_EXIT_OK;
}

static int
unsilence_prepare(const char *const *operands)
{
	if (!gb_parse_id(operands[0], &id) || id == 0)
		return gb_usage_error("unsilence", "invalid silence ID \"%s\": expected a positive integer",
							  operands[0]);
	id_text = operands[0];
	return GB_EXIT_OK;
}

/* "silence 3 created: deploy.* until 2026-12-03 07:00:00+00" */
static int
silence_run(GBSession *s)
{
	const char *params[5] = {pattern, duration, comment, kind, violation_type};
	const char *row_params[1];
	PGresult   *res;
	PGresult   *row;
	char		created[32];
	int			rc;

	rc = gb_check_interval(s->conn, "silence", "DURATION", duration, duration,
						   "duration");
	if (rc != GB_EXIT_OK)
		return rc;
	res = gb_exec(s->conn,
				  "SELECT gate_bridge.silence($1::pg_catalog.text, $2::pg_catalog.interval,"
				  " $3::pg_catalog.text, $4::pg_catalog.text, $5::pg_catalog.text)",
				  5, params, &rc);
	if (res == NULL)
		return rc;
	snprintf(created, sizeof(created), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);

	/* The window as the server stored it, when we may read it. */
	row_params[0] = created;
	row = PQexecParams(s->conn,
					   "SELECT s.agent_pattern, s.ends_at FROM gate_bridge.silences s"
					   " WHERE s.id = $1::pg_catalog.int8",
					   1, NULL, row_params, NULL, NULL, 0);
	printf("Silence %s created: ", created);
	if (PQresultStatus(row) == PGRES_TUPLES_OK && PQntuples(row) == 1)
	{
		gb_print_sanitized(stdout, PQgetvalue(row, 0, 0));
		printf(" until ");
		gb_print_sanitized(stdout, PQgetvalue(row, 0, 1));
	}
	else
		gb_print_sanitized(stdout, pattern);
	printf(".\n");
	PQclear(row);
	return fflush(stdout) == EOF ? GB_EXIT_FAIL : GB_EXIT_OK;
}

static int
unsilence_run(GBSession *s)
{
	const char *params[1] = {id_text};
	PGresult   *res;
	int			rc = GB_EXIT_OK;

	res = gb_exec(s->conn, "SELECT gate_bridge.unsilence($1::pg_catalog.int8)",
				  1, params, &rc);
	if (res == NULL)
		return rc;
	PQclear(res);
	printf("Silence %" PRId64 " ended.\n", id);
	return fflush(stdout) == EOF ? GB_EXIT_FAIL : GB_EXIT_OK;
}

static int
silences_run(GBSession *s)
{
	static const char *const titles[] = {
		"ID", "PATTERN", "KIND", "TYPE", "STARTS (UTC)", "ENDS (UTC)", "BY",
		"COMMENT"
	};
	const char *params[1] = {all ? "true" : "false"};
	int			col[lengthof(titles)] = {0};
	int			line = 0;
	const GBColumn columns[] = {
		{"id", &col[0]}, {"agent_pattern", &col[1]}, {"kind_cell", &col[2]},
		{"type_cell", &col[3]}, {"starts_at", &col[4]}, {"ends_at", &col[5]},
		{"created_by", &col[6]}, {"comment", &col[7]},
		{"line", &line}, {NULL, NULL}
	};
	return gb_print_listing(s->conn, list_query, 1, params, columns, titles, col,
							(int) lengthof(titles), &line, json, "silence", "silences");
}

const GBCommand gb_command_silence = {
	.name = "silence",
	.summary = "silence the incidents of matching agents for a while",
	.description =
	"Start a silence (a maintenance window) now, for DURATION: the incidents of\n"
	"the agents that PATTERN matches are silenced (gate_bridge.silence).",
	.synopsis = "[OPTIONS] PATTERN DURATION --comment TEXT",
	.options = silence_options,
	.operands = {"PATTERN", "DURATION"},
	.help_tail =
	"PATTERN is an agent pattern as the budgets' (inbox.triage, inbox.*).\n"
	"DURATION is a PostgreSQL interval: 2h, 30min, 1d, '1 day 6 hours'.  The\n"
	"line printed gives the silence's id and its end in the session's time zone\n"
	"(TimeZone, PGTZ); \"gate-bridge unsilence ID\" ends it early.\n"
	"\n"
	"Exit status: 0 created; 1 the server refused (a bad pattern, kind or\n"
	"duration); 3 connection failure; 64 bad command line.\n",
	.option = silence_option,
	.prepare = silence_prepare,
	.run = silence_run,
};

const GBCommand gb_command_unsilence = {
	.name = "unsilence",
	.summary = "end a silence now",
	.description = "End a silence now (gate_bridge.unsilence).",
	.synopsis = "[OPTIONS] ID",
	.options = unsilence_options,
	.operands = {"silence ID"},
	.help_tail =
	"Exit status: 0 ended; 1 the server refused (unknown id, already ended);\n"
	"3 connection failure; 64 bad command line.\n",
	.option = unsilence_option,
	.prepare = unsilence_prepare,
	.run = unsilence_run,
};

const GBCommand gb_command_silences = {
	.name = "silences",
	.summary = "list silences",
	.description =
	"List the silences that are in force or still to come, newest first; with\n"
	"--all also those that have ended.",
	.synopsis = "[OPTIONS]",
	.options = silences_options,
	.help_tail =
	"In the table a silence of any kind or violation type shows \"*\".  Each JSON\n"
	"line has the silence's id, agent_pattern, kind, violation_type, key (these\n"
	"three null for any), starts_at, ends_at, created_by, comment and created_at.\n"
	"\n"
	"Times are UTC.  Exit status: 0 listed (even if none); 1 the server refused;\n"
	"3 connection failure; 64 bad command line.\n",
	.option = silences_option,
	.run = silences_run,
};
