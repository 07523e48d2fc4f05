/*-------------------------------------------------------------------------
 *
 * remediation.c
 *		Playbooks that act: run_playbook() and auto_run_playbooks().
 *
 * A playbook's action (gate_bridge.playbook_registry, checked by its guard
 * when it is registered) is a destination or a function.  Running it
 * records playbook_started on the incident's timeline, then:
 *
 * - a destination: a delivery of that event is queued in the outbox, in
 *	 this transaction, so nothing is sent for a transaction that rolls
 *	 back; when the delivery is delivered or dead, the trigger
 *	 playbook_delivery_done records playbook_succeeded or playbook_failed.
 *	 claim_deliveries() gives that delivery the incident as a function
 *	 gets it (its row of gate_bridge.incidents) and the playbook.
 * - a function f(incident jsonb): called at once, as the playbook's
 *	 action_role (SetUserIdAndSecContext, a restricted operation: never with
 *	 the owner's privileges nor the caller's), in a subtransaction of its
 *	 own: its result (as text) goes into playbook_succeeded; an error rolls
 *	 back what it did, nothing else, and goes into playbook_failed.
 *
 * run_playbook() is what operators call; auto_run_playbooks() is tick()'s
 * part, which runs the low-risk playbooks with auto_run for the incidents
 * that suggest them, after the creating transaction has committed (tick()
 * sees only committed incidents), once per incident
 * (gate_bridge.playbook_auto_runs), at most gate_bridge.auto_run_limit per
 * playbook per hour, never for an incident that is resolved, snoozed,
 * silenced or flapping, and never waiting: an incident another transaction
 * holds (a resolve, say) is left to the next tick.
 *
 * The work is done as the extension's owner, as ack() and resolve() do it;
 * EXECUTE on run_playbook is the privilege an operator needs.
 *
 * src/remediation.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/* what a run came to */
typedef enum
{
	RUN_SUCCEEDED,
	RUN_FAILED,
	RUN_QUEUED,
	RUN_SKIPPED					/* auto-run only: the incident was busy or no
								 * longer eligible */
} RunOutcome;

static const char *const outcome_names[] = {"succeeded", "failed", "queued", "skipped"};

/* A playbook, as the registry has it. */
typedef struct Playbook
{
	char	   *name;
	char	   *action;			/* NULL: none */
	char	   *action_role;	/* for a function */
	char	   *dest_kind;		/* for a destination, else NULL */
} Playbook;

static SPIPlanPtr playbook_plan = NULL;
static SPIPlanPtr incident_plan = NULL;
static SPIPlanPtr incident_nowait_plan = NULL;
static SPIPlanPtr event_plan = NULL;
static SPIPlanPtr delivery_plan = NULL;
static SPIPlanPtr candidates_plan = NULL;
static SPIPlanPtr claim_plan = NULL;

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

/* The playbook of this name, or false; inside an SPI section. */
static bool
read_playbook(const char *name, Playbook *pb)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	HeapTuple	tup;
	TupleDesc	desc;

	if (playbook_plan == NULL)
		playbook_plan = gb_keep_plan(
			"SELECT p.name, p.action, p.action_role, d.kind"
			"  FROM gate_bridge.playbook_registry p"
			"  LEFT JOIN gate_bridge.destinations d ON d.name = p.action"
			" WHERE p.name = $1", 1, types);
	gb_spi_run(playbook_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	pb->name = spi_text(tup, desc, 1);
	pb->action = spi_text(tup, desc, 2);
	pb->action_role = spi_text(tup, desc, 3);
	pb->dest_kind = spi_text(tup, desc, 4);
	return true;
}

/* Record an event on the incident's timeline; its id. */
static int64
add_event(int64 incident_id, const char *event, const char *actor, Jsonb *detail)
{
	bool		isnull;

	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, JSONBOID};
	Datum		values[4];

	if (event_plan == NULL)
		event_plan = gb_keep_plan(
			"INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)"
			" VALUES ($1, $2, clock_timestamp(), $3, $4)"
			" RETURNING id", 4, types);
	values[0] = Int64GetDatum(incident_id);
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(actor);
	values[3] = JsonbPGetDatum(detail);
	gb_spi_run(event_plan, values, NULL, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* {"playbook", "action", "auto", ...}: the detail of the run's events */
static Jsonb *
run_detail(const Playbook *pb, bool autorun, const char *key, const char *value,
		   const char *key2, const char *value2)
{
	JsonbParseState *st = NULL;
	JsonbValue	b;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "playbook", pb->name);
	gb_jb_text(&st, "action", pb->action);
	gb_jb_key(&st, "auto");
	b.type = jbvBool;
	b.val.boolean = autorun;
	pushJsonbValue(&st, WJB_VALUE, &b);
	if (key != NULL)
		gb_jb_text(&st, key, value);
	if (key2 != NULL)
		gb_jb_text(&st, key2, value2);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * Call the function action f(incident) as the playbook's role, in a
 * subtransaction.  *result: its value as text (NULL for NULL), or the error
 * message with *sqlstate.
 */
static bool
call_action(const Playbook *pb, Jsonb *incident, char **result, char **sqlstate)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	Oid			role = get_role_oid(pb->action_role, true);
	bool		ok = true;

	*result = NULL;
	*sqlstate = NULL;
	if (!OidIsValid(role))
	{
		*result = psprintf("role \"%s\" does not exist", pb->action_role);
		*sqlstate = "42704";
		return false;
	}

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Oid			types[1] = {JSONBOID};
		Datum		values[1] = {JsonbPGetDatum(incident)};
		int			ret;

		/* the action's role, and nothing it could leave behind for others */
		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		ret = SPI_execute_with_args(psprintf("SELECT %s($1)::text", pb->action),
									1, types, values, NULL, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "the action of playbook \"%s\" returned no row", pb->name);
		if (SPI_processed > 0)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			MemoryContextSwitchTo(cxt);
			*result = v ? pstrdup(v) : NULL;
		}
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		SetUserIdAndSecContext(save_userid, save_sec);
		*result = edata->message;
		*sqlstate = pstrdup(unpack_sql_state(edata->sqlerrcode));
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Run the playbook for the incident, whose row the caller has locked and
 * found open (or acked); inside an SPI section as the owner.
 */
