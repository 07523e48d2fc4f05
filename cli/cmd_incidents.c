/*-------------------------------------------------------------------------
 *
 * cmd_incidents.c
 *		gate-bridge incidents [--status S] [--severity S] [--json]
 *
 * A table for people, or one JSON object per line for programs, rendered
 * by the server.  Without --status it lists the incidents that are not
 * resolved (open and ack), as on-call wants them; --status all lists every
 * incident.
 *
 * cli/cmd_incidents.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <string.h>

#include "gate_bridge_cli.h"

#define UTC(col) "pg_catalog.to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* r is the JSON line's object; the table reads its columns too. */
static const char *const query =
"SELECT r.id, r.severity, r.status, r.occurrences, r.first_seen_at, r.key,"
"       pg_catalog.row_to_json(r)::pg_catalog.text AS line"
"  FROM gate_bridge.incidents i"
" CROSS JOIN LATERAL ("
"       SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity,"
"              i.status, i.summary, i.playbooks, i.occurrences,"
"              " UTC("i.first_seen_at") " AS first_seen_at,"
"              " UTC("i.last_seen_at") " AS last_seen_at,"
"              " UTC("i.acked_at") " AS acked_at, i.acked_by,"
"              " UTC("i.resolved_at") " AS resolved_at, i.resolved_by,"
"              i.resolution_note) AS r"
" WHERE CASE WHEN $1::pg_catalog.text IS NULL THEN i.status <> 'resolved'"
"            WHEN $1 = 'all' THEN true"
"            ELSE i.status = $1 END"
"   AND ($2::pg_catalog.text IS NULL OR i.severity = $2)"
" ORDER BY i.severity, i.first_seen_at, i.id";

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

static void
print_table(const PGresult *res, const int *col)
{
	static const char *const titles[] = {
		"ID", "SEV", "STATUS", "OCC", "FIRST SEEN (UTC)", "KEY"
	};
	int			n = PQntuples(res);

	gb_print_table(res, titles, col, (int) lengthof(titles));
	printf("(%d incident%s)\n", n, n == 1 ? "" : "s");
}

static int
incidents_run(GBSession *s)
{
	const char *params[2] = {status, severity};
	int			col[6];			/* the table's, in its order */
	int			line;
	const GBColumn columns[] = {
		{"id", &col[0]}, {"severity", &col[1]}, {"status", &col[2]},
		{"occurrences", &col[3]}, {"first_seen_at", &col[4]}, {"key", &col[5]},
		{"line", &line}, {NULL, NULL}
	};
	PGresult   *res;
	int			rc = GB_EXIT_OK;
	int			r;

	res = gb_exec(s->conn, query, 2, params, &rc);
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
		print_table(res, col);
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
	"Each JSON line has the incident's id, kind, key, agent, violation_type,\n"
	"severity, status, summary, playbooks, occurrences, first_seen_at,\n"
	"last_seen_at, acked_at, acked_by, resolved_at, resolved_by and\n"
	"resolution_note.\n"
	"\n"
	"Times are UTC.  Exit status: 0 listed (even if none); 1 the server refused;\n"
	"3 connection failure; 64 bad command line.\n",
	.option = incidents_option,
	.run = incidents_run,
};
