/*-------------------------------------------------------------------------
 *
 * cmd_run_gates.c
 *		gate-bridge run-gates: evaluate the gates, report, exit with a code a
 *		build can act on.
 *
 * One call of gate_bridge.run_gates(agent, lookback, create_incidents); the
 * server unpacks each agent's violations array into rows so that nothing
 * here parses JSON.  The exit status comes from the violations' severities:
 * critical or error (or anything unknown, to be safe) fails the run, a
 * warning only fails it with --fail-on-warning.
 *
 * INTERVENTIONS_ENABLED=false (0, no, off) in the environment turns
 * --create-incidents off, and the report says so.
 *
 * cli/cmd_run_gates.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum
{
	COL_AGENT, COL_PASSED, COL_INCIDENT_IDS, COL_N, COL_BUDGET_TYPE,
	COL_SEVERITY, COL_ACTUAL, COL_ACTUAL_TYPE, COL_THRESHOLD,
	COL_THRESHOLD_TYPE, COL_V_AGENT
};

static const char *const query =
"SELECT g.agent, g.passed, pg_catalog.array_to_string(g.incident_ids, ','),"
"       v.n, v.x->>'budget_type', v.x->>'severity',"
"       v.x->>'actual', pg_catalog.jsonb_typeof(v.x->'actual'),"
"       v.x->>'threshold', pg_catalog.jsonb_typeof(v.x->'threshold'),"
"       v.x->>'agent'"
"  FROM gate_bridge.run_gates($1::pg_catalog.text, $2::pg_catalog.interval,"
"                             $3::pg_catalog.bool) AS g"
"  LEFT JOIN LATERAL pg_catalog.jsonb_array_elements("
"         CASE pg_catalog.jsonb_typeof(g.violations)"
"              WHEN 'array' THEN g.violations ELSE '[]'::pg_catalog.jsonb END)"
"       WITH ORDINALITY AS v(x, n) ON true"
" ORDER BY g.agent COLLATE \"C\", v.n";

typedef enum
{
	GATE_PASS, GATE_WARN, GATE_FAIL
} GateStatus;

static const char *const status_word[] = {"PASS", "WARN", "FAIL"};
static const char *const status_json[] = {"pass", "warn", "fail"};

static void
help(FILE *out)
{
	fprintf(out,
			"Evaluate the gates: each agent's eval results over the lookback window\n"
			"against its budgets (gate_bridge.run_gates).\n"
			"\n"
			"Usage:\n"
			"  %s run-gates [OPTIONS]\n"
			"\n"
			"Options:\n"
			"  -a, --agent=AGENT       only this agent (default: every agent with a budget)\n"
			"  -l, --lookback=WINDOW   7d, 12h, 30m, 45s, 2w, or a PostgreSQL interval\n"
			"                          such as '1 day 6 hours' (default: 7d)\n"
			"  -c, --create-incidents  open incidents for the violations (deduplicated and\n"
			"                          rate limited like the trigger's)\n"
			"  -w, --fail-on-warning   exit 2 when the worst violation is a warning\n"
			"  -j, --json              one JSON object per agent and line\n"
			"  -d, --dbname=CONNINFO   connection string or URI\n"
			"  -h, --help              show this help, then exit\n"
			"\n"
			"Environment:\n"
			"  INTERVENTIONS_ENABLED   false, 0, no or off: never create incidents, even\n"
			"                          with --create-incidents (true, 1, yes, on: allowed)\n"
			"\n"
			"Exit status:\n"
			"  0   every gate passed, or warnings only without --fail-on-warning\n"
			"  1   a critical or error violation, or the server refused the evaluation\n"
			"  2   warnings only, with --fail-on-warning\n"
			"  3   connection failure\n"
			"  64  bad command line or environment\n", GB_PROGNAME);
}

/* Severity of one violation, as the gate sees it. */
static GateStatus
violation_status(const char *severity)
{
	if (severity != NULL && strcmp(severity, "warning") == 0)
		return GATE_WARN;
	return GATE_FAIL;			/* critical, error, or unknown */
}

/* The rows of one agent: [first, end). */
static GateStatus
agent_status(const PGresult *res, int first, int end)
{
	GateStatus	st = GATE_PASS;
	int			r;

	for (r = first; r < end; r++)
	{
		GateStatus	v;

		if (PQgetisnull(res, r, COL_N))
			continue;
		v = violation_status(gb_value(res, r, COL_SEVERITY));
		if (v > st)
			st = v;
	}
	/* the server said it failed but gave no reason: trust it */
	if (st == GATE_PASS && strcmp(PQgetvalue(res, first, COL_PASSED), "f") == 0)
		st = GATE_FAIL;
	return st;
}

