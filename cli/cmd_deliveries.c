/*-------------------------------------------------------------------------
 *
 * cmd_deliveries.c
 *		gate-bridge deliveries [--incident ID] [--status STATUS]
 *		[--destination NAME] [--limit N] [--json], gate-bridge redeliver ID.
 *
 * deliveries lists the outbox through the view gate_bridge.delivery_status
 * (which has no URL and no secret), newest first: a table for people, or
 * one JSON object per line, rendered by the server, for programs.
 * redeliver goes through gate_bridge.redeliver(), which puts a dead,
 * delivered or skipped delivery back in the queue; a refusal is printed
 * with the server's message and exits 1.
 *
 * cli/cmd_deliveries.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <inttypes.h>
#include <string.h>

#include "gate_bridge_cli.h"

#define DEFAULT_LIMIT "50"
#define MAX_LIMIT 10000

/*
 * r is the JSON line's object; the table reads its columns too.  LAST is
 * the last HTTP status and the start of the last error, or "-"; NEXT/DELIVERED
 * when a pending delivery is due, or when a delivered one was delivered.
 */
static const char *const list_query =
"SELECT r.id, r.incident_id, r.destination, r.event, r.status, r.attempts,"
"       COALESCE(NULLIF(pg_catalog.concat_ws(' ', d.last_status::pg_catalog.text,"
"                CASE WHEN pg_catalog.length(d.last_error) > 60"
"                     THEN pg_catalog.left(d.last_error, 57) || '...'"
"                     ELSE d.last_error END), ''), '-') AS last_cell,"
"       CASE d.status WHEN 'pending' THEN r.next_attempt_at"
"                     WHEN 'delivered' THEN r.delivered_at"
"                     ELSE '-' END AS when_cell,"
"       pg_catalog.row_to_json(r)::pg_catalog.text AS line"
"  FROM gate_bridge.delivery_status d"
" CROSS JOIN LATERAL ("
"       SELECT d.id, d.destination, d.kind, d.incident_id, d.event_id, d.event,"
"              d.status, d.attempts,"
"              " GB_SQL_UTC("d.next_attempt_at") " AS next_attempt_at,"
"              d.last_status, d.last_error,"
"              " GB_SQL_UTC("d.created_at") " AS created_at,"
"              " GB_SQL_UTC("d.delivered_at") " AS delivered_at, d.request) AS r"
" WHERE ($1::pg_catalog.int8 IS NULL OR d.incident_id = $1)"
"   AND ($2::pg_catalog.text IS NULL OR d.status = $2)"
"   AND ($3::pg_catalog.text IS NULL OR d.destination = $3)"
" ORDER BY d.id DESC"
" LIMIT $4::pg_catalog.int4";

enum
{
	OPT_DESTINATION = GB_LONG_ONLY
};

/* the command line of this run */
static const char *incident = NULL;
static const char *status = NULL;
static const char *destination = NULL;
static const char *limit = DEFAULT_LIMIT;
static bool json = false;
static const char *id_text = NULL;
static int64_t id;

static const GBOption deliveries_options[] = {
	{"incident", 'i', "ID", "only the deliveries of this incident"},
	{"status", 's', "STATUS", "only this status: held, pending, sending,\ndelivered, dead or skipped"},
	{"destination", OPT_DESTINATION, "NAME", "only the deliveries to this destination"},
	{"limit", 'l', "N", "at most N deliveries, 1.." CppAsString2(MAX_LIMIT) " (default " DEFAULT_LIMIT ")"},
	{"json", 'j', NULL, "one JSON object per line instead of a table"},
	{NULL, 0, NULL, NULL}
};

static const GBOption redeliver_options[] = {
	{NULL, 0, NULL, NULL}
};

static int
deliveries_option(int key, const char *arg)
{
	static const char *const statuses[] = {
		"held", "pending", "sending", "delivered", "dead", "skipped", NULL
	};
	const char *const *s;
	int64_t		n;

	switch (key)
	{
		case 'i':
			if (!gb_parse_id(arg, &n) || n == 0)
				return gb_usage_error("deliveries", "invalid --incident \"%s\": expected a positive integer",
									  arg);
			incident = arg;
			break;
		case 's':
			for (s = statuses; *s; s++)
				if (strcmp(arg, *s) == 0)
					break;
			if (*s == NULL)
				return gb_usage_error("deliveries", "invalid --status \"%s\": expected held, pending, sending, delivered, dead or skipped",
									  arg);
			status = arg;
			break;
		case OPT_DESTINATION:
			if (arg[0] == '\0')
				return gb_usage_error("deliveries", "--destination must not be empty");
			destination = arg;
			break;
		case 'l':
			if (!gb_parse_id(arg, &n) || n < 1 || n > MAX_LIMIT)
				return gb_usage_error("deliveries", "invalid --limit \"%s\": expected 1 to %d",
									  arg, MAX_LIMIT);
			limit = arg;
			break;
		case 'j':
			json = true;
			break;
	}
	return GB_EXIT_OK;
}

