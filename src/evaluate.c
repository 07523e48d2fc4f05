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
 * A windowed gate also tells signal from noise (budgets.min_samples and
 * budgets.method): a metric with fewer values in its window than the
 * budget's min_samples is insufficient_data, not judged; "wilson" judges
 * success_rate by the 95 % Wilson lower bound of the window's rate;
 * "baseline" judges the metric against the agent's own history, the median
 * of its previous windows +- baseline_k times their median absolute
 * deviation (the windows are kept in gate_bridge.gate_windows).
 *
 * src/evaluate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include <math.h>
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "access/xlog.h"
#include "lib/stringinfo.h"
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

/* a baseline needs at least this many past windows with enough values */
#define GB_BASELINE_MIN_WINDOWS		2

/* z of the two-sided 95 % interval: the normal distribution's 0.975 quantile */
#define GB_WILSON_Z		1.959963984540054

/*
 * The five metrics, in GBBudgetType order: the number of values a window
 * has of it, and its aggregate.  The one definition, for the gates'
 * aggregate and for the baselines' past windows.
 */
static const char *const metric_count_sql[GB_NUM_BUDGET_TYPES] = {
	"count(e.quality)",
	"count(e.latency_p95_ms)",
	"count(e.cost_usd)",
	"count(e.success_rate)",
	"count(*)"					/* every row says how many invariants failed */
};
static const char *const metric_value_sql[GB_NUM_BUDGET_TYPES] = {
	"avg(e.quality)",
	"percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_p95_ms)",
	/* a float8 sum could overflow */
	"avg(e.cost_usd::numeric)",
	"avg(e.success_rate)",
	"sum(cardinality(e.invariants_failed))"
};
/* and what makes it a float8 (after any FILTER clause) */
static const char *const metric_cast_sql[GB_NUM_BUDGET_TYPES] = {
	"", "", "::float8", "", "::float8"
};

/* A baseline: the past windows' median and median absolute deviation. */
typedef struct Baseline
{
	int			windows;		/* past windows asked for (baseline_windows) */
	int			used;			/* of them, with enough values */
	double		median;
	double		mad;
	double		k;
	double		threshold;		/* median -+ k * mad */
} Baseline;

/* One metric of one evaluation. */
typedef struct Metric
{
	TimestampTz since;			/* its window: created_at > since */
	Interval	lookback_interval;
	const char *lookback;		/* the window's lookback, as text */
	int64		samples;		/* rows in the window */
	int64		values;			/* of them, rows with a value of the metric */
	bool		has_value;		/* a NULL aggregate is not checked */
	double		value;
	Jsonb	   *budget;			/* the budget that checks it, or NULL */
	int32		min_samples;	/* the budget's, or the caller's if higher */
	GBMethod	method;
	bool		insufficient;	/* not judged: too few values */
	const char *why;			/* "samples" or "baseline" */
	double		judged;			/* what the tiers were checked against */
	bool		has_baseline;
	Baseline	baseline;
	GBSeverity	severity;
	double		threshold;		/* of the tier crossed */
} Metric;

/* One agent's gate. */
typedef struct Evaluation
{
	const char *agent;
	bool		covered;		/* some budget applies to the agent */
	int64		samples;		/* rows in the widest window */
	const char *lookback;		/* the widest window */
	Metric		m[GB_NUM_BUDGET_TYPES];
	int			nviolations;
	GBBudgetType vtype[GB_NUM_BUDGET_TYPES];	/* each violation's metric */
	Jsonb	   *violation[GB_NUM_BUDGET_TYPES];
	Jsonb	   *metrics;
	bool		recovered[GB_NUM_BUDGET_TYPES];	/* passes, budget auto-resolves */
	const char *status;			/* passed, warning, failed, insufficient_data,
								 * no_budget */
} Evaluation;

