/*-------------------------------------------------------------------------
 *
 * budgets.c
 *		Backend-local cache of gate_bridge.budgets, and agent pattern
 *		matching.
 *
 * The trigger on eval_results asks, for every row, which budgets apply to
 * the row's agent.  Answering from this cache keeps the common path (a row
 * that violates nothing) free of SPI and of locks.
 *
 * Invalidation: a statement trigger on gate_bridge.budgets calls
 * CacheInvalidateRelcache() on the table, which reaches every backend at
 * commit (and this backend at the next command).  Our relcache callback
 * marks the cache stale; the next lookup reloads it.  The reload reads the
 * table with the latest snapshot rather than the transaction's, so that a
 * REPEATABLE READ transaction cannot refill the cache with rows that are
 * already outdated.
 *
 * Matching: an agent pattern is an exact agent name, a prefix glob ending
 * in ".*" ("warehouse.*" matches "warehouse.health") or "*".  For each
 * budget type the most specific enabled budget wins: exact, then the longest
 * glob, then "*".  Results are memoised per agent name.
 *
 * src/budgets.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "gate_bridge.h"
#include "privileged.h"

/* rank of an exact pattern; globs rank by their prefix length, below it */
#define GB_RANK_EXACT		PG_INT32_MAX

/* memoised agents before the memo is emptied, to bound memory */
#define GB_MEMO_MAX_AGENTS	10000

typedef struct AgentBudgets
{
	char		agent[GB_AGENT_MAX_BYTES + 1];	/* hash key */
	bool		any;
	const GBBudget *budgets[GB_NUM_BUDGET_TYPES];
} AgentBudgets;

static MemoryContext cache_cxt = NULL;
static bool cache_valid = false;
static uint64 cache_inval_count = 0;
static Oid	cache_relid = InvalidOid;
static int	cache_nbudgets = 0;
static GBBudget *cache_budgets = NULL;
static HTAB *cache_memo = NULL;
static SPIPlanPtr load_plan = NULL;

static void
budgets_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == cache_relid)
	{
		cache_valid = false;
		cache_inval_count++;
	}
}

void
gb_budget_cache_init(void)
{
	CacheRegisterRelcacheCallback(budgets_relcache_callback, (Datum) 0);
}

static void
memo_create(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GB_AGENT_MAX_BYTES + 1;
	ctl.entrysize = sizeof(AgentBudgets);
	ctl.hcxt = cache_cxt;
	cache_memo = hash_create("gate_bridge agent budgets", 256, &ctl,
#if PG_VERSION_NUM >= 140000
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
#else
							 HASH_ELEM | HASH_CONTEXT);
#endif
}

static double
datum_float8(HeapTuple tup, TupleDesc desc, int attno, bool *isnull)
{
	Datum		d = SPI_getbinval(tup, desc, attno, isnull);

	return *isnull ? 0.0 : DatumGetFloat8(d);
}

/* (Re)load every enabled budget into cache_cxt. */
static void
budget_cache_load(void)
{
	uint64		inval_before = cache_inval_count;
	Oid			nsp;
	Oid			relid;
	GBPrivileged priv;
	Snapshot	snap;
	SPIPlanPtr	plan;
	int			ret;
	uint64		i;

	nsp = get_namespace_oid("gate_bridge", false);
	relid = get_relname_relid("budgets", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"gate_bridge.budgets\" does not exist")));

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(CacheMemoryContext,
										  "gate_bridge budget cache",
										  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(cache_cxt);
	cache_memo = NULL;
	cache_budgets = NULL;
	cache_nbudgets = 0;
	cache_relid = relid;

	gb_spi_begin(&priv);
	/* the lookback text goes into incident details: one style for all */
	(void) set_config_option("intervalstyle", "postgres",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (load_plan == NULL)
		load_plan = gb_keep_plan("SELECT agent_pattern, budget_type, warning, error, critical,"
								 "       lookback::pg_catalog.text"
								 "  FROM gate_bridge.budgets WHERE enabled",
								 0, NULL);
	plan = load_plan;

	snap = RegisterSnapshot(GetLatestSnapshot());
	ret = SPI_execute_snapshot(plan, NULL, NULL, snap, InvalidSnapshot,
							   true, false, 0);
	UnregisterSnapshot(snap);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "loading gate_bridge.budgets failed: %s",
			 SPI_result_code_string(ret));

	cache_budgets = MemoryContextAllocZero(cache_cxt,
										   sizeof(GBBudget) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		GBBudget   *b = &cache_budgets[cache_nbudgets];
		char	   *type = SPI_getvalue(tup, desc, 2);
		bool		isnull;

		if (!gb_budget_type_parse(type, &b->budget_type))
			continue;			/* excluded by a CHECK constraint */
		b->agent_pattern = MemoryContextStrdup(cache_cxt, SPI_getvalue(tup, desc, 1));
		b->warning = datum_float8(tup, desc, 3, &isnull);
		b->has_warning = !isnull;
		b->error = datum_float8(tup, desc, 4, &isnull);
		b->has_error = !isnull;
		b->critical = datum_float8(tup, desc, 5, &isnull);
		b->has_critical = !isnull;
		b->lookback = MemoryContextStrdup(cache_cxt, SPI_getvalue(tup, desc, 6));
		cache_nbudgets++;
	}

	gb_spi_end(&priv);

	memo_create();

	/* an invalidation that arrived while loading means: load again next time */
	cache_valid = (cache_inval_count == inval_before);
}

