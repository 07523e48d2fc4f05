/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *		gate_bridge.ack(), snooze() and resolve(); auto-resolve; flapping.
 *
 * open -> ack -> resolved, and open -> resolved; snooze() acknowledges
 * until a time, after which tick() puts the incident back to open.  An
 * operator cannot move a resolved incident (only a violation within
 * gate_bridge.reopen_window reopens it, incident.c).  Each move is one
 * conditional UPDATE, so two operators racing on one incident cannot both
 * succeed; the loser gets a clear error, as does an unknown id.  Each move
 * writes a timeline row.  Operators need only EXECUTE on these functions:
 * the work runs as the extension's owner.
 *
 * Auto-resolve (gb_auto_resolve) is a resolution by gate_bridge itself,
 * with the evidence on the timeline: from passing rows at commit
 * (incident.c), from a passing gate (run_gates) and from quiet (tick()).
 *
 * Flapping (gb_key_changed): every state change of a key (created,
 * reopened, resolved, auto_resolved) is remembered on its decision row;
 * gate_bridge.flap_threshold of them within gate_bridge.flap_window mark
 * the key and its incident flapping, announced once.  tick() clears it
 * after a full window without a change.
 *
 * src/lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

static SPIPlanPtr ack_plan = NULL;
static SPIPlanPtr resolve_plan = NULL;
static SPIPlanPtr status_plan = NULL;
static SPIPlanPtr key_lock_plan = NULL;
static SPIPlanPtr event_plan = NULL;
static SPIPlanPtr key_plan = NULL;
static SPIPlanPtr compact_plan = NULL;
static SPIPlanPtr snooze_plan = NULL;
static SPIPlanPtr key_lock_skip_plan = NULL;
static SPIPlanPtr row_lock_plan = NULL;
static SPIPlanPtr row_lock_skip_plan = NULL;
static SPIPlanPtr seen_plan = NULL;
static SPIPlanPtr auto_plan = NULL;
static SPIPlanPtr changed_plan = NULL;
static SPIPlanPtr counted_plan = NULL;
static SPIPlanPtr flapping_key_plan = NULL;
static SPIPlanPtr flapping_row_plan = NULL;
static SPIPlanPtr auto_event_plan = NULL;

/* what an operator asks for */
typedef enum MoveKind
{
	MOVE_ACK,
	MOVE_SNOOZE,
	MOVE_RESOLVE
} MoveKind;

static const char *const move_verbs[] = {"acknowledge", "snooze", "resolve"};

