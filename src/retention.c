/*-------------------------------------------------------------------------
 *
 * retention.c
 *		purge_eval_results(): delete old eval rows in batches, committing
 *		after each one.
 *
 * eval_results grows without end.  The procedure deletes the rows created
 * before now() - older_than, at most batch_size rows per transaction, and
 * commits after each batch, so that:
 *
 *	- no lock is held for longer than one batch, and no lock that a writer
 *	  needs is taken at all: DELETE takes ROW EXCLUSIVE on the table, which
 *	  INSERT's own lock does not conflict with, and marks old rows that no
 *	  writer touches (writers never choose an id, so no insert can collide
 *	  with a row being deleted);
 *	- each batch's dead rows can be vacuumed as soon as it commits, and the
 *	  procedure never holds back the xmin horizon for longer than one batch
 *	  (a long single DELETE would stop VACUUM everywhere in the database for
 *	  its whole run, the incidents' rows included);
 *	- a purge that is cancelled or fails keeps the batches it committed.
 *
 * Transaction control is why it is a procedure, why it is not SECURITY
 * DEFINER (PostgreSQL runs a SECURITY DEFINER procedure, or one with a SET
 * clause, atomically) and why it refuses to run in an atomic context, that
 * is inside a transaction block or under a function: there it could not
 * commit between batches.  Like the trigger, it does its reading and
 * deleting as the extension's owner with search_path pinned
 * (privileged.c): EXECUTE on the procedure is all a caller needs.
 *
 * A batch is one statement.  It walks the agents in index order with a
 * loose scan of eval_results_agent_created_at_idx (agent, created_at), takes
 * each agent's rows with created_at < cutoff from the same index, oldest
 * first, until batch_size rows are found, and deletes them by ctid (the
 * rows found, in the same snapshot).  The next batch resumes at the last
 * (agent, created_at) deleted, so it does not walk again over the index
 * entries of the rows already deleted.  Rows newer than the cutoff are never
 * read.  No index is added for this: an index on created_at alone would
 * make the purge faster but would cost every INSERT an index insertion.
 *
 * Before the first batch, the cutoff is checked against the windows of the
 * enabled budgets, computed as the gates compute them (evaluate.c): a
 * cutoff later than the start of a window would delete rows that the gate
 * still reads, and is refused unless cut_windows is true.  Later gate runs
 * read later windows, so a cutoff that is outside every window at the start
 * stays outside.
 *
 * src/retention.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/* batch_size: the default is the SQL declaration's */
#define GB_PURGE_BATCH_MIN	1
#define GB_PURGE_BATCH_MAX	100000

static SPIPlanPtr budgets_plan = NULL;
static SPIPlanPtr batch_plan = NULL;

static void
prepare_plans(void)
{
	if (budgets_plan == NULL)
		budgets_plan = gb_keep_plan(
			"SELECT b.agent_pattern, b.budget_type, b.lookback"
			"  FROM gate_bridge.budgets b"
			" WHERE b.enabled"
			" ORDER BY b.agent_pattern COLLATE \"C\", b.budget_type COLLATE \"C\"",
			0, NULL);

	/*
	 * $1 the agent to resume at ('' at first: the first agent), $2 the
	 * cutoff, $3 the created_at to resume at within agent $1, $4 the batch
	 * size.  Returns the rows found, the rows deleted (fewer if a concurrent
	 * purge took some) and the last (agent, created_at) deleted.  "agents"
	 * is lazy: the LIMIT stops the loose scan once the batch is full.  Each
	 * probe for the next agent descends the index to the first entry after
	 * the agent before, and the resumed agent's range starts at $3, so no
	 * batch reads again the index entries of the rows deleted before it.
	 */
	if (batch_plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID};

		batch_plan = gb_keep_plan(
			"WITH RECURSIVE agents (agent) AS ("
			"    SELECT CASE WHEN $1 = '' THEN"
			"                (SELECT e.agent FROM gate_bridge.eval_results e"
			"                  ORDER BY e.agent LIMIT 1)"
			"           ELSE $1 END"
			"    UNION ALL"
			"    SELECT (SELECT e.agent FROM gate_bridge.eval_results e"
			"             WHERE e.agent > a.agent"
			"             ORDER BY e.agent LIMIT 1)"
			"      FROM agents a"
			"     WHERE a.agent IS NOT NULL"
			"), doomed AS ("
			"    SELECT r.ctid"
			"      FROM agents a,"
			"           LATERAL (SELECT e.ctid FROM gate_bridge.eval_results e"
			"                     WHERE e.agent = a.agent"
			"                       AND e.created_at < $2"
			"                       AND e.created_at >= CASE WHEN a.agent = $1 THEN $3"
			"                                           ELSE '-infinity'::timestamptz END"
			"                     ORDER BY e.created_at"
			"                     LIMIT $4) r"
			"     WHERE a.agent IS NOT NULL"
			"     LIMIT $4"
			"), gone AS ("
			"    DELETE FROM gate_bridge.eval_results e"
			"     WHERE e.ctid = ANY (ARRAY(SELECT d.ctid FROM doomed d))"
			"       AND e.created_at < $2"
			"    RETURNING e.agent, e.created_at"
			")"
			"SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM gone),"
			"       l.agent, l.created_at"
			"  FROM (SELECT 1) one"
			"  LEFT JOIN (SELECT g.agent, g.created_at FROM gone g"
			"              ORDER BY g.agent DESC, g.created_at DESC LIMIT 1) l ON true",
			4, types);
	}
}