static SPIPlanPtr aggregate_plan = NULL;
static SPIPlanPtr agents_plan = NULL;
static SPIPlanPtr kept_windows_plan = NULL;
static SPIPlanPtr keep_window_plan = NULL;
static SPIPlanPtr prune_windows_plan = NULL;
static SPIPlanPtr past_windows_plan[GB_NUM_BUDGET_TYPES];

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
TimestampTz
gb_given_window_start(const Interval *lookback)
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
	PG_RETURN_TIMESTAMPTZ(gb_given_window_start(PG_GETARG_INTERVAL_P(0)));
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
	/* what 1.1 had not, only where a budget sets it */
	if (b->min_samples != 1)
		gb_jb_int8(&st, "min_samples", b->min_samples);
	if (b->method != GB_METHOD_MEAN)
		gb_jb_text(&st, "method", gb_method_name(b->method));
	if (b->method == GB_METHOD_BASELINE)
	{
		gb_jb_int8(&st, "baseline_windows", b->baseline_windows);
		jb_number(&st, "baseline_k", b->baseline_k);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* The windows: each budget's, or the given lookback for all. */
static void
choose_windows(Evaluation *ev, const Interval *lookback, const GBBudget *const *budgets)
{
	TimestampTz widest = DT_NOEND;
	int			t;

	Interval	widest_interval = {0};

	if (lookback != NULL)
	{
		widest = gb_given_window_start(lookback);
		ev->lookback = gb_interval_text(lookback);
		widest_interval = *lookback;
	}
	else
	{
		for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
		{
			if (budgets == NULL || budgets[t] == NULL)
				continue;
			ev->m[t].since = gb_budget_window_start(&budgets[t]->lookback_interval);
			ev->m[t].lookback_interval = budgets[t]->lookback_interval;
			ev->m[t].lookback = pstrdup(budgets[t]->lookback);
			if (ev->lookback == NULL || ev->m[t].since < widest)
			{
				widest = ev->m[t].since;
				ev->lookback = ev->m[t].lookback;
				widest_interval = ev->m[t].lookback_interval;
			}
		}
		if (ev->lookback == NULL)
		{
			widest_interval.day = GB_DEFAULT_LOOKBACK_DAYS;
			widest = gb_given_window_start(&widest_interval);
			ev->lookback = gb_interval_text(&widest_interval);
		}
	}
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		if (ev->m[t].lookback != NULL)
			continue;
		ev->m[t].since = widest;
		ev->m[t].lookback_interval = widest_interval;
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

	/*
	 * columns: all rows, then (rows, values, aggregate) per metric in
	 * GBBudgetType order, each over its own window ($3 ...)
	 */
	if (aggregate_plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfoString(&sql, "SELECT count(*)");
		for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
			appendStringInfo(&sql,
							 ", count(*) FILTER (WHERE e.created_at > $%d)"
							 ", %s FILTER (WHERE e.created_at > $%d)"
							 ", (%s FILTER (WHERE e.created_at > $%d))%s",
							 t + 3, metric_count_sql[t], t + 3, metric_value_sql[t], t + 3,
							 metric_cast_sql[t]);
		appendStringInfoString(&sql,
							   " FROM gate_bridge.eval_results e"
							   " WHERE e.agent = $1 AND e.created_at > $2");
		aggregate_plan = gb_keep_plan(sql.data, 7, types);
		pfree(sql.data);
	}
	gb_spi_run(aggregate_plan, values, NULL, SPI_OK_SELECT);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	ev->samples = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		Datum		d;

		ev->m[t].samples = DatumGetInt64(SPI_getbinval(tup, desc, 2 + 3 * t, &isnull));
		ev->m[t].values = DatumGetInt64(SPI_getbinval(tup, desc, 3 + 3 * t, &isnull));
		d = SPI_getbinval(tup, desc, 4 + 3 * t, &isnull);
		ev->m[t].has_value = !isnull;
		ev->m[t].value = isnull ? 0.0 : DatumGetFloat8(d);
	}
	gb_spi_end(&priv);
}

/*
 * The 95 % Wilson score interval's lower bound of a rate p over n trials
 * (n > 0), as statsmodels' proportion_confint(method="wilson") has it.
 */
static double
wilson_lower(double p, double n)
{
	double		z2 = GB_WILSON_Z * GB_WILSON_Z;
	double		denom = 1.0 + z2 / n;
	double		center = (p + z2 / (2.0 * n)) / denom;
	double		spread = p * (1.0 - p) / n + z2 / (4.0 * n * n);

	return center - GB_WILSON_Z * sqrt(Max(spread, 0.0)) / denom;
}

