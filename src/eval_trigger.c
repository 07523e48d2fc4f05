/*-------------------------------------------------------------------------
 *
 * eval_trigger.c
 *		AFTER INSERT FOR EACH ROW trigger on gate_bridge.eval_results.
 *
 * For each stored row: find the agent's budgets (from the backend cache),
 * detect every violation — each metric against its floor or ceiling, and
 * each failed invariant — and hand each one to gate_bridge_on_violation().
 *
 * The common path, a row that violates nothing, reads a few attributes,
 * does a hash lookup and a few comparisons: no SPI, no lock, no NOTIFY.
 * Everything is allocated in the trigger manager's per-row memory context,
 * which is reset after every row, so a large INSERT or COPY does not grow.
 *
 * src/eval_trigger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/dependency.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "replication/logicalworker.h"
#include "replication/origin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/datetime.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "gate_bridge.h"
#include "privileged.h"

/* attribute numbers of the columns we read */
typedef struct EvalColumns
{
	Oid			relid;
	AttrNumber	id;
	AttrNumber	agent;
	AttrNumber	eval_run_id;
	AttrNumber	metric[GB_NUM_BUDGET_TYPES - 1];	/* quality .. success_rate */
	AttrNumber	invariants_failed;
	AttrNumber	planner_version;
	AttrNumber	triggered_by;
	AttrNumber	context;
	AttrNumber	created_at;
	AttrNumber	last_checked;	/* the largest of agent, metric[], invariants_failed */
	Oid			id_seq;			/* identity sequence of "id", or InvalidOid */
	int64		id_seq_seen;	/* ids up to this came from the sequence */
} EvalColumns;

static EvalColumns eval_columns = {InvalidOid};

static void
eval_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == eval_columns.relid)
		eval_columns.relid = InvalidOid;
}

void
gb_eval_trigger_init(void)
{
	CacheRegisterRelcacheCallback(eval_relcache_callback, (Datum) 0);
}

static AttrNumber
column(TupleDesc desc, const char *name, Oid type)
{
	int			attno = SPI_fnumber(desc, name);

	if (attno <= 0 || TupleDescAttr(desc, attno - 1)->atttypid != type)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge trigger needs column \"%s\" of type %s",
						name, format_type_be(type))));
	return attno;
}

static EvalColumns *
get_eval_columns(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	if (eval_columns.relid == RelationGetRelid(rel))
		return &eval_columns;

	eval_columns.id = column(desc, "id", INT8OID);
	eval_columns.agent = column(desc, "agent", TEXTOID);
	eval_columns.eval_run_id = column(desc, "eval_run_id", TEXTOID);
	eval_columns.metric[GB_BUDGET_QUALITY] = column(desc, "quality", FLOAT8OID);
	eval_columns.metric[GB_BUDGET_LATENCY] = column(desc, "latency_p95_ms", FLOAT8OID);
	eval_columns.metric[GB_BUDGET_COST] = column(desc, "cost_usd", FLOAT8OID);
	eval_columns.metric[GB_BUDGET_SUCCESS_RATE] = column(desc, "success_rate", FLOAT8OID);
	eval_columns.invariants_failed = column(desc, "invariants_failed", TEXTARRAYOID);
	eval_columns.planner_version = column(desc, "planner_version", TEXTOID);
	eval_columns.triggered_by = column(desc, "triggered_by", TEXTOID);
	eval_columns.context = column(desc, "context", JSONBOID);
	eval_columns.created_at = column(desc, "created_at", TIMESTAMPTZOID);
	eval_columns.last_checked = Max(eval_columns.agent, eval_columns.invariants_failed);
	for (i = 0; i < GB_NUM_BUDGET_TYPES - 1; i++)
		eval_columns.last_checked = Max(eval_columns.last_checked,
										eval_columns.metric[i]);
	eval_columns.id_seq = getIdentitySequence(RelationGetRelid(rel),
											  eval_columns.id, true);
	eval_columns.id_seq_seen = PG_INT64_MIN;
	eval_columns.relid = RelationGetRelid(rel);
	return &eval_columns;
}

