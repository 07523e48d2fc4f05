/*-------------------------------------------------------------------------
 *
 * planners.c
 *		compare_planners(): a canary planner version against a baseline
 *		version of one agent, with a test per metric and a verdict.
 *
 * The rows are the agent's in the window (created_at > now() - lookback)
 * whose planner_version is the canary or the baseline, read with one kept
 * statement through eval_results_agent_created_at_idx (agent, created_at).
 * They are fetched through a cursor, a batch at a time, so that besides the
 * samples (one double per value of quality, latency_p95_ms and cost_usd;
 * a count and a sum for success_rate) only one batch of rows is in memory;
 * everything is allocated in a context of the call, deleted before it
 * returns.  A NULL value of a metric is left out of that metric's samples.
 *
 * The statistics are those of scipy 1.10 and statsmodels 0.13, so that
 * their results can be checked against them (test/stats):
 *
 * - quality, latency and cost: the two-sided Mann-Whitney U test, as
 *	 scipy.stats.mannwhitneyu(canary, baseline, use_continuity=True,
 *	 alternative='two-sided', method='asymptotic').  Ties get the mean of
 *	 the ranks they span; U1 = R1 - n1 (n1 + 1) / 2 is the canary's U (the
 *	 "statistic"); with U = max(U1, n1 n2 - U1), mu = n1 n2 / 2 and
 *	 sigma = sqrt(n1 n2 / 12 ((n + 1) - sum(t^3 - t) / (n (n - 1)))) over the
 *	 tie groups of sizes t, z = (U - mu - 0.5) / sigma and p = 2 sf(z),
 *	 clipped to [0, 1].  When every value is the same, sigma is 0 and p is
 *	 defined as 1 (scipy reaches it through z = -inf).
 *
 * - success_rate: the two-sided pooled two-proportion z-test, as
 *	 statsmodels.stats.proportion.proportions_ztest(count=[x1, x2],
 *	 nobs=[n1, n2]).  x is the sum of the sample's rates: the number of
 *	 successful rows when every rate is 0 or 1, the mean rate times n
 *	 otherwise.  z = (p1 - p2) / sqrt(p (1 - p) (1 / n1 + 1 / n2)) with the
 *	 pooled p = (x1 + x2) / (n1 + n2) is the "statistic", p = 2 sf(|z|).
 *	 When p is 0 or 1 there is no variance: z is defined as 0 and p as 1.
 *
 * - The p-values of the metrics tested are adjusted by Holm's step-down
 *	 method, as statsmodels.stats.multitest.multipletests(method='holm'):
 *	 sorted ascending, adj(i) = max over j <= i of min(1, (m - j + 1) p(j)).
 *
 * A metric fails when its adjusted p-value is below alpha and the canary is
 * worse (lower quality or success rate, higher latency or cost); it is
 * marginal when only its p-value is; it passes otherwise, a significant
 * improvement included.  It is insufficient_data, untested, when either
 * sample has fewer than min_samples values.
 *
 * src/planners.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/* rows fetched from the cursor at a time */
#define PLANNER_FETCH_ROWS	1000
/* the first allocation of a sample's values */
#define PLANNER_SAMPLE_MIN	256

#ifndef M_SQRT1_2
#define M_SQRT1_2	0.70710678118654752440
#endif

/* The metrics compared, in the order of the statement's columns. */
typedef enum PlannerMetric
{
	PM_QUALITY = 0,
	PM_LATENCY,
	PM_COST,
	PM_SUCCESS_RATE,
	PM_COUNT
} PlannerMetric;

/* the metrics ranked by the Mann-Whitney U test: quality, latency, cost */
#define PM_RANKED	PM_SUCCESS_RATE

static const char *const metric_names[PM_COUNT] = {
	"quality", "latency", "cost", "success_rate"
};

/* a higher value of the metric is worse */
static const bool metric_higher_is_worse[PM_COUNT] = {
	false, true, true, false
};

/* the two samples of a metric */
#define CANARY		0
#define BASELINE	1

/* One sample of one metric: its values (ranked metrics only) and sum. */
typedef struct Sample
{
	double	   *values;
	int64		n;
	int64		cap;
	double		sum;
} Sample;

