/*-------------------------------------------------------------------------
 *
 * gate_bridge.c
 *		Module entry point: failing evaluation gates become incidents.
 *
 * _PG_init only delegates; each subsystem lives in its own file:
 *	guc.c			settings
 *	budgets.c		backend-local budget cache (pinned generations)
 *	patterns.c		agent names and patterns: validity and matching
 *	severity.c		budget types, tiers, the rules of a budget, severities
 *	evaluate.c		gates over time windows: evaluate_agent, run_gates
 *	eval_trigger.c	the trigger on gate_bridge.eval_results
 *	incident.c		the decision: dedup, rate limit, record, notify
 *	coalesce.c		folding repeats of a key within one transaction
 *	payload.c		the NOTIFY payload
 *	api.c			SQL-callable functions
 *	lifecycle.c		ack and resolve
 *	privileged.c	running SPI work as the extension owner
 *	jsonutil.c		jsonb reading and building helpers
 *
 * src/gate_bridge.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "gate_bridge.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	gb_define_gucs();
	gb_budget_cache_init();
	gb_eval_trigger_init();
	gb_coalesce_init();
}
