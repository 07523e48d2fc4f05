/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable entry points that open incidents:
 *		on_budget_violation, on_invariant_failure, on_planner_regression,
 *		on_gate_failure, on_delivery_failure.
 *
 * They validate their JSON arguments (SQLSTATE 22023 for a missing or
 * mistyped key, 22004 for a NULL argument that is required) and hand each
 * violation to gate_bridge_on_violation(), the routine the trigger uses, so
 * both paths deduplicate, rate-limit, record and notify alike.  Each returns
 * the id of the incident it created, or NULL.
 *
 * src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "gate_bridge.h"

/* Arguments a violation's details are built from, lazily. */
typedef struct ApiDetails
{
	int			n;
	const char *keys[5];
	Jsonb	   *values[5];
} ApiDetails;

static Jsonb *
api_details(void *arg)
{
	ApiDetails *ad = (ApiDetails *) arg;
	JsonbParseState *st = NULL;
	JsonbValue *res;
	int			i;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < ad->n; i++)
		gb_jb_jsonb(&st, ad->keys[i], ad->values[i]);
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static void
details_add(ApiDetails *ad, const char *key, Jsonb *value)
{
	Assert(ad->n < lengthof(ad->keys));
	ad->keys[ad->n] = key;
	ad->values[ad->n] = value;
	ad->n++;
}

static Jsonb *
empty_object(void)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
}

/* An optional jsonb argument that must be an object when given. */
static Jsonb *
optional_object(FunctionCallInfo fcinfo, int argno, const char *argname,
				bool null_is_empty)
{
	Jsonb	   *obj;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return null_is_empty ? empty_object() : NULL;
	obj = PG_GETARG_JSONB_P(argno);
	if (JB_ROOT_IS_SCALAR(obj) && JB_ROOT_COUNT(obj) == 1)
	{
		JsonbValue	v;

		if (JsonbExtractScalar(&obj->root, &v) && v.type == jbvNull)
			return null_is_empty ? empty_object() : NULL;
	}
	gb_json_require_object(obj, argname);
	return obj;
}

static Jsonb *
required_object(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	Jsonb	   *obj = PG_ARGISNULL(argno) ? NULL :
		optional_object(fcinfo, argno, argname, false);

	/* SQL NULL and JSON null alike */
	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	return obj;
}

/* "what" names the argument or key, e.g. "agent" or "key \"agent\" in violation" */
static void
check_agent(const char *agent, const char *what)
{
	gb_check_agent_name(strlen(agent), what);
}

/*
 * Read a budget violation object {agent, budget_type, severity, actual,
 * threshold}.  "agent" may come from the caller instead (on_gate_failure).
 */
static void
parse_budget_violation(Jsonb *violation, const char *argname,
					   const char *agent, GBViolation *v)
{
	const char *own_agent;
	const char *type;
	GBBudgetType bt;
	double		actual;
	double		threshold;

	gb_json_require_object(violation, argname);
	own_agent = gb_json_get_text(violation, argname, "agent", agent == NULL);
	if (agent != NULL && own_agent != NULL && strcmp(agent, own_agent) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key \"agent\" in %s is \"%s\", not the gate's agent \"%s\"",
						argname, gb_quote_clip(own_agent), gb_quote_clip(agent))));
	if (agent == NULL)
	{
		agent = own_agent;
		check_agent(agent, psprintf("key \"agent\" in %s", argname));
	}

	type = gb_json_get_text(violation, argname, "budget_type", true);
	if (!gb_budget_type_parse(type, &bt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid budget type in %s: \"%s\"", argname, gb_quote_clip(type)),
				 errhint(GB_BUDGET_TYPES_HINT)));

	memset(v, 0, sizeof(*v));
	v->kind = GB_KIND_BUDGET;
	v->agent = agent;
	v->violation_type = gb_budget_type_name(bt);
	v->subject = v->violation_type;
	v->severity = gb_severity_parse(gb_json_get_text(violation, argname, "severity", true),
									argname);
	(void) gb_json_get_number(violation, argname, "actual", true, &actual);
	(void) gb_json_get_number(violation, argname, "threshold", true, &threshold);
}