static void
prepare_plans(void)
{
	Oid			t_ack[2] = {INT8OID, TEXTOID};
	Oid			t_resolve[3] = {INT8OID, TEXTOID, TEXTOID};
	Oid			t_status[1] = {INT8OID};
	Oid			t_event[6] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID};
	Oid			t_snooze[3] = {INT8OID, TEXTOID, INTERVALOID};
	Oid			t_seen[1] = {INT8OID};
	Oid			t_auto[2] = {INT8OID, TEXTOID};
	Oid			t_changed[6] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID,
	TIMESTAMPTZOID};
	Oid			t_flapkey[4] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			t_auto_event[4] = {INT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID};

	if (auto_event_plan != NULL)
		return;
	ack_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
							"   SET status = 'ack', acked_at = clock_timestamp(), acked_by = $2"
							" WHERE id = $1 AND status = 'open' RETURNING id",
							2, t_ack);
	resolve_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
								"   SET status = 'resolved', resolved_at = clock_timestamp(),"
								"       resolved_by = $2, resolution_note = $3, snoozed_until = NULL"
								" WHERE id = $1 AND status <> 'resolved' RETURNING id",
								3, t_resolve);
	status_plan = gb_keep_plan("SELECT status FROM gate_bridge.incident_rows WHERE id = $1",
							   1, t_status);
	key_plan = gb_keep_plan("SELECT kind, agent, subject, xmin FROM gate_bridge.incident_rows WHERE id = $1",
							1, t_status);
	/* the incident's decision row, locked before the incident (incident.c) */
	key_lock_plan = gb_keep_plan("SELECT 1 FROM gate_bridge.incident_keys k"
								 " WHERE (k.kind, k.agent, k.subject) ="
								 "       (SELECT i.kind, i.agent, i.subject"
								 "          FROM gate_bridge.incident_rows i WHERE i.id = $1)"
								 "   FOR NO KEY UPDATE OF k",
								 1, t_status);
	compact_plan = gb_keep_plan("SELECT gate_bridge.compact_folds($1)", 1, t_status);
	event_plan = gb_keep_plan("INSERT INTO gate_bridge.incident_events"
							  " (incident_id, event, at, actor, detail)"
							  " VALUES ($1, $2, clock_timestamp(), $3,"
							  "         jsonb_strip_nulls(jsonb_build_object('note', $4, 'role', $5))"
							  "         || COALESCE($6, '{}'::jsonb))",
							  6, t_event);
	/* open or acknowledged -> acknowledged until a time, by whoever snoozes */
	snooze_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
							   "   SET status = 'ack',"
							   "       acked_at = CASE WHEN status = 'open' THEN clock_timestamp() ELSE acked_at END,"
							   "       acked_by = $2,"
							   "       snoozed_until = clock_timestamp() + $3"
							   " WHERE id = $1 AND status <> 'resolved' RETURNING snoozed_until",
							   3, t_snooze);
	key_lock_skip_plan = gb_keep_plan("SELECT 1 FROM gate_bridge.incident_keys k"
									  " WHERE (k.kind, k.agent, k.subject) ="
									  "       (SELECT i.kind, i.agent, i.subject"
									  "          FROM gate_bridge.incident_rows i WHERE i.id = $1)"
									  "   FOR NO KEY UPDATE OF k SKIP LOCKED",
									  1, t_status);
	row_lock_plan = gb_keep_plan("SELECT status, flapping FROM gate_bridge.incident_rows"
								 " WHERE id = $1 FOR NO KEY UPDATE", 1, t_seen);
	row_lock_skip_plan = gb_keep_plan("SELECT status, flapping FROM gate_bridge.incident_rows"
									  " WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED", 1, t_seen);
	seen_plan = gb_keep_plan("SELECT last_seen_at FROM gate_bridge.incidents WHERE id = $1",
							 1, t_seen);
	auto_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
							 "   SET status = 'resolved', resolved_at = clock_timestamp(),"
							 "       resolved_by = 'gate_bridge', resolution_note = $2,"
							 "       snoozed_until = NULL"
							 " WHERE id = $1 AND status <> 'resolved' RETURNING id",
							 2, t_auto);
	/*
	 * An opening (created, reopened) is recorded with the resolution before
	 * it, if that is newer than the last change recorded: resolutions are
	 * not written to the key's row (a REPEATABLE READ writer of the key
	 * would then fail for a row changed after its snapshot), only counted.
	 * The last GB_MAX_STATE_CHANGES changes are kept; the count is of those
	 * in the window, and the resolution that is not recorded yet.
	 */
	changed_plan = gb_keep_plan("UPDATE gate_bridge.incident_keys"
								"   SET state_changes ="
								"       (CASE WHEN cardinality(state_changes) >= 63"
								"             THEN state_changes[cardinality(state_changes) - 61:]"
								"             ELSE state_changes END)"
								"       || CASE WHEN $6 > COALESCE(state_changes[cardinality(state_changes)], '-infinity')"
								"               THEN ARRAY[$6, $4] ELSE ARRAY[$4] END"
								" WHERE kind = $1 AND agent = $2 AND subject = $3"
								" RETURNING flapping_since IS NOT NULL,"
								"           (SELECT count(*) FROM unnest(state_changes) t"
								"             WHERE t > $4 - $5::float8 * interval '1 second')",
								6, t_changed);
	counted_plan = gb_keep_plan("SELECT flapping_since IS NOT NULL,"
								"       1 + (SELECT count(*) FROM unnest(state_changes) t"
								"             WHERE t > $4 - $5::float8 * interval '1 second')"
								"  FROM gate_bridge.incident_keys"
								" WHERE kind = $1 AND agent = $2 AND subject = $3",
								5, t_changed);
	flapping_key_plan = gb_keep_plan("UPDATE gate_bridge.incident_keys SET flapping_since = $4"
									 " WHERE kind = $1 AND agent = $2 AND subject = $3",
									 4, t_flapkey);
	flapping_row_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows SET flapping = true"
									 " WHERE id = $1", 1, t_seen);
	auto_event_plan = gb_keep_plan("INSERT INTO gate_bridge.incident_events"
								   " (incident_id, event, at, actor, detail)"
								   " VALUES ($1, $2, COALESCE($4, clock_timestamp()), 'gate_bridge', $3)",
								   4, t_auto_event);
}

