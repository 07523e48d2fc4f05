/*-------------------------------------------------------------------------
 *
 * memcheck-canary.c
 *		A deliberate memory error, for tools/memcheck.sh.
 *
 * The memory check is only worth something if it can fail.  Before the
 * suites run, tools/memcheck.sh loads this module into a backend of the
 * checked server and calls memcheck_canary(), which reads one element past
 * the end of an array at the end of a malloc'd block.  valgrind sees a read
 * past the block, the undefined behaviour sanitizer an index out of bounds.
 * If the tool of the phase does not report it, the check is broken (the
 * backend did not run under the tool, or the logs were not read) and the
 * script fails instead of printing a clean result.
 *
 * Not part of the extension: it is built into a scratch directory only.
 *
 * tools/memcheck-canary.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdlib.h>

#include "fmgr.h"

PG_MODULE_MAGIC;

typedef struct CanaryBlock
{
	char		bytes[8];
} CanaryBlock;

/* volatile: computed at run time, so no compiler warns or folds it */
static volatile int canary_index = 8;

PG_FUNCTION_INFO_V1(memcheck_canary);

Datum
memcheck_canary(PG_FUNCTION_ARGS)
{
	/* malloc, not palloc: valgrind does not see inside palloc's blocks */
	CanaryBlock *block = malloc(sizeof(CanaryBlock));
	volatile char past_end;

	if (block == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	memset(block->bytes, 'x', sizeof(block->bytes));
	past_end = block->bytes[canary_index];	/* the deliberate error */
	free(block);
	(void) past_end;			/* undefined: must not reach the result */
	PG_RETURN_BOOL(true);
}