typedef enum Direction
{
	DIR_SAME = 0,
	DIR_BETTER,
	DIR_WORSE
} Direction;

/* What was found for one metric. */
typedef struct MetricResult
{
	int64		n[2];
	bool		has_mean[2];
	double		mean[2];
	bool		tested;			/* both samples have min_samples values */
	double		statistic;
	double		p_value;
	double		p_adjusted;
	Direction	direction;
	const char *verdict;
} MetricResult;

/* A comparison: its arguments and results. */
typedef struct Comparison
{
	const char *agent;
	const char *canary;
	const char *baseline;
	const char *lookback;
	int32		min_samples;
	double		alpha;
	const char *verdict;
	MetricResult m[PM_COUNT];
	Jsonb	   *metrics;
} Comparison;

static SPIPlanPtr rows_plan = NULL;

/* Append a value to a sample; ranked metrics keep it, in "cxt". */
static void
sample_add(MemoryContext cxt, Sample *s, double value, bool keep)
{
	if (keep)
	{
		if (s->n == s->cap)
		{
			s->cap = s->cap == 0 ? PLANNER_SAMPLE_MIN : s->cap * 2;
			s->values = s->values == NULL ?
				MemoryContextAllocHuge(cxt, sizeof(double) * s->cap) :
				repalloc_huge(s->values, sizeof(double) * s->cap);
		}
		s->values[s->n] = value;
	}
	s->n++;
	s->sum += value;
}

/*
 * Read the samples of both versions: the agent's rows in the window whose
 * planner_version is the canary or the baseline.  s[metric][CANARY or
 * BASELINE]; the values are allocated in "cxt".
 */
static void
read_samples(MemoryContext cxt, const char *agent, const char *canary,
			 const char *baseline, TimestampTz since, Sample s[PM_COUNT][2])
{
	Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		values[4];
	GBPrivileged priv;
	Portal		portal;

	values[0] = CStringGetTextDatum(agent);
	values[1] = TimestampTzGetDatum(since);
	values[2] = CStringGetTextDatum(canary);
	values[3] = CStringGetTextDatum(baseline);

	gb_spi_begin(&priv);
	/* columns: is the canary's, then the metrics in PlannerMetric order */
	if (rows_plan == NULL)
		rows_plan = gb_keep_plan(
			"SELECT e.planner_version = $3,"
			"       e.quality, e.latency_p95_ms, e.cost_usd, e.success_rate"
			"  FROM gate_bridge.eval_results e"
			" WHERE e.agent = $1 AND e.created_at > $2"
			"   AND e.planner_version IN ($3, $4)",
			4, types);

	/*
	 * A cursor rather than gb_spi_run(): the whole result would be held as
	 * tuples besides the samples.
	 */
	portal = SPI_cursor_open(NULL, rows_plan, values, NULL, false);
	for (;;)
	{
		TupleDesc	desc;
		uint64		i;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, PLANNER_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		desc = SPI_tuptable->tupdesc;
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			bool		isnull;
			int			side;
			int			m;

			side = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)) ? CANARY : BASELINE;
			for (m = 0; m < PM_COUNT; m++)
			{
				Datum		d = SPI_getbinval(tup, desc, 2 + m, &isnull);
				double		v;

				if (isnull)
					continue;
				v = DatumGetFloat8(d);
				/* the table's checks refuse NaN and infinities */
				if (isnan(v) || isinf(v))
					continue;
				sample_add(cxt, &s[m][side], v, m < PM_RANKED);
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	gb_spi_end(&priv);
}