/*
 * A state change of the key kv = (kind, agent, subject) at "at", for
 * flapping: an opening (prev_resolved: when the key's previous incident
 * was resolved, DT_NOBEGIN if it has none) is remembered on its decision
 * row, which the caller holds; a resolution (opening false) is counted.
 * flap_threshold changes within flap_window mark the key and the incident
 * flapping ("flapping", once).  Runs in the caller's SPI section.
 */
void
gb_key_changed(Datum *kv, int64 incident_id, TimestampTz at, bool opening,
			   TimestampTz prev_resolved)
{
	Datum		values[6] = {kv[0], kv[1], kv[2], TimestampTzGetDatum(at),
		Int32GetDatum(gb_flap_window), TimestampTzGetDatum(prev_resolved)};
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', prev_resolved == DT_NOBEGIN ? 'n' : ' '};
	bool		isnull;
	bool		flapping;
	int64		changes;
	char	   *detail;

	prepare_plans();
	if (opening)
		gb_spi_run(changed_plan, values, nulls, SPI_OK_UPDATE_RETURNING);
	else if (gb_flap_threshold > 0)
		gb_spi_run(counted_plan, values, NULL, SPI_OK_SELECT);
	else
		return;
	if (SPI_processed == 0 || gb_flap_threshold == 0)
		return;
	flapping = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	changes = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (flapping || changes < gb_flap_threshold)
		return;

	gb_spi_run(flapping_key_plan, values, NULL, SPI_OK_UPDATE);
	values[0] = Int64GetDatum(incident_id);
	gb_spi_run(flapping_row_plan, values, NULL, SPI_OK_UPDATE);
	detail = psprintf("{\"changes\": " INT64_FORMAT ", \"flap_threshold\": %d, \"flap_window\": %d}",
					  changes, gb_flap_threshold, gb_flap_window);
	{
		Datum		ev[4] = {Int64GetDatum(incident_id), CStringGetTextDatum("flapping"),
			DirectFunctionCall1(jsonb_in, CStringGetDatum(detail)), TimestampTzGetDatum(at)};

		gb_spi_run(auto_event_plan, ev, NULL, SPI_OK_INSERT);
	}
	ereport(LOG,
			(errmsg("Incident " INT64_FORMAT " is flapping: " INT64_FORMAT " state changes of its key within %d s",
					incident_id, changes, gb_flap_window),
			 errdetail("Its re-openings are not announced and auto-resolve holds it open until a full gate_bridge.flap_window passes without a change."),
			 errhidestmt(true)));
}

/* Refuse a move the lifecycle does not allow from "status". */
static void
check_move(int64 id, MoveKind kind, const char *status)
{
	if (strcmp(status, "resolved") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("incident " INT64_FORMAT " is already resolved", id),
				 errdetail("A resolved incident is final; the next violation for its key opens a new incident, or reopens this one within gate_bridge.reopen_window.")));
	if (kind == MOVE_ACK && strcmp(status, "ack") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("incident " INT64_FORMAT " is already acknowledged", id)));
}

/* The incident's key (kind, agent, subject), as text datums. */
static void
key_datums(HeapTuple tup, TupleDesc desc, Datum *kv)
{
	int			i;

	for (i = 0; i < 3; i++)
		kv[i] = CStringGetTextDatum(SPI_getvalue(tup, desc, i + 1));
}