static Datum
id_or_null(FunctionCallInfo fcinfo, int64 id)
{
	if (id == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(gate_bridge_on_budget_violation);

/*
 * on_budget_violation(violation jsonb, budget jsonb DEFAULT NULL,
 *					   context jsonb DEFAULT '{}') RETURNS bigint
 */
Datum
gate_bridge_on_budget_violation(PG_FUNCTION_ARGS)
{
	Jsonb	   *violation = required_object(fcinfo, 0, "violation");
	Jsonb	   *budget = optional_object(fcinfo, 1, "budget", false);
	Jsonb	   *context = optional_object(fcinfo, 2, "context", true);

	return id_or_null(fcinfo, gb_report_budget_violation(violation, budget, context));
}

/*
 * on_budget_violation() for C callers (run_gates): the decision for one
 * violation object, with details {violation, budget, context}.  Returns the
 * id of the incident created, or 0.
 */
int64
gb_report_budget_violation(Jsonb *violation, Jsonb *budget, Jsonb *context)
{
	GBViolation v;
	ApiDetails	ad = {0};

	parse_budget_violation(violation, "violation", NULL, &v);
	details_add(&ad, "violation", violation);
	details_add(&ad, "budget", budget);
	details_add(&ad, "context", context);
	v.build_details = api_details;
	v.details_arg = &ad;

	return gate_bridge_on_violation(&v);
}

/* Length of eval_result's "invariants_failed" array, or 1. */
static int
failed_invariant_count(Jsonb *eval_result)
{
	JsonbValue	vbuf;
	JsonbValue *v = gb_json_get(eval_result, "invariants_failed", &vbuf);

	if (v != NULL && v->type == jbvBinary &&
		JsonContainerIsArray(v->val.binary.data) &&
		JsonContainerSize(v->val.binary.data) > 0)
		return JsonContainerSize(v->val.binary.data);
	return 1;
}

PG_FUNCTION_INFO_V1(gate_bridge_on_invariant_failure);

/*
 * on_invariant_failure(eval_result jsonb, invariant_result jsonb,
 *						context jsonb DEFAULT '{}') RETURNS bigint
 *
 * The severity is invariant_result's "severity" when given; otherwise the
 * agent's invariants budget applied to the number of failed invariants
 * (nothing is opened when that crosses no tier, as for inserted rows), and
 * "error" when the agent has no such budget.
 */
Datum
gate_bridge_on_invariant_failure(PG_FUNCTION_ARGS)
{
	Jsonb	   *eval_result = required_object(fcinfo, 0, "eval_result");
	Jsonb	   *inv_result = required_object(fcinfo, 1, "invariant_result");
	Jsonb	   *context = optional_object(fcinfo, 2, "context", true);
	const char *severity;
	GBViolation v;
	ApiDetails	ad = {0};

	memset(&v, 0, sizeof(v));
	v.kind = GB_KIND_INVARIANT;
	v.agent = gb_json_get_text(eval_result, "eval_result", "agent", true);
	check_agent(v.agent, "key \"agent\" in eval_result");
	v.violation_type = "invariants";
	v.subject = gb_json_get_text(inv_result, "invariant_result", "invariant", true);
	(void) gb_json_get_text(inv_result, "invariant_result", "message", false);
	severity = gb_json_get_text(inv_result, "invariant_result", "severity", false);

	if (severity != NULL)
		v.severity = gb_severity_parse(severity, "invariant_result");
	else if (!gb_enabled)
		v.severity = GB_SEV_ERROR;	/* nothing will be created anyway */
	else
	{
		GBBudgetPin pin;
		bool		pinned = gb_budgets_pin(v.agent, strlen(v.agent), &pin);
		double		threshold;

		v.severity = gb_invariant_severity(pinned ? pin.budgets[GB_BUDGET_INVARIANTS] : NULL,
										   failed_invariant_count(eval_result), &threshold);
		if (pinned)
			gb_budgets_unpin(&pin);
		if (v.severity == GB_SEV_NONE)
			PG_RETURN_NULL();
	}

	details_add(&ad, "violation", inv_result);
	details_add(&ad, "eval_result", eval_result);
	details_add(&ad, "context", context);
	v.build_details = api_details;
	v.details_arg = &ad;

	return id_or_null(fcinfo, gate_bridge_on_violation(&v));
}

PG_FUNCTION_INFO_V1(gate_bridge_on_planner_regression);

/*
 * on_planner_regression(version text, metrics jsonb, baseline jsonb,
 *						 regression jsonb, context jsonb DEFAULT '{}')
 *						 RETURNS bigint
 *
 * The incident's agent is "planner.{version}", so playbook rules for
 * "planner.*" apply.
 */
Datum
gate_bridge_on_planner_regression(PG_FUNCTION_ARGS)
{
	char	   *version;
	Jsonb	   *metrics = optional_object(fcinfo, 1, "metrics", false);
	Jsonb	   *baseline = optional_object(fcinfo, 2, "baseline", false);
	Jsonb	   *regression = optional_object(fcinfo, 3, "regression", false);
	Jsonb	   *context = optional_object(fcinfo, 4, "context", true);
	const char *severity;
	GBViolation v;
	ApiDetails	ad = {0};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("version must not be null")));
	version = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (version[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version must not be empty")));

	severity = gb_json_get_text(regression, "regression", "severity", false);

	memset(&v, 0, sizeof(v));
	v.kind = GB_KIND_PLANNER;
	v.agent = psprintf("planner.%s", version);
	v.violation_type = "planner_regression";
	v.subject = version;
	v.severity = severity ? gb_severity_parse(severity, "regression") : GB_SEV_ERROR;

	details_add(&ad, "metrics", metrics);
	details_add(&ad, "baseline", baseline);
	details_add(&ad, "regression", regression);
	details_add(&ad, "context", context);
	v.build_details = api_details;
	v.details_arg = &ad;

	return id_or_null(fcinfo, gate_bridge_on_violation(&v));
}

PG_FUNCTION_INFO_V1(gate_bridge_on_delivery_failure);

/*
 * on_delivery_failure(destination text, details jsonb) RETURNS bigint
 *
 * A delivery to the destination is dead: the incident DELIVERY_{destination}
 * (kind delivery, agent and subject the destination's name, sev2), its
 * details those given.  complete_delivery() calls it.
 */
Datum
gate_bridge_on_delivery_failure(PG_FUNCTION_ARGS)
{
	char	   *destination;
	Jsonb	   *details = optional_object(fcinfo, 1, "details", true);
	GBViolation v;
	ApiDetails	ad = {0};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("destination must not be null")));
	destination = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (destination[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination must not be empty")));

	memset(&v, 0, sizeof(v));
	v.kind = GB_KIND_DELIVERY;
	v.agent = destination;
	v.violation_type = "delivery";
	v.subject = destination;
	v.severity = GB_SEV_ERROR;

	details_add(&ad, "delivery", details);
	v.build_details = api_details;
	v.details_arg = &ad;

	return id_or_null(fcinfo, gate_bridge_on_violation(&v));
}

/* qsort has no context argument; on_gate_failure sets this before sorting */
static const GBViolation *gate_failure_sort_base;

static int
gate_failure_cmp(const void *a, const void *b)
{
	const GBViolation *va = &gate_failure_sort_base[*(const int *) a];
	const GBViolation *vb = &gate_failure_sort_base[*(const int *) b];
	int			c = strcmp(va->subject, vb->subject);

	/* equal keys keep their order */
	return c != 0 ? c : (*(const int *) a > *(const int *) b) - (*(const int *) a < *(const int *) b);
}

PG_FUNCTION_INFO_V1(gate_bridge_on_gate_failure);

/*
 * on_gate_failure(agent text, gate_result jsonb, violations jsonb,
 *				   budget jsonb DEFAULT NULL, context jsonb DEFAULT '{}')
 *				   RETURNS bigint[]
 *
 * One decision per element of "violations", in order; the result has the
 * created incident's id, or NULL, at the same position.  Every element is
 * validated before any decision is taken.
 */
Datum
gate_bridge_on_gate_failure(PG_FUNCTION_ARGS)
{
	char	   *agent;
	Jsonb	   *gate_result = optional_object(fcinfo, 1, "gate_result", false);
	Jsonb	   *violations;
	Jsonb	   *budget = optional_object(fcinfo, 3, "budget", false);
	Jsonb	   *context = optional_object(fcinfo, 4, "context", true);
	int			n;
	int			i;
	GBViolation *vs;
	Jsonb	  **elems;
	ApiDetails *ads;
	Datum	   *ids;
	bool	   *nulls;
	JsonbIterator *it;
	JsonbValue	jv;
	JsonbIteratorToken tok;
	int			dims[1];
	int			lbs[1] = {1};
	int		   *order;
	int			k;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("agent must not be null")));
	agent = text_to_cstring(PG_GETARG_TEXT_PP(0));
	check_agent(agent, "agent");

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("violations must not be null")));
	violations = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_ARRAY(violations) || JB_ROOT_IS_SCALAR(violations))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("violations must be a JSON array")));

	n = JB_ROOT_COUNT(violations);
	vs = palloc0(sizeof(GBViolation) * Max(n, 1));
	elems = palloc0(sizeof(Jsonb *) * Max(n, 1));
	ads = palloc0(sizeof(ApiDetails) * Max(n, 1));

	i = 0;
	it = JsonbIteratorInit(&violations->root);
	while ((tok = JsonbIteratorNext(&it, &jv, true)) != WJB_DONE)
	{
		char		argname[64];

		if (tok != WJB_ELEM)
			continue;
		snprintf(argname, sizeof(argname), "violations[%d]", i);
		if (jv.type != jbvBinary || !JsonContainerIsObject(jv.val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be a JSON object", argname)));
		elems[i] = JsonbValueToJsonb(&jv);
		parse_budget_violation(elems[i], pstrdup(argname), agent, &vs[i]);
		i++;
	}

	ids = palloc0(sizeof(Datum) * Max(n, 1));
	nulls = palloc0(sizeof(bool) * Max(n, 1));
	/*
	 * Decide in key order (the agent is the same for all), so that two calls
	 * listing the same budget types in different orders cannot deadlock on
	 * the keys' locks; results go back to their original positions.
	 */
	order = palloc(sizeof(int) * Max(n, 1));
	for (i = 0; i < n; i++)
		order[i] = i;
	gate_failure_sort_base = vs;
	qsort(order, n, sizeof(int), gate_failure_cmp);

	for (k = 0; k < n; k++)
	{
		int64		id;

		i = order[k];
		details_add(&ads[i], "violation", elems[i]);
		details_add(&ads[i], "budget", budget);
		details_add(&ads[i], "gate_result", gate_result);
		details_add(&ads[i], "context", context);
		vs[i].build_details = api_details;
		vs[i].details_arg = &ads[i];

		id = gate_bridge_on_violation(&vs[i]);
		ids[i] = Int64GetDatum(id);
		nulls[i] = (id == 0);
	}

	dims[0] = n;
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));
	PG_RETURN_ARRAYTYPE_P(construct_md_array(ids, nulls, 1, dims, lbs, INT8OID,
											 sizeof(int64), FLOAT8PASSBYVAL,
											 TYPALIGN_DOUBLE));
}