/* qsort's comparison of doubles (no NaN among them). */
int
gb_double_cmp(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

/*
 * The mean of a sample.  The values are finite and not negative, so only
 * the sum can overflow; the mean of huge values is then summed from the
 * values divided by n.
 */
static double
sample_mean(const Sample *s)
{
	double		mean = 0.0;
	int64		i;

	if (!isinf(s->sum) || s->values == NULL)
		return s->sum / (double) s->n;
	for (i = 0; i < s->n; i++)
		mean += s->values[i] / (double) s->n;
	return mean;
}

/* The standard normal distribution's survival function, P(Z > z). */
static double
normal_sf(double z)
{
	return 0.5 * erfc(z * M_SQRT1_2);
}

/*
 * The Mann-Whitney U test of the canary's sample x against the baseline's
 * y (see the file's comment).  Both are sorted; the ranks of the pooled
 * sample are found by walking them together, one group of equal values at
 * a time: a group of t values after "before" smaller ones has the midrank
 * before + (t + 1) / 2.
 */
static void
mann_whitney(Sample *x, Sample *y, MetricResult *r, bool higher_is_worse)
{
	double		n1 = (double) x->n;
	double		n2 = (double) y->n;
	double		n = n1 + n2;
	double		r1 = 0.0;		/* the rank sum of the canary's values */
	double		ties = 0.0;		/* sum of t^3 - t over the tie groups */
	int64		before = 0;
	int64		i = 0;
	int64		j = 0;
	double		u1;
	double		mu;
	double		sigma;

	pg_qsort(x->values, x->n, sizeof(double), gb_double_cmp);
	pg_qsort(y->values, y->n, sizeof(double), gb_double_cmp);

	while (i < x->n || j < y->n)
	{
		double		v;
		int64		c1 = 0;
		int64		c2 = 0;
		double		t;

		if (j >= y->n || (i < x->n && x->values[i] <= y->values[j]))
			v = x->values[i];
		else
			v = y->values[j];
		while (i + c1 < x->n && x->values[i + c1] == v)
			c1++;
		while (j + c2 < y->n && y->values[j + c2] == v)
			c2++;
		i += c1;
		j += c2;
		t = (double) (c1 + c2);
		r1 += (double) c1 * ((double) before + (t + 1.0) / 2.0);
		ties += t * t * t - t;
		before += c1 + c2;
	}

	u1 = r1 - n1 * (n1 + 1.0) / 2.0;
	mu = n1 * n2 / 2.0;
	sigma = sqrt(n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0))));

	r->statistic = u1;
	if (!(sigma > 0.0))
		r->p_value = 1.0;		/* every value the same: nothing to tell */
	else
	{
		double		z = (Max(u1, n1 * n2 - u1) - mu - 0.5) / sigma;

		r->p_value = Min(1.0, Max(0.0, 2.0 * normal_sf(z)));
	}

	if (u1 == mu)
		r->direction = DIR_SAME;
	else if ((u1 > mu) == higher_is_worse)
		r->direction = DIR_WORSE;
	else
		r->direction = DIR_BETTER;
}

/*
 * The pooled two-proportion z-test of the canary's success rates against
 * the baseline's (see the file's comment); x is the sum of each sample's
 * rates.  The proportions are the samples' means, reported as such.
 */
static void
two_proportion(const Sample *c, const Sample *b, MetricResult *r)
{
	double		n1 = (double) c->n;
	double		n2 = (double) b->n;
	double		p1 = c->sum / n1;
	double		p2 = b->sum / n2;
	double		pooled = (c->sum + b->sum) / (n1 + n2);
	double		var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);

	if (!(var > 0.0))
	{
		/* every rate 0, or every rate 1: no variance */
		r->statistic = 0.0;
		r->p_value = 1.0;
	}
	else
	{
		r->statistic = (p1 - p2) / sqrt(var);
		r->p_value = Min(1.0, 2.0 * normal_sf(fabs(r->statistic)));
	}

	if (r->statistic == 0.0)
		r->direction = DIR_SAME;
	else
		r->direction = r->statistic < 0.0 ? DIR_WORSE : DIR_BETTER;
}

/*
 * Holm's step-down adjustment of the p-values of the metrics tested: in
 * ascending order of p (equal ones in metric order, which changes nothing),
 * the i-th of m gets max over j <= i of min(1, (m - j + 1) p(j)).
 */
static void
holm(MetricResult *m)
{
	int			order[PM_COUNT];
	int			count = 0;
	double		running = 0.0;
	int			i;

	for (i = 0; i < PM_COUNT; i++)
	{
		int			k;

		if (!m[i].tested)
			continue;
		/* insertion sort, stable */
		for (k = count++; k > 0 && m[order[k - 1]].p_value > m[i].p_value; k--)
			order[k] = order[k - 1];
		order[k] = i;
	}
	for (i = 0; i < count; i++)
	{
		MetricResult *r = &m[order[i]];

		running = Max(running, Min(1.0, (double) (count - i) * r->p_value));
		r->p_adjusted = running;
	}
}

