/*-------------------------------------------------------------------------
 *
 * cmd_incidents.c
 *		gate-bridge incidents [--status S] [--severity S] [--json]
 *
 * A table for people, or one JSON object per line for programs, rendered
 * by the server.  Without --status it lists the incidents that are not
 * resolved (open and ack), as on-call wants them; --status all lists every
 * incident.  Whether an incident is snoozed, silenced or flapping, and the
 * issues opened for it in GitHub or Jira, are shown when the extension's
 * incidents have those columns; an older extension lists as before.
 *
 * cli/cmd_incidents.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <string.h>

#include "gate_bridge_cli.h"

/*
 * r is the JSON line's object; the table reads its columns too.  flags is
 * the table's FLAGS cell, and lifecycle the JSON line's fields after
 * resolution_note: both are there only when the extension's incidents have
 * the lifecycle columns (snoozed_until, silence_id, flapping).  issues is
 * the ISSUES cell, with external_refs among the lifecycle fields when the
 * incidents have it.
 */
#define QUERY(flags, issues, lifecycle) \
"SELECT r.id, r.severity, r.status, r.occurrences, r.first_seen_at, r.key," \
"       " flags " AS flags, " issues " AS issues," \
"       pg_catalog.row_to_json(r)::pg_catalog.text AS line" \
"  FROM gate_bridge.incidents i" \
" CROSS JOIN LATERAL (" \
"       SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity," \
"              i.status, i.summary, i.playbooks, i.occurrences," \
"              " GB_SQL_UTC("i.first_seen_at") " AS first_seen_at," \
"              " GB_SQL_UTC("i.last_seen_at") " AS last_seen_at," \
"              " GB_SQL_UTC("i.acked_at") " AS acked_at, i.acked_by," \
"              " GB_SQL_UTC("i.resolved_at") " AS resolved_at, i.resolved_by," \
"              i.resolution_note" lifecycle ") AS r" \
" WHERE CASE WHEN $1::pg_catalog.text IS NULL THEN i.status <> 'resolved'" \
"            WHEN $1 = 'all' THEN true" \
"            ELSE i.status = $1 END" \
"   AND ($2::pg_catalog.text IS NULL OR i.severity = $2)" \
" ORDER BY i.severity, i.first_seen_at, i.id"

/* "snoozed until 2026-12-03T07:00:00Z, silence 3, flapping", or "-" */
#define FLAGS \
"COALESCE(NULLIF(pg_catalog.concat_ws(', '," \
"                'snoozed until ' || " GB_SQL_UTC("i.snoozed_until") "," \
"                'silence ' || i.silence_id::pg_catalog.text," \
"                CASE WHEN i.flapping THEN 'flapping' END), ''), '-')"

#define LIFECYCLE \
", " GB_SQL_UTC("i.snoozed_until") " AS snoozed_until, i.silence_id, i.flapping"

/* the issues' URLs (by destination name), or "-" */
#define ISSUES \
"COALESCE((SELECT pg_catalog.string_agg(COALESCE(x.v->>'url', x.k || ' ' || (x.v->>'id')), ' '" \
"                                      ORDER BY x.k)" \
"            FROM pg_catalog.jsonb_each(i.external_refs) AS x(k, v)), '-')"

static const char *const query = QUERY(FLAGS, ISSUES, LIFECYCLE ", i.external_refs");

/* an extension without issue openers */
static const char *const query_without_issues =
QUERY(FLAGS, "NULL::pg_catalog.text", LIFECYCLE);

/* an extension without snoozes, silences and flapping (1.1 and older) */
static const char *const query_without_lifecycle =
QUERY("NULL::pg_catalog.text", "NULL::pg_catalog.text", "");

/* Are the lifecycle columns there, and the issues? */
static const char *const columns_query =
"SELECT pg_catalog.count(*) FILTER (WHERE a.attname <> 'external_refs') = 3,"
"       pg_catalog.count(*) FILTER (WHERE a.attname = 'external_refs') = 1"
"  FROM pg_catalog.pg_attribute a"
"  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
"  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
" WHERE n.nspname = 'gate_bridge' AND c.relname = 'incidents'"
"   AND a.attname IN ('snoozed_until', 'silence_id', 'flapping', 'external_refs')"
"   AND a.attnum > 0 AND NOT a.attisdropped";

/* the command line of this run */
static const char *status = NULL;
static const char *severity = NULL;
static bool json = false;

static const GBOption options[] = {
	{"status", 's', "STATUS", "open, ack, resolved or all (default: open and ack)"},
	{"severity", 'S', "SEV", "sev1, sev2 or sev3"},
	{"json", 'j', NULL, "one JSON object per line instead of a table"},
	{NULL, 0, NULL, NULL}
};

static bool
one_of(const char *v, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (strcmp(v, *allowed) == 0)
			return true;
	return false;
}

