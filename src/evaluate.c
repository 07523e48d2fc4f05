/*-------------------------------------------------------------------------
 *
 * evaluate.c
 *		Gates over time windows: window_start(), evaluate_agent() and
 *		run_gates().
 *
 * A gate judges an agent over its rows of eval_results in a window,
 * created_at > now() - lookback.  Each metric is computed over the window
 * of the budget that checks it (budgets.lookback), unless the caller gives
 * one lookback for all; a metric that no budget checks uses the widest of
 * the agent's windows (7 days when no budget applies).  One aggregate
 * query reads the agent's rows in the widest window through
 * eval_results_agent_created_at_idx (agent, created_at), each metric
 * filtered to its own window.  The budgets, their precedence and their
 * tiers are the trigger's: the same budget cache (budgets.c) and
 * gb_budget_tier() (severity.c).
 *
 * src/evaluate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "gate_bridge.h"
#include "privileged.h"

/* the window of a metric that no budget checks, when no budget applies */
#define GB_DEFAULT_LOOKBACK_DAYS	7

/* One metric of one evaluation. */
typedef struct Metric
{
	TimestampTz since;			/* its window: created_at > since */
	const char *lookback;		/* the window's lookback, as text */
	int64		samples;		/* rows in the window */
	bool		has_value;		/* a NULL aggregate is not checked */
	double		value;
	Jsonb	   *budget;			/* the budget that checks it, or NULL */
	GBSeverity	severity;
	double		threshold;		/* of the tier crossed */
} Metric;

/* One agent's gate. */
typedef struct Evaluation
{
	const char *agent;
	int64		samples;		/* rows in the widest window */
	const char *lookback;		/* the widest window */
	Metric		m[GB_NUM_BUDGET_TYPES];
	int			nviolations;
	GBBudgetType vtype[GB_NUM_BUDGET_TYPES];	/* each violation's metric */
	Jsonb	   *violation[GB_NUM_BUDGET_TYPES];
	Jsonb	   *metrics;
	bool		recovered[GB_NUM_BUDGET_TYPES];	/* passes, budget auto-resolves */
} Evaluation;

static SPIPlanPtr aggregate_plan = NULL;
static SPIPlanPtr agents_plan = NULL;

/* An interval as text, in the "postgres" style whatever the session's. */
char *
gb_interval_text(const Interval *interval)
{
	char		buf[MAXDATELEN + 1];
#if PG_VERSION_NUM >= 150000
	struct pg_itm tt;

	interval2itm(*interval, &tt);
	EncodeInterval(&tt, INTSTYLE_POSTGRES, buf);
#else
	struct pg_tm tt;
	fsec_t		fsec;

	(void) interval2tm(*interval, &tt, &fsec);
	EncodeInterval(&tt, fsec, INTSTYLE_POSTGRES, buf);
#endif
	return pstrdup(buf);
}

/*
 * now() - lookback, computed as the server does (calendar months and days
 * in the session's time zone), without raising its out-of-range error: a
 * lookback that could reach near the ends of the timestamp range is judged
 * from bounds on the month lengths first.
 */
GBWindowProblem
gb_window_start(const Interval *lookback, TimestampTz *since)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	double		most_days = lookback->month * (lookback->month > 0 ? 31.0 : 28.0) + lookback->day + 2;
	double		least_days = lookback->month * (lookback->month > 0 ? 28.0 : 31.0) + lookback->day - 2;

	if ((double) now - most_days * USECS_PER_DAY - (double) lookback->time <= (double) MIN_TIMESTAMP)
		return GB_WINDOW_TOO_LONG;
	if ((double) now - least_days * USECS_PER_DAY - (double) lookback->time >= (double) END_TIMESTAMP)
		return GB_WINDOW_NOT_POSITIVE;
	*since = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(now),
													 PointerGetDatum(lookback)));
	return *since < now ? GB_WINDOW_OK : GB_WINDOW_NOT_POSITIVE;
}

/* The window of a lookback the caller gave; a bad one is an error (22023). */
static TimestampTz
given_window_start(const Interval *lookback)
{
	TimestampTz since = 0;

	switch (gb_window_start(lookback, &since))
	{
		case GB_WINDOW_OK:
			break;
		case GB_WINDOW_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lookback is too long: %s", gb_interval_text(lookback))));
			break;
		case GB_WINDOW_NOT_POSITIVE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lookback must be a positive interval, not %s",
							gb_interval_text(lookback)),
					 errhint("Give a positive interval, such as '7 days'.")));
			break;
	}
	return since;
}

