/*-------------------------------------------------------------------------
 *
 * gate_bridge.h
 *		Declarations shared by the gate_bridge subsystems.
 *
 * src/gate_bridge.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_H
#define GATE_BRIDGE_H

#include "postgres.h"

#include "access/xact.h"
#include "storage/lock.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* The longest agent name (patterns.c); incident keys (incidents_guard). */
#define GB_AGENT_MAX_BYTES	128
#define GB_KEY_MAX_BYTES	255
/* ack/resolve/... arguments that go onto the timeline */
#define GB_ACTOR_MAX_BYTES	128
#define GB_NOTE_MAX_BYTES	8192

/* Budget types, in the order the trigger checks them (names: severity.c). */
#define GB_BUDGET_TYPES_HINT \
	"Use one of \"quality\", \"latency\", \"cost\", \"success_rate\" or \"invariants\"."
typedef enum GBBudgetType
{
	GB_BUDGET_QUALITY = 0,
	GB_BUDGET_LATENCY,
	GB_BUDGET_COST,
	GB_BUDGET_SUCCESS_RATE,
	GB_BUDGET_INVARIANTS,
	GB_NUM_BUDGET_TYPES
} GBBudgetType;

/* Violation severities; 0 means "no tier crossed". */
typedef enum GBSeverity
{
	GB_SEV_NONE = 0,
	GB_SEV_WARNING,
	GB_SEV_ERROR,
	GB_SEV_CRITICAL
} GBSeverity;

typedef enum GBKind
{
	GB_KIND_BUDGET = 0,
	GB_KIND_INVARIANT,
	GB_KIND_PLANNER,
	GB_KIND_DELIVERY,
	GB_KIND_HEARTBEAT
} GBKind;

/* How a windowed gate judges a metric (budgets.method; names: severity.c). */
typedef enum GBMethod
{
	GB_METHOD_MEAN = 0,			/* the window's aggregate */
	GB_METHOD_WILSON,			/* success_rate: the 95 % Wilson lower bound */
	GB_METHOD_BASELINE			/* against the median +- k MAD of past windows */
} GBMethod;

/* One budget row, as cached in the backend. */
typedef struct GBBudget
{
	char	   *agent_pattern;
	GBBudgetType budget_type;
	bool		has_warning;
	bool		has_error;
	bool		has_critical;
	double		warning;
	double		error;
	double		critical;
	char	   *lookback;		/* interval, as text, for incident details */
	Interval	lookback_interval;	/* the window of the gates */
	int32		resolve_after;	/* passing rows that resolve; 0: none */
	bool		auto_resolves;	/* resolve_after or resolve_quiet is set */
	/* the windowed gates only (evaluate.c) */
	int32		min_samples;	/* fewer values: insufficient_data */
	GBMethod	method;
	int32		baseline_windows;
	double		baseline_k;
} GBBudget;

/*
 * The budgets that apply to one agent, pinned in the budget cache
 * (budgets.c): valid until gb_budgets_unpin() or the end of the
 * (sub)transaction, whatever reloads the cache meanwhile.
 */
typedef struct GBBudgetPin
{
	const GBBudget *budgets[GB_NUM_BUDGET_TYPES];	/* NULL: none of the type */
	int			slot;			/* private to budgets.c */
} GBBudgetPin;

/*
 * What the trigger knows of a violation found in an eval row.  It is
 * decided at commit (pending.c); the incident's details are built then,
 * from these figures and the eval row, read again by its id.
 */
typedef struct GBRowViolation
{
	int64		eval_id;
	double		actual;
	double		threshold;
	const GBBudget *budget;		/* NULL: an invariant without a budget */
} GBRowViolation;

/* A violation handed to gate_bridge_on_violation(). */
typedef struct GBViolation
{
	GBKind		kind;
	const char *agent;
	const char *violation_type; /* budget type, "invariants" or
								 * "planner_regression" */
	const char *subject;		/* budget type, invariant name or version */
	GBSeverity	severity;
	/* builds incidents.details; called only when an incident is created */
	Jsonb	   *(*build_details) (void *arg);
	void	   *details_arg;
	/* set by the trigger: decided at commit, details built from this */
	const GBRowViolation *row;
} GBViolation;

/*
 * An incident key.  (kind, agent, subject) identifies it; "key" is its text
 * (BUDGET_{agent}_{subject}, ...), for display, payloads and messages only.
 */
typedef struct GBKey
{
	const char *kind;
	const char *agent;
	const char *subject;
	const char *key;
} GBKey;

/*
 * Violations of one key waiting for their transaction's commit (pending.c):
 * how many, and what the first of them was, to create an incident from.
 */