static RunOutcome
run(int64 incident_id, Jsonb *incident, const Playbook *pb, const char *actor,
	bool autorun)
{
	char	   *result;
	char	   *sqlstate;
	int64		started;

	started = add_event(incident_id, "playbook_started", actor,
						run_detail(pb, autorun, NULL, NULL, NULL, NULL));

	if (pb->dest_kind != NULL)
	{
		Oid			types[3] = {TEXTOID, INT8OID, INT8OID};
		Datum		values[3];

		/* the started event's delivery to the destination is the action */
		if (delivery_plan == NULL)
			delivery_plan = gb_keep_plan(
				"INSERT INTO gate_bridge.deliveries (destination, event_id, incident_id, event)"
				" VALUES ($1, $2, $3, 'playbook_started')", 3, types);
		values[0] = CStringGetTextDatum(pb->action);
		values[1] = Int64GetDatum(started);
		values[2] = Int64GetDatum(incident_id);
		gb_spi_run(delivery_plan, values, NULL, SPI_OK_INSERT);
		return RUN_QUEUED;
	}

	if (call_action(pb, incident, &result, &sqlstate))
	{
		(void) add_event(incident_id, "playbook_succeeded", actor,
				  run_detail(pb, autorun, "result", result, NULL, NULL));
		return RUN_SUCCEEDED;
	}
	(void) add_event(incident_id, "playbook_failed", actor,
			  run_detail(pb, autorun, "error", result, "sqlstate", sqlstate));
	ereport(LOG,
			(errmsg("Playbook %s failed for incident " INT64_FORMAT ": %s",
					pb->name, incident_id, result),
			 errhidestmt(true)));
	return RUN_FAILED;
}

/*
 * The incident as jsonb (a row of gate_bridge.incidents), its row locked,
 * and its status; false when there is none (or, with nowait, it is busy).
 */
static bool
lock_incident(int64 id, bool nowait, Jsonb **incident, char **status, bool *held)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	SPIPlanPtr *plan = nowait ? &incident_nowait_plan : &incident_plan;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	if (*plan == NULL)
		*plan = gb_keep_plan(
			psprintf("SELECT to_jsonb(i), r.status,"
					 "       r.snoozed_until IS NOT NULL OR r.silence_id IS NOT NULL OR r.flapping"
					 "       OR gate_bridge.silence_for(r.kind, r.agent, r.violation_type, r.key,"
					 "                                  clock_timestamp()) IS NOT NULL"
					 "  FROM gate_bridge.incident_rows r"
					 "  JOIN gate_bridge.incidents i ON i.id = r.id"
					 " WHERE r.id = $1"
					 "   FOR NO KEY UPDATE OF r%s", nowait ? " SKIP LOCKED" : ""),
			1, types);
	gb_spi_run(*plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*incident = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 1, &isnull));
	*status = spi_text(tup, desc, 2);
	*held = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	return true;
}

PG_FUNCTION_INFO_V1(gate_bridge_run_playbook);

/*
 * run_playbook(incident_id bigint, playbook text, actor text DEFAULT
 * current_user) RETURNS text: succeeded, failed or queued.
 */
Datum
gate_bridge_run_playbook(PG_FUNCTION_ARGS)
{
	int64		id;
	char	   *name;
	char	   *actor;
	GBPrivileged priv;
	Playbook	pb;
	Jsonb	   *incident;
	char	   *status;
	bool		held;
	RunOutcome	outcome;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("incident_id must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("playbook must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("actor must not be null")));
	id = PG_GETARG_INT64(0);
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) > 63)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("playbook \"%s\" does not exist", "(a name over 63 bytes)")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) > GB_ACTOR_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("actor is too long (%d bytes, at most %d)",
						(int) VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)), GB_ACTOR_MAX_BYTES)));
	actor = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (actor[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("actor must not be empty")));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot run playbook %s: the %s is read-only", name,
						RecoveryInProgress() ? "server" : "transaction")));

	gb_spi_begin(&priv);
	if (!read_playbook(name, &pb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("playbook \"%s\" does not exist", gb_quote_clip(name)),
				 errhint("The playbooks are in gate_bridge.playbooks.")));
	if (pb.action == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("playbook %s has no action to run", pb.name),
				 errhint("Follow its runbook by hand, or have the owner attach an action in gate_bridge.playbooks.")));
	if (!lock_incident(id, false, &incident, &status, &held))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("incident " INT64_FORMAT " does not exist", id)));
	if (strcmp(status, "resolved") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("incident " INT64_FORMAT " is resolved", id),
				 errhint("A playbook runs for an open or acknowledged incident.")));
	outcome = run(id, incident, &pb, actor, false);
	gb_spi_end(&priv);

	PG_RETURN_TEXT_P(cstring_to_text(outcome_names[outcome]));
}