/* The median of n > 0 values, which it sorts. */
static double
median(double *v, int n)
{
	qsort(v, n, sizeof(double), gb_double_cmp);
	return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* A past window of a baseline: [end - lookback, end), aligned. */
typedef struct PastWindow
{
	bool		known;			/* kept, or computed now */
	bool		fresh;			/* computed now: to be kept */
	int64		values;
	bool		has_value;
	double		value;
} PastWindow;

/*
 * The past windows of a baseline: the "count" windows of length "len" (us),
 * aligned to multiples of it from 2000-01-01 00:00 UTC (the timestamps'
 * zero, as date_bin() with that origin), that end at or before "since", the
 * start of the current window; w[0] is the latest, ending at "last_end".
 * The ones kept in gate_windows are read; the others are computed from the
 * agent's rows with one grouped aggregate and, when "keep", kept.
 */
static void
past_windows(const Evaluation *ev, GBBudgetType t, const Interval *lookback,
			 int64 len, TimestampTz last_end, int count, bool keep, PastWindow *w)
{
	Oid			kept_types[5] = {TEXTOID, TEXTOID, INTERVALOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Oid			past_types[4] = {TEXTOID, INTERVALOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[6];
	GBPrivileged priv;
	TimestampTz oldest_start = last_end - (int64) count * len;
	int			newest_missing = -1;
	int			oldest_missing = -1;
	int			i;
	uint64		r;

	gb_spi_begin(&priv);
	if (kept_windows_plan == NULL)
		kept_windows_plan = gb_keep_plan(
			"SELECT w.window_end, w.samples, w.value FROM gate_bridge.gate_windows w"
			" WHERE w.agent = $1 AND w.budget_type = $2 AND w.lookback = $3"
			"   AND w.window_end > $4 AND w.window_end <= $5",
			5, kept_types);
	args[0] = CStringGetTextDatum(ev->agent);
	args[1] = CStringGetTextDatum(gb_budget_type_name(t));
	args[2] = IntervalPGetDatum(lookback);
	args[3] = TimestampTzGetDatum(oldest_start);
	args[4] = TimestampTzGetDatum(last_end);
	gb_spi_run(kept_windows_plan, args, NULL, SPI_OK_SELECT);
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		TimestampTz end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		value;

		/* a window of another alignment (the lookback was '7 days' then) */
		if ((last_end - end) % len != 0)
			continue;
		i = (int) ((last_end - end) / len);
		w[i].known = true;
		w[i].values = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		value = SPI_getbinval(tup, desc, 3, &isnull);
		w[i].has_value = !isnull;
		w[i].value = isnull ? 0.0 : DatumGetFloat8(value);
	}
	for (i = 0; i < count; i++)
		if (!w[i].known)
		{
			if (newest_missing < 0)
				newest_missing = i;
			oldest_missing = i;
		}

	if (newest_missing >= 0)
	{
		/* one aggregate per window from the oldest missing to the newest */
		if (past_windows_plan[t] == NULL)
			past_windows_plan[t] = gb_keep_plan(
				psprintf("SELECT date_bin($2, e.created_at, '2000-01-01 00:00:00+00'::timestamptz), %s, (%s)%s"
						 "  FROM gate_bridge.eval_results e"
						 " WHERE e.agent = $1 AND e.created_at >= $3 AND e.created_at < $4"
						 " GROUP BY 1",
						 metric_count_sql[t], metric_value_sql[t], metric_cast_sql[t]),
				4, past_types);
		args[1] = IntervalPGetDatum(lookback);
		args[2] = TimestampTzGetDatum(last_end - (int64) (oldest_missing + 1) * len);
		args[3] = TimestampTzGetDatum(last_end - (int64) newest_missing * len);
		gb_spi_run(past_windows_plan[t], args, NULL, SPI_OK_SELECT);
		for (i = newest_missing; i <= oldest_missing; i++)
			if (!w[i].known)
			{
				w[i].known = w[i].fresh = true;
				w[i].values = 0;
				w[i].has_value = false;
			}
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			TimestampTz start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 1, &isnull));
			Datum		value;

			i = (int) ((last_end - start) / len) - 1;
			if (i < newest_missing || i > oldest_missing || !w[i].fresh)
				continue;		/* kept already */
			w[i].values = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			value = SPI_getbinval(tup, desc, 3, &isnull);
			w[i].has_value = !isnull;
			w[i].value = isnull ? 0.0 : DatumGetFloat8(value);
		}

		if (keep)
		{
			Oid			keep_types[6] = {TEXTOID, TEXTOID, INTERVALOID, TIMESTAMPTZOID,
			INT8OID, FLOAT8OID};
			char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

			if (keep_window_plan == NULL)
				keep_window_plan = gb_keep_plan(
					"INSERT INTO gate_bridge.gate_windows"
					"       (agent, budget_type, lookback, window_end, samples, value)"
					" VALUES ($1, $2, $3, $4, $5, $6)"
					" ON CONFLICT DO NOTHING",
					6, keep_types);
			if (prune_windows_plan == NULL)
				prune_windows_plan = gb_keep_plan(
					"DELETE FROM gate_bridge.gate_windows w"
					" WHERE w.agent = $1 AND w.budget_type = $2 AND w.lookback = $3"
					"   AND w.window_end <= $4",
					4, kept_types);
			args[1] = CStringGetTextDatum(gb_budget_type_name(t));
			args[2] = IntervalPGetDatum(lookback);
			/* the newest first: the order every run takes */
			for (i = newest_missing; i <= oldest_missing; i++)
			{
				if (!w[i].fresh)
					continue;
				args[3] = TimestampTzGetDatum(last_end - (int64) i * len);
				args[4] = Int64GetDatum(w[i].values);
				args[5] = Float8GetDatum(w[i].value);
				nulls[5] = w[i].has_value ? ' ' : 'n';
				gb_spi_run(keep_window_plan, args, nulls, SPI_OK_INSERT);
			}
			/* windows older than the baseline reaches */
			args[3] = TimestampTzGetDatum(oldest_start);
			gb_spi_run(prune_windows_plan, args, NULL, SPI_OK_DELETE);
		}
	}
	gb_spi_end(&priv);
}

