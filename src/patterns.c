/*-------------------------------------------------------------------------
 *
 * patterns.c
 *		Agent names and agent patterns: which are valid, and how
 *		specifically a pattern matches an agent.
 *
 * An agent name is 1 to GB_AGENT_MAX_BYTES bytes.  An agent pattern
 * (budgets, playbook rules) is an exact agent name, a prefix glob ending in
 * ".*" ("warehouse.*" matches "warehouse.health"), or "*".  For one budget
 * type the most specific match wins: exact, then the longest glob, then
 * "*".
 *
 * These rules exist here only.  The CHECK constraints of the tables call
 * valid_agent_name() and valid_agent_pattern(); the trigger, the budget
 * cache, the gates and the SQL functions call the C functions.
 *
 * gb_pattern_rank() is the definition of "most specific".  A pattern index
 * (gb_pattern_index_*) answers the same question for many patterns at
 * once: which pattern of each slot (the budget cache uses one slot per
 * budget type) ranks highest for an agent.  It hashes exact names, and glob
 * prefixes grouped by their length, so that a lookup costs one probe for
 * the exact name, at most one per distinct glob prefix length and none for
 * "*", however many patterns there are.  Both classify a pattern with
 * pattern_class(), and the index probes in the order of the ranks: exact,
 * then prefixes from the longest, then "*".  test/pgtap/matching.sql
 * checks the index against gate_bridge.pattern_rank().
 *
 * src/patterns.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "gate_bridge.h"

/* rank of an exact pattern; globs rank by their prefix length, below it */
#define GB_RANK_EXACT		PG_INT32_MAX

/*
 * The longest pattern: a glob of a 128-byte prefix.  (1.0 allowed exact
 * patterns of this length too; they can never match an agent.)
 */
#define GB_PATTERN_MAX_BYTES	(GB_AGENT_MAX_BYTES + 2)

bool
gb_agent_name_valid(size_t len)
{
	return len >= 1 && len <= GB_AGENT_MAX_BYTES;
}

/*
 * Refuse an agent name that is not valid (SQLSTATE 22023).  "what" names
 * the argument or key, e.g. "agent" or "key \"agent\" in violation".
 */
void
gb_check_agent_name(size_t len, const char *what)
{
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (!gb_agent_name_valid(len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long (%zu bytes, at most %d)",
						what, len, GB_AGENT_MAX_BYTES)));
}

bool
gb_agent_pattern_valid(const char *pattern, size_t len)
{
	if (len == 0 || len > GB_PATTERN_MAX_BYTES)
		return false;
	if (len == 1 && pattern[0] == '*')
		return true;
	/* "prefix.*": no other "*", a prefix of at least one byte */
	if (len >= 3 && pattern[len - 2] == '.' && pattern[len - 1] == '*')
		return memchr(pattern, '*', len - 2) == NULL;
	/* an exact name */
	return memchr(pattern, '*', len) == NULL;
}

typedef enum PatternClass
{
	PATTERN_ANY,				/* "*" */
	PATTERN_GLOB,				/* "prefix.*" */
	PATTERN_EXACT				/* anything else: an exact name */
} PatternClass;

/*
 * What kind of pattern this is.  For a glob, *prefix_len is the length of
 * the prefix an agent must start with, "prefix." (the dot included), which
 * is also the glob's rank.
 */
static PatternClass
pattern_class(const char *pattern, size_t plen, size_t *prefix_len)
{
	if (plen == 1 && pattern[0] == '*')
		return PATTERN_ANY;
	if (plen >= 2 && pattern[plen - 1] == '*' && pattern[plen - 2] == '.')
	{
		*prefix_len = plen - 1;
		return PATTERN_GLOB;
	}
	return PATTERN_EXACT;
}

/*
 * How specifically "pattern" matches the agent: -1 for no match, 0 for
 * "*", the prefix length for a glob, GB_RANK_EXACT for the exact name.
 * The higher rank wins.
 */
int
gb_pattern_rank(const char *pattern, const char *agent, int agent_len)
{
	size_t		plen = strlen(pattern);
	size_t		prefix_len = 0;

	switch (pattern_class(pattern, plen, &prefix_len))
	{
		case PATTERN_ANY:
			return 0;
		case PATTERN_GLOB:
			/* "prefix.*" matches agents that start with "prefix." */
			if ((size_t) agent_len >= prefix_len &&
				memcmp(agent, pattern, prefix_len) == 0)
				return (int) prefix_len;
			return -1;
		case PATTERN_EXACT:
			break;
	}
	if ((size_t) agent_len == plen && memcmp(agent, pattern, plen) == 0)
		return GB_RANK_EXACT;
	return -1;
}