/*
 * The window of a budget's lookback.  A stored budget must not stop the
 * gates: one that reaches before the earliest timestamp covers every row,
 * one that is not positive in this month (1 mon -30 days in February) only
 * the rows stamped after now().
 */
TimestampTz
gb_budget_window_start(const Interval *lookback)
{
	TimestampTz since = 0;

	switch (gb_window_start(lookback, &since))
	{
		case GB_WINDOW_OK:
			return since;
		case GB_WINDOW_TOO_LONG:
			return DT_NOBEGIN;
		case GB_WINDOW_NOT_POSITIVE:
			break;
	}
	return GetCurrentTransactionStartTimestamp();
}

PG_FUNCTION_INFO_V1(gate_bridge_window_start);

/*
 * gate_bridge.window_start(lookback interval) RETURNS timestamptz
 *
 * The start (exclusive) of the window a gate reads: now() - lookback.
 */
Datum
gate_bridge_window_start(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lookback must not be null"),
				 errhint("Give a positive interval, such as '7 days'.")));
	PG_RETURN_TIMESTAMPTZ(given_window_start(PG_GETARG_INTERVAL_P(0)));
}

/*
 * A float8 as a jsonb number the way to_jsonb() makes it (the shortest
 * text that reads back exactly), as the 1.1 functions wrote it.
 */
static void
jb_number(JsonbParseState **st, const char *key, double value)
{
	JsonbValue	v;

	if (key)
		gb_jb_key(st, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
														CStringGetDatum(float8out_internal(value)),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
	pushJsonbValue(st, key ? WJB_VALUE : WJB_ELEM, &v);
}

static void
jb_null(JsonbParseState **st, const char *key)
{
	JsonbValue	v;

	gb_jb_key(st, key);
	v.type = jbvNull;
	pushJsonbValue(st, WJB_VALUE, &v);
}

/* An element of an array being built. */
static void
jb_elem(JsonbParseState **st, Jsonb *value)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &value->root;
	v.val.binary.len = VARSIZE(value) - VARHDRSZ;
	pushJsonbValue(st, WJB_ELEM, &v);
}

/* The applied budget, as the 1.1 gates described it. */
static Jsonb *
budget_json(const GBBudget *b)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "agent_pattern", b->agent_pattern);
	gb_jb_text(&st, "budget_type", gb_budget_type_name(b->budget_type));
	if (b->has_warning)
		jb_number(&st, "warning", b->warning);
	if (b->has_error)
		jb_number(&st, "error", b->error);
	if (b->has_critical)
		jb_number(&st, "critical", b->critical);
	gb_jb_text(&st, "lookback", b->lookback);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* The windows: each budget's, or the given lookback for all. */
static void
choose_windows(Evaluation *ev, const Interval *lookback, const GBBudget *const *budgets)
{
	TimestampTz widest = DT_NOEND;
	int			t;

	if (lookback != NULL)
	{
		widest = given_window_start(lookback);
		ev->lookback = gb_interval_text(lookback);
	}
	else
	{
		for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
		{
			if (budgets == NULL || budgets[t] == NULL)
				continue;
			ev->m[t].since = gb_budget_window_start(&budgets[t]->lookback_interval);
			ev->m[t].lookback = pstrdup(budgets[t]->lookback);
			if (ev->lookback == NULL || ev->m[t].since < widest)
			{
				widest = ev->m[t].since;
				ev->lookback = ev->m[t].lookback;
			}
		}
		if (ev->lookback == NULL)
		{
			Interval	dflt = {0};

			dflt.day = GB_DEFAULT_LOOKBACK_DAYS;
			widest = given_window_start(&dflt);
			ev->lookback = gb_interval_text(&dflt);
		}
	}
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		if (ev->m[t].lookback != NULL)
			continue;
		ev->m[t].since = widest;
		ev->m[t].lookback = ev->lookback;
	}
}

