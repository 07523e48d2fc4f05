/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *		gate_bridge.ack() and gate_bridge.resolve().
 *
 * open -> ack -> resolved, and open -> resolved.  A resolved incident is
 * final.  Each move is one conditional UPDATE, so two operators racing on
 * one incident cannot both succeed; the loser gets a clear error, as does
 * an unknown id.  Each move writes a timeline row.  Operators need only
 * EXECUTE on these functions: the work runs as the extension's owner.
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

#include "gate_bridge.h"
#include "privileged.h"

static SPIPlanPtr ack_plan = NULL;
static SPIPlanPtr resolve_plan = NULL;
static SPIPlanPtr status_plan = NULL;
static SPIPlanPtr key_lock_plan = NULL;
static SPIPlanPtr event_plan = NULL;
static SPIPlanPtr key_plan = NULL;
static SPIPlanPtr compact_plan = NULL;

static void
prepare_plans(void)
{
	Oid			t_ack[2] = {INT8OID, TEXTOID};
	Oid			t_resolve[3] = {INT8OID, TEXTOID, TEXTOID};
	Oid			t_status[1] = {INT8OID};
	Oid			t_event[5] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};

	if (event_plan != NULL)
		return;
	ack_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
							"   SET status = 'ack', acked_at = clock_timestamp(), acked_by = $2"
							" WHERE id = $1 AND status = 'open' RETURNING id",
							2, t_ack);
	resolve_plan = gb_keep_plan("UPDATE gate_bridge.incident_rows"
								"   SET status = 'resolved', resolved_at = clock_timestamp(),"
								"       resolved_by = $2, resolution_note = $3"
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
							  "         jsonb_strip_nulls(jsonb_build_object('note', $4, 'role', $5)))",
							  5, t_event);
}

/* Refuse a move the lifecycle does not allow from "status". */
static void
check_move(int64 id, bool resolve, const char *status)
{
	if (strcmp(status, "resolved") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("incident " INT64_FORMAT " is already resolved", id),
				 errdetail("A resolved incident is final; the next violation for its key opens a new incident.")));
	if (!resolve && strcmp(status, "ack") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("incident " INT64_FORMAT " is already acknowledged", id)));
}

static void
move(int64 id, bool resolve, const char *actor, const char *note)
{
	GBPrivileged priv;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	/*
	 * Say so plainly on a standby or in a read-only transaction, rather than
	 * let the first locking statement below complain about itself.
	 */
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s incident " INT64_FORMAT ": the %s is read-only",
						resolve ? "resolve" : "acknowledge", id,
						RecoveryInProgress() ? "server" : "transaction"),
				 RecoveryInProgress() ?
				 errhint("Connect to the primary, for example with target_session_attrs=read-write.") : 0));

	gb_spi_begin(&priv);
	prepare_plans();

	values[0] = Int64GetDatum(id);

	/*
	 * A move takes its key's lock in the lock manager, which every
	 * transaction folding violations into the incident holds while it
	 * commits (pending.c): those commit first, and none folds into the
	 * incident after its resolution.  Only committing transactions hold it,
	 * so this waits for no idle writer; and since a committing writer holds
	 * it before it touches the incident's row, a transaction that moves
	 * several incidents, in any order, cannot deadlock with it.
	 */
	{
		gb_spi_run(key_plan, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("incident " INT64_FORMAT " does not exist", id)));
		{
			LOCKTAG		tag;
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			TransactionId xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 4, &isnull));

			/*
			 * An incident that this transaction created (and nobody has
			 * changed since) is invisible to every other one until we
			 * commit: nobody can fold into it meanwhile, and a writer that
			 * waits for our creation while holding the key's lock must not
			 * be waited for in turn.
			 */
			if (!TransactionIdIsCurrentTransactionId(xmin))
			{
				gb_key_locktag(&tag, SPI_getvalue(tup, desc, 1),
							   SPI_getvalue(tup, desc, 2), SPI_getvalue(tup, desc, 3));
				(void) LockAcquire(&tag, ExclusiveLock, false, false);
			}
		}
	}
	values[1] = CStringGetTextDatum(actor);
	values[2] = note ? CStringGetTextDatum(note) : (Datum) 0;
	nulls[2] = note ? ' ' : 'n';

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
	check_move(id, resolve,
			   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));

	gb_spi_run(resolve ? resolve_plan : ack_plan, values, nulls,
			   SPI_OK_UPDATE_RETURNING);
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
		check_move(id, resolve,
				   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access to incident " INT64_FORMAT " due to a concurrent change", id),
				 errhint("Retry the transaction.")));
	}

	/*
	 * A resolved incident takes in its folded violations (every fold of it
	 * has committed: they are made under the key's lock).  We hold its row,
	 * so nobody else compacts it meanwhile.
	 */
	if (resolve)
		gb_spi_run(compact_plan, values, NULL, SPI_OK_SELECT);

	values[1] = CStringGetTextDatum(resolve ? "resolved" : "acked");
	{
		/* the role that called, next to the actor it named */
		char	   *role = GetUserNameFromId(priv.save_userid, true);
		Datum		ev[5] = {values[0], values[1], CStringGetTextDatum(actor), values[2],
		role ? CStringGetTextDatum(role) : (Datum) 0};
		char		evnulls[5] = {' ', ' ', ' ', nulls[2], role ? ' ' : 'n'};

		gb_spi_run(event_plan, ev, evnulls, SPI_OK_INSERT);
	}

	gb_spi_end(&priv);
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

	move(id, false, actor_arg(fcinfo, 1), NULL);
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

	move(id, true, actor, note);
	PG_RETURN_VOID();
}