/*
 * Was this row numbered by the table's identity sequence?  A row whose id
 * the sequence has not handed out yet brings its own: it is a restore
 * (pg_dump loads the rows before it sets the sequence) or a copy from
 * another database, and it was checked where it came from.  Asked only for
 * rows that violate something; the answer for ids up to the largest value
 * seen so far is known without looking.
 */
static bool
row_brings_own_id(EvalColumns *cols, int64 id)
{
	LOCAL_FCINFO(fcinfo, 1);
	GBPrivileged priv;
	Datum		last;

	if (!OidIsValid(cols->id_seq) || id <= cols->id_seq_seen)
		return false;

	/* the sequence is the owner's; read it as the owner */
	gb_privileged_begin(&priv);
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(cols->id_seq);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	gb_privileged_end(&priv);

	if (fcinfo->isnull)
		return true;			/* nothing handed out yet */
	cols->id_seq_seen = DatumGetInt64(last);
	return id > cols->id_seq_seen;
}

/*
 * Is this row being applied by replication rather than inserted here?  The
 * database where an eval row is first inserted decides; other databases
 * see the decision by replicating the incident tables, and one that decided
 * again would open a second incident for every violation (or, by
 * row_brings_own_id(), none, depending on where its sequence stands).
 *
 * IsLogicalWorker() is true in every process of the built-in logical
 * replication (apply, table synchronization, parallel apply);
 * replorigin_session_origin is set in a session that replays changes under
 * a replication origin, as the built-in apply and table synchronization
 * workers do from PostgreSQL 14 on and other replication tools do too.
 * Both are needed: the table synchronization worker of PostgreSQL 13
 * copies and catches up without an origin.  Both exist in this form in
 * PostgreSQL 13 to 17.  These processes run with session_replication_role
 * = replica, so the trigger fires there only when made ENABLE ALWAYS.
 * Asked once per row, on its first violation.
 */
static bool
row_is_replicated(void)
{
	return IsLogicalWorker() || replorigin_session_origin != InvalidRepOriginId;
}

/* Everything needed to build one violation's incident details, lazily. */
typedef struct RowViolation
{
	TupleTableSlot *slot;		/* the stored row */
	EvalColumns *cols;
	int			origin;			/* 0 unknown, 1 new evaluation, -1 replicated
								 * or brings its own id */
	const char *agent;
	const GBBudget *budget;		/* may be NULL (invariant, no budget) */
	GBSeverity	severity;
	double		actual;
	double		threshold;
	const char *invariant;		/* invariant incidents only */
} RowViolation;

static void
push_budget(JsonbParseState **st, const GBBudget *b)
{
	JsonbValue	null;

	null.type = jbvNull;
	gb_jb_key(st, "budget");
	if (b == NULL)
	{
		pushJsonbValue(st, WJB_VALUE, &null);
		return;
	}
	pushJsonbValue(st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(st, "agent_pattern", b->agent_pattern);
	gb_jb_text(st, "budget_type", gb_budget_type_name(b->budget_type));
	if (b->has_warning)
		gb_jb_float8(st, "warning", b->warning);
	if (b->has_error)
		gb_jb_float8(st, "error", b->error);
	if (b->has_critical)
		gb_jb_float8(st, "critical", b->critical);
	gb_jb_text(st, "lookback", b->lookback);
	pushJsonbValue(st, WJB_END_OBJECT, NULL);
}

/*
 * incidents.details: {violation, budget, context, eval_result}, from the
 * violation's figures and the eval row's columns; without "context" when
 * context_apart (it is stored in incident_contexts, see contexts.c).
 */
static Jsonb *
build_details(GBKind kind, const char *agent, const char *subject,
			  GBSeverity severity, double actual, double threshold,
			  const GBBudget *budget, Jsonb *context, bool context_apart,
			  int64 eval_id,
			  const char *eval_run_id, const char *planner_version,
			  const char *triggered_by, const TimestampTz *created_at)
{
	JsonbParseState *st = NULL;
	JsonbValue *res;
	char		buf[MAXDATELEN + 1];

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);

	gb_jb_key(&st, "violation");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "agent", agent);
	if (kind == GB_KIND_INVARIANT)
	{
		gb_jb_text(&st, "budget_type", "invariants");
		gb_jb_text(&st, "invariant", subject);
	}
	else
		gb_jb_text(&st, "budget_type", subject);
	gb_jb_text(&st, "severity", gb_severity_name(severity));
	gb_jb_float8(&st, "actual", actual);
	if (budget)
		gb_jb_float8(&st, "threshold", threshold);
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	push_budget(&st, budget);

	if (context != NULL)
		gb_jb_jsonb(&st, "context", context);
	else if (!context_apart)
	{
		gb_jb_key(&st, "context");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}

	gb_jb_key(&st, "eval_result");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_int8(&st, "id", eval_id);
	gb_jb_text(&st, "eval_run_id", eval_run_id);
	gb_jb_text(&st, "planner_version", planner_version);
	gb_jb_text(&st, "triggered_by", triggered_by);
	gb_jb_text(&st, "created_at",
			   created_at ? JsonEncodeDateTime(buf, TimestampTzGetDatum(*created_at),
											   TIMESTAMPTZOID, NULL) : NULL);
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static SPIPlanPtr eval_row_plan = NULL;

