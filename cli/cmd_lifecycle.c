/*-------------------------------------------------------------------------
 *
 * cmd_lifecycle.c
 *		gate-bridge ack ID, gate-bridge resolve ID [--note TEXT],
 *		gate-bridge snooze ID DURATION [--note TEXT].
 *
 * They go through gate_bridge.ack(), gate_bridge.resolve() and
 * gate_bridge.snooze(), which check the move and write the timeline; a
 * refused move (unknown id, already resolved, ...) is printed with the
 * server's message and exits 1.  A snooze's DURATION goes to the server as
 * an interval ("24h", "2 hours"); one that is not an interval, or not
 * longer than zero, is a usage error, and the server sets the longest.
 *
 * cli/cmd_lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <inttypes.h>
#include <string.h>

#include "gate_bridge_cli.h"

enum
{
	OPT_ACTOR = GB_LONG_ONLY
};

/* the command line of this run */
static const char *note = NULL;
static const char *actor = NULL;
static const char *id_text = NULL;
static int64_t id;
static const char *duration = NULL;

static const GBOption ack_options[] = {
	{"actor", OPT_ACTOR, "NAME", "who acknowledges (default: the database user)"},
	/* not listed: only there to say that it belongs to resolve */
	{"note", 'n', "TEXT", NULL},
	{NULL, 0, NULL, NULL}
};

static const GBOption resolve_options[] = {
	{"note", 'n', "TEXT", "resolution note"},
	{"actor", OPT_ACTOR, "NAME", "who resolves (default: the database user)"},
	{NULL, 0, NULL, NULL}
};

static const GBOption snooze_options[] = {
	{"note", 'n', "TEXT", "why it is snoozed"},
	{"actor", OPT_ACTOR, "NAME", "who snoozes (default: the database user)"},
	{NULL, 0, NULL, NULL}
};

static int
ack_option(int key, const char *arg)
{
	if (key == 'n')
		return gb_usage_error("ack", "--note is only for resolve and snooze");
	if (arg[0] == '\0')
		return gb_usage_error("ack", "--actor must not be empty");
	actor = arg;
	return GB_EXIT_OK;
}

/* resolve and snooze: --note and --actor */
static int
note_actor_option(const char *cmd, int key, const char *arg)
{
	if (key == 'n')
		note = arg;
	else if (arg[0] == '\0')
		return gb_usage_error(cmd, "--actor must not be empty");
	else
		actor = arg;
	return GB_EXIT_OK;
}

static int
resolve_option(int key, const char *arg)
{
	return note_actor_option("resolve", key, arg);
}

static int
snooze_option(int key, const char *arg)
{
	return note_actor_option("snooze", key, arg);
}

static int
check_id(const char *cmd, const char *operand)
{
	if (!gb_parse_id(operand, &id) || id == 0)
		return gb_usage_error(cmd, "invalid incident ID \"%s\": expected a positive integer",
							  operand);
	id_text = operand;
	return GB_EXIT_OK;
}

static int
ack_prepare(const char *const *operands)
{
	return check_id("ack", operands[0]);
}

static int
resolve_prepare(const char *const *operands)
{
	return check_id("resolve", operands[0]);
}

static int
snooze_prepare(const char *const *operands)
{
	int			rc = check_id("snooze", operands[0]);

	if (rc != GB_EXIT_OK)
		return rc;
	if (operands[1][0] == '\0')
		return gb_usage_error("snooze", "invalid DURATION \"\": expected 24h, 30min, 2d or an interval");
	duration = operands[1];
	return GB_EXIT_OK;
}

