/*-------------------------------------------------------------------------
 *
 * cmd_run_gates.c
 *		gate-bridge run-gates: evaluate the gates, report, exit with a code a
 *		build can act on.
 *
 * One call of gate_bridge.run_gates(agent, lookback, create_incidents,
 * min_samples), which returns per agent: status, passed, samples,
 * violations and insufficient (JSON arrays) and incident_ids, one element
 * per violation: the incident it created, or NULL where it created none
 * (folded into an open incident, or rate limited); empty without
 * create_incidents.
 *
 * The server does the rest: it judges each gate (failed: a critical or
 * error violation; warning: warnings only, which fail the run only with
 * --fail-on-warning; insufficient_data or no_budget: not judged, which
 * fails the run with its own exit status; anything unknown fails, to be
 * safe), renders each agent's JSON line, and unpacks the violations and
 * the metrics not judged into rows for the text report, so nothing here
 * parses JSON.
 *
 * INTERVENTIONS_ENABLED=false (0, no, off) in the environment turns
 * --create-incidents off, and the report says so.
 *
 * cli/cmd_run_gates.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gate_bridge_cli.h"

/*
 * One row per violation and per metric not judged (kind "v" or "i"), or
 * one for an agent without either (kind NULL); the agent's columns repeat
 * on each of its rows.  The server judges the gate: status passed,
 * warning, failed, insufficient_data or no_budget.
 */
static const char *const query =
"SELECT a.agent, a.status, a.samples, a.line, d.kind, d.n,"
"       d.x->>'budget_type' AS budget_type, d.x->>'severity' AS severity,"
"       d.x->>'actual' AS actual, d.x->>'threshold' AS threshold,"
"       d.x->>'reason' AS reason, d.x->>'samples' AS have,"
"       d.x->>'min_samples' AS need, d.x->>'windows' AS windows,"
"       d.x->>'needed' AS windows_needed,"
"       CASE d.kind WHEN 'v' THEN a.incident_ids[d.n::pg_catalog.int4] END AS incident_id"
"  FROM (SELECT j.agent, j.status, j.samples, j.violations, j.insufficient, j.incident_ids,"
"               pg_catalog.row_to_json(j)::pg_catalog.text AS line"
"          FROM gate_bridge.run_gates($1::pg_catalog.text, $2::pg_catalog.interval,"
"                                     $3::pg_catalog.bool, $4::pg_catalog.int4) AS g"
"         CROSS JOIN LATERAL ("
"               SELECT g.agent, g.status, g.passed, g.samples,"
"                      COALESCE(g.violations, '[]') AS violations,"
"                      COALESCE(g.insufficient, '[]') AS insufficient,"
"                      COALESCE(g.incident_ids, '{}') AS incident_ids) AS j) AS a"
"  LEFT JOIN LATERAL ("
"        SELECT 'v' AS kind, v.x, v.n"
"          FROM pg_catalog.jsonb_array_elements(a.violations) WITH ORDINALITY AS v (x, n)"
"        UNION ALL"
"        SELECT 'i', i.x, i.n"
"          FROM pg_catalog.jsonb_array_elements(a.insufficient) WITH ORDINALITY AS i (x, n)) AS d"
"       ON true"
" ORDER BY a.agent COLLATE \"C\", d.kind DESC, d.n";

/* in the order of the exit status they lead to, the worst last */
typedef enum
{
	GATE_PASS, GATE_WARN, GATE_UNJUDGED, GATE_FAIL
} GateStatus;

static const char *const status_word[] = {"PASS", "WARN", "NODATA", "FAIL"};

/* the result's columns */
typedef struct GateColumns
{
	int			agent;
	int			status;
	int			samples;
	int			line;
	int			kind;
	int			budget_type;
	int			severity;
	int			actual;
	int			threshold;
	int			reason;
	int			have;
	int			need;
	int			windows;
	int			windows_needed;
	int			incident_id;
} GateColumns;