/*
 * The baseline of metric t: the median and MAD of its past windows with at
 * least min_samples values.  False when fewer than
 * GB_BASELINE_MIN_WINDOWS have (or the lookback cannot be aligned).
 */
static bool
compute_baseline(const Evaluation *ev, GBBudgetType t, const GBBudget *b,
				 int32 min_samples, bool keep, Baseline *bl)
{
	const Metric *m = &ev->m[t];
	const Interval *lookback = &m->lookback_interval;
	int64		len;
	TimestampTz last_end;
	PastWindow *w;
	double	   *v;
	int			i;

	memset(bl, 0, sizeof(*bl));
	bl->windows = b->baseline_windows;
	bl->k = b->baseline_k;

	/* aligned windows need a fixed length: no months (budgets_guard) */
	if (lookback->month != 0)
		return false;
	len = (int64) lookback->day * USECS_PER_DAY + lookback->time;
	if (len <= 0 || m->since == DT_NOBEGIN ||
		(double) m->since - (double) len * (b->baseline_windows + 1) <= (double) MIN_TIMESTAMP)
		return false;
	/* the aligned boundary at or before the current window's start */
	last_end = m->since - (m->since % len + (m->since % len < 0 ? len : 0));

	w = palloc0(sizeof(PastWindow) * b->baseline_windows);
	past_windows(ev, t, lookback, len, last_end, b->baseline_windows, keep, w);

	v = palloc(sizeof(double) * b->baseline_windows);
	for (i = 0; i < b->baseline_windows; i++)
		if (w[i].has_value && w[i].values >= min_samples)
			v[bl->used++] = w[i].value;
	if (bl->used < GB_BASELINE_MIN_WINDOWS)
		return false;
	bl->median = median(v, bl->used);
	for (i = 0; i < bl->used; i++)
		v[i] = fabs(v[i] - bl->median);
	bl->mad = median(v, bl->used);
	bl->threshold = gb_budget_is_floor(t) ? bl->median - bl->k * bl->mad :
		bl->median + bl->k * bl->mad;
	return true;
}

/* The least severe tier a budget sets: what leaving its baseline is. */
static GBSeverity
lowest_tier(const GBBudget *b)
{
	if (b->has_warning)
		return GB_SEV_WARNING;
	if (b->has_error)
		return GB_SEV_ERROR;
	return GB_SEV_CRITICAL;
}

/*
 * Judge metric t against its budget: not at all when it has too few
 * values; by the method's figure otherwise.  Sets m->severity and
 * m->threshold, or m->insufficient.
 */