typedef struct GBPending
{
	SubTransactionId subxid;	/* the (sub)transaction that recorded them */
	GBKind		kind;
	char		kind_name[16];
	char		agent_subject[GB_KEY_MAX_BYTES + 2];	/* agent NUL subject */
	char	   *key;
	char		violation_type[32];
	char		severity[8];	/* sev1, sev2, sev3 */
	int64		count;
	TimestampTz first_at;
	TimestampTz last_at;
	Oid			role;			/* who inserted the first one */
	LOCKTAG		locktag;		/* set when decided */
	bool		locked;			/* locktag is held (ShareLock, ExclusiveLock
								 * when passes > 0) */
	/* the worst of the violations, for escalation */
	int			worst_rank;		/* 1 (sev1) .. 3 (sev3) */
	int64		worst_eval_id;	/* its eval row, 0 when none */
	/* passing rows since the last violation, towards auto-resolve */
	int64		passes;
	int32		resolve_after;
	int64		last_pass_eval_id;
	/* from the trigger */
	bool		from_row;
	int64		eval_id;
	double		actual;
	double		threshold;
	GBSeverity	row_severity;
	bool		has_budget;
	GBBudget	budget;
	/* otherwise, the details as built */
	Jsonb	   *details;
} GBPending;

/* What a round of decisions did, logged as one line (incident.c). */
typedef struct GBDecideSummary
{
	int64		created;
	int64		first_id;
	char		first_key[GB_KEY_MAX_BYTES + 1];	/* copied: SPI memory goes */
	char		first_kind[16];
	int64		last_id;
	int64		rate_limited_logged;	/* keys logged as rate limited */
} GBDecideSummary;

/* pending.c: the advisory lock tags of keys are in this space (field 4) */
#define GB_KEY_LOCK_SPACE	0x4742

/* guc.c */
extern bool gb_enabled;
extern int	gb_auto_run_limit;
extern int	gb_rate_limit;
extern int	gb_rate_window;
extern char *gb_notify_channel;
extern char *gb_events_channel;
extern int	gb_max_invariants_per_row;
extern char *gb_refire_backoff;
extern int	gb_backoff_reset;
extern int	gb_reopen_window;
extern int	gb_flap_threshold;
extern int	gb_flap_window;
extern int	gb_delivery_max_attempts;
#define GB_MAX_BACKOFF_STEPS	16
/* the state changes a key remembers, for flap_threshold */
#define GB_MAX_STATE_CHANGES	64
extern int	gb_backoff_steps;
extern int64 gb_backoff_secs[GB_MAX_BACKOFF_STEPS];
extern void gb_define_gucs(void);

/* severity.c */
extern const char *gb_budget_type_name(GBBudgetType type);
extern bool gb_budget_type_parse(const char *name, GBBudgetType *type);
extern bool gb_budget_is_floor(GBBudgetType type);
extern const char *gb_severity_name(GBSeverity sev);
extern GBSeverity gb_severity_parse(const char *name, const char *what);
extern const char *gb_incident_severity_name(GBSeverity sev);
extern GBSeverity gb_budget_tier(const GBBudget *budget, double actual,
								 double *threshold);
extern GBSeverity gb_invariant_severity(const GBBudget *budget, double failed,
										double *threshold);
extern const char *gb_budget_problem(const char *type_name, const bool *has,
									 const double *value, const char **hint);
extern char *gb_budget_values(const bool *has, const double *value);
extern const char *gb_kind_name(GBKind kind);
extern const char *gb_method_name(GBMethod method);
extern bool gb_method_parse(const char *name, GBMethod *method);
extern const char *gb_budget_method_problem(GBBudgetType type, const char *method_name,
											const Interval *lookback,
											const char **hint);
extern const char *gb_quote_clip(const char *value);

/* patterns.c */
extern bool gb_agent_name_valid(size_t len);
extern void gb_check_agent_name(size_t len, const char *what);
extern bool gb_agent_pattern_valid(const char *pattern, size_t len);
extern int	gb_pattern_rank(const char *pattern, const char *agent, int agent_len);
typedef struct GBPatternIndex GBPatternIndex;
extern GBPatternIndex *gb_pattern_index_create(MemoryContext cxt, int nslots,
											   int npatterns);
extern void gb_pattern_index_add(GBPatternIndex *idx, const char *pattern,
								 int slot, int value);
extern bool gb_pattern_index_match(GBPatternIndex *idx, const char *agent,
								   int agent_len, int *values);

/* budgets.c */
extern void gb_budget_cache_init(void);
extern bool gb_budgets_pin(const char *agent, int agent_len, GBBudgetPin *pin);
extern void gb_budgets_unpin(GBBudgetPin *pin);

/*
 * The agents known from eval_results: a loose index scan over
 * eval_results_agent_created_at_idx, one index probe per agent, never a
 * scan of the table.  The CTE "seen" (agent), with a NULL at its end.
 */
#define GB_KNOWN_AGENTS_CTE \
	"WITH RECURSIVE seen (agent) AS (" \
	"    (SELECT e.agent FROM gate_bridge.eval_results e" \
	"      ORDER BY e.agent LIMIT 1)" \
	"    UNION ALL" \
	"    SELECT (SELECT e.agent FROM gate_bridge.eval_results e" \
	"             WHERE e.agent > s.agent" \
	"             ORDER BY e.agent LIMIT 1)" \
	"      FROM seen s" \
	"     WHERE s.agent IS NOT NULL" \
	")"

