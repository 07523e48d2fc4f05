/*-------------------------------------------------------------------------
 *
 * budgets.c
 *		Backend-local cache of gate_bridge.budgets.
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
 * Generations and pins.  Each load of the table is a generation with a
 * memory context of its own.  A lookup pins the current generation and
 * hands out pointers into it; they stay valid until the pin is released,
 * whatever happens meanwhile.  Reporting a violation runs SQL, that SQL may
 * insert into eval_results again, and that nested check reloads the cache
 * if budgets changed: the reload makes a new generation and leaves a
 * pinned one alone, which is freed when its last pin goes.  A pin belongs
 * to the (sub)transaction that took it: if an error escapes before the pin
 * is released, the (sub)transaction's abort releases it.  A pin still held
 * at commit is a bug, reported with a WARNING, and released.
 *
 * Matching (patterns.c): for each budget type the most specific enabled
 * budget wins.  Each generation indexes its budgets by pattern, with one
 * slot per budget type (gb_pattern_index_*), so finding an agent's budgets
 * costs a few hash probes however many budgets there are.  Results are
 * memoised per agent name in the generation, for up to GB_MEMO_MAX_AGENTS
 * agents: past that the memo is emptied and starts again, so that a
 * statement over many distinct agents does not grow the backend.
 *
 * src/budgets.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "gate_bridge.h"
#include "privileged.h"

/* memoised agents before the memo is emptied, to bound memory */
#define GB_MEMO_MAX_AGENTS	10000
/* the memo's agent names are copied into blocks of this size */
#define GB_MEMO_NAME_BLOCK	8000

/*
 * The memo: agent name -> the budgets that apply, as indexes into the
 * generation's budgets (-1: none of the type).  A simplehash keyed by the
 * name's bytes, which point into name blocks of the memo's own context.
 */
typedef struct MemoKey
{
	const char *data;
	uint32		len;
} MemoKey;

typedef struct MemoEntry
{
	MemoKey		key;
	uint32		hash;
	char		status;			/* simplehash's */
	bool		any;
	int32		budgets[GB_NUM_BUDGET_TYPES];
} MemoEntry;

#define SH_PREFIX				gbmemo
#define SH_ELEMENT_TYPE			MemoEntry
#define SH_KEY_TYPE				MemoKey
#define SH_KEY					key
#define SH_HASH_KEY(tb, k)		hash_bytes((const unsigned char *) (k).data, (int) (k).len)
#define SH_EQUAL(tb, a, b)		((a).len == (b).len && memcmp((a).data, (b).data, (a).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a)		((a)->hash)
#define SH_SCOPE				static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* One load of gate_bridge.budgets. */
typedef struct BudgetGeneration
{
	MemoryContext cxt;			/* holds this struct and everything below */
	int			nbudgets;
	GBBudget   *budgets;
	GBPatternIndex *index;		/* pattern -> budget, one slot per type */
	gbmemo_hash *memo;			/* agent name -> budgets */
	MemoryContext memo_names;	/* the memo's names, emptied with it */
	char	   *name_block;		/* where the next name goes */
	int			name_free;		/* bytes left there */
	int			pins;
	bool		retired;		/* replaced by a newer load */
} BudgetGeneration;

/* A pin: the generation, and the (sub)transaction that holds it. */
typedef struct PinSlot
{
	BudgetGeneration *gen;		/* NULL: released */
	SubTransactionId subxid;
} PinSlot;

static BudgetGeneration *current_gen = NULL;
static BudgetGeneration *loading_gen = NULL;	/* a load that failed midway */
static bool cache_valid = false;
static uint64 cache_inval_count = 0;
static Oid	cache_relid = InvalidOid;
static SPIPlanPtr load_plan = NULL;

static PinSlot *pin_slots = NULL;
static int	pin_count = 0;
static int	pin_alloc = 0;

static void
free_generation(BudgetGeneration *gen)
{
	MemoryContextDelete(gen->cxt);
}

static void
release_slot(int slot)
{
	BudgetGeneration *gen = pin_slots[slot].gen;

	if (gen == NULL)
		return;
	pin_slots[slot].gen = NULL;
	if (--gen->pins == 0 && gen->retired)
		free_generation(gen);
	while (pin_count > 0 && pin_slots[pin_count - 1].gen == NULL)
		pin_count--;
}

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

static void
budgets_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			i;

	(void) arg;
	for (i = pin_count - 1; i >= 0; i--)
	{
		if (pin_slots[i].gen == NULL || pin_slots[i].subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			release_slot(i);
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			pin_slots[i].subxid = parentSubid;
	}
}