static void
json_metric(GBJson *j, const char *name, const char *text, const char *type)
{
	gb_json_key(j, name);
	if (text == NULL)
		gb_json_null(j);
	else if (type != NULL && strcmp(type, "number") == 0)
		gb_json_number_text(j, text);
	else
		gb_json_string(j, text);
}

static bool
print_agent_json(const PGresult *res, int first, int end, GateStatus st)
{
	GBBuf		buf;
	GBJson		j;
	const char *ids = gb_value(res, first, COL_INCIDENT_IDS);
	int			r;
	bool		ok;

	gb_buf_init(&buf);
	gb_json_init(&j, &buf);
	gb_json_object_begin(&j);
	gb_json_key(&j, "agent");
	gb_json_string(&j, gb_value(res, first, COL_AGENT));
	gb_json_key(&j, "status");
	gb_json_string(&j, status_json[st]);
	gb_json_key(&j, "passed");
	gb_json_bool(&j, strcmp(PQgetvalue(res, first, COL_PASSED), "t") == 0);

	gb_json_key(&j, "violations");
	gb_json_array_begin(&j);
	for (r = first; r < end; r++)
	{
		if (PQgetisnull(res, r, COL_N))
			continue;
		gb_json_object_begin(&j);
		gb_json_key(&j, "agent");
		gb_json_string(&j, gb_value(res, r, COL_V_AGENT));
		gb_json_key(&j, "budget_type");
		gb_json_string(&j, gb_value(res, r, COL_BUDGET_TYPE));
		gb_json_key(&j, "severity");
		gb_json_string(&j, gb_value(res, r, COL_SEVERITY));
		json_metric(&j, "actual", gb_value(res, r, COL_ACTUAL),
					gb_value(res, r, COL_ACTUAL_TYPE));
		json_metric(&j, "threshold", gb_value(res, r, COL_THRESHOLD),
					gb_value(res, r, COL_THRESHOLD_TYPE));
		gb_json_object_end(&j);
	}
	gb_json_array_end(&j);

	gb_json_key(&j, "incident_ids");
	gb_json_array_begin(&j);
	if (ids != NULL && ids[0] != '\0')
	{
		const char *p = ids;

		while (*p)
		{
			char	   *end_num;
			long long	v = strtoll(p, &end_num, 10);

			if (end_num == p)
				break;
			gb_json_int(&j, (int64_t) v);
			p = (*end_num == ',') ? end_num + 1 : end_num;
		}
	}
	gb_json_array_end(&j);
	gb_json_object_end(&j);

	ok = gb_write_line(&buf);
	gb_buf_free(&buf);
	return ok;
}

static void
print_agent_text(const PGresult *res, int first, int end, GateStatus st,
				 bool incidents_requested)
{
	const char *ids = gb_value(res, first, COL_INCIDENT_IDS);
	bool		any_violation = false;
	int			r;

	printf("%s  ", status_word[st]);
	gb_print_sanitized(stdout, gb_value(res, first, COL_AGENT));
	fputc('\n', stdout);
	for (r = first; r < end; r++)
	{
		char		actual[64];
		char		threshold[64];

		if (PQgetisnull(res, r, COL_N))
			continue;
		any_violation = true;
		gb_format_number(gb_value(res, r, COL_ACTUAL), actual, sizeof(actual));
		gb_format_number(gb_value(res, r, COL_THRESHOLD), threshold, sizeof(threshold));
		fputs("      ", stdout);
		gb_print_padded(stdout, gb_value(res, r, COL_SEVERITY), 9);
		fputc(' ', stdout);
		gb_print_padded(stdout, gb_value(res, r, COL_BUDGET_TYPE), 13);
		printf(" actual %s vs threshold %s\n", actual, threshold);
	}
	if (st == GATE_FAIL && !any_violation)
		printf("      the server reports this gate as failed\n");
	if (ids != NULL && ids[0] != '\0')
	{
		fputs("      incidents created: ", stdout);
		gb_print_sanitized(stdout, ids);
		fputc('\n', stdout);
	}
	else if (incidents_requested && any_violation)
		printf("      no new incident (one is open for each key, or the rate limit held)\n");
}

