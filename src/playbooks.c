/*-------------------------------------------------------------------------
 *
 * playbooks.c
 *		gate_bridge.suggest_playbooks(): playbook suggestions from a cache of
 *		gate_bridge.playbook_rules.
 *
 * The suggestion for (violation_type, agent): the playbooks of the most
 * specific enabled rule for the violation type, then those of the most
 * specific enabled "*" rule that are not already named, in their order;
 * {rerun_eval} when no rule matches.  "Most specific" is gb_pattern_rank()
 * (patterns.c), as for budgets.
 *
 * Every incident created asks for its suggestion, so a burst of thousands
 * of new incidents asks thousands of times: the enabled rules are read once
 * into a per-backend cache and matched in C.  A statement trigger on the
 * table (and a row trigger in replica mode, for logical replication) sends
 * a relcache invalidation, which empties the cache of every backend when
 * the change commits, and of the changing backend at once.  The rules are
 * few (one per violation type and agent pattern that someone wrote), so
 * matching is a scan.
 *
 * src/playbooks.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "gate_bridge.h"
#include "privileged.h"

typedef struct PlaybookRule
{
	bool		any_type;		/* violation_type is "*" */
	char	   *violation_type;
	char	   *agent_pattern;
	int			nplaybooks;
	char	  **playbooks;
} PlaybookRule;

static MemoryContext rules_cxt = NULL;
static PlaybookRule *rules = NULL;
static int	nrules = 0;
static bool rules_valid = false;
static Oid	rules_relid = InvalidOid;
static uint64 rules_inval_count = 0;
static SPIPlanPtr rules_plan = NULL;

static void
playbooks_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == rules_relid)
	{
		rules_valid = false;
		rules_inval_count++;
	}
}

void
gb_playbook_cache_init(void)
{
	CacheRegisterRelcacheCallback(playbooks_relcache_callback, (Datum) 0);
}

/* Read the enabled rules, with the latest committed state, into the cache. */
static void
load_rules(void)
{
	uint64		inval_before = rules_inval_count;
	GBPrivileged priv;
	Snapshot	snap;
	Oid			nsp;
	int			ret;
	uint64		i;

	nsp = get_namespace_oid("gate_bridge", false);
	rules_relid = get_relname_relid("playbook_rules", nsp);
	if (!OidIsValid(rules_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"gate_bridge.playbook_rules\" does not exist")));

	if (rules_cxt == NULL)
		rules_cxt = AllocSetContextCreate(CacheMemoryContext,
										  "gate_bridge playbook rules",
										  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(rules_cxt);
	rules = NULL;
	nrules = 0;

	gb_spi_begin(&priv);
	if (rules_plan == NULL)
		rules_plan = gb_keep_plan("SELECT violation_type, agent_pattern, playbooks"
								  "  FROM gate_bridge.playbook_rules WHERE enabled",
								  0, NULL);
	snap = RegisterSnapshot(GetLatestSnapshot());
	ret = SPI_execute_snapshot(rules_plan, NULL, NULL, snap, InvalidSnapshot,
							   true, false, 0);
	UnregisterSnapshot(snap);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "loading gate_bridge.playbook_rules failed: %s",
			 SPI_result_code_string(ret));

	rules = MemoryContextAllocZero(rules_cxt,
								   sizeof(PlaybookRule) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PlaybookRule *r = &rules[nrules];
		bool		isnull;
		Datum		arr = SPI_getbinval(tup, desc, 3, &isnull);
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		int			j;

		if (isnull)
			continue;			/* refused by NOT NULL */
		r->violation_type = MemoryContextStrdup(rules_cxt, SPI_getvalue(tup, desc, 1));
		r->agent_pattern = MemoryContextStrdup(rules_cxt, SPI_getvalue(tup, desc, 2));
		r->any_type = strcmp(r->violation_type, "*") == 0;
		deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &n);
		r->playbooks = MemoryContextAlloc(rules_cxt, sizeof(char *) * Max(n, 1));
		r->nplaybooks = 0;
		for (j = 0; j < n; j++)
		{
			if (nulls[j])
				continue;		/* refused by the CHECK constraint */
			r->playbooks[r->nplaybooks++] =
				MemoryContextStrdup(rules_cxt, TextDatumGetCString(elems[j]));
		}
		nrules++;
	}
	gb_spi_end(&priv);

	/* an invalidation that arrived while loading means: load again next time */
	rules_valid = (rules_inval_count == inval_before);
}

/* the most specific enabled rule of the kind (type-specific or "*"), or NULL */
static const PlaybookRule *
best_rule(const char *violation_type, const char *agent, int agent_len,
		  bool any_type)
{
	const PlaybookRule *best = NULL;
	int			best_rank = -1;
	int			i;

	for (i = 0; i < nrules; i++)
	{
		const PlaybookRule *r = &rules[i];
		int			rank;

		if (r->any_type != any_type ||
			(!any_type && strcmp(r->violation_type, violation_type) != 0))
			continue;
		rank = gb_pattern_rank(r->agent_pattern, agent, agent_len);
		if (rank > best_rank)
		{
			best = r;
			best_rank = rank;
		}
	}
	return best;
}

static bool
named(const char **names, int n, const char *name)
{
	int			i;

	for (i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

/* The suggestion for (violation_type, agent), as a text[] in the caller's context. */
static ArrayType *
suggest(const char *violation_type, const char *agent, int agent_len)
{
	const PlaybookRule *picked[2];
	const char **names;
	Datum	   *datums;
	int			total = 0;
	int			n = 0;
	int			i;
	int			j;

	if (!rules_valid)
		load_rules();

	picked[0] = best_rule(violation_type, agent, agent_len, false);
	picked[1] = best_rule(violation_type, agent, agent_len, true);
	for (i = 0; i < 2; i++)
		if (picked[i] != NULL)
			total += picked[i]->nplaybooks;

	names = palloc(sizeof(char *) * Max(total, 1));
	for (i = 0; i < 2; i++)
	{
		if (picked[i] == NULL)
			continue;
		for (j = 0; j < picked[i]->nplaybooks; j++)
			if (!named(names, n, picked[i]->playbooks[j]))
				names[n++] = picked[i]->playbooks[j];
	}
	if (n == 0)
		names[n++] = "rerun_eval";

	datums = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		datums[i] = CStringGetTextDatum(names[i]);
	return construct_array(datums, n, TEXTOID, -1, false, TYPALIGN_INT);
}

PG_FUNCTION_INFO_V1(gate_bridge_suggest_playbooks);

/* gate_bridge.suggest_playbooks(violation_type text, agent text) RETURNS text[] */
Datum
gate_bridge_suggest_playbooks(PG_FUNCTION_ARGS)
{
	char	   *violation_type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *agent = PG_GETARG_TEXT_PP(1);

	PG_RETURN_ARRAYTYPE_P(suggest(violation_type, VARDATA_ANY(agent),
								  VARSIZE_ANY_EXHDR(agent)));
}

PG_FUNCTION_INFO_V1(gate_bridge_playbook_rules_changed);

/* Trigger on gate_bridge.playbook_rules: every backend's cache is stale. */
Datum
gate_bridge_playbook_rules_changed(PG_FUNCTION_ARGS)
{
	return gb_cache_changed_trigger(fcinfo, "gate_bridge_playbook_rules_changed");
}