static int
redeliver_option(int key, const char *arg)
{
	(void) key;
	(void) arg;
	return GB_EXIT_OK;			/* it has no options of its own */
}

static int
redeliver_prepare(const char *const *operands)
{
	if (!gb_parse_id(operands[0], &id) || id == 0)
		return gb_usage_error("redeliver", "invalid delivery ID \"%s\": expected a positive integer",
							  operands[0]);
	id_text = operands[0];
	return GB_EXIT_OK;
}

static int
deliveries_run(GBSession *s)
{
	static const char *const titles[] = {
		"ID", "INCIDENT", "DESTINATION", "EVENT", "STATUS", "ATTEMPTS", "LAST",
		"NEXT/DELIVERED"
	};
	const char *params[4] = {incident, status, destination, limit};
	int			col[lengthof(titles)] = {0};
	int			line = 0;
	const GBColumn columns[] = {
		{"id", &col[0]}, {"incident_id", &col[1]}, {"destination", &col[2]},
		{"event", &col[3]}, {"status", &col[4]}, {"attempts", &col[5]},
		{"last_cell", &col[6]}, {"when_cell", &col[7]},
		{"line", &line}, {NULL, NULL}
	};
	return gb_print_listing(s->conn, list_query, 4, params, columns, titles, col,
							(int) lengthof(titles), &line, json, "delivery", "deliveries");
}

static int
redeliver_run(GBSession *s)
{
	const char *params[1] = {id_text};
	PGresult   *res;
	int			rc = GB_EXIT_OK;

	res = gb_exec(s->conn, "SELECT gate_bridge.redeliver($1::pg_catalog.int8)",
				  1, params, &rc);
	if (res == NULL)
		return rc;
	PQclear(res);
	printf("Delivery %" PRId64 " queued again.\n", id);
	return fflush(stdout) == EOF ? GB_EXIT_FAIL : GB_EXIT_OK;
}

const GBCommand gb_command_deliveries = {
	.name = "deliveries",
	.summary = "list deliveries of incident events to destinations",
	.description =
	"List the deliveries of incident events to destinations (webhooks, Slack,\n"
	"PagerDuty), newest first (gate_bridge.delivery_status).",
	.synopsis = "[OPTIONS]",
	.options = deliveries_options,
	.help_tail =
	"LAST is the last attempt's HTTP status and error, or \"-\".  NEXT/DELIVERED is\n"
	"when a pending delivery is due, or when a delivered one was delivered.\n"
	"Each JSON line has the delivery's id, destination, kind, incident_id,\n"
	"event_id, event, status, attempts, next_attempt_at, last_status, last_error,\n"
	"created_at, delivered_at and request (what a GitHub or Jira delivery asked:\n"
	"create, find, comment, close or reopen; null for the other kinds); never a\n"
	"destination's URL or secret.\n"
	"\n"
	"Times are UTC.  Exit status: 0 listed (even if none); 1 the server refused\n"
	"(no privilege on gate_bridge.delivery_status); 3 connection failure;\n"
	"64 bad command line.\n",
	.option = deliveries_option,
	.run = deliveries_run,
};

const GBCommand gb_command_redeliver = {
	.name = "redeliver",
	.summary = "deliver a dead, delivered or skipped delivery again",
	.description =
	"Put a dead, delivered or skipped delivery back in the queue, due now, its\n"
	"attempts reset (gate_bridge.redeliver); gate-bridge deliver sends it.",
	.synopsis = "[OPTIONS] ID",
	.options = redeliver_options,
	.operands = {"delivery ID"},
	.help_tail =
	"Exit status: 0 queued; 1 the server refused (unknown id, a delivery that is\n"
	"held, pending or being sent); 3 connection failure; 64 bad command line.\n",
	.option = redeliver_option,
	.prepare = redeliver_prepare,
	.run = redeliver_run,
};