/*
 * Take the incident's key lock in ExclusiveLock, which every transaction
 * folding violations into the incident holds in ShareLock while it commits
 * (pending.c): those commit first, and none folds into the incident after
 * its resolution.  Only committing transactions hold it, so this waits for
 * no idle writer; and since a committing writer holds it before it touches
 * the incident's row, a transaction that moves several incidents, in any
 * order, cannot deadlock with it.  An incident that this transaction
 * created (and nobody has changed since) is invisible to every other one
 * until we commit: nobody can fold into it meanwhile, and a writer that
 * waits for our creation while holding the key's lock must not be waited
 * for in turn.  With nowait, returns false instead of waiting.  Runs on
 * key_plan's row; fills kv.
 */
static bool
lock_incident_key(Datum *kv, bool nowait)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 4, &isnull));
	LOCKTAG		tag;

	key_datums(tup, desc, kv);
	if (TransactionIdIsCurrentTransactionId(xmin))
		return true;
	gb_key_locktag(&tag, TextDatumGetCString(kv[0]), TextDatumGetCString(kv[1]),
				   TextDatumGetCString(kv[2]));
	return LockAcquire(&tag, ExclusiveLock, false, nowait) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * After a resolution: a state change of the key, for flapping.  (The
 * recovery count starts again when the key's next incident opens.)
 */
static void
resolved(Datum *kv, int64 id)
{
	gb_key_changed(kv, id, GetCurrentTimestamp(), false, DT_NOBEGIN);
}

static Datum
move(int64 id, MoveKind kind, const char *actor, const char *note,
	 Interval *duration)
{
	GBPrivileged priv;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum		kv[3];
	Datum		result = (Datum) 0;
	const char *event;
	SPIPlanPtr	plan;

	/*
	 * Say so plainly on a standby or in a read-only transaction, rather than
	 * let the first locking statement below complain about itself.
	 */
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s incident " INT64_FORMAT ": the %s is read-only",
						move_verbs[kind], id,
						RecoveryInProgress() ? "server" : "transaction"),
				 RecoveryInProgress() ?
				 errhint("Connect to the primary, for example with target_session_attrs=read-write.") : 0));

	gb_spi_begin(&priv);
	prepare_plans();

	values[0] = Int64GetDatum(id);
	gb_spi_run(key_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("incident " INT64_FORMAT " does not exist", id)));
	(void) lock_incident_key(kv, false);

	values[1] = CStringGetTextDatum(actor);
	if (kind == MOVE_SNOOZE)
	{
		values[2] = IntervalPGetDatum(duration);
		plan = snooze_plan;
		event = "snoozed";
	}
	else
	{
		values[2] = note ? CStringGetTextDatum(note) : (Datum) 0;
		nulls[2] = note ? ' ' : 'n';
		plan = kind == MOVE_RESOLVE ? resolve_plan : ack_plan;
		event = kind == MOVE_RESOLVE ? "resolved" : "acked";
	}

	/*
	 * Lock the key's decision row first, then look at the incident with a
	 * fresh snapshot: a move that is not allowed fails here without waiting
	 * for the incident's row, which a decision may hold while it waits for
	 * the key's row.
	 */
	gb_spi_run(key_lock_plan, values, NULL, SPI_OK_SELECT);
	gb_spi_run(status_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("incident " INT64_FORMAT " does not exist", id)));
	check_move(id, kind, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));

	gb_spi_run(plan, values, nulls, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
	{
		/*
		 * Changed since our snapshot was taken (REPEATABLE READ and above):
		 * a move that is now impossible says so; anything else is a
		 * serialization failure, which the client retries.
		 */
		gb_spi_run(status_plan, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("incident " INT64_FORMAT " does not exist", id)));
		check_move(id, kind, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access to incident " INT64_FORMAT " due to a concurrent change", id),
				 errhint("Retry the transaction.")));
	}
	if (kind == MOVE_SNOOZE)
	{
		bool		isnull;

		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	}

	/*
	 * A resolved incident takes in its folded violations (every fold of it
	 * has committed: they are made under the key's lock).  We hold its row,
	 * so nobody else compacts it meanwhile.
	 */
	if (kind == MOVE_RESOLVE)
		gb_spi_run(compact_plan, values, NULL, SPI_OK_SELECT);

	{
		/* the role that called, next to the actor it named */
		char	   *role = GetUserNameFromId(priv.save_userid, true);
		Datum		ev[6] = {values[0], CStringGetTextDatum(event), CStringGetTextDatum(actor),
			kind == MOVE_SNOOZE ? (note ? CStringGetTextDatum(note) : (Datum) 0) : values[2],
			role ? CStringGetTextDatum(role) : (Datum) 0, (Datum) 0};
		char		evnulls[6] = {' ', ' ', ' ', ' ', role ? ' ' : 'n', 'n'};

		if (kind == MOVE_SNOOZE)
		{
			evnulls[3] = note ? ' ' : 'n';
			ev[5] = DirectFunctionCall1(jsonb_in, CStringGetDatum(
				psprintf("{\"until\": \"%s\"}",
						 JsonEncodeDateTime(NULL, result, TIMESTAMPTZOID, NULL))));
			evnulls[5] = ' ';
		}
		else
			evnulls[3] = nulls[2];
		gb_spi_run(event_plan, ev, evnulls, SPI_OK_INSERT);
	}

	if (kind == MOVE_RESOLVE)
		resolved(kv, id);

	gb_spi_end(&priv);
	return result;
}