/* The test, and the verdict, of each metric; the overall verdict. */
static void
compare(Comparison *c, Sample s[PM_COUNT][2])
{
	bool		any_tested = false;
	bool		any_fail = false;
	bool		any_marginal = false;
	int			m;

	for (m = 0; m < PM_COUNT; m++)
	{
		MetricResult *r = &c->m[m];
		int			side;

		for (side = CANARY; side <= BASELINE; side++)
		{
			r->n[side] = s[m][side].n;
			r->has_mean[side] = s[m][side].n > 0;
			if (r->has_mean[side])
				r->mean[side] = sample_mean(&s[m][side]);
		}
		r->tested = r->n[CANARY] >= c->min_samples && r->n[BASELINE] >= c->min_samples;
		if (!r->tested)
			continue;
		any_tested = true;
		if (m < PM_RANKED)
			mann_whitney(&s[m][CANARY], &s[m][BASELINE], r, metric_higher_is_worse[m]);
		else
			two_proportion(&s[m][CANARY], &s[m][BASELINE], r);
	}

	holm(c->m);

	for (m = 0; m < PM_COUNT; m++)
	{
		MetricResult *r = &c->m[m];

		if (!r->tested)
			r->verdict = "insufficient_data";
		else if (r->direction == DIR_WORSE && r->p_adjusted < c->alpha)
			r->verdict = "fail";
		else if (r->direction == DIR_WORSE && r->p_value < c->alpha)
			r->verdict = "marginal";
		else
			r->verdict = "pass";
		any_fail |= strcmp(r->verdict, "fail") == 0;
		any_marginal |= strcmp(r->verdict, "marginal") == 0;
	}
	c->verdict = any_fail ? "fail" : any_marginal ? "marginal" :
		any_tested ? "pass" : "insufficient_data";
}

/* A float8 member, or JSON null. */
static void
jb_float8_or_null(JsonbParseState **st, const char *key, bool has, double value)
{
	if (has)
		gb_jb_float8(st, key, value);
	else
		gb_jb_text(st, key, NULL);
}