/* The agent's rows: one aggregate over the widest window. */
static void
aggregate(Evaluation *ev, TimestampTz widest)
{
	Oid			types[7] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[7];
	GBPrivileged priv;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int			t;

	values[0] = CStringGetTextDatum(ev->agent);
	values[1] = TimestampTzGetDatum(widest);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
		values[2 + t] = TimestampTzGetDatum(ev->m[t].since);

	gb_spi_begin(&priv);
	/* columns: all rows, then (rows, value) per metric in GBBudgetType order */
	if (aggregate_plan == NULL)
		aggregate_plan = gb_keep_plan(
			"SELECT count(*),"
			"       count(*) FILTER (WHERE e.created_at > $3),"
			"       avg(e.quality) FILTER (WHERE e.created_at > $3),"
			"       count(*) FILTER (WHERE e.created_at > $4),"
			"       percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_p95_ms)"
			"           FILTER (WHERE e.created_at > $4),"
			"       count(*) FILTER (WHERE e.created_at > $5),"
			/* a float8 sum could overflow */
			"       (avg(e.cost_usd::numeric) FILTER (WHERE e.created_at > $5))::float8,"
			"       count(*) FILTER (WHERE e.created_at > $6),"
			"       avg(e.success_rate) FILTER (WHERE e.created_at > $6),"
			"       count(*) FILTER (WHERE e.created_at > $7),"
			"       (sum(cardinality(e.invariants_failed)) FILTER (WHERE e.created_at > $7))::float8"
			"  FROM gate_bridge.eval_results e"
			" WHERE e.agent = $1 AND e.created_at > $2",
			7, types);
	gb_spi_run(aggregate_plan, values, NULL, SPI_OK_SELECT);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	ev->samples = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		Datum		d;

		ev->m[t].samples = DatumGetInt64(SPI_getbinval(tup, desc, 2 + 2 * t, &isnull));
		d = SPI_getbinval(tup, desc, 3 + 2 * t, &isnull);
		ev->m[t].has_value = !isnull;
		ev->m[t].value = isnull ? 0.0 : DatumGetFloat8(d);
	}
	gb_spi_end(&priv);
}

/*
 * Evaluate one agent: its windows, metrics and violations, against the
 * budgets the trigger would apply.
 */
static void
evaluate(Evaluation *ev, const char *agent, const Interval *lookback)
{
	GBBudgetPin pin;
	const GBBudget *const *budgets = NULL;
	TimestampTz widest;
	JsonbParseState *st = NULL;
	int			t;

	memset(ev, 0, sizeof(*ev));
	ev->agent = agent;
	gb_check_agent_name(strlen(agent), "agent");

	if (gb_budgets_pin(agent, strlen(agent), &pin))
		budgets = pin.budgets;
	choose_windows(ev, lookback, budgets);
	widest = ev->m[0].since;
	for (t = 1; t < GB_NUM_BUDGET_TYPES; t++)
		widest = Min(widest, ev->m[t].since);

	aggregate(ev, widest);

	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		Metric	   *m = &ev->m[t];
		JsonbParseState *vst = NULL;

		if (budgets == NULL || budgets[t] == NULL)
			continue;
		m->budget = budget_json(budgets[t]);
		if (!m->has_value)
			continue;
		m->severity = gb_budget_tier(budgets[t], m->value, &m->threshold);
		if (m->severity == GB_SEV_NONE)
		{
			ev->recovered[t] = budgets[t]->auto_resolves && m->samples > 0;
			continue;
		}

		/* the shape on_budget_violation() takes */
		pushJsonbValue(&vst, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&vst, "agent", agent);
		gb_jb_text(&vst, "budget_type", gb_budget_type_name(t));
		gb_jb_text(&vst, "severity", gb_severity_name(m->severity));
		jb_number(&vst, "actual", m->value);
		jb_number(&vst, "threshold", m->threshold);
		ev->vtype[ev->nviolations] = t;
		ev->violation[ev->nviolations++] =
			JsonbValueToJsonb(pushJsonbValue(&vst, WJB_END_OBJECT, NULL));
	}
	if (budgets != NULL)
		gb_budgets_unpin(&pin);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		if (ev->m[t].has_value)
			jb_number(&st, gb_budget_type_name(t), ev->m[t].value);
		else
			jb_null(&st, gb_budget_type_name(t));
	}
	ev->metrics = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* evaluate_agent()'s result; see its comment in the install script. */