/*
 * Resolve incident "id" as gate_bridge, with the evidence on the timeline
 * ("auto_resolved"), unless it is resolved already, its key is flapping
 * (auto-resolve holds a flapping incident open), or a violation came at or
 * after seen_before (DT_NOBEGIN: no such condition).  With nowait it takes
 * nothing another transaction holds (for tick(): a concurrent tick or
 * resolve makes it give up, not wait).  Returns whether it resolved.
 */
bool
gb_auto_resolve(int64 id, const char *note, Jsonb *evidence, bool nowait,
				TimestampTz seen_before)
{
	GBPrivileged priv;
	Datum		values[2];
	Datum		kv[3];
	bool		isnull;
	bool		done = false;

	gb_spi_begin(&priv);
	prepare_plans();

	values[0] = Int64GetDatum(id);
	gb_spi_run(key_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0 || !lock_incident_key(kv, nowait))
		goto out;
	gb_spi_run(nowait ? key_lock_skip_plan : key_lock_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		goto out;
	gb_spi_run(nowait ? row_lock_skip_plan : row_lock_plan, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		goto out;
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "resolved") == 0 ||
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		goto out;
	if (seen_before != DT_NOBEGIN)
	{
		gb_spi_run(seen_plan, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0 ||
			DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull)) >= seen_before)
			goto out;
	}

	values[1] = CStringGetTextDatum(note);
	gb_spi_run(auto_plan, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		goto out;
	gb_spi_run(compact_plan, values, NULL, SPI_OK_SELECT);
	{
		Datum		ev[4] = {values[0], CStringGetTextDatum("auto_resolved"),
		JsonbPGetDatum(evidence), (Datum) 0};
		char		evnulls[4] = {' ', ' ', ' ', 'n'};

		gb_spi_run(auto_event_plan, ev, evnulls, SPI_OK_INSERT);
	}
	resolved(kv, id);
	ereport(LOG,
			(errmsg("Auto-resolved incident " INT64_FORMAT ": %s", id, note),
			 errhidestmt(true)));
	done = true;

out:
	gb_spi_end(&priv);
	return done;
}

/*
 * A text argument of at most "limit" bytes, checked before it is copied:
 * a 100 MB actor must not reach the timeline, nor every reader of it.
 */
static char *
bounded_text_arg(FunctionCallInfo fcinfo, int argno, const char *argname,
				 int limit)
{
	text	   *t = PG_GETARG_TEXT_PP(argno);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (len > limit)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long (%d bytes, at most %d)", argname, len, limit)));
	return text_to_cstring(t);
}

static char *
actor_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *actor;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("actor must not be null")));
	actor = bounded_text_arg(fcinfo, argno, "actor", GB_ACTOR_MAX_BYTES);
	if (actor[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("actor must not be empty")));
	return actor;
}

static int64
id_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("incident_id must not be null")));
	return PG_GETARG_INT64(0);
}

PG_FUNCTION_INFO_V1(gate_bridge_ack);