/*
 * Refuse a cutoff later than the start of an enabled budget's window (the
 * earliest such start is named), unless cut_windows.
 */
static void
check_windows(TimestampTz cutoff, const Interval *older_than, bool cut_windows)
{
	uint64		i;
	int64		found = -1;
	TimestampTz earliest = 0;

	gb_spi_run(budgets_plan, NULL, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									  3, &isnull);
		TimestampTz since;

		if (isnull)
			continue;
		since = gb_budget_window_start(DatumGetIntervalP(d));
		if (since < cutoff && (found < 0 || since < earliest))
		{
			found = (int64) i;
			earliest = since;
		}
	}
	if (found >= 0 && !cut_windows)
	{
		HeapTuple	tup = SPI_tuptable->vals[found];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, 3, &isnull);
		char	   *lookback = gb_interval_text(DatumGetIntervalP(d));

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than %s is shorter than the lookback of an enabled budget, %s",
						gb_interval_text(older_than), lookback),
				 errdetail("The gate of budget \"%s\" (%s) reads the rows of the last %s; "
						   "deleting the rows older than %s would change its result.",
						   gb_quote_clip(SPI_getvalue(tup, desc, 1)),
						   SPI_getvalue(tup, desc, 2), lookback,
						   gb_interval_text(older_than)),
				 errhint("Keep at least the longest lookback of the enabled budgets (%s), "
						 "or pass cut_windows => true to delete inside the windows.",
						 lookback)));
	}
	SPI_freetuptable(SPI_tuptable);
}

PG_FUNCTION_INFO_V1(gate_bridge_purge_eval_results);

/*
 * PROCEDURE gate_bridge.purge_eval_results(older_than interval,
 *		batch_size integer DEFAULT 10000, cut_windows boolean DEFAULT false,
 *		INOUT deleted bigint DEFAULT NULL)
 *
 * Deletes the rows of eval_results created before now() - older_than (now()
 * of the CALL), batch_size rows per transaction, and returns the number of
 * rows deleted (the value passed for "deleted" is ignored).  One LOG line
 * sums the run up for the server log.
 */