static int
incidents_option(int key, const char *arg)
{
	static const char *const statuses[] = {"open", "ack", "resolved", "all", NULL};
	static const char *const severities[] = {"sev1", "sev2", "sev3", NULL};

	switch (key)
	{
		case 's':
			if (!one_of(arg, statuses))
				return gb_usage_error("incidents", "invalid --status \"%s\": expected open, ack, resolved or all",
									  arg);
			status = arg;
			break;
		case 'S':
			if (!one_of(arg, severities))
				return gb_usage_error("incidents", "invalid --severity \"%s\": expected sev1, sev2 or sev3",
									  arg);
			severity = arg;
			break;
		case 'j':
			json = true;
			break;
	}
	return GB_EXIT_OK;
}

/*
 * col: the table's columns, FLAGS before KEY, FLAGS only with lifecycle,
 * ISSUES after KEY only with issues
 */
static void
print_table(const PGresult *res, const int *col, bool lifecycle, bool issues)
{
	static const char *const titles[] = {
		"ID", "SEV", "STATUS", "OCC", "FIRST SEEN (UTC)", "FLAGS", "KEY", "ISSUES"
	};
	static const char *const titles_without_lifecycle[] = {
		"ID", "SEV", "STATUS", "OCC", "FIRST SEEN (UTC)", "KEY"
	};
	int			n = PQntuples(res);

	if (lifecycle)
		gb_print_table(res, titles, col, (int) lengthof(titles) - (issues ? 0 : 1));
	else
	{
		const int	without[] = {col[0], col[1], col[2], col[3], col[4], col[6]};

		gb_print_table(res, titles_without_lifecycle, without,
					   (int) lengthof(titles_without_lifecycle));
	}
	printf("(%d incident%s)\n", n, n == 1 ? "" : "s");
}

static int
incidents_run(GBSession *s)
{
	const char *params[2] = {status, severity};
	int			col[8];			/* the table's, in its order */
	int			line;
	const GBColumn columns[] = {
		{"id", &col[0]}, {"severity", &col[1]}, {"status", &col[2]},
		{"occurrences", &col[3]}, {"first_seen_at", &col[4]}, {"flags", &col[5]},
		{"key", &col[6]}, {"issues", &col[7]}, {"line", &line}, {NULL, NULL}
	};
	PGresult   *res;
	bool		lifecycle;
	bool		issues;
	int			rc = GB_EXIT_OK;
	int			r;

	res = gb_exec(s->conn, columns_query, 0, NULL, &rc);
	if (res == NULL)
		return rc;
	lifecycle = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	issues = lifecycle && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);

	res = gb_exec(s->conn,
				  issues ? query : lifecycle ? query_without_issues : query_without_lifecycle,
				  2, params, &rc);
	if (res == NULL)
		return rc;
	if (!gb_find_columns(res, columns))
		rc = GB_EXIT_FAIL;
	else if (json)
	{
		for (r = 0; r < PQntuples(res) && rc == GB_EXIT_OK; r++)
			if (!gb_print_line(PQgetvalue(res, r, line)))
				rc = GB_EXIT_FAIL;
	}
	else
	{
		print_table(res, col, lifecycle, issues);
		if (fflush(stdout) == EOF)
			rc = GB_EXIT_FAIL;
	}
	PQclear(res);
	return rc;
}

const GBCommand gb_command_incidents = {
	.name = "incidents",
	.summary = "list incidents",
	.description = "List incidents, most severe and oldest first.",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"FLAGS shows \"snoozed until TIME\" (gate-bridge snooze), \"silence ID\" (the\n"
	"silence it is under, gate-bridge silences) and \"flapping\", or \"-\".  ISSUES\n"
	"shows the URLs of the issues opened for the incident by github and jira\n"
	"destinations, or \"-\".\n"
	"\n"
	"Each JSON line has the incident's id, kind, key, agent, violation_type,\n"
	"severity, status, summary, playbooks, occurrences, first_seen_at,\n"
	"last_seen_at, acked_at, acked_by, resolved_at, resolved_by,\n"
	"resolution_note, snoozed_until, silence_id, flapping (null unless\n"
	"snoozed, null unless silenced, true or false) and external_refs (the\n"
	"issues by destination: {\"gh\": {\"kind\": \"github\", \"id\": \"42\",\n"
	"\"url\": ...}}, {} for none).  An extension without snoozes and silences\n"
	"(1.1 and older) has no FLAGS and none of the last four, one without issue\n"
	"openers no ISSUES and no external_refs.\n"
	"\n"
	"Times are UTC.  Exit status: 0 listed (even if none); 1 the server refused;\n"
	"3 connection failure; 64 bad command line.\n",
	.option = incidents_option,
	.run = incidents_run,
};
