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
 *	pending.c		violations decided at commit, in key order
 *	stream.c		stream positions in commit order, announcements
 *	payload.c		the NOTIFY payloads
 *	api.c			SQL-callable functions
 *	lifecycle.c		ack and resolve
 *	retention.c		purge_eval_results: old eval rows deleted in batches
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

/*
 * At commit: first the counts folded in memory are written (that may wait
 * for row locks), then the events are numbered and announced (that takes
 * the lock ordering the stream, which nothing may wait behind).
 */
static void
gb_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	gb_pending_xact(event);
	gb_stream_xact(event);
}

static void
gb_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	(void) arg;
	gb_pending_subxact(event, mySubid, parentSubid);
	gb_stream_subxact(event, mySubid, parentSubid);
}

void
_PG_init(void)
{
	gb_define_gucs();
	gb_budget_cache_init();
	gb_playbook_cache_init();
	gb_eval_trigger_init();
	gb_recovery_init();
	RegisterXactCallback(gb_xact_callback, NULL);
	RegisterSubXactCallback(gb_subxact_callback, NULL);
}