static Jsonb *
evaluation_json(const Evaluation *ev)
{
	JsonbParseState *st = NULL;
	JsonbValue	b;
	int			i;
	int			t;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "agent", ev->agent);
	gb_jb_key(&st, "passed");
	b.type = jbvBool;
	b.val.boolean = ev->nviolations == 0;
	pushJsonbValue(&st, WJB_VALUE, &b);
	gb_jb_int8(&st, "samples", ev->samples);
	gb_jb_text(&st, "lookback", ev->lookback);
	gb_jb_jsonb(&st, "metrics", ev->metrics);

	gb_jb_key(&st, "windows");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		gb_jb_key(&st, gb_budget_type_name(t));
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&st, "lookback", ev->m[t].lookback);
		gb_jb_int8(&st, "samples", ev->m[t].samples);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	gb_jb_key(&st, "violations");
	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < ev->nviolations; i++)
		jb_elem(&st, ev->violation[i]);
	pushJsonbValue(&st, WJB_END_ARRAY, NULL);

	gb_jb_key(&st, "budget");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
		if (ev->m[t].budget != NULL)
			gb_jb_jsonb(&st, gb_budget_type_name(t), ev->m[t].budget);
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

PG_FUNCTION_INFO_V1(gate_bridge_evaluate_agent);

/* gate_bridge.evaluate_agent(agent text, lookback interval DEFAULT NULL) RETURNS jsonb */
Datum
gate_bridge_evaluate_agent(PG_FUNCTION_ARGS)
{
	Evaluation ev;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("agent must not be null")));
	evaluate(&ev, text_to_cstring(PG_GETARG_TEXT_PP(0)),
			 PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1));
	PG_RETURN_JSONB_P(evaluation_json(&ev));
}

static int
agent_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * The agents run_gates() evaluates when none is named: every agent with
 * rows in eval_results (found with a loose index scan over
 * eval_results_agent_created_at_idx, one probe per agent) or named by an
 * enabled exact-pattern budget, to which some enabled budget applies; in
 * byte order.  Allocated in "cxt".
 */
static char **
gated_agents(MemoryContext cxt, int *count)
{
	GBPrivileged priv;
	char	  **agents;
	int			n = 0;
	uint64		i;

	gb_spi_begin(&priv);
	if (agents_plan == NULL)
		agents_plan = gb_keep_plan(
			"WITH RECURSIVE seen (agent) AS ("
			"    (SELECT e.agent FROM gate_bridge.eval_results e"
			"      ORDER BY e.agent LIMIT 1)"
			"    UNION ALL"
			"    SELECT (SELECT e.agent FROM gate_bridge.eval_results e"
			"             WHERE e.agent > s.agent"
			"             ORDER BY e.agent LIMIT 1)"
			"      FROM seen s"
			"     WHERE s.agent IS NOT NULL"
			")"
			"SELECT s.agent FROM seen s WHERE s.agent IS NOT NULL"
			" UNION "
			"SELECT b.agent_pattern FROM gate_bridge.budgets b"
			" WHERE b.enabled AND strpos(b.agent_pattern, '*') = 0",
			0, NULL);
	gb_spi_run(agents_plan, NULL, NULL, SPI_OK_SELECT);
	agents = MemoryContextAlloc(cxt, sizeof(char *) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *agent = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		GBBudgetPin pin;

		/* an exact pattern too long to be an agent's name matches nothing */
		if (agent == NULL || !gb_agent_name_valid(strlen(agent)))
			continue;
		if (!gb_budgets_pin(agent, strlen(agent), &pin))
			continue;
		gb_budgets_unpin(&pin);
		agents[n++] = MemoryContextStrdup(cxt, agent);
	}
	gb_spi_end(&priv);

	qsort(agents, n, sizeof(char *), agent_cmp);
	*count = n;
	return agents;
}

/* run_gates()'s context for the incidents of one violation */
static Jsonb *
violation_context(const Evaluation *ev, GBBudgetType type)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "triggered_by", "run_gates");
	gb_jb_text(&st, "session_user", GetUserNameFromId(GetSessionUserId(), false));
	gb_jb_text(&st, "lookback", ev->m[type].lookback);
	gb_jb_int8(&st, "samples", ev->m[type].samples);
	gb_jb_jsonb(&st, "metrics", ev->metrics);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

PG_FUNCTION_INFO_V1(gate_bridge_run_gates);

/*
 * gate_bridge.run_gates(agent text DEFAULT NULL, lookback interval DEFAULT
 *						 NULL, create_incidents boolean DEFAULT false)
 * RETURNS TABLE (agent text, passed boolean, samples bigint,
 *				  violations jsonb, incident_ids bigint[])
 */
