/*-------------------------------------------------------------------------
 *
 * recovery.c
 *		Which agents have unresolved incidents that passing rows can resolve.
 *
 * budgets.resolve_after resolves an agent's budget or invariant incident
 * after that many passing rows in a row.  The trigger on eval_results must
 * then know, for a row that passes, whether the agent has an unresolved
 * incident of that type, without SPI or a lock on the common path: an
 * agent without one is by far the commonest case.  This backend-local
 * cache answers, per agent name: the budget types with an unresolved
 * budget incident, and the invariants with an unresolved invariant
 * incident.  It is asked only for agents whose budgets have resolve_after,
 * and only for the types that passed.
 *
 * Invalidation: a statement trigger on incident_rows (creations, status
 * changes, deletes) sends a relcache invalidation of the table's id
 * sequence at commit (no query plan depends on that relation's entry, so
 * none is replanned for it); our callback empties the cache, and the next
 * question about an agent reads its unresolved incidents again, with the
 * latest snapshot, through the unique partial index.  So after any
 * incident anywhere opens or resolves, each agent with such budgets costs
 * one index lookup at its next passing row.  An incident created by
 * another transaction reaches this backend's cache when it processes
 * invalidations (at the start of its next transaction, or its next lock):
 * passing rows inserted before that are not counted, which only delays an
 * auto-resolve.  A stale "unresolved" answer costs a lookup at commit,
 * where the decision finds the incident resolved and counts nothing.
 *
 * Memory: the cache holds at most GB_RECOVERY_MAX_AGENTS agents; past that
 * it is emptied and starts again.
 *
 * src/recovery.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "gate_bridge.h"
#include "privileged.h"

#define GB_RECOVERY_MAX_AGENTS	10000

typedef struct OpenEntry
{
	char		agent[GB_AGENT_MAX_BYTES + 1];	/* hash key */
	uint32		budget_types;	/* bit per GBBudgetType */
	List	   *invariants;		/* of char *, in the cache's context */
} OpenEntry;

static MemoryContext cache_cxt = NULL;
static HTAB *cache = NULL;
static Oid	signal_relid = InvalidOid;	/* incident_rows_id_seq */
static SPIPlanPtr open_plan = NULL;
static uint64 inval_count = 0;

static void
recovery_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == signal_relid)
		inval_count++;
	if (cache != NULL && (relid == InvalidOid || relid == signal_relid))
	{
		hash_destroy(cache);
		cache = NULL;
		MemoryContextReset(cache_cxt);
	}
}

void
gb_recovery_init(void)
{
	CacheRegisterRelcacheCallback(recovery_relcache_callback, (Datum) 0);
}

static Oid
find_signal_relid(void)
{
	Oid			nsp = get_namespace_oid("gate_bridge", false);
	Oid			relid = get_relname_relid("incident_rows_id_seq", nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sequence \"gate_bridge.incident_rows_id_seq\" does not exist"),
				 errhint("Run ALTER EXTENSION gate_bridge UPDATE.")));
	return relid;
}

static void
ensure_cache(void)
{
	HASHCTL		ctl;

	if (cache != NULL)
		return;
	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(CacheMemoryContext,
										  "gate_bridge recovery cache",
										  ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GB_AGENT_MAX_BYTES + 1;
	ctl.entrysize = sizeof(OpenEntry);
	ctl.hcxt = cache_cxt;
	cache = hash_create("gate_bridge recovery cache", 64, &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/*
 * Read an agent's unresolved budget and invariant incidents, into the
 * current memory context.
 */
static void
load_agent(const char *agent, uint32 *budget_types, List **invariants)
{
	GBPrivileged priv;
	Oid			types[1] = {TEXTOID};
	Datum		arg = CStringGetTextDatum(agent);
	MemoryContext caller = CurrentMemoryContext;
	Snapshot	snap;
	int			ret;
	uint64		i;

	gb_spi_begin(&priv);
	if (open_plan == NULL)
		open_plan = gb_keep_plan("SELECT kind, subject FROM gate_bridge.incident_rows"
								 " WHERE kind IN ('budget', 'invariant') AND agent = $1"
								 "   AND status <> 'resolved'", 1, types);
	snap = RegisterSnapshot(GetLatestSnapshot());
	ret = SPI_execute_snapshot(open_plan, &arg, NULL, snap, InvalidSnapshot,
							   true, false, 0);
	UnregisterSnapshot(snap);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "gate_bridge statement failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *kind = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *subject = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		GBBudgetType type;

		if (strcmp(kind, "budget") == 0)
		{
			if (gb_budget_type_parse(subject, &type))
				*budget_types |= (uint32) 1 << type;
		}
		else
		{
			MemoryContext old = MemoryContextSwitchTo(caller);

			*invariants = lappend(*invariants, pstrdup(subject));
			MemoryContextSwitchTo(old);
		}
	}
	gb_spi_end(&priv);
}

/*
 * The agent's unresolved incidents that passing rows count towards: the
 * budget types (a bit per GBBudgetType) and the invariants (a list that is
 * valid until the next invalidation, or in the current memory context).
 * Returns false when it has none.
 */
bool
gb_recovery_open(const char *agent, int agent_len, uint32 *budget_types,
				 List **invariants)
{
	char		name[GB_AGENT_MAX_BYTES + 1];
	OpenEntry  *e;
	bool		found;
	uint64		before;
	ListCell   *lc;

	*budget_types = 0;
	*invariants = NIL;
	if (agent_len > GB_AGENT_MAX_BYTES)
		return false;
	if (!OidIsValid(signal_relid))
		signal_relid = find_signal_relid();
	memcpy(name, agent, agent_len);
	name[agent_len] = '\0';
	if (cache != NULL)
	{
		e = (OpenEntry *) hash_search(cache, name, HASH_FIND, NULL);
		if (e != NULL)
		{
			*budget_types = e->budget_types;
			*invariants = e->invariants;
			return e->budget_types != 0 || e->invariants != NIL;
		}
	}

	before = inval_count;
	load_agent(name, budget_types, invariants);
	/* an invalidation while loading: answer, but do not keep it */
	if (inval_count != before)
		return *budget_types != 0 || *invariants != NIL;

	ensure_cache();
	if (hash_get_num_entries(cache) >= GB_RECOVERY_MAX_AGENTS)
	{
		hash_destroy(cache);
		cache = NULL;
		MemoryContextReset(cache_cxt);
		ensure_cache();
	}
	e = (OpenEntry *) hash_search(cache, name, HASH_ENTER, &found);
	e->budget_types = *budget_types;
	e->invariants = NIL;
	foreach(lc, *invariants)
	{
		MemoryContext old = MemoryContextSwitchTo(cache_cxt);

		e->invariants = lappend(e->invariants, pstrdup((char *) lfirst(lc)));
		MemoryContextSwitchTo(old);
	}
	return e->budget_types != 0 || e->invariants != NIL;
}

PG_FUNCTION_INFO_V1(gate_bridge_incident_rows_changed);

/*
 * Statement trigger on incident_rows: every backend's recovery cache is
 * stale, at commit.
 */
Datum
gate_bridge_incident_rows_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_incident_rows_changed: must be fired by the trigger manager AFTER")));
	if (!OidIsValid(signal_relid))
		signal_relid = find_signal_relid();
	CacheInvalidateRelcacheByRelid(signal_relid);
	return PointerGetDatum(NULL);
}