int
gb_pattern_rank(const char *pattern, const char *agent, int agent_len)
{
	size_t		plen = strlen(pattern);

	if (plen == 1 && pattern[0] == '*')
		return 0;
	if (plen >= 2 && pattern[plen - 1] == '*' && pattern[plen - 2] == '.')
	{
		/* "prefix.*" matches agents that start with "prefix." */
		if ((size_t) agent_len >= plen - 1 &&
			memcmp(agent, pattern, plen - 1) == 0)
			return (int) (plen - 1);
		return -1;
	}
	if ((size_t) agent_len == plen && memcmp(agent, pattern, plen) == 0)
		return GB_RANK_EXACT;
	return -1;
}

static void
match_agent(const char *agent, int agent_len, AgentBudgets *out)
{
	int			best_rank[GB_NUM_BUDGET_TYPES];
	int			i;

	for (i = 0; i < GB_NUM_BUDGET_TYPES; i++)
	{
		best_rank[i] = -1;
		out->budgets[i] = NULL;
	}
	out->any = false;

	for (i = 0; i < cache_nbudgets; i++)
	{
		const GBBudget *b = &cache_budgets[i];
		int			rank = gb_pattern_rank(b->agent_pattern, agent, agent_len);

		if (rank > best_rank[b->budget_type])
		{
			best_rank[b->budget_type] = rank;
			out->budgets[b->budget_type] = b;
			out->any = true;
		}
	}
}

/*
 * The budgets that apply to "agent", indexed by GBBudgetType (NULL where the
 * agent has none of that type), or NULL when no budget applies at all.
 * The result stays valid until the next call.
 */
const GBBudget *const *
gb_budgets_for_agent(const char *agent, int agent_len)
{
	static AgentBudgets scratch;
	AgentBudgets *entry;
	bool		found;
	char		key[GB_AGENT_MAX_BYTES + 1];

	if (!cache_valid)
		budget_cache_load();

	if (cache_nbudgets == 0)
		return NULL;

	if (agent_len > GB_AGENT_MAX_BYTES || memchr(agent, '\0', agent_len) != NULL)
	{
		/* cannot be a hash key; such rows are refused by a CHECK anyway */
		match_agent(agent, agent_len, &scratch);
		return scratch.any ? scratch.budgets : NULL;
	}

	memcpy(key, agent, agent_len);
	key[agent_len] = '\0';

	entry = (AgentBudgets *) hash_search(cache_memo, key, HASH_FIND, NULL);
	if (entry == NULL)
	{
		if (hash_get_num_entries(cache_memo) >= GB_MEMO_MAX_AGENTS)
		{
			hash_destroy(cache_memo);
			memo_create();
		}
		entry = (AgentBudgets *) hash_search(cache_memo, key, HASH_ENTER, &found);
		match_agent(agent, agent_len, entry);
	}
	return entry->any ? entry->budgets : NULL;
}

PG_FUNCTION_INFO_V1(gate_bridge_pattern_rank);

/* gate_bridge.pattern_rank(pattern text, agent text) RETURNS integer */
Datum
gate_bridge_pattern_rank(PG_FUNCTION_ARGS)
{
	char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *agent = PG_GETARG_TEXT_PP(1);
	int			rank;

	rank = gb_pattern_rank(pattern, VARDATA_ANY(agent), VARSIZE_ANY_EXHDR(agent));
	if (rank < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(rank);
}

PG_FUNCTION_INFO_V1(gate_bridge_budgets_changed);

/*
 * Statement trigger on gate_bridge.budgets: every backend's cache is stale
 * once this transaction commits.
 */
Datum
gate_bridge_budgets_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_budgets_changed: not called by trigger manager")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_budgets_changed: must be fired AFTER")));

	CacheInvalidateRelcache(trigdata->tg_relation);

	return PointerGetDatum(NULL);
}