/* the command line of this run */
static const char *agent = NULL;
static const char *lookback_arg = NULL;	/* NULL: each budget's own */
static char lookback[256];
static bool create = false;
static bool fail_on_warning = false;
static bool json = false;
static const char *require_samples = NULL;	/* NULL: each budget's */
static bool interventions = true;
static const char *env_value = NULL;

static const GBOption options[] = {
	{"agent", 'a', "AGENT", "only this agent (default: every agent with a budget)"},
	{"lookback", 'l', "WINDOW", "7d, 12h, 30m, 45s, 2w, or a PostgreSQL interval\n"
	"such as '1 day 6 hours' (default: each budget's lookback)"},
	{"create-incidents", 'c', NULL, "open incidents for the violations (deduplicated and\n"
	"rate limited like the trigger's)"},
	{"fail-on-warning", 'w', NULL, "exit 2 when the worst violation is a warning"},
	{"require-samples", 'n', "N", "a gate with fewer than N values in a metric's window\n"
	"is insufficient data, whatever its budget's min_samples"},
	{"json", 'j', NULL, "one JSON object per agent and line"},
	{NULL, 0, NULL, NULL}
};

static int
run_gates_option(int key, const char *arg)
{
	switch (key)
	{
		case 'a':
			if (arg[0] == '\0')
				return gb_usage_error("run-gates", "--agent must not be empty");
			agent = arg;
			break;
		case 'l':
			lookback_arg = arg;
			break;
		case 'c':
			create = true;
			break;
		case 'w':
			fail_on_warning = true;
			break;
		case 'j':
			json = true;
			break;
		case 'n':
			{
				char	   *end;
				long		n;

				errno = 0;
				n = strtol(arg, &end, 10);
				if (errno != 0 || end == arg || *end != '\0' || n < 1 || n > 1000000)
					return gb_usage_error("run-gates", "invalid --require-samples \"%s\": expected a whole number from 1 to 1000000",
										  arg);
				require_samples = arg;
			}
			break;
	}
	return GB_EXIT_OK;
}

static int
run_gates_prepare(const char *const *operands)
{
	(void) operands;
	if (lookback_arg != NULL &&
		!gb_lookback_to_interval(lookback_arg, lookback, sizeof(lookback)))
		return gb_usage_error("run-gates", "invalid --lookback \"%s\": expected 7d, 12h, 30m, 45s or an interval",
							  lookback_arg);
	switch (gb_env_interventions_enabled(&env_value))
	{
		case 0:
			interventions = false;
			break;
		case 1:
			interventions = true;
			break;
		default:
			return gb_usage_error("run-gates", "INTERVENTIONS_ENABLED must be true or false (or 1/0, yes/no, on/off), not \"%s\"",
								  env_value);
	}
	return GB_EXIT_OK;
}

static GateStatus
gate_status(const char *status)
{
	if (strcmp(status, "passed") == 0)
		return GATE_PASS;
	if (strcmp(status, "warning") == 0)
		return GATE_WARN;
	if (strcmp(status, "insufficient_data") == 0 || strcmp(status, "no_budget") == 0)
		return GATE_UNJUDGED;
	/* failed, or anything unknown, to be safe */
	return GATE_FAIL;
}