Datum
gate_bridge_run_gates(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Interval   *lookback = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	bool		create_incidents;
	TupleDesc	tupdesc;
	Tuplestorestate *tupstore;
	MemoryContext oldcxt;
	MemoryContext per_agent;
	char	  **agents;
	int			nagents;
	int			a;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("run_gates must be called in a context that accepts a set")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type of run_gates must be a row type");

	/* every argument is checked, even when there is no agent to evaluate */
	if (!PG_ARGISNULL(0))
		gb_check_agent_name(VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)), "agent");
	if (lookback != NULL)
		(void) given_window_start(lookback);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("create_incidents must not be null")));
	create_incidents = PG_GETARG_BOOL(2);

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTupleDescCopy(tupdesc);
	tupstore = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tupstore;
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(oldcxt);

	if (!PG_ARGISNULL(0))
	{
		agents = palloc(sizeof(char *));
		agents[0] = text_to_cstring(PG_GETARG_TEXT_PP(0));
		nagents = 1;
	}
	else
		agents = gated_agents(CurrentMemoryContext, &nagents);

	per_agent = AllocSetContextCreate(CurrentMemoryContext, "gate_bridge run_gates",
									  ALLOCSET_DEFAULT_SIZES);
	for (a = 0; a < nagents; a++)
	{
		Evaluation ev;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		Datum		ids[GB_NUM_BUDGET_TYPES];
		bool		id_nulls[GB_NUM_BUDGET_TYPES];
		int			dims[1];
		int			lbs[1] = {1};
		JsonbParseState *st = NULL;
		int			i;

		oldcxt = MemoryContextSwitchTo(per_agent);
		evaluate(&ev, agents[a], lookback);

		pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
		for (i = 0; i < ev.nviolations; i++)
			jb_elem(&st, ev.violation[i]);

		/*
		 * One decision per violation, in order, through the routine that
		 * on_budget_violation() uses: positional ids, NULL where nothing
		 * was created.
		 */
		for (i = 0; create_incidents && i < ev.nviolations; i++)
		{
			GBBudgetType t = ev.vtype[i];
			int64		id = gb_report_budget_violation(ev.violation[i], ev.m[t].budget,
													violation_context(&ev, t));

			ids[i] = Int64GetDatum(id);
			id_nulls[i] = (id == 0);
		}
		dims[0] = create_incidents ? ev.nviolations : 0;

		/*
		 * A budget incident whose budget auto-resolves is resolved by a
		 * window that passes (the invariants' total says nothing of one
		 * invariant, so invariant incidents are left to their rows).
		 */
		for (i = 0; create_incidents && i < GB_BUDGET_INVARIANTS; i++)
		{
			JsonbParseState *est = NULL;
			JsonbValue *res;

			if (!ev.recovered[i])
				continue;
			pushJsonbValue(&est, WJB_BEGIN_OBJECT, NULL);
			gb_jb_text(&est, "reason", "gate_passed");
			jb_number(&est, "actual", ev.m[i].value);
			gb_jb_text(&est, "lookback", ev.m[i].lookback);
			gb_jb_int8(&est, "samples", ev.m[i].samples);
			res = pushJsonbValue(&est, WJB_END_OBJECT, NULL);
			gb_resolve_key(GB_KIND_BUDGET, ev.agent, gb_budget_type_name(i),
						   psprintf("auto-resolved: %s passed its gate over %s",
									gb_budget_type_name(i), ev.m[i].lookback),
						   JsonbValueToJsonb(res));
		}

		values[0] = CStringGetTextDatum(ev.agent);
		values[1] = BoolGetDatum(ev.nviolations == 0);
		values[2] = Int64GetDatum(ev.samples);
		values[3] = JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_ARRAY, NULL)));
		values[4] = PointerGetDatum(dims[0] == 0 ? construct_empty_array(INT8OID) :
									construct_md_array(ids, id_nulls, 1, dims, lbs, INT8OID,
													   sizeof(int64), FLOAT8PASSBYVAL,
													   TYPALIGN_DOUBLE));
		tuplestore_putvalues(tupstore, tupdesc, values, nulls);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(per_agent);
	}
	MemoryContextDelete(per_agent);

	return (Datum) 0;
}
