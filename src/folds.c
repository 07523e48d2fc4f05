/*-------------------------------------------------------------------------
 *
 * folds.c
 *		Appending a fold to gate_bridge.incident_folds, without the executor.
 *
 * The repeat of an alert storm is the commonest decision there is: find the
 * key's unresolved incident and append one row (incident_id, occurrences,
 * last_seen_at, with its key) to incident_folds.  Through SPI that is a planned INSERT
 * ... SELECT with its executor start-up and shut-down, a switch of user
 * and search_path, for a row of three columns.  Here it is two index probes
 * and one heap and index insertion, with the table access method and the
 * index AM of the server, as its catalog code does for its own tables.
 *
 * The caller holds the key's lock (pending.c): no resolve of the incident
 * can commit before this transaction does, so no row lock is needed.  The
 * incident is looked for with the latest committed state whatever the
 * isolation level, as incident.c's find_unresolved() does.  Neither table
 * has triggers, rules or row security of its own to honour, and the work is
 * the extension's, so no privilege is checked (the trigger's decisions
 * run as the extension's owner anyway).
 *
 * src/folds.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "gate_bridge.h"

/* the unique partial index of unresolved incidents, on (kind, agent, subject) */
#define GB_UNRESOLVED_INDEX "incidents_unresolved_idx"
/* incident_folds' key, on (incident_id, transaction_id, seq) */
#define GB_FOLDS_KEY_INDEX "incident_folds_key"

static Oid
relation_oid(const char *name)
{
	Oid			nsp = get_namespace_oid("gate_bridge", false);
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"gate_bridge.%s\" does not exist", name),
				 errhint("Run ALTER EXTENSION gate_bridge UPDATE.")));
	return relid;
}

/*
 * The id of the key's unresolved incident in the latest committed state,
 * or 0.  The index holds only rows that were unresolved when they were
 * written; a row resolved since (a HOT update) is found through it too, so
 * the status is checked on the row.
 */
static int64
find_unresolved_direct(const char *kind, const char *agent, const char *subject,
					   int *severity_rank)
{
	Relation	rows = table_open(relation_oid("incident_rows"), AccessShareLock);
	Relation	idx = index_open(relation_oid(GB_UNRESOLVED_INDEX), AccessShareLock);
	AttrNumber	id_att = get_attnum(RelationGetRelid(rows), "id");
	AttrNumber	status_att = get_attnum(RelationGetRelid(rows), "status");
	AttrNumber	severity_att = get_attnum(RelationGetRelid(rows), "severity");
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData keys[3];
	const char *values[3] = {kind, agent, subject};
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int64		id = 0;
	int			i;

	if (id_att == InvalidAttrNumber || status_att == InvalidAttrNumber ||
		severity_att == InvalidAttrNumber ||
		IndexRelationGetNumberOfKeyAttributes(idx) != 3)
		elog(ERROR, "gate_bridge.incident_rows is not as this library expects");

	for (i = 0; i < 3; i++)
		ScanKeyEntryInitialize(&keys[i], 0, i + 1, BTEqualStrategyNumber,
							   InvalidOid, idx->rd_indcollation[i], F_TEXTEQ,
							   CStringGetTextDatum(values[i]));

	slot = table_slot_create(rows, NULL);
	scan = index_beginscan(rows, idx, snap, 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		status = slot_getattr(slot, status_att, &isnull);
		text	   *t;

		if (isnull)
			continue;
		t = DatumGetTextPP(status);
		if (VARSIZE_ANY_EXHDR(t) == 8 && memcmp(VARDATA_ANY(t), "resolved", 8) == 0)
			continue;
		id = DatumGetInt64(slot_getattr(slot, id_att, &isnull));
		/* sev1, sev2, sev3 (incidents_guard) */
		t = DatumGetTextPP(slot_getattr(slot, severity_att, &isnull));
		*severity_rank = (!isnull && VARSIZE_ANY_EXHDR(t) == 4) ?
			VARDATA_ANY(t)[3] - '0' : 3;
		break;
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	/* the locks are held until the end of the transaction, as a query's */
	index_close(idx, NoLock);
	table_close(rows, NoLock);
	return id;
}

/* Insert a heap tuple's entries into every index of rel (plain columns). */
static void
insert_index_entries(Relation rel, HeapTuple tup)
{
	List	   *indexes = RelationGetIndexList(rel);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(rel),
													&TTSOpsHeapTuple);
	ListCell   *lc;

	ExecStoreHeapTuple(tup, slot, false);
	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(idx);
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (info->ii_Expressions != NIL || info->ii_Predicate != NIL)
			elog(ERROR, "index \"%s\" of gate_bridge.incident_folds is not as this library expects",
				 RelationGetRelationName(idx));
		FormIndexDatum(info, slot, NULL, values, isnull);
		(void) index_insert(idx, values, isnull, &tup->t_self, rel,
							info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
							false, info);
		index_close(idx, NoLock);
	}
	ExecDropSingleTupleTableSlot(slot);
	list_free(indexes);
}