static void
budgets_xact_callback(XactEvent event, void *arg)
{
	bool		leaked = false;
	int			i;

	(void) arg;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	for (i = pin_count - 1; i >= 0; i--)
	{
		leaked |= pin_slots[i].gen != NULL;
		release_slot(i);
	}
	pin_count = 0;
	if (leaked && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		elog(WARNING, "gate_bridge: budget cache pin not released at commit");
}

void
gb_budget_cache_init(void)
{
	CacheRegisterRelcacheCallback(budgets_relcache_callback, (Datum) 0);
	RegisterXactCallback(budgets_xact_callback, NULL);
	RegisterSubXactCallback(budgets_subxact_callback, NULL);
}

/*
 * Empty the memo.  Its table keeps the size it grew to (at most enough for
 * GB_MEMO_MAX_AGENTS), and the name blocks go.
 */
static void
memo_reset(BudgetGeneration *gen)
{
	gbmemo_reset(gen->memo);
	MemoryContextReset(gen->memo_names);
	gen->name_block = NULL;
	gen->name_free = 0;
}

/* a copy of the name, for a memo key */
static const char *
memo_name(BudgetGeneration *gen, const char *agent, int agent_len)
{
	char	   *copy;

	Assert(agent_len <= GB_MEMO_NAME_BLOCK);
	if (gen->name_free < agent_len)
	{
		gen->name_block = MemoryContextAlloc(gen->memo_names, GB_MEMO_NAME_BLOCK);
		gen->name_free = GB_MEMO_NAME_BLOCK;
	}
	copy = gen->name_block;
	memcpy(copy, agent, agent_len);
	gen->name_block += agent_len;
	gen->name_free -= agent_len;
	return copy;
}

static double
datum_float8(HeapTuple tup, TupleDesc desc, int attno, bool *isnull)
{
	Datum		d = SPI_getbinval(tup, desc, attno, isnull);

	return *isnull ? 0.0 : DatumGetFloat8(d);
}

/* Load every enabled budget into a new generation, which becomes current. */
static void
budget_cache_load(void)
{
	uint64		inval_before = cache_inval_count;
	Oid			nsp;
	Oid			relid;
	GBPrivileged priv;
	Snapshot	snap;
	MemoryContext cxt;
	BudgetGeneration *gen;
	int			ret;
	uint64		i;

	nsp = get_namespace_oid("gate_bridge", false);
	relid = get_relname_relid("budgets", nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"gate_bridge.budgets\" does not exist")));
	cache_relid = relid;

	if (loading_gen != NULL)
		free_generation(loading_gen);
	cxt = AllocSetContextCreate(CacheMemoryContext, "gate_bridge budget cache",
								ALLOCSET_SMALL_SIZES);
	gen = MemoryContextAllocZero(cxt, sizeof(BudgetGeneration));
	gen->cxt = cxt;
	loading_gen = gen;

	gb_spi_begin(&priv);
	if (load_plan == NULL)
		load_plan = gb_keep_plan("SELECT agent_pattern, budget_type, warning, error, critical,"
								 "       lookback, resolve_after, resolve_quiet IS NOT NULL,"
								 "       min_samples, method, baseline_windows, baseline_k"
								 "  FROM gate_bridge.budgets WHERE enabled",
								 0, NULL);

	snap = RegisterSnapshot(GetLatestSnapshot());
	ret = SPI_execute_snapshot(load_plan, NULL, NULL, snap, InvalidSnapshot,
							   true, false, 0);
	UnregisterSnapshot(snap);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "loading gate_bridge.budgets failed: %s",
			 SPI_result_code_string(ret));

	gen->budgets = MemoryContextAllocZero(cxt, sizeof(GBBudget) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		GBBudget   *b = &gen->budgets[gen->nbudgets];
		char	   *type = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		Datum		lookback;

		if (!gb_budget_type_parse(type, &b->budget_type))
			continue;			/* refused by budgets_guard */
		b->agent_pattern = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 1));
		b->warning = datum_float8(tup, desc, 3, &isnull);
		b->has_warning = !isnull;
		b->error = datum_float8(tup, desc, 4, &isnull);
		b->has_error = !isnull;
		b->critical = datum_float8(tup, desc, 5, &isnull);
		b->has_critical = !isnull;
		lookback = SPI_getbinval(tup, desc, 6, &isnull);
		if (isnull)
			continue;			/* refused by NOT NULL */
		b->lookback_interval = *DatumGetIntervalP(lookback);
		b->lookback = MemoryContextStrdup(cxt, gb_interval_text(&b->lookback_interval));
		{
			Datum		after = SPI_getbinval(tup, desc, 7, &isnull);

			b->resolve_after = isnull ? 0 : DatumGetInt32(after);
			b->auto_resolves = b->resolve_after > 0 ||
				DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		}
		b->min_samples = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
		if (isnull || !gb_method_parse(SPI_getvalue(tup, desc, 10), &b->method))
			continue;			/* refused by NOT NULL and budgets_guard */
		b->baseline_windows = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
		b->baseline_k = DatumGetFloat8(SPI_getbinval(tup, desc, 12, &isnull));
		gen->nbudgets++;
	}

	gb_spi_end(&priv);

	/* the patterns live in cxt, as long as the index */
	gen->index = gb_pattern_index_create(cxt, GB_NUM_BUDGET_TYPES, gen->nbudgets);
	for (i = 0; i < (uint64) gen->nbudgets; i++)
		gb_pattern_index_add(gen->index, gen->budgets[i].agent_pattern,
							 gen->budgets[i].budget_type, (int) i);
	gen->memo = gbmemo_create(cxt, 256, NULL);
	gen->memo_names = AllocSetContextCreate(cxt, "gate_bridge agent memo",
											ALLOCSET_DEFAULT_SIZES);
	loading_gen = NULL;

	if (current_gen != NULL)
	{
		if (current_gen->pins == 0)
			free_generation(current_gen);
		else
			current_gen->retired = true;
	}
	current_gen = gen;

	/* an invalidation that arrived while loading means: load again next time */
	cache_valid = (cache_inval_count == inval_before);
}