static const char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The details of an incident created at commit for violations the trigger
 * found: the eval row of the first of them is read again, in the SPI
 * connection of the decision.  Should it be gone (deleted by the same
 * transaction), the details say what is known.  A context larger than
 * GB_CONTEXT_INLINE_MAX as stored is left out of the details and stored
 * once for the eval row's incidents: *context_id is then its id (else 0).
 * The context is not read for that: the row's tuple holds its TOAST
 * pointer.
 */
Jsonb *
gb_row_details(const GBPending *p, const char *agent, const char *subject,
			   int64 *context_id)
{
	Datum		id = Int64GetDatum(p->eval_id);
	const GBBudget *budget = p->has_budget ? &p->budget : NULL;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	bool		ctx_null;
	Datum		d;
	Datum		ctx;
	TimestampTz created_at;
	const char *eval_run_id;
	const char *planner_version;
	const char *triggered_by;
	Jsonb	   *context = NULL;

	*context_id = 0;
	if (eval_row_plan == NULL)
	{
		Oid			t[1] = {INT8OID};

		eval_row_plan = gb_keep_plan(
			"SELECT context, eval_run_id, planner_version, triggered_by, created_at,"
			"       pg_catalog.pg_column_size(context)"
			"  FROM gate_bridge.eval_results WHERE id = $1", 1, t);
	}
	gb_spi_run(eval_row_plan, &id, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return build_details(p->kind, agent, subject, p->row_severity, p->actual,
							 p->threshold, budget, NULL, false, p->eval_id,
							 NULL, NULL, NULL, NULL);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	d = SPI_getbinval(tup, desc, 5, &isnull);
	created_at = isnull ? 0 : DatumGetTimestampTz(d);
	eval_run_id = spi_text(tup, desc, 2);
	planner_version = spi_text(tup, desc, 3);
	triggered_by = spi_text(tup, desc, 4);
	ctx = SPI_getbinval(tup, desc, 1, &ctx_null);
	if (!ctx_null)
	{
		bool		size_null;
		Datum		size = SPI_getbinval(tup, desc, 6, &size_null);

		if (!size_null && DatumGetInt32(size) > GB_CONTEXT_INLINE_MAX)
			*context_id = gb_context_store(p->eval_id);
		else
			context = DatumGetJsonbP(ctx);
	}
	return build_details(p->kind, agent, subject, p->row_severity,
						 p->actual, p->threshold, budget, context,
						 *context_id != 0, p->eval_id, eval_run_id,
						 planner_version, triggered_by,
						 isnull ? NULL : &created_at);
}

/*
 * Is the row a new evaluation (rather than a replicated or restored row,
 * which is not checked)?  Asked when it first violates or passes something
 * that matters.
 */
static bool
row_is_checked(RowViolation *rv)
{
	if (rv->origin == 0)
	{
		bool		isnull;
		Datum		d = slot_getattr(rv->slot, rv->cols->id, &isnull);

		if (row_is_replicated())
		{
			rv->origin = -1;
			ereport(DEBUG1,
					(errmsg("gate_bridge: not checking eval row " INT64_FORMAT ", which is applied by replication",
							isnull ? (int64) 0 : DatumGetInt64(d)),
					 errhidestmt(true)));
			return false;
		}
		rv->origin = (!isnull && row_brings_own_id(rv->cols, DatumGetInt64(d))) ? -1 : 1;
		if (rv->origin < 0)
			ereport(DEBUG1,
					(errmsg("gate_bridge: not checking eval row " INT64_FORMAT ", which brings its own id",
							DatumGetInt64(d)),
					 errhidestmt(true)));
	}
	return rv->origin > 0;
}

static void
report(RowViolation *rv, GBKind kind, const char *violation_type,
	   const char *subject)
{
	GBViolation v;
	GBRowViolation row;
	bool		id_null;

	if (!row_is_checked(rv))
		return;

	row.eval_id = DatumGetInt64(slot_getattr(rv->slot, rv->cols->id, &id_null));
	row.actual = rv->actual;
	row.threshold = rv->threshold;
	row.budget = rv->budget;
	v.kind = kind;
	v.agent = rv->agent;
	v.violation_type = violation_type;
	v.subject = subject;
	v.severity = rv->severity;
	v.build_details = NULL;
	v.details_arg = NULL;
	v.row = &row;
	(void) gate_bridge_on_violation(&v);
}

/*
 * Passing rows towards auto-resolve (budgets.resolve_after): for each
 * budget type in "passed" (the row has the metric and crosses no tier of
 * a budget with resolve_after), and for the invariants when the row
 * reports them (invariants_failed is not NULL) and the invariants budget
 * has resolve_after, a passing row of each unresolved incident of the
 * agent that it does not fail.  Without such an incident (recovery.c
 * answers from its cache) this costs nothing more.
 */
static void
count_passes(RowViolation *rv, text *agent_text, const GBBudget *const *budgets,
			 uint32 passed, bool invariants_pass, bool invariants_violated,
			 Datum *inv_elems, int inv_count)
{
	const char *agent_data = VARDATA_ANY(agent_text);
	int			agent_len = VARSIZE_ANY_EXHDR(agent_text);
	uint32		open_types;
	List	   *open_invariants;
	bool		any;
	bool		isnull;
	int64		eval_id;
	int			t;
	ListCell   *lc;

	if (passed == 0 && !invariants_pass)
		return;
	any = gb_recovery_open(agent_data, agent_len, &open_types, &open_invariants);
	if (rv->agent == NULL)
		rv->agent = text_to_cstring(agent_text);
	/* a violation of the key earlier in this transaction, too */
	for (t = 0; t < GB_BUDGET_INVARIANTS; t++)
		if ((passed & ((uint32) 1 << t)) && !(open_types & ((uint32) 1 << t)) &&
			gb_pending_has(GB_KIND_BUDGET, rv->agent, gb_budget_type_name(t)))
		{
			open_types |= (uint32) 1 << t;
			any = true;
		}
	if (!any || !row_is_checked(rv))
		return;

	eval_id = DatumGetInt64(slot_getattr(rv->slot, rv->cols->id, &isnull));
	for (t = 0; t < GB_BUDGET_INVARIANTS; t++)
		if (passed & open_types & ((uint32) 1 << t))
			gb_pending_pass(GB_KIND_BUDGET, rv->agent, gb_budget_type_name(t),
							gb_budget_type_name(t), eval_id, budgets[t]->resolve_after);
	if (!invariants_pass)
		return;
	foreach(lc, open_invariants)
	{
		const char *name = (const char *) lfirst(lc);
		bool		failed = false;
		int			i;

		/* a row whose failures cross no tier passes every invariant */
		for (i = 0; invariants_violated && i < inv_count && !failed; i++)
		{
			text	   *e = DatumGetTextPP(inv_elems[i]);

			failed = (VARSIZE_ANY_EXHDR(e) == strlen(name) &&
					  memcmp(VARDATA_ANY(e), name, strlen(name)) == 0);
		}
		if (!failed)
			gb_pending_pass(GB_KIND_INVARIANT, rv->agent, name, "invariants", eval_id,
							budgets[GB_BUDGET_INVARIANTS]->resolve_after);
	}
}

/*
 * Is this stored array empty?  Answered from the array's header without
 * copying it: a short-header value (every small array on disk has one)
 * would otherwise be copied just to read ndim.  A compressed or
 * out-of-line value is looked at in full by the caller.
 */
static bool
array_is_empty(Datum d)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	int32		ndim;

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		return false;
	/* ArrayType's first field after the length word; maybe unaligned */
	memcpy(&ndim, VARDATA_ANY(v), sizeof(ndim));
	return ndim == 0;
}