static void
judge(Evaluation *ev, GBBudgetType t, const GBBudget *b, int32 min_samples, bool keep)
{
	Metric	   *m = &ev->m[t];

	m->min_samples = Max(b->min_samples, min_samples);
	m->method = b->method;
	m->severity = GB_SEV_NONE;
	if (m->values < m->min_samples)
	{
		m->insufficient = true;
		m->why = "samples";
		return;
	}
	/* a window of invariants without any count has none failed */
	if (!m->has_value)
	{
		if (t == GB_BUDGET_INVARIANTS)
			return;
		m->insufficient = true;
		m->why = "samples";
		return;
	}
	m->judged = m->value;
	if (m->method == GB_METHOD_WILSON)
		m->judged = wilson_lower(m->value, (double) m->values);
	m->severity = gb_budget_tier(b, m->judged, &m->threshold);

	if (m->method == GB_METHOD_BASELINE)
	{
		bool		floor = gb_budget_is_floor(t);

		m->has_baseline = compute_baseline(ev, t, b, m->min_samples, keep, &m->baseline);
		if (!m->has_baseline)
		{
			/* a fixed tier crossed is a violation, history or not */
			if (m->severity != GB_SEV_NONE)
				return;
			m->insufficient = true;
			m->why = "baseline";
			return;
		}
		/* the fixed tiers still hold; leaving the baseline is the lowest */
		if ((floor ? m->value < m->baseline.threshold : m->value > m->baseline.threshold) &&
			lowest_tier(b) > m->severity)
		{
			m->severity = lowest_tier(b);
			m->threshold = m->baseline.threshold;
		}
	}
}

/*
 * Evaluate one agent: its windows, metrics and violations, against the
 * budgets the trigger would apply.  min_samples, when above a budget's,
 * is the caller's; "keep": the baselines' new past windows are kept.
 */
static void
evaluate(Evaluation *ev, const char *agent, const Interval *lookback,
		 int32 min_samples, bool keep)
{
	GBBudgetPin pin;
	const GBBudget *const *budgets = NULL;
	TimestampTz widest;
	JsonbParseState *st = NULL;
	bool		insufficient = false;
	GBSeverity	worst = GB_SEV_NONE;
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
		ev->covered = true;
		m->budget = budget_json(budgets[t]);
		judge(ev, t, budgets[t], min_samples, keep && !RecoveryInProgress() && !XactReadOnly);
		if (m->insufficient)
		{
			insufficient = true;
			continue;
		}
		if (m->severity == GB_SEV_NONE)
		{
			ev->recovered[t] = budgets[t]->auto_resolves && m->samples > 0;
			continue;
		}
		worst = Max(worst, m->severity);

		/* the shape on_budget_violation() takes */
		pushJsonbValue(&vst, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&vst, "agent", agent);
		gb_jb_text(&vst, "budget_type", gb_budget_type_name(t));
		gb_jb_text(&vst, "severity", gb_severity_name(m->severity));
		jb_number(&vst, "actual", m->judged);
		jb_number(&vst, "threshold", m->threshold);
		if (m->method != GB_METHOD_MEAN)
		{
			gb_jb_text(&vst, "method", gb_method_name(m->method));
			jb_number(&vst, "mean", m->value);
		}
		ev->vtype[ev->nviolations] = t;
		ev->violation[ev->nviolations++] =
			JsonbValueToJsonb(pushJsonbValue(&vst, WJB_END_OBJECT, NULL));
	}
	if (budgets != NULL)
		gb_budgets_unpin(&pin);

	if (!ev->covered)
		ev->status = "no_budget";
	else if (worst >= GB_SEV_ERROR)
		ev->status = "failed";
	else if (insufficient)
		ev->status = "insufficient_data";
	else if (worst == GB_SEV_WARNING)
		ev->status = "warning";
	else
		ev->status = "passed";

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

/* "passed": true, false, or null when the gate could not be judged. */
static void
push_passed(JsonbParseState **st, const Evaluation *ev)
{
	JsonbValue	b;

	gb_jb_key(st, "passed");
	if (strcmp(ev->status, "passed") == 0 || ev->nviolations > 0)
	{
		b.type = jbvBool;
		b.val.boolean = ev->nviolations == 0;
	}
	else
		b.type = jbvNull;
	pushJsonbValue(st, WJB_VALUE, &b);
}

/*
 * The metrics not judged: [{"budget_type", "reason", "samples",
 * "min_samples"}, ...], reason "samples" (fewer values than min_samples in
 * the window) or "baseline" (fewer past windows with that many values than
 * a baseline needs; "windows" and "needed" say how many).
 */