/* One candidate of auto-run. */
typedef struct Candidate
{
	int64		incident_id;
	char	   *playbook;
	bool		mine;			/* its row is this transaction's */
} Candidate;

PG_FUNCTION_INFO_V1(gate_bridge_auto_run_playbooks);

/*
 * auto_run_playbooks() RETURNS integer: the playbooks run (tick()).
 */
Datum
gate_bridge_auto_run_playbooks(PG_FUNCTION_ARGS)
{
	GBPrivileged priv;
	MemoryContext cxt = CurrentMemoryContext;
	Candidate  *cands;
	uint64		ncands;
	uint64		i;
	int			n = 0;

	if (gb_auto_run_limit <= 0 || XactReadOnly)
		PG_RETURN_INT32(0);

	gb_spi_begin(&priv);

	/*
	 * The incidents that suggest a playbook with auto_run and have not run
	 * it, oldest first; nothing at all to read when no playbook has
	 * auto_run.
	 */
	if (candidates_plan == NULL)
		candidates_plan = gb_keep_plan(
			"SELECT r.id, p.name, r.xmin"
			"  FROM gate_bridge.playbook_registry p"
			"  JOIN gate_bridge.incident_rows r"
			"    ON p.name = ANY (r.playbooks)"
			" WHERE p.auto_run AND p.risk = 'low' AND p.action IS NOT NULL"
			"   AND r.status <> 'resolved' AND r.snoozed_until IS NULL"
			"   AND r.silence_id IS NULL AND NOT r.flapping"
			"   AND gate_bridge.silence_for(r.kind, r.agent, r.violation_type, r.key,"
			"                               clock_timestamp()) IS NULL"
			"   AND NOT EXISTS (SELECT FROM gate_bridge.playbook_auto_runs a"
			"                    WHERE a.incident_id = r.id AND a.playbook = p.name)"
			" ORDER BY r.id, p.name", 0, NULL);
	gb_spi_run(candidates_plan, NULL, NULL, SPI_OK_SELECT);
	ncands = SPI_processed;
	cands = MemoryContextAlloc(cxt, sizeof(Candidate) * Max(ncands, 1));
	for (i = 0; i < ncands; i++)
	{
		bool		isnull;

		/* not inside the transaction that opened (or last changed) it */
		cands[i].mine = TransactionIdIsCurrentTransactionId(
			DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
												3, &isnull)));
		cands[i].incident_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull));
		cands[i].playbook = MemoryContextStrdup(cxt, spi_text(SPI_tuptable->vals[i],
															  SPI_tuptable->tupdesc, 2));
	}

	for (i = 0; i < ncands; i++)
	{
		Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
		Datum		values[3];
		Playbook	pb;
		Jsonb	   *incident;
		char	   *status;
		bool		held;

		if (cands[i].mine)
			continue;
		/* busy (a resolve, another tick): the next tick */
		if (!lock_incident(cands[i].incident_id, true, &incident, &status, &held))
			continue;
		if (strcmp(status, "resolved") == 0 || held)
			continue;
		if (!read_playbook(cands[i].playbook, &pb) || pb.action == NULL)
			continue;

		/*
		 * Once per incident, and within the hour's limit: the claim is the
		 * row of playbook_auto_runs, taken under the incident's lock.
		 */
		if (claim_plan == NULL)
			claim_plan = gb_keep_plan(
				"INSERT INTO gate_bridge.playbook_auto_runs (incident_id, playbook, run_at)"
				"SELECT $1, $2, clock_timestamp()"
				" WHERE (SELECT count(*) FROM gate_bridge.playbook_auto_runs a"
				"         WHERE a.playbook = $2"
				"           AND a.run_at > clock_timestamp() - interval '1 hour') < $3"
				" ON CONFLICT DO NOTHING", 3, types);
		values[0] = Int64GetDatum(cands[i].incident_id);
		values[1] = CStringGetTextDatum(cands[i].playbook);
		values[2] = Int32GetDatum(gb_auto_run_limit);
		gb_spi_run(claim_plan, values, NULL, SPI_OK_INSERT);
		if (SPI_processed == 0)
			continue;
		(void) run(cands[i].incident_id, incident, &pb, "gate_bridge", true);
		n++;
	}
	gb_spi_end(&priv);
	PG_RETURN_INT32(n);
}