int
gb_cmd_run_gates(int argc, char **argv, const GBGlobal *g)
{
	static const struct option longopts[] = {
		{"agent", required_argument, NULL, 'a'},
		{"lookback", required_argument, NULL, 'l'},
		{"create-incidents", no_argument, NULL, 'c'},
		{"fail-on-warning", no_argument, NULL, 'w'},
		{"json", no_argument, NULL, 'j'},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *cmd = "run-gates";
	const char *conninfo = NULL;
	const char *agent = NULL;
	const char *lookback_arg = "7d";
	char		lookback[256];
	bool		create = false;
	bool		fail_on_warning = false;
	bool		json = false;
	bool		interventions;
	const char *env_value;
	const char *msg;
	const char *params[3];
	char	  **av = gb_subcommand_argv(argc, argv);
	PGconn	   *conn;
	PGresult   *res;
	int			counts[3] = {0, 0, 0};
	int			worst = GATE_PASS;
	int			nagents = 0;
	int			rc = GB_EXIT_OK;
	int			c;
	int			r;

	while ((c = getopt_long(argc, av, "a:l:cwjd:h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'a':
				if (optarg[0] == '\0')
					return gb_usage_error(cmd, "--agent must not be empty");
				agent = optarg;
				break;
			case 'l':
				lookback_arg = optarg;
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
			case 'd':
				conninfo = optarg;
				break;
			case 'h':
				help(stdout);
				return GB_EXIT_OK;
			default:
				return gb_bad_option(cmd);
		}
	}
	if (optind < argc)
		return gb_usage_error(cmd, "unexpected argument \"%s\"", av[optind]);
	if (!gb_lookback_to_interval(lookback_arg, lookback, sizeof(lookback)))
		return gb_usage_error(cmd, "invalid --lookback \"%s\": expected 7d, 12h, 30m, 45s or an interval",
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
			return gb_usage_error(cmd, "INTERVENTIONS_ENABLED must be true or false (or 1/0, yes/no, on/off), not \"%s\"",
								  env_value);
	}

	conn = gb_connect(gb_conninfo(g, conninfo), NULL, true);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		PQfinish(conn);
		return GB_EXIT_CONNECT;
	}

	/* The window: the server parses it, and it must be positive. */
	params[0] = lookback;
	res = PQexecParams(conn,
					   "SELECT $1::pg_catalog.interval > '0'::pg_catalog.interval",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		if (gb_connection_lost(conn))
		{
			gb_report_result_error(conn, res);
			PQclear(res);
			PQfinish(conn);
			return GB_EXIT_CONNECT;
		}
		msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		rc = gb_usage_error(cmd, "invalid --lookback \"%s\": %s", lookback_arg,
							msg ? msg : PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return rc;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
	{
		rc = gb_usage_error(cmd, "invalid --lookback \"%s\": the window must be longer than zero",
							lookback_arg);
		PQclear(res);
		PQfinish(conn);
		return rc;
	}
	PQclear(res);

	params[0] = agent;
	params[1] = lookback;
	params[2] = (create && interventions) ? "true" : "false";
	res = gb_exec(conn, query, 3, params, &rc);
	if (res == NULL)
	{
		PQfinish(conn);
		return rc;
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
		printf("Gates over the last ");
		gb_print_sanitized(stdout, lookback_arg);
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
			   strcmp(PQgetvalue(res, end, COL_AGENT), PQgetvalue(res, r, COL_AGENT)) == 0)
			end++;
		st = agent_status(res, r, end);
		counts[st]++;
		nagents++;
		if ((int) st > worst)
			worst = st;
		if (json)
		{
			if (!print_agent_json(res, r, end, st))
			{
				PQclear(res);
				PQfinish(conn);
				return GB_EXIT_FAIL;
			}
		}
		else
			print_agent_text(res, r, end, st, create && interventions);
		r = end;
	}
	PQclear(res);
	PQfinish(conn);

	if (worst == GATE_FAIL)
		rc = GB_EXIT_FAIL;
	else if (worst == GATE_WARN && fail_on_warning)
		rc = GB_EXIT_WARN;
	else
		rc = GB_EXIT_OK;

	if (!json)
	{
		if (nagents == 0)
			printf("No gates to evaluate: no agent has a budget%s.\n",
				   agent ? " under that name" : "");
		printf("%d passed, %d with warnings, %d failed: %s\n",
			   counts[GATE_PASS], counts[GATE_WARN], counts[GATE_FAIL],
			   rc == GB_EXIT_FAIL ? "FAIL" :
			   rc == GB_EXIT_WARN ? "FAIL (warnings, --fail-on-warning)" :
			   worst == GATE_WARN ? "PASS (warnings do not fail without --fail-on-warning)" :
			   "PASS");
	}
	if (fflush(stdout) == EOF)
		return GB_EXIT_FAIL;
	return rc;
}