Datum
gate_bridge_purge_eval_results(PG_FUNCTION_ARGS)
{
	CallContext *call = (fcinfo->context && IsA(fcinfo->context, CallContext)) ?
		(CallContext *) fcinfo->context : NULL;
	Interval   *older_than;
	int32		batch_size;
	bool		cut_windows;
	TimestampTz cutoff = 0;
	MemoryContext keep;
	char	   *resume_agent;
	TimestampTz resume_at = DT_NOBEGIN;
	int64		deleted = 0;
	int64		batches = 0;
	instr_time	start,
				elapsed;
	TupleDesc	tupdesc;
	Datum		result;
	bool		result_null = false;
	HeapTuple	tuple;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than must not be null"),
				 errhint("Give a positive interval, such as '90 days'.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_size must not be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cut_windows must not be null")));
	older_than = PG_GETARG_INTERVAL_P(0);
	batch_size = PG_GETARG_INT32(1);
	cut_windows = PG_GETARG_BOOL(2);

	if (batch_size < GB_PURGE_BATCH_MIN || batch_size > GB_PURGE_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between %d and %d, not %d",
						GB_PURGE_BATCH_MIN, GB_PURGE_BATCH_MAX, batch_size),
				 errhint("Each batch is one transaction; the default, 10000, keeps each one short.")));

	switch (gb_window_start(older_than, &cutoff))
	{
		case GB_WINDOW_OK:
			break;
		case GB_WINDOW_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("older_than is too long: %s", gb_interval_text(older_than)),
					 errdetail("now() - older_than is before the earliest timestamp.")));
			break;
		case GB_WINDOW_NOT_POSITIVE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("older_than must be a positive interval, not %s",
							gb_interval_text(older_than)),
					 errhint("Give the age of the oldest rows to keep, such as '90 days': "
							 "the rows created before now() - older_than are deleted.")));
			break;
	}

	if (call == NULL || call->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("purge_eval_results() cannot run inside a transaction block"),
				 errdetail("It commits after each batch."),
				 errhint("CALL it on its own, with autocommit on: not inside BEGIN ... COMMIT, "
						 "a function or a multi-statement query string.")));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot purge eval_results: the %s is read-only",
						RecoveryInProgress() ? "server" : "transaction"),
				 RecoveryInProgress() ?
				 errhint("Connect to the primary, for example with target_session_attrs=read-write.") : 0));
	(void) gb_schema_ready(true);

	/*
	 * What must outlive the batches' transactions lives in the portal's
	 * memory, as SPI's own non-atomic memory does.
	 */
	keep = AllocSetContextCreate(PortalContext, "gate_bridge purge",
								 ALLOCSET_SMALL_SIZES);
	resume_agent = MemoryContextStrdup(keep, "");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = CreateTupleDescCopy(tupdesc);
	BlessTupleDesc(tupdesc);

	INSTR_TIME_SET_CURRENT(start);
	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (;;)
	{
		GBPrivileged priv;
		Datum		values[4];
		HeapTuple	row;
		TupleDesc	desc;
		bool		isnull;
		int64		found;

		CHECK_FOR_INTERRUPTS();
		gb_privileged_begin(&priv);
		prepare_plans();
		if (batches == 0)
			check_windows(cutoff, older_than, cut_windows);

		values[0] = PointerGetDatum(cstring_to_text(resume_agent));
		values[1] = TimestampTzGetDatum(cutoff);
		values[2] = TimestampTzGetDatum(resume_at);
		values[3] = Int64GetDatum(batch_size);
		gb_spi_run(batch_plan, values, NULL, SPI_OK_SELECT);
		if (SPI_processed != 1)
			elog(ERROR, "purge batch returned " UINT64_FORMAT " rows", SPI_processed);
		row = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		found = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		deleted += DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		(void) SPI_getbinval(row, desc, 3, &isnull);
		if (!isnull)
		{
			char	   *agent = SPI_getvalue(row, desc, 3);

			pfree(resume_agent);
			resume_agent = MemoryContextStrdup(keep, agent);
			pfree(agent);
			resume_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 4, &isnull));
		}
		SPI_freetuptable(SPI_tuptable);
		pfree(DatumGetPointer(values[0]));
		gb_privileged_end(&priv);
		batches++;

		/* the batch's deletions become visible, and vacuumable */
		SPI_commit();

		/* fewer rows than asked for: every agent has been walked */
		if (found < batch_size)
			break;
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");

	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	ereport(LOG,
			(errmsg("gate_bridge: purged " INT64_FORMAT " eval rows created before %s in "
					INT64_FORMAT " batches (%.3f s)",
					deleted, timestamptz_to_str(cutoff), batches,
					INSTR_TIME_GET_DOUBLE(elapsed)),
			 errhidestmt(true)));

	result = Int64GetDatum(deleted);
	tuple = heap_form_tuple(tupdesc, &result, &result_null);
	MemoryContextDelete(keep);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}