static int
lifecycle(GBSession *s, bool resolve)
{
	const char *params[3] = {id_text, actor, note};
	PGresult   *res;
	int			rc = GB_EXIT_OK;

	if (resolve)
		res = gb_exec(s->conn,
					  "SELECT gate_bridge.resolve($1::pg_catalog.int8,"
					  " COALESCE($2::pg_catalog.text, CURRENT_USER::pg_catalog.text),"
					  " $3::pg_catalog.text)",
					  3, params, &rc);
	else
		res = gb_exec(s->conn,
					  "SELECT gate_bridge.ack($1::pg_catalog.int8,"
					  " COALESCE($2::pg_catalog.text, CURRENT_USER::pg_catalog.text))",
					  2, params, &rc);
	if (res == NULL)
		return rc;
	PQclear(res);

	/* Name the incident in the confirmation when we may read it. */
	res = PQexecParams(s->conn,
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
	return fflush(stdout) == EOF ? GB_EXIT_FAIL : GB_EXIT_OK;
}

static int
ack_run(GBSession *s)
{
	return lifecycle(s, false);
}

static int
resolve_run(GBSession *s)
{
	return lifecycle(s, true);
}

/* "incident 12 snoozed until 2026-12-03 07:00:00+00", in the server's TimeZone */
static int
snooze_run(GBSession *s)
{
	const char *params[4] = {id_text, duration, actor, note};
	PGresult   *res;
	int			rc;

	rc = gb_check_interval(s->conn, "snooze", "DURATION", duration, duration,
						   "duration");
	if (rc != GB_EXIT_OK)
		return rc;
	res = gb_exec(s->conn,
				  "SELECT gate_bridge.snooze($1::pg_catalog.int8, $2::pg_catalog.interval,"
				  " COALESCE($3::pg_catalog.text, CURRENT_USER::pg_catalog.text),"
				  " $4::pg_catalog.text)",
				  4, params, &rc);
	if (res == NULL)
		return rc;
	printf("Incident %" PRId64 " snoozed until ", id);
	gb_print_sanitized(stdout, PQgetvalue(res, 0, 0));
	printf(".\n");
	PQclear(res);
	return fflush(stdout) == EOF ? GB_EXIT_FAIL : GB_EXIT_OK;
}

const GBCommand gb_command_ack = {
	.name = "ack",
	.summary = "acknowledge an open incident",
	.description = "Acknowledge an open incident.",
	.synopsis = "[OPTIONS] ID",
	.options = ack_options,
	.operands = {"incident ID"},
	.help_tail =
	"Exit status: 0 acknowledged; 1 the server refused (unknown id, not open);\n"
	"3 connection failure; 64 bad command line.\n",
	.option = ack_option,
	.prepare = ack_prepare,
	.run = ack_run,
};

const GBCommand gb_command_resolve = {
	.name = "resolve",
	.summary = "resolve an open or acknowledged incident",
	.description =
	"Resolve an open or acknowledged incident.  A resolved incident is final;\n"
	"the next violation for its key opens a new one.",
	.synopsis = "[OPTIONS] ID",
	.options = resolve_options,
	.operands = {"incident ID"},
	.help_tail =
	"Exit status: 0 resolved; 1 the server refused (unknown id, already\n"
	"resolved); 3 connection failure; 64 bad command line.\n",
	.option = resolve_option,
	.prepare = resolve_prepare,
	.run = resolve_run,
};

const GBCommand gb_command_snooze = {
	.name = "snooze",
	.summary = "acknowledge an open or acknowledged incident for a while",
	.description =
	"Snooze an open or acknowledged incident: acknowledge it until now plus\n"
	"DURATION (gate_bridge.snooze).",
	.synopsis = "[OPTIONS] ID DURATION",
	.options = snooze_options,
	.operands = {"incident ID", "DURATION"},
	.help_tail =
	"DURATION is a PostgreSQL interval: 24h, 30min, 2d, '2 hours 30 minutes'.\n"
	"The line printed gives the end in the session's time zone (TimeZone, PGTZ).\n"
	"\n"
	"Exit status: 0 snoozed; 1 the server refused (unknown id, already resolved,\n"
	"a duration over the longest it allows); 3 connection failure; 64 bad command\n"
	"line.\n",
	.option = snooze_option,
	.prepare = snooze_prepare,
	.run = snooze_run,
};