/* bytewise order of two text datums */
static int
text_datum_cmp(const void *a, const void *b)
{
	text	   *ta = DatumGetTextPP(*(const Datum *) a);
	text	   *tb = DatumGetTextPP(*(const Datum *) b);
	int			la = VARSIZE_ANY_EXHDR(ta);
	int			lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/*
 * The row's failed invariants, validated, sorted and without repeats.
 * Each name must be usable in an incident key; this is checked whether or
 * not the bridge is enabled, so that what is stored is the same.  Deciding
 * keys in one global order keeps two rows that name the same invariants in
 * different orders from deadlocking on the keys' locks.
 */
static void
deconstruct_invariants(Datum d, int agent_len, Datum **elems, int *nelems)
{
	ArrayType  *arr = DatumGetArrayTypeP(d);
	bool	   *nulls;
	int			n;
	int			i;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  elems, &nulls, &n);
	*nelems = 0;
	for (i = 0; i < n; i++)
	{
		int			len;

		/* NULL and empty names are refused by a CHECK constraint */
		if (nulls[i])
			continue;
		len = VARSIZE_ANY_EXHDR(DatumGetPointer((*elems)[i]));
		if (len == 0)
			continue;
		if (len + agent_len + (int) strlen("INVARIANT__") > GB_KEY_MAX_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invariant name in column \"invariants_failed\" is too long"),
					 errdetail("The incident key INVARIANT_{agent}_{invariant} would be %d bytes; the limit is %d.",
							   len + agent_len + (int) strlen("INVARIANT__"),
							   GB_KEY_MAX_BYTES)));
		(*elems)[(*nelems)++] = (*elems)[i];
	}

	if (*nelems > 1)
	{
		int			kept = 1;

		qsort(*elems, *nelems, sizeof(Datum), text_datum_cmp);
		for (i = 1; i < *nelems; i++)
			if (text_datum_cmp(&(*elems)[i], &(*elems)[kept - 1]) != 0)
				(*elems)[kept++] = (*elems)[i];
		*nelems = kept;
	}
}