/*
 * The highest seq of the folds of incident "id" by transaction "xact" in
 * incident_folds, or 0.  Folds restored from a dump of another cluster (or
 * replicated from one) carry that cluster's transaction ids, which this
 * cluster hands out again: a new fold must not take the key of one of
 * them, or its transaction's commit would fail.  Every other fold of this
 * transaction id is this transaction's own, seen after
 * CommandCounterIncrement().
 */
static int32
max_fold_seq(Relation folds, int64 id, int64 xact)
{
	Relation	idx = index_open(relation_oid(GB_FOLDS_KEY_INDEX), RowExclusiveLock);
	AttrNumber	seq_att = get_attnum(RelationGetRelid(folds), "seq");
	Snapshot	snap;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int32		max = 0;

	if (seq_att == InvalidAttrNumber ||
		IndexRelationGetNumberOfKeyAttributes(idx) != 3 ||
		idx->rd_index->indkey.values[0] != get_attnum(RelationGetRelid(folds), "incident_id") ||
		idx->rd_index->indkey.values[1] != get_attnum(RelationGetRelid(folds), "transaction_id") ||
		idx->rd_index->indkey.values[2] != seq_att)
		elog(ERROR, "index \"%s\" of gate_bridge.incident_folds is not as this library expects",
			 GB_FOLDS_KEY_INDEX);

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(xact));
	snap = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(folds, NULL);
	scan = index_beginscan(folds, idx, snap, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		max = DatumGetInt32(slot_getattr(slot, seq_att, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	index_close(idx, NoLock);
	return max;
}

/*
 * Fold "count" violations, the last seen at "last_at", into the key's
 * unresolved incident: append them to incident_folds and return the
 * incident's id and its severity's rank (1 for sev1 .. 3); 0 (and nothing
 * written) when the key has none.
 */
int64
gb_fold_append(const char *kind, const char *agent, const char *subject,
			   int64 count, TimestampTz last_at, int *severity_rank)
{
	static FullTransactionId seq_xact;
	static int32 seq = 0;
	int64		id = find_unresolved_direct(kind, agent, subject, severity_rank);
	FullTransactionId xact;
	Relation	folds;
	Datum		values[5];
	bool		isnull[5] = {false, false, false, false, false};
	HeapTuple	tup;

	if (id == 0)
		return 0;

	folds = table_open(relation_oid("incident_folds"), RowExclusiveLock);
	if (RelationGetDescr(folds)->natts != 5)
		elog(ERROR, "gate_bridge.incident_folds is not as this library expects");

	/*
	 * (incident_id, transaction_id, seq) is the table's key: seq counts this
	 * transaction's folds, past any of the incident's folds that carry the
	 * same transaction id from another cluster.
	 */
	xact = GetTopFullTransactionId();
	if (!FullTransactionIdEquals(xact, seq_xact))
	{
		seq_xact = xact;
		seq = 0;
	}
	seq = Max(seq, max_fold_seq(folds, id, (int64) U64FromFullTransactionId(xact)));
	if (seq == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many folds in one transaction")));
	seq++;
	values[0] = Int64GetDatum(id);
	values[1] = Int32GetDatum((int32) Min(count, PG_INT32_MAX));
	values[2] = TimestampTzGetDatum(last_at);
	values[3] = Int64GetDatum((int64) U64FromFullTransactionId(xact));
	values[4] = Int32GetDatum(seq);
	tup = heap_form_tuple(RelationGetDescr(folds), values, isnull);
	simple_heap_insert(folds, tup);
	insert_index_entries(folds, tup);
	heap_freetuple(tup);
	table_close(folds, NoLock);

	/* what follows in this transaction sees the fold */
	CommandCounterIncrement();
	return id;
}