/* The rows of one agent: [first, end). */
static void
print_agent_text(const PGresult *res, const GateColumns *c, int first, int end,
				 GateStatus st, bool incidents_requested)
{
	const char *samples = PQgetvalue(res, first, c->samples);
	const char *status = PQgetvalue(res, first, c->status);
	bool		any_detail = false;
	int			r;

	printf("%s  ", strcmp(status, "no_budget") == 0 ? "NOGATE" : status_word[st]);
	gb_print_sanitized(stdout, gb_value(res, first, c->agent));
	printf(" (%s sample%s)\n", samples, strcmp(samples, "1") == 0 ? "" : "s");
	if (strcmp(status, "no_budget") == 0)
	{
		printf("      no enabled budget applies to this agent: nothing was judged\n");
		return;
	}
	for (r = first; r < end; r++)
	{
		char		actual[64];
		char		threshold[64];
		const char *incident;

		if (PQgetisnull(res, r, c->kind))
			continue;
		any_detail = true;
		fputs("      ", stdout);
		if (strcmp(PQgetvalue(res, r, c->kind), "i") == 0)
		{
			gb_print_padded(stdout, "too few", 9);
			fputc(' ', stdout);
			gb_print_padded(stdout, gb_value(res, r, c->budget_type), 13);
			if (strcmp(PQgetvalue(res, r, c->reason), "baseline") == 0)
				printf(" baseline: %s of %s past windows with %s samples needed\n",
					   PQgetvalue(res, r, c->windows), PQgetvalue(res, r, c->windows_needed),
					   PQgetvalue(res, r, c->need));
			else
				printf(" %s of %s samples needed\n",
					   PQgetvalue(res, r, c->have), PQgetvalue(res, r, c->need));
			continue;
		}
		gb_format_number(gb_value(res, r, c->actual), actual, sizeof(actual));
		gb_format_number(gb_value(res, r, c->threshold), threshold, sizeof(threshold));
		gb_print_padded(stdout, gb_value(res, r, c->severity), 9);
		fputc(' ', stdout);
		gb_print_padded(stdout, gb_value(res, r, c->budget_type), 13);
		printf(" actual %s vs threshold %s", actual, threshold);
		if (incidents_requested)
		{
			incident = gb_value(res, r, c->incident_id);
			if (incident != NULL)
				printf(" -> incident %s", incident);
			else
				printf(" -> folded/rate limited");
		}
		fputc('\n', stdout);
	}
	if (st == GATE_FAIL && !any_detail)
		printf("      the server reports this gate as failed\n");
}