/*
 * Refuse a row that names more distinct failed invariants than
 * gate_bridge.max_invariants_per_row: each one can open an incident, so a
 * single row could otherwise write without bound.  Like the checks of
 * deconstruct_invariants() this holds whether or not the bridge is
 * enabled.  A row that is not decided here (applied by replication, or
 * bringing its own id) was accepted where it came from and is let through.
 */
static void
check_invariants_limit(EvalColumns *cols, TupleTableSlot *slot, int count)
{
	bool		isnull;
	Datum		id;

	if (count <= gb_max_invariants_per_row || row_is_replicated())
		return;
	id = slot_getattr(slot, cols->id, &isnull);
	if (!isnull && row_brings_own_id(cols, DatumGetInt64(id)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("too many failed invariants in column \"invariants_failed\""),
			 errdetail("The row names %d distinct failed invariants; the limit is %d.",
					   count, gb_max_invariants_per_row),
			 errhint("Each failed invariant can open an incident of its own. Report fewer, broader invariants per row, or have an administrator raise gate_bridge.max_invariants_per_row.")));
}

PG_FUNCTION_INFO_V1(gate_bridge_eval_results_gate);

Datum
gate_bridge_eval_results_gate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	EvalColumns *cols;
	TupleTableSlot *slot;
	text	   *agent_text;
	GBBudgetPin pin;
	const GBBudget *const *budgets = NULL;
	Datum		d;
	Datum	   *inv_elems = NULL;
	int			inv_count = 0;
	RowViolation rv;
	uint32		passed = 0;
	bool		invariants_violated = false;
	int			t;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_on_violation: not called by trigger manager")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_on_violation: must be fired AFTER INSERT FOR EACH ROW")));

	slot = trigdata->tg_trigslot;
	Assert(slot != NULL);
	cols = get_eval_columns(trigdata->tg_relation);

	/*
	 * Deform the columns the check reads in one pass; reading them one by
	 * one from the tuple would walk the row again for each column after
	 * the first variable-width one.
	 */
	slot_getsomeattrs(slot, cols->last_checked);

	if (slot->tts_isnull[cols->agent - 1])
		return PointerGetDatum(NULL);	/* refused by NOT NULL */
	agent_text = DatumGetTextPP(slot->tts_values[cols->agent - 1]);

	d = slot->tts_values[cols->invariants_failed - 1];
	if (!slot->tts_isnull[cols->invariants_failed - 1] && !array_is_empty(d))
	{
		deconstruct_invariants(d, VARSIZE_ANY_EXHDR(agent_text),
							   &inv_elems, &inv_count);
		check_invariants_limit(cols, slot, inv_count);
	}

	if (!gb_enabled || !gb_schema_ready(false))
		return PointerGetDatum(NULL);

	/*
	 * Reporting a violation runs SQL, which may check other rows and reload
	 * the budget cache: the pin keeps this row's budgets valid until the end.
	 */
	if (gb_budgets_pin(VARDATA_ANY(agent_text), VARSIZE_ANY_EXHDR(agent_text), &pin))
		budgets = pin.budgets;
	else if (inv_count == 0)
		return PointerGetDatum(NULL);	/* the common case */

	memset(&rv, 0, sizeof(rv));
	rv.slot = slot;
	rv.cols = cols;

	if (budgets != NULL)
	{
		for (t = 0; t < GB_BUDGET_INVARIANTS; t++)
		{
			const GBBudget *b = budgets[t];

			if (b == NULL)
				continue;
			if (slot->tts_isnull[cols->metric[t] - 1])
				continue;		/* a NULL metric is not checked */
			rv.actual = DatumGetFloat8(slot->tts_values[cols->metric[t] - 1]);
			rv.severity = gb_budget_tier(b, rv.actual, &rv.threshold);
			if (rv.severity == GB_SEV_NONE)
			{
				if (b->resolve_after > 0)
					passed |= (uint32) 1 << t;
				continue;
			}

			if (rv.agent == NULL)
				rv.agent = text_to_cstring(agent_text);
			rv.budget = budgets[t];
			rv.invariant = NULL;
			report(&rv, GB_KIND_BUDGET, gb_budget_type_name(b->budget_type),
				   gb_budget_type_name(b->budget_type));
		}
	}

	if (inv_count > 0)
	{
		const GBBudget *b;
		int			i;

		b = budgets ? budgets[GB_BUDGET_INVARIANTS] : NULL;

		rv.budget = b;
		rv.actual = inv_count;
		rv.severity = gb_invariant_severity(b, inv_count, &rv.threshold);
		invariants_violated = rv.severity != GB_SEV_NONE;
		if (rv.severity != GB_SEV_NONE)
		{
			if (rv.agent == NULL)
				rv.agent = text_to_cstring(agent_text);
			for (i = 0; i < inv_count; i++)
			{
				rv.invariant = TextDatumGetCString(inv_elems[i]);
				report(&rv, GB_KIND_INVARIANT, "invariants", rv.invariant);
			}
		}
	}

	if (budgets != NULL)
	{
		const GBBudget *ib = budgets[GB_BUDGET_INVARIANTS];

		count_passes(&rv, agent_text, budgets, passed,
					 ib != NULL && ib->resolve_after > 0 &&
					 !slot->tts_isnull[cols->invariants_failed - 1],
					 invariants_violated, inv_elems, inv_count);
		gb_budgets_unpin(&pin);
	}
	return PointerGetDatum(NULL);
}
