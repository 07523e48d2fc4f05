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
 * src/patterns.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

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
