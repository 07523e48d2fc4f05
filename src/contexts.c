/*-------------------------------------------------------------------------
 *
 * contexts.c
 *		An eval row's large context, stored once for the incidents it opens.
 *
 * Every incident that the trigger creates from an eval row has the row's
 * context in its details.  One row with many failed invariants opens many
 * incidents: copied into each, a context of 1 MB would be written (and
 * logged) once per incident.  A context that takes more than
 * GB_CONTEXT_INLINE_MAX bytes as stored is therefore written once per eval
 * row and transaction into gate_bridge.incident_contexts, and the
 * incidents point to it (incident_rows.context_id); the view
 * gate_bridge.incidents puts it back into their details.  Smaller ones stay
 * inline: below the TOAST threshold a context costs its incidents less than
 * a row of its own and the foreign key's check would.
 *
 * The context is copied by one INSERT ... SELECT from the eval row, so it is
 * never built in this backend's memory; what is remembered is, per eval row,
 * the id of its copy: a few dozen bytes, for at most GB_CONTEXT_CACHE_MAX
 * eval rows per transaction (then it starts again, and a later incident of
 * an eval row forgotten stores its context anew).  A remembered copy is
 * looked up before it is used again: one that the transaction has removed
 * since (it deleted the incidents that used it, or rolled back to a
 * savepoint) is stored again.
 *
 * src/contexts.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "gate_bridge.h"
#include "privileged.h"

/* eval rows whose context's copy is remembered, per transaction */
#define GB_CONTEXT_CACHE_MAX	10000

typedef struct ContextEntry
{
	int64		eval_id;		/* hash key */
	int64		context_id;
} ContextEntry;

static MemoryContext cache_cxt = NULL;
static HTAB *cache = NULL;

static SPIPlanPtr store_plan = NULL;
static SPIPlanPtr check_plan = NULL;

/* Forget the copies at the end of the transaction (their memory goes with it). */
void
gb_contexts_forget(void)
{
	cache_cxt = NULL;
	cache = NULL;
}

static void
ensure_cache(void)
{
	HASHCTL		ctl;

	if (cache != NULL && hash_get_num_entries(cache) < GB_CONTEXT_CACHE_MAX)
		return;
	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopTransactionContext,
										  "gate_bridge incident contexts",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(cache_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ContextEntry);
	ctl.hcxt = cache_cxt;
	cache = hash_create("gate_bridge incident contexts", 16, &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The id of the copy of eval row eval_id's context in incident_contexts,
 * stored now unless this transaction stored it already.  Runs in the SPI
 * connection of a decision, as the extension's owner; the eval row must
 * exist and have a context.  Changes SPI_tuptable.
 */
int64
gb_context_store(int64 eval_id)
{
	ContextEntry *e;
	bool		found;
	bool		isnull;
	Datum		arg;
	int64		id;

	if (store_plan == NULL)
	{
		Oid			t[1] = {INT8OID};

		store_plan = gb_keep_plan(
			"INSERT INTO gate_bridge.incident_contexts (context)"
			" SELECT context FROM gate_bridge.eval_results"
			"  WHERE id = $1 AND context IS NOT NULL"
			" RETURNING id", 1, t);
		check_plan = gb_keep_plan(
			"SELECT FROM gate_bridge.incident_contexts WHERE id = $1", 1, t);
	}

	ensure_cache();
	e = (ContextEntry *) hash_search(cache, &eval_id, HASH_ENTER, &found);
	if (!found)
		e->context_id = 0;		/* until stored (an error may come first) */
	else if (e->context_id != 0)
	{
		arg = Int64GetDatum(e->context_id);
		gb_spi_run(check_plan, &arg, NULL, SPI_OK_SELECT);
		if (SPI_processed == 1)
			return e->context_id;
	}

	arg = Int64GetDatum(eval_id);
	gb_spi_run(store_plan, &arg, NULL, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "could not store the context of eval row " INT64_FORMAT,
			 eval_id);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 1, &isnull));
	e->context_id = id;
	return id;
}