/* The result's "metrics" object. */
static Jsonb *
metrics_json(const Comparison *c)
{
	static const char *const direction_names[] = {"same", "better", "worse"};
	JsonbParseState *st = NULL;
	int			m;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (m = 0; m < PM_COUNT; m++)
	{
		const MetricResult *r = &c->m[m];
		bool		both = r->has_mean[CANARY] && r->has_mean[BASELINE];

		gb_jb_key(&st, metric_names[m]);
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&st, "test", m < PM_RANKED ? "mann_whitney_u" : "two_proportion_z");
		gb_jb_int8(&st, "n_canary", r->n[CANARY]);
		gb_jb_int8(&st, "n_baseline", r->n[BASELINE]);
		jb_float8_or_null(&st, "statistic", r->tested, r->statistic);
		jb_float8_or_null(&st, "p_value", r->tested, r->p_value);
		jb_float8_or_null(&st, "p_adjusted", r->tested, r->p_adjusted);
		jb_float8_or_null(&st, "effect", both, r->mean[CANARY] - r->mean[BASELINE]);
		jb_float8_or_null(&st, "mean_canary", r->has_mean[CANARY], r->mean[CANARY]);
		jb_float8_or_null(&st, "mean_baseline", r->has_mean[BASELINE], r->mean[BASELINE]);
		gb_jb_text(&st, "direction", r->tested ? direction_names[r->direction] : NULL);
		gb_jb_text(&st, "verdict", r->verdict);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* The members the result and the incident's details share. */
static void
push_comparison(JsonbParseState **st, const Comparison *c)
{
	gb_jb_text(st, "agent", c->agent);
	gb_jb_text(st, "canary", c->canary);
	gb_jb_text(st, "baseline", c->baseline);
	gb_jb_text(st, "lookback", c->lookback);
	gb_jb_float8(st, "alpha", c->alpha);
	gb_jb_int8(st, "min_samples", c->min_samples);
	gb_jb_text(st, "verdict", c->verdict);
	gb_jb_jsonb(st, "metrics", c->metrics);
}

/* The details of PLANNER_{canary}, built when an incident is created. */
static Jsonb *
comparison_details(void *arg)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_comparison(&st, (const Comparison *) arg);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * A failing canary opens PLANNER_{canary}, or folds into the one open, as
 * on_planner_regression() does.  Returns the id of the incident created,
 * or 0.
 */
static int64
report_regression(Comparison *c)
{
	GBViolation v;

	memset(&v, 0, sizeof(v));
	v.kind = GB_KIND_PLANNER;
	v.agent = psprintf("planner.%s", c->canary);
	v.violation_type = "planner_regression";
	v.subject = c->canary;
	v.severity = GB_SEV_ERROR;
	v.build_details = comparison_details;
	v.details_arg = c;
	return gate_bridge_on_violation(&v);
}

/* A text argument that must be given and not be empty. */
static char *
version_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	char	   *version;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	version = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (version[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", argname)));
	return version;
}

/* An argument that must not be NULL. */
static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
}

PG_FUNCTION_INFO_V1(gate_bridge_compare_planners);

/*
 * compare_planners(agent text, canary text, baseline text,
 *					lookback interval DEFAULT '24 hours',
 *					min_samples integer DEFAULT 30, alpha float8 DEFAULT 0.05,
 *					create_incident boolean DEFAULT false) RETURNS jsonb
 *
 * See the file's comment, and the install script's for the result.
 */
Datum
gate_bridge_compare_planners(PG_FUNCTION_ARGS)
{
	Comparison	c;
	Interval   *lookback;
	TimestampTz since;
	bool		create_incident;
	MemoryContext cxt;
	MemoryContext oldcxt;
	Sample		s[PM_COUNT][2];
	JsonbParseState *st = NULL;
	Jsonb	   *result;
	Jsonb	   *copy;
	int64		incident_id = 0;

	memset(&c, 0, sizeof(c));
	memset(s, 0, sizeof(s));

	require_arg(fcinfo, 0, "agent");
	c.agent = text_to_cstring(PG_GETARG_TEXT_PP(0));
	gb_check_agent_name(strlen(c.agent), "agent");
	c.canary = version_arg(fcinfo, 1, "canary");
	c.baseline = version_arg(fcinfo, 2, "baseline");
	if (strcmp(c.canary, c.baseline) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("canary and baseline must be different versions, not both \"%s\"",
						gb_quote_clip(c.canary))));
	require_arg(fcinfo, 3, "lookback");
	lookback = PG_GETARG_INTERVAL_P(3);
	since = gb_given_window_start(lookback);
	c.lookback = gb_interval_text(lookback);
	require_arg(fcinfo, 4, "min_samples");
	c.min_samples = PG_GETARG_INT32(4);
	if (c.min_samples < 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("min_samples must be at least 2, not %d", c.min_samples)));
	require_arg(fcinfo, 5, "alpha");
	c.alpha = PG_GETARG_FLOAT8(5);
	if (!(c.alpha > 0.0 && c.alpha < 1.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("alpha must be between 0 and 1 (exclusive), not %s",
						float8out_internal(c.alpha))));
	require_arg(fcinfo, 6, "create_incident");
	create_incident = PG_GETARG_BOOL(6);

	/* everything of the call but its result goes with this context */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "gate_bridge compare_planners",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);

	read_samples(cxt, c.agent, c.canary, c.baseline, since, s);
	compare(&c, s);
	c.metrics = metrics_json(&c);

	/* NULL when folded into the open incident or rate limited, as with id_or_null() */
	if (create_incident && strcmp(c.verdict, "fail") == 0)
		incident_id = report_regression(&c);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_comparison(&st, &c);
	if (incident_id != 0)
		gb_jb_int8(&st, "incident_id", incident_id);
	else
		gb_jb_text(&st, "incident_id", NULL);
	result = JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));

	MemoryContextSwitchTo(oldcxt);
	copy = palloc(VARSIZE(result));
	memcpy(copy, result, VARSIZE(result));
	MemoryContextDelete(cxt);
	PG_RETURN_JSONB_P(copy);
}