static Jsonb *
insufficient_json(const Evaluation *ev)
{
	JsonbParseState *st = NULL;
	int			t;

	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		const Metric *m = &ev->m[t];

		if (!m->insufficient)
			continue;
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&st, "budget_type", gb_budget_type_name(t));
		gb_jb_text(&st, "reason", m->why);
		gb_jb_int8(&st, "samples", m->values);
		gb_jb_int8(&st, "min_samples", m->min_samples);
		if (strcmp(m->why, "baseline") == 0)
		{
			gb_jb_int8(&st, "windows", m->baseline.used);
			gb_jb_int8(&st, "needed", GB_BASELINE_MIN_WINDOWS);
		}
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_ARRAY, NULL));
}

/* evaluate_agent()'s result; see its comment in the install script. */
static Jsonb *
evaluation_json(const Evaluation *ev)
{
	JsonbParseState *st = NULL;
	int			i;
	int			t;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "agent", ev->agent);
	gb_jb_text(&st, "status", ev->status);
	push_passed(&st, ev);
	gb_jb_int8(&st, "samples", ev->samples);
	gb_jb_text(&st, "lookback", ev->lookback);
	gb_jb_jsonb(&st, "metrics", ev->metrics);

	gb_jb_key(&st, "windows");
	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (t = 0; t < GB_NUM_BUDGET_TYPES; t++)
	{
		const Metric *m = &ev->m[t];

		gb_jb_key(&st, gb_budget_type_name(t));
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&st, "lookback", m->lookback);
		gb_jb_int8(&st, "samples", m->samples);
		/* how a method other than the mean judged it */
		if (m->method == GB_METHOD_WILSON && !m->insufficient)
			jb_number(&st, "wilson_lower", m->judged);
		if (m->method == GB_METHOD_BASELINE && m->budget != NULL)
		{
			gb_jb_key(&st, "baseline");
			pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
			gb_jb_int8(&st, "windows", m->baseline.windows);
			gb_jb_int8(&st, "used", m->baseline.used);
			if (m->has_baseline)
			{
				jb_number(&st, "median", m->baseline.median);
				jb_number(&st, "mad", m->baseline.mad);
				jb_number(&st, "k", m->baseline.k);
				jb_number(&st, "threshold", m->baseline.threshold);
			}
			pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		}
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	gb_jb_jsonb(&st, "insufficient", insufficient_json(ev));

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
			 PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1), 0, false);
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
			GB_KNOWN_AGENTS_CTE
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
 *						 NULL, create_incidents boolean DEFAULT false,
 *						 min_samples integer DEFAULT NULL)
 * RETURNS TABLE (agent text, status text, passed boolean, samples bigint,
 *				  violations jsonb, insufficient jsonb, incident_ids bigint[])
 */
Datum
gate_bridge_run_gates(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Interval   *lookback = PG_ARGISNULL(1) ? NULL : PG_GETARG_INTERVAL_P(1);
	bool		create_incidents;
	int32		min_samples = 0;
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
		(void) gb_given_window_start(lookback);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("create_incidents must not be null")));
	create_incidents = PG_GETARG_BOOL(2);
	if (!PG_ARGISNULL(3))
	{
		min_samples = PG_GETARG_INT32(3);
		if (min_samples < 1 || min_samples > 1000000)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("min_samples must be between 1 and 1000000, not %d", min_samples),
					 errhint("Leave it NULL for each budget's min_samples.")));
	}

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
		Datum		values[7];
		bool		nulls[7] = {false, false, false, false, false, false, false};
		Datum		ids[GB_NUM_BUDGET_TYPES];
		bool		id_nulls[GB_NUM_BUDGET_TYPES];
		int			dims[1];
		int			lbs[1] = {1};
		JsonbParseState *st = NULL;
		int			i;

		oldcxt = MemoryContextSwitchTo(per_agent);
		evaluate(&ev, agents[a], lookback, min_samples, true);
		if (!ev.covered)
			ereport(WARNING,
					(errmsg("no enabled budget applies to agent \"%s\"", gb_quote_clip(ev.agent)),
					 errdetail("Its gate has nothing to judge: status no_budget."),
					 errhint("Check the name, or add a budget for it to gate_bridge.budgets.")));

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
		values[1] = CStringGetTextDatum(ev.status);
		values[2] = BoolGetDatum(ev.nviolations == 0);
		nulls[2] = ev.nviolations == 0 && strcmp(ev.status, "passed") != 0;
		values[3] = Int64GetDatum(ev.samples);
		values[4] = JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_ARRAY, NULL)));
		values[5] = JsonbPGetDatum(insufficient_json(&ev));
		values[6] = PointerGetDatum(dims[0] == 0 ? construct_empty_array(INT8OID) :
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