/*
 * The pattern index.  Two hash tables of byte strings: exact names, and
 * glob prefixes ("prefix." of "prefix.*").  Each entry holds, per slot,
 * the value of the first pattern added for it (in a pool of nslots values
 * per entry).  The distinct prefix lengths are kept in descending order: a
 * lookup probes the agent's leading bytes at each length that occurs (and
 * at which the agent has a dot, since every prefix ends with one), longest
 * first, so the first entry found with a value for a slot holds that
 * slot's longest matching glob.
 */
typedef struct PatternKey
{
	const char *data;			/* the caller's pattern, not copied */
	uint32		len;
} PatternKey;

typedef struct PatternEntry
{
	PatternKey	key;
	uint32		hash;
	char		status;			/* simplehash's */
	uint32		values;			/* offset of the entry's nslots values in the pool */
} PatternEntry;

#define SH_PREFIX				gbpat
#define SH_ELEMENT_TYPE			PatternEntry
#define SH_KEY_TYPE				PatternKey
#define SH_KEY					key
#define SH_HASH_KEY(tb, k)		hash_bytes((const unsigned char *) (k).data, (int) (k).len)
#define SH_EQUAL(tb, a, b)		((a).len == (b).len && memcmp((a).data, (b).data, (a).len) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a)		((a)->hash)
#define SH_SCOPE				static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

struct GBPatternIndex
{
	MemoryContext cxt;
	int			nslots;
	gbpat_hash *exact;			/* exact names */
	gbpat_hash *prefixes;		/* "prefix." of each glob */
	uint32	   *lengths;		/* distinct prefix lengths, longest first */
	int			nlengths;
	int			lengths_alloc;
	int		   *pool;			/* nslots values per entry; -1: none */
	uint32		pool_used;
	uint32		pool_alloc;
	int		   *any;			/* [nslots]: the "*" patterns */
};

/*
 * A new, empty index in "cxt" (everything it allocates goes there) for
 * slots 0 .. nslots - 1, sized for about "npatterns" patterns.
 */
GBPatternIndex *
gb_pattern_index_create(MemoryContext cxt, int nslots, int npatterns)
{
	GBPatternIndex *idx = MemoryContextAllocZero(cxt, sizeof(GBPatternIndex));
	int			s;

	Assert(nslots > 0);
	idx->cxt = cxt;
	idx->nslots = nslots;
	idx->exact = gbpat_create(cxt, Max(npatterns, 16), NULL);
	idx->prefixes = gbpat_create(cxt, 16, NULL);
	idx->any = MemoryContextAlloc(cxt, sizeof(int) * nslots);
	for (s = 0; s < nslots; s++)
		idx->any[s] = -1;
	return idx;
}

/* Remember a prefix length; the array stays sorted, longest first. */
static void
add_length(GBPatternIndex *idx, uint32 len)
{
	int			i;

	for (i = 0; i < idx->nlengths && idx->lengths[i] > len; i++)
		;
	if (i < idx->nlengths && idx->lengths[i] == len)
		return;
	if (idx->nlengths == idx->lengths_alloc)
	{
		idx->lengths_alloc = Max(8, idx->lengths_alloc * 2);
		idx->lengths = idx->lengths == NULL ?
			MemoryContextAlloc(idx->cxt, sizeof(uint32) * idx->lengths_alloc) :
			repalloc(idx->lengths, sizeof(uint32) * idx->lengths_alloc);
	}
	memmove(&idx->lengths[i + 1], &idx->lengths[i],
			sizeof(uint32) * (idx->nlengths - i));
	idx->lengths[i] = len;
	idx->nlengths++;
}

/* nslots values, all -1, for a new entry; returns their offset */
static uint32
pool_take(GBPatternIndex *idx)
{
	uint32		off = idx->pool_used;
	int			s;

	if (idx->pool_used + idx->nslots > idx->pool_alloc)
	{
		idx->pool_alloc = Max(64 * idx->nslots, idx->pool_alloc * 2);
		idx->pool = idx->pool == NULL ?
			MemoryContextAllocHuge(idx->cxt, sizeof(int) * idx->pool_alloc) :
			repalloc_huge(idx->pool, sizeof(int) * idx->pool_alloc);
	}
	for (s = 0; s < idx->nslots; s++)
		idx->pool[off + s] = -1;
	idx->pool_used += idx->nslots;
	return off;
}