static int
run_gates_run(GBSession *s)
{
	const char *params[4];
	bool		incidents_requested = create && interventions;
	GateColumns c;
	const GBColumn columns[] = {
		{"agent", &c.agent}, {"status", &c.status}, {"samples", &c.samples},
		{"line", &c.line}, {"kind", &c.kind},
		{"budget_type", &c.budget_type}, {"severity", &c.severity},
		{"actual", &c.actual}, {"threshold", &c.threshold},
		{"reason", &c.reason}, {"have", &c.have}, {"need", &c.need},
		{"windows", &c.windows}, {"windows_needed", &c.windows_needed},
		{"incident_id", &c.incident_id}, {NULL, NULL}
	};
	PGresult   *res;
	int			counts[4] = {0, 0, 0, 0};
	int			worst = GATE_PASS;
	int			nagents = 0;
	int			rc;
	int			r;

	if (lookback_arg != NULL)
	{
		rc = gb_check_interval(s->conn, "run-gates", "--lookback", lookback_arg,
							   lookback, "window");
		if (rc != GB_EXIT_OK)
			return rc;
	}

	params[0] = agent;
	params[1] = lookback_arg != NULL ? lookback : NULL;
	params[2] = incidents_requested ? "true" : "false";
	params[3] = require_samples;
	res = gb_exec(s->conn, query, 4, params, &rc);
	if (res == NULL)
		return rc;
	if (!gb_find_columns(res, columns))
	{
		PQclear(res);
		return GB_EXIT_FAIL;
	}

	if (create && !interventions)
	{
		/* in JSON mode stdout carries JSON only */
		fprintf(json ? stderr : stdout,
				"%sInterventions are disabled (INTERVENTIONS_ENABLED=%s): no incidents will be created.\n",
				json ? GB_PROGNAME ": " : "", env_value);
	}
	if (!json)
	{
		if (lookback_arg != NULL)
		{
			printf("Gates over the last ");
			gb_print_sanitized(stdout, lookback_arg);
		}
		else
			printf("Gates over each budget's lookback");
		if (agent)
		{
			printf(" for ");
			gb_print_sanitized(stdout, agent);
		}
		printf(":\n");
	}

	for (r = 0; r < PQntuples(res);)
	{
		int			end = r + 1;
		GateStatus	st;

		while (end < PQntuples(res) &&
			   strcmp(PQgetvalue(res, end, c.agent), PQgetvalue(res, r, c.agent)) == 0)
			end++;
		st = gate_status(PQgetvalue(res, r, c.status));
		counts[st]++;
		nagents++;
		if ((int) st > worst)
			worst = st;
		if (json)
		{
			if (!gb_print_line(PQgetvalue(res, r, c.line)))
			{
				PQclear(res);
				return GB_EXIT_FAIL;
			}
		}
		else
			print_agent_text(res, &c, r, end, st, incidents_requested);
		r = end;
	}
	PQclear(res);

	/* nothing judged is not a pass */
	if (nagents == 0 && worst < GATE_UNJUDGED)
		worst = GATE_UNJUDGED;
	if (worst == GATE_FAIL)
		rc = GB_EXIT_FAIL;
	else if (worst == GATE_UNJUDGED)
		rc = GB_EXIT_UNJUDGED;
	else if (worst == GATE_WARN && fail_on_warning)
		rc = GB_EXIT_WARN;
	else
		rc = GB_EXIT_OK;

	if (!json)
	{
		if (nagents == 0)
			printf("No gates to evaluate: no agent has a budget%s.\n",
				   agent ? " under that name" : "");
		printf("%d passed, %d with warnings, %d not judged, %d failed: %s\n",
			   counts[GATE_PASS], counts[GATE_WARN], counts[GATE_UNJUDGED], counts[GATE_FAIL],
			   rc == GB_EXIT_FAIL ? "FAIL" :
			   rc == GB_EXIT_UNJUDGED ? "FAIL (not enough data to judge)" :
			   rc == GB_EXIT_WARN ? "FAIL (warnings, --fail-on-warning)" :
			   worst == GATE_WARN ? "PASS (warnings do not fail without --fail-on-warning)" :
			   "PASS");
	}
	else if (nagents == 0)
		fprintf(stderr, GB_PROGNAME ": no gates to evaluate: no agent has a budget%s\n",
				agent ? " under that name" : "");
	if (fflush(stdout) == EOF)
		return GB_EXIT_FAIL;
	return rc;
}

const GBCommand gb_command_run_gates = {
	.name = "run-gates",
	.summary = "evaluate every agent's budgets over a lookback window",
	.description =
	"Evaluate the gates: each agent's eval results over the lookback window\n"
	"against its budgets (gate_bridge.run_gates).",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"Environment:\n"
	"  INTERVENTIONS_ENABLED   false, 0, no or off: never create incidents, even\n"
	"                          with --create-incidents (true, 1, yes, on: allowed)\n"
	"\n"
	"Output: per agent its gate and number of samples, each violation with actual\n"
	"and threshold, each metric with too few samples to judge, and with\n"
	"--create-incidents the incident each violation opened or\n"
	"\"folded/rate limited\" where it opened none.  --json: one line per agent,\n"
	"{\"agent\",\"status\",\"passed\",\"samples\",\"violations\",\"insufficient\",\n"
	"\"incident_ids\"}, status passed, warning, failed, insufficient_data or\n"
	"no_budget (passed null when nothing was judged), incident_ids one element per\n"
	"violation (null where none was created; empty without --create-incidents).\n"
	"\n"
	"Exit status:\n"
	"  0   every gate passed, or warnings only without --fail-on-warning\n"
	"  1   a critical or error violation, or the server refused the evaluation\n"
	"  2   warnings only, with --fail-on-warning\n"
	"  3   connection failure\n"
	"  4   no failure, but a gate could not be judged: too few samples (budgets'\n"
	"      min_samples, --require-samples), no budget for --agent, or no gates\n"
	"  64  bad command line or environment\n",
	.option = run_gates_option,
	.prepare = run_gates_prepare,
	.run = run_gates_run,
};