/* planners.c: qsort's comparison of doubles (no NaN among them) */
extern int	gb_double_cmp(const void *a, const void *b);

/* evaluate.c */
typedef enum GBWindowProblem
{
	GB_WINDOW_OK,
	GB_WINDOW_TOO_LONG,			/* reaches before the earliest timestamp */
	GB_WINDOW_NOT_POSITIVE
} GBWindowProblem;
extern char *gb_interval_text(const Interval *interval);
extern GBWindowProblem gb_window_start(const Interval *lookback, TimestampTz *since);
extern TimestampTz gb_given_window_start(const Interval *lookback);
extern TimestampTz gb_budget_window_start(const Interval *lookback);

/*
 * An eval row's context larger than this as stored (bytes) is kept once in
 * incident_contexts for the incidents the trigger creates from the row
 * (contexts.c); a smaller one is copied into each incident's details.
 */
#define GB_CONTEXT_INLINE_MAX	2048

/* contexts.c */
extern int64 gb_context_store(int64 eval_id);
extern void gb_contexts_forget(void);

/* eval_trigger.c */
extern void gb_eval_trigger_init(void);
extern Jsonb *gb_row_details(const GBPending *p, const char *agent,
							 const char *subject, int64 *context_id);

/* pending.c */
extern void gb_key_locktag(LOCKTAG *tag, const char *kind, const char *agent,
						   const char *subject);
extern void gb_pending_add(const GBViolation *v, const GBKey *k,
						   const char *severity);
extern void gb_pending_pass(GBKind kind, const char *agent, const char *subject,
							const char *violation_type, int64 eval_id,
							int32 resolve_after);
extern bool gb_pending_has(GBKind kind, const char *agent, const char *subject);
extern void gb_pending_decide(void);
extern void gb_pending_xact(XactEvent event);
extern void gb_pending_subxact(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid);

/* privileged.c */
extern bool gb_schema_ready(bool error);

/* api.c */
extern int64 gb_report_budget_violation(Jsonb *violation, Jsonb *budget,
										Jsonb *context);

/* incident.c */
extern int64 gate_bridge_on_violation(const GBViolation *violation);
extern char *gb_key_text(GBKind kind, const char *agent, const char *subject);

/* lifecycle.c */
extern bool gb_auto_resolve(int64 id, const char *note, Jsonb *evidence,
							bool nowait, TimestampTz seen_before);
extern void gb_key_changed(Datum *kv, int64 incident_id, TimestampTz at,
						   bool opening, TimestampTz prev_resolved);
extern void gb_resolve_key(GBKind kind, const char *agent, const char *subject,
						   const char *note, Jsonb *evidence);

/* recovery.c */
extern void gb_recovery_init(void);
extern bool gb_recovery_open(const char *agent, int agent_len, uint32 *budget_types,
							 List **invariants);
/* playbooks.c; budgets.c */
extern void gb_playbook_cache_init(void);
extern Datum gb_cache_changed_trigger(FunctionCallInfo fcinfo, const char *name);

/* folds.c */
extern int64 gb_fold_append(const char *kind, const char *agent,
							const char *subject, int64 count,
							TimestampTz last_at, int *severity_rank);

extern void gb_decide_pending(GBPending *p, const char *agent,
							  const char *subject, GBDecideSummary *summary);
extern void gb_decide_summary(const GBDecideSummary *summary);
extern Oid	gb_owner(void);

/* payload.c */
extern char *gb_created_data(int64 id, const char *kind, const char *key,
							 const char *severity, const char *summary,
							 TimestampTz created_at, const char *agent);
extern char *gb_created_payload(int64 event_id, int64 position, const char *data);
extern char *gb_event_payload(const char *event, int64 position, int64 event_id,
							  int64 incident_id);

/* stream.c */
extern void gb_stream_xact(XactEvent event);
extern void gb_stream_subxact(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid);

/* jsonutil.c */
extern JsonbValue *gb_json_get(Jsonb *obj, const char *key, JsonbValue *result);
extern const char *gb_json_get_text(Jsonb *obj, const char *argname,
									const char *key, bool required);
extern bool gb_json_get_number(Jsonb *obj, const char *argname,
							   const char *key, bool required, double *result);
extern void gb_json_require_object(Jsonb *obj, const char *argname);
extern void gb_jb_key(JsonbParseState **state, const char *key);
extern void gb_jb_text(JsonbParseState **state, const char *key, const char *value);
extern void gb_jb_float8(JsonbParseState **state, const char *key, double value);
extern void gb_jb_int8(JsonbParseState **state, const char *key, int64 value);
extern void gb_jb_jsonb(JsonbParseState **state, const char *key, Jsonb *value);

#endif							/* GATE_BRIDGE_H */