/* budgets[type] := what applies to the agent, NULL for none of the type */
static void
budgets_of(const BudgetGeneration *gen, const int32 *found, const GBBudget **budgets)
{
	int			t;

	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
		budgets[t] = found[t] < 0 ? NULL : &gen->budgets[found[t]];
}

static void
pin_current(GBBudgetPin *pin)
{
	if (pin_count == pin_alloc)
	{
		int			n = Max(16, pin_alloc * 2);

		pin_slots = pin_slots == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(PinSlot) * n) :
			repalloc(pin_slots, sizeof(PinSlot) * n);
		pin_alloc = n;
	}
	pin_slots[pin_count].gen = current_gen;
	pin_slots[pin_count].subxid = GetCurrentSubTransactionId();
	pin->slot = pin_count++;
	current_gen->pins++;
}

/*
 * Pin the budgets that apply to "agent": pin->budgets[GBBudgetType] (NULL
 * where the agent has none of that type) stay valid until
 * gb_budgets_unpin(pin) or the end of the (sub)transaction.  Returns false,
 * pinning nothing, when no budget applies to the agent at all.
 */
bool
gb_budgets_pin(const char *agent, int agent_len, GBBudgetPin *pin)
{
	BudgetGeneration *gen;
	MemoEntry  *entry;
	MemoKey		key;
	uint32		hash;
	bool		found;
	bool		any;
	int32		matched[GB_NUM_BUDGET_TYPES];

	if (!cache_valid || current_gen == NULL)
		budget_cache_load();
	gen = current_gen;

	if (gen->nbudgets == 0)
		return false;

	if (!gb_agent_name_valid(agent_len))
	{
		/* not memoised, to bound the memo; refused by a CHECK anyway */
		any = gb_pattern_index_match(gen->index, agent, agent_len, matched);
		if (!any)
			return false;
		budgets_of(gen, matched, pin->budgets);
		pin_current(pin);
		return true;
	}

	key.data = agent;
	key.len = (uint32) agent_len;
	hash = hash_bytes((const unsigned char *) agent, agent_len);
	entry = gbmemo_lookup_hash(gen->memo, key, hash);
	if (entry == NULL)
	{
		any = gb_pattern_index_match(gen->index, agent, agent_len, matched);
		if (gen->memo->members >= GB_MEMO_MAX_AGENTS)
			memo_reset(gen);
		key.data = memo_name(gen, agent, agent_len);
		entry = gbmemo_insert_hash(gen->memo, key, hash, &found);
		Assert(!found);
		entry->any = any;
		memcpy(entry->budgets, matched, sizeof(entry->budgets));
	}
	if (!entry->any)
		return false;
	budgets_of(gen, entry->budgets, pin->budgets);
	pin_current(pin);
	return true;
}

void
gb_budgets_unpin(GBBudgetPin *pin)
{
	Assert(pin->slot >= 0 && pin->slot < pin_count);
	release_slot(pin->slot);
	pin->slot = -1;
}

/*
 * The body of the triggers that tell every backend's cache that its table
 * changed (budgets here, playbook rules in playbooks.c): a relcache
 * invalidation of the table, which reaches the other backends when this
 * transaction commits and this one at once.
 */
Datum
gb_cache_changed_trigger(FunctionCallInfo fcinfo, const char *name)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: not called by trigger manager", name)));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: must be fired AFTER", name)));

	CacheInvalidateRelcache(trigdata->tg_relation);

	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(gate_bridge_budgets_changed);

/* Trigger on gate_bridge.budgets: every backend's cache is stale. */
Datum
gate_bridge_budgets_changed(PG_FUNCTION_ARGS)
{
	return gb_cache_changed_trigger(fcinfo, "gate_bridge_budgets_changed");
}