/*
 * Add "pattern" for "slot" with "value" (>= 0).  The pattern is not copied:
 * it must stay as it is while the index is used.  Of two patterns that
 * rank the same for every agent, i.e. the same pattern added twice for a
 * slot, the first one added stays.
 */
void
gb_pattern_index_add(GBPatternIndex *idx, const char *pattern, int slot, int value)
{
	size_t		plen = strlen(pattern);
	size_t		prefix_len = 0;
	gbpat_hash *table;
	PatternKey	key;
	PatternEntry *entry;
	bool		found;

	Assert(slot >= 0 && slot < idx->nslots && value >= 0);
	switch (pattern_class(pattern, plen, &prefix_len))
	{
		case PATTERN_ANY:
			if (idx->any[slot] < 0)
				idx->any[slot] = value;
			return;
		case PATTERN_GLOB:
			table = idx->prefixes;
			key.len = (uint32) prefix_len;
			break;
		case PATTERN_EXACT:
		default:
			table = idx->exact;
			key.len = (uint32) plen;
			break;
	}
	key.data = pattern;
	entry = gbpat_insert(table, key, &found);
	if (!found)
	{
		entry->values = pool_take(idx);
		if (table == idx->prefixes)
			add_length(idx, key.len);
	}
	if (idx->pool[entry->values + slot] < 0)
		idx->pool[entry->values + slot] = value;
}

/* Take the values of "from" for the slots that have none yet. */
static int
take_values(const GBPatternIndex *idx, int *values, const int *from)
{
	int			taken = 0;
	int			s;

	for (s = 0; s < idx->nslots; s++)
		if (values[s] < 0 && from[s] >= 0)
		{
			values[s] = from[s];
			taken++;
		}
	return taken;
}

/*
 * values[slot] := the value of the slot's pattern that ranks highest for
 * the agent by gb_pattern_rank(), -1 where no pattern of the slot matches.
 * Returns whether any slot has one.  The agent may be any bytes.
 */
bool
gb_pattern_index_match(GBPatternIndex *idx, const char *agent, int agent_len,
					   int *values)
{
	PatternKey	key;
	PatternEntry *entry;
	int			filled = 0;
	int			i;

	for (i = 0; i < idx->nslots; i++)
		values[i] = -1;
	if (agent_len < 0)
		return false;
	key.data = agent;

	/* the exact name ranks highest */
	key.len = (uint32) agent_len;
	entry = gbpat_lookup(idx->exact, key);
	if (entry != NULL)
		filled += take_values(idx, values, &idx->pool[entry->values]);

	/*
	 * Then globs, the longest prefix first.  A prefix ends with its dot, so
	 * only the lengths at which the agent has a dot can match.
	 */
	for (i = 0; i < idx->nlengths && filled < idx->nslots; i++)
	{
		if (idx->lengths[i] > (uint32) agent_len ||
			agent[idx->lengths[i] - 1] != '.')
			continue;
		key.len = idx->lengths[i];
		entry = gbpat_lookup(idx->prefixes, key);
		if (entry != NULL)
			filled += take_values(idx, values, &idx->pool[entry->values]);
	}

	/* then "*" */
	if (filled < idx->nslots)
		filled += take_values(idx, values, idx->any);
	return filled > 0;
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

PG_FUNCTION_INFO_V1(gate_bridge_valid_agent_name);

/* gate_bridge.valid_agent_name(name text) RETURNS boolean */
Datum
gate_bridge_valid_agent_name(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(gb_agent_name_valid(VARSIZE_ANY_EXHDR(name)));
}

PG_FUNCTION_INFO_V1(gate_bridge_valid_agent_pattern);

/* gate_bridge.valid_agent_pattern(pattern text) RETURNS boolean */
Datum
gate_bridge_valid_agent_pattern(PG_FUNCTION_ARGS)
{
	text	   *pattern = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(gb_agent_pattern_valid(VARDATA_ANY(pattern),
										  VARSIZE_ANY_EXHDR(pattern)));
}