/* ack(incident_id bigint, actor text DEFAULT current_user) */
Datum
gate_bridge_ack(PG_FUNCTION_ARGS)
{
	int64		id = id_arg(fcinfo);

	(void) move(id, MOVE_ACK, actor_arg(fcinfo, 1), NULL, NULL);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(gate_bridge_resolve);

/* resolve(incident_id bigint, actor text DEFAULT current_user, note text DEFAULT NULL) */
Datum
gate_bridge_resolve(PG_FUNCTION_ARGS)
{
	int64		id = id_arg(fcinfo);
	char	   *actor = actor_arg(fcinfo, 1);
	char	   *note = PG_ARGISNULL(2) ? NULL :
		bounded_text_arg(fcinfo, 2, "note", GB_NOTE_MAX_BYTES);

	(void) move(id, MOVE_RESOLVE, actor, note, NULL);
	PG_RETURN_VOID();
}

/* snoozes last at most this long: a longer hold is a silence */
#define GB_SNOOZE_MAX_DAYS	30

PG_FUNCTION_INFO_V1(gate_bridge_snooze);

/*
 * snooze(incident_id bigint, duration interval, actor text DEFAULT
 * current_user, note text DEFAULT NULL) RETURNS timestamptz
 */
Datum
gate_bridge_snooze(PG_FUNCTION_ARGS)
{
	int64		id = id_arg(fcinfo);
	Interval   *duration;
	char	   *actor;
	char	   *note;
	int64		usecs;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("duration must not be null")));
	duration = PG_GETARG_INTERVAL_P(1);
	/* months as 30 days, as interval comparison counts them */
	usecs = duration->time + (int64) duration->day * USECS_PER_DAY +
		(int64) duration->month * DAYS_PER_MONTH * USECS_PER_DAY;
	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a snooze needs a positive duration, not %s",
						gb_interval_text(duration))));
	if (usecs > (int64) GB_SNOOZE_MAX_DAYS * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a snooze lasts at most %d days, not %s", GB_SNOOZE_MAX_DAYS,
						gb_interval_text(duration)),
				 errhint("For a longer hold, create a silence with gate_bridge.silence().")));
	actor = actor_arg(fcinfo, 2);
	note = PG_ARGISNULL(3) ? NULL : bounded_text_arg(fcinfo, 3, "note", GB_NOTE_MAX_BYTES);

	PG_RETURN_DATUM(move(id, MOVE_SNOOZE, actor, note, duration));
}

/*
 * Auto-resolve the key's unresolved incident, if it has one (run_gates: a
 * passing window).  Waits for the key as resolve() does.
 */
void
gb_resolve_key(GBKind kind, const char *agent, const char *subject,
			   const char *note, Jsonb *evidence)
{
	static SPIPlanPtr find_plan = NULL;
	GBPrivileged priv;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		kv[3] = {CStringGetTextDatum(gb_kind_name(kind)), CStringGetTextDatum(agent),
	CStringGetTextDatum(subject)};
	int64		id = 0;
	bool		isnull;

	gb_spi_begin(&priv);
	if (find_plan == NULL)
		find_plan = gb_keep_plan("SELECT id FROM gate_bridge.incident_rows"
								 " WHERE kind = $1 AND agent = $2 AND subject = $3"
								 "   AND status <> 'resolved'", 3, types);
	gb_spi_run(find_plan, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	gb_spi_end(&priv);
	if (id != 0)
		(void) gb_auto_resolve(id, note, evidence, false, DT_NOBEGIN);
}

PG_FUNCTION_INFO_V1(gate_bridge_auto_resolve);

/*
 * auto_resolve(incident_id bigint, evidence jsonb, seen_before timestamptz
 * DEFAULT NULL) RETURNS boolean: for tick().
 */
Datum
gate_bridge_auto_resolve(PG_FUNCTION_ARGS)
{
	int64		id = id_arg(fcinfo);
	Jsonb	   *evidence;
	const char *reason;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("evidence must not be null")));
	evidence = PG_GETARG_JSONB_P(1);
	gb_json_require_object(evidence, "evidence");
	reason = gb_json_get_text(evidence, "evidence", "reason", false);
	PG_RETURN_BOOL(gb_auto_resolve(id, psprintf("auto-resolved: %s", reason ? reason : "recovered"),
								   evidence, true,
								   PG_ARGISNULL(2) ? DT_NOBEGIN : PG_GETARG_TIMESTAMPTZ(2)));
}
