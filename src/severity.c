/*-------------------------------------------------------------------------
 *
 * severity.c
 *		Budget types, threshold tiers, the rules a budget's thresholds
 *		follow, and severities.
 *
 * quality and success_rate are floors (a value below the threshold
 * violates); latency, cost and invariants are ceilings.  The severity of a
 * violation is the worst tier it crosses.  So that "worst" means something,
 * a budget's tiers are ordered (a floor: warning >= error >= critical; a
 * ceiling: warning <= error <= critical) and lie in the metric's domain (a
 * floor's in 0..1, a ceiling's at or above 0); at least one is set.  The
 * trigger budgets_guard refuses a budget row that breaks a rule; the tier
 * logic below relies on nothing more than that.
 *
 * src/severity.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/rel.h"

#include "gate_bridge.h"

static const char *const budget_type_names[GB_NUM_BUDGET_TYPES] = {
	"quality", "latency", "cost", "success_rate", "invariants"
};

const char *
gb_budget_type_name(GBBudgetType type)
{
	Assert(type >= 0 && type < GB_NUM_BUDGET_TYPES);
	return budget_type_names[type];
}

bool
gb_budget_type_parse(const char *name, GBBudgetType *type)
{
	int			i;

	for (i = 0; i < GB_NUM_BUDGET_TYPES; i++)
	{
		if (strcmp(name, budget_type_names[i]) == 0)
		{
			*type = (GBBudgetType) i;
			return true;
		}
	}
	return false;
}

bool
gb_budget_is_floor(GBBudgetType type)
{
	return type == GB_BUDGET_QUALITY || type == GB_BUDGET_SUCCESS_RATE;
}

const char *
gb_severity_name(GBSeverity sev)
{
	switch (sev)
	{
		case GB_SEV_WARNING:
			return "warning";
		case GB_SEV_ERROR:
			return "error";
		case GB_SEV_CRITICAL:
			return "critical";
		case GB_SEV_NONE:
			break;
	}
	elog(ERROR, "unexpected violation severity %d", (int) sev);
	return NULL;				/* keep compiler quiet */
}

/*
 * A user-supplied value quoted in an error message, cut to a readable
 * length at a character boundary: a 1 MB value must not make a 1 MB message.
 */
const char *
gb_quote_clip(const char *value)
{
	int			len = strlen(value);
	int			cut;

	if (len <= 64)
		return value;
	cut = pg_mbcliplen(value, len, 61);
	return psprintf("%.*s...", cut, value);
}

/*
 * Parse a violation severity; anything but warning, error or critical is an
 * error.  "what" names where the value came from, for the message.
 */
GBSeverity
gb_severity_parse(const char *name, const char *what)
{
	if (strcmp(name, "critical") == 0)
		return GB_SEV_CRITICAL;
	if (strcmp(name, "error") == 0)
		return GB_SEV_ERROR;
	if (strcmp(name, "warning") == 0)
		return GB_SEV_WARNING;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid violation severity in %s: \"%s\"", what, gb_quote_clip(name)),
			 errhint("Use one of \"warning\", \"error\" or \"critical\".")));
	return GB_SEV_NONE;			/* keep compiler quiet */
}

const char *
gb_incident_severity_name(GBSeverity sev)
{
	switch (sev)
	{
		case GB_SEV_CRITICAL:
			return "sev1";
		case GB_SEV_ERROR:
			return "sev2";
		case GB_SEV_WARNING:
			return "sev3";
		case GB_SEV_NONE:
			break;
	}
	elog(ERROR, "unexpected violation severity %d", (int) sev);
	return NULL;				/* keep compiler quiet */
}

const char *
gb_kind_name(GBKind kind)
{
	switch (kind)
	{
		case GB_KIND_BUDGET:
			return "budget";
		case GB_KIND_INVARIANT:
			return "invariant";
		case GB_KIND_PLANNER:
			return "planner";
		case GB_KIND_DELIVERY:
			return "delivery";
		case GB_KIND_HEARTBEAT:
			return "heartbeat";
	}
	elog(ERROR, "unexpected incident kind %d", (int) kind);
	return NULL;				/* keep compiler quiet */
}

static const char *const method_names[] = {"mean", "wilson", "baseline"};

const char *
gb_method_name(GBMethod method)
{
	if ((int) method < 0 || (int) method >= (int) lengthof(method_names))
		elog(ERROR, "unexpected gate method %d", (int) method);
	return method_names[method];
}

bool
gb_method_parse(const char *name, GBMethod *method)
{
	int			i;

	for (i = 0; i < (int) lengthof(method_names); i++)
		if (strcmp(name, method_names[i]) == 0)
		{
			*method = (GBMethod) i;
			return true;
		}
	return false;
}

/*
 * The rule of budgets.method a budget breaks, or NULL: a known method;
 * wilson judges a rate, so only success_rate; baseline windows are aligned
 * to the lookback, which needs a fixed length (no months or years).
 */
const char *
gb_budget_method_problem(GBBudgetType type, const char *method_name,
						 const Interval *lookback, const char **hint)
{
	GBMethod	method;

	*hint = NULL;
	if (method_name == NULL || !gb_method_parse(method_name, &method))
	{
		*hint = "Use \"mean\", \"wilson\" or \"baseline\".";
		return "unknown method";
	}
	if (method == GB_METHOD_WILSON && type != GB_BUDGET_SUCCESS_RATE)
	{
		*hint = "The Wilson bound is for a rate: use it with success_rate, and \"mean\" or \"baseline\" otherwise.";
		return "method wilson applies to success_rate only";
	}
	if (method == GB_METHOD_BASELINE && lookback != NULL && lookback->month != 0)
	{
		*hint = "Give the lookback in weeks, days or hours, such as '28 days'.";
		return "a baseline budget's lookback must not have months or years";
	}
	return NULL;
}

static inline bool
crosses(bool floor, double actual, double threshold)
{
	return floor ? actual < threshold : actual > threshold;
}

/*
 * The worst tier of "budget" that "actual" crosses, or GB_SEV_NONE.  The
 * crossed tier's threshold is returned in *threshold.
 */
GBSeverity
gb_budget_tier(const GBBudget *budget, double actual, double *threshold)
{
	bool		floor = gb_budget_is_floor(budget->budget_type);

	if (budget->has_critical && crosses(floor, actual, budget->critical))
	{
		*threshold = budget->critical;
		return GB_SEV_CRITICAL;
	}
	if (budget->has_error && crosses(floor, actual, budget->error))
	{
		*threshold = budget->error;
		return GB_SEV_ERROR;
	}
	if (budget->has_warning && crosses(floor, actual, budget->warning))
	{
		*threshold = budget->warning;
		return GB_SEV_WARNING;
	}
	return GB_SEV_NONE;
}

/*
 * The severity of a failed invariant: the agent's invariants budget (NULL
 * when it has none) applied to the number of invariants that failed, and
 * "error" when there is no such budget.  GB_SEV_NONE when the budget's
 * tiers are not crossed: then nothing is opened.
 */
GBSeverity
gb_invariant_severity(const GBBudget *budget, double failed, double *threshold)
{
	if (budget == NULL)
	{
		*threshold = 0;
		return GB_SEV_ERROR;
	}
	return gb_budget_tier(budget, failed, threshold);
}

static const char *const tier_names[3] = {"warning", "error", "critical"};

/*
 * The rule a budget breaks, or NULL when it keeps them all.  type_name is
 * the row's budget_type (NULL or unknown is a broken rule too); has[] and
 * value[] are warning, error and critical.  *hint says why, or is NULL.
 */
const char *
gb_budget_problem(const char *type_name, const bool *has, const double *value,
				  const char **hint)
{
	GBBudgetType type;
	bool		floor;
	bool		any = false;
	int			prev = -1;
	int			i;

	*hint = NULL;
	if (type_name == NULL || !gb_budget_type_parse(type_name, &type))
	{
		*hint = GB_BUDGET_TYPES_HINT;
		return "unknown budget type";
	}
	floor = gb_budget_is_floor(type);

	for (i = 0; i < 3; i++)
		any |= has[i];
	if (!any)
	{
		*hint = "Set at least one of warning, error and critical.";
		return "a budget needs at least one threshold";
	}
	for (i = 0; i < 3; i++)
		if (has[i] && (isnan(value[i]) || isinf(value[i])))
		{
			*hint = "Leave a tier NULL to skip it.";
			return "thresholds must be finite numbers";
		}
	for (i = 0; i < 3; i++)
	{
		if (!has[i])
			continue;
		if (floor && (value[i] < 0 || value[i] > 1))
		{
			*hint = psprintf("%s is a fraction: its thresholds lie between 0 and 1.", type_name);
			return "thresholds of a floor must be between 0 and 1";
		}
		if (!floor && value[i] < 0)
		{
			*hint = psprintf("%s is never negative, so a negative threshold would always be crossed.", type_name);
			return "thresholds of a ceiling must not be negative";
		}
	}
	for (i = 0; i < 3; i++)
	{
		if (!has[i])
			continue;
		if (prev >= 0 && (floor ? value[i] > value[prev] : value[i] < value[prev]))
		{
			*hint = floor ?
				psprintf("%s is a floor: a value below a threshold violates it, so a worse tier has a lower threshold.", type_name) :
				psprintf("%s is a ceiling: a value above a threshold violates it, so a worse tier has a higher threshold.", type_name);
			return floor ? "the tiers of a floor must be warning >= error >= critical" :
				"the tiers of a ceiling must be warning <= error <= critical";
		}
		prev = i;
	}
	return NULL;
}

/* "warning = 0.5, error = 0.8, critical = null" */
char *
gb_budget_values(const bool *has, const double *value)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < 3; i++)
		appendStringInfo(&buf, "%s%s = %s", i > 0 ? ", " : "", tier_names[i],
						 has[i] ? float8out_internal(value[i]) : "null");
	return buf.data;
}

/* Read a nullable float8 column of a budgets row. */
static void
threshold_attr(HeapTuple tup, TupleDesc desc, const char *name, bool *has,
			   double *value, Datum *raw)
{
	int			attno = SPI_fnumber(desc, name);
	bool		isnull;

	if (attno <= 0 || TupleDescAttr(desc, attno - 1)->atttypid != FLOAT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("budgets_guard needs column \"%s\" of type double precision", name)));
	*raw = heap_getattr(tup, attno, desc, &isnull);
	*has = !isnull;
	*value = isnull ? 0.0 : DatumGetFloat8(*raw);
}

/* a text column of a budgets row, or NULL */
static text *
text_attr(HeapTuple tup, TupleDesc desc, const char *name)
{
	int			attno = SPI_fnumber(desc, name);
	bool		isnull;
	Datum		d;

	if (attno <= 0 || TupleDescAttr(desc, attno - 1)->atttypid != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("budgets_guard needs column \"%s\" of type text", name)));
	d = heap_getattr(tup, attno, desc, &isnull);
	return isnull ? NULL : DatumGetTextPP(d);
}

static bool
same_text(text *a, text *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* Refuse a budgets row that breaks a rule of gb_budget_method_problem(). */
static void
method_rule_check(TriggerData *trigdata, HeapTuple tup, TupleDesc desc,
				  text *pattern, const char *type_name)
{
	text	   *method = text_attr(tup, desc, "method");
	int			attno = SPI_fnumber(desc, "lookback");
	GBBudgetType type;
	const Interval *lookback = NULL;
	const char *rule;
	const char *hint;
	bool		isnull;
	Datum		d;

	if (method == NULL || !gb_budget_type_parse(type_name, &type))
		return;					/* refused by NOT NULL, or by the type's rule */
	if (attno <= 0 || TupleDescAttr(desc, attno - 1)->atttypid != INTERVALOID)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("budgets_guard needs column \"lookback\" of type interval")));
	d = heap_getattr(tup, attno, desc, &isnull);
	if (!isnull)
		lookback = DatumGetIntervalP(d);
	rule = gb_budget_method_problem(type, text_to_cstring(method), lookback, &hint);
	if (rule != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("invalid budget \"%s\" (%s): %s",
						gb_quote_clip(text_to_cstring(pattern)),
						gb_quote_clip(type_name), rule),
				 errdetail("The budget has method = %s.",
						   gb_quote_clip(text_to_cstring(method))),
				 hint ? errhint("%s", hint) : 0,
				 errtable(trigdata->tg_relation)));
}

PG_FUNCTION_INFO_V1(gate_bridge_budgets_guard);

/*
 * BEFORE INSERT OR UPDATE FOR EACH ROW trigger on gate_bridge.budgets
 * (enabled ALWAYS, so that restored and replicated rows are checked too):
 * refuses a budget that breaks a rule of gb_budget_problem() with SQLSTATE
 * 23514.  An UPDATE that leaves the pattern, the type and the thresholds as
 * they were is not checked: a row stored before these rules existed can
 * still be disabled or given another lookback.
 */
Datum
gate_bridge_budgets_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	tup;
	text	   *pattern;
	text	   *type;
	bool		has[3];
	double		value[3];
	Datum		raw[3];
	const char *rule;
	const char *hint;
	char	   *type_name;
	int			i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("budgets_guard: not called by trigger manager")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("budgets_guard: must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")));

	desc = RelationGetDescr(trigdata->tg_relation);
	tup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	pattern = text_attr(tup, desc, "agent_pattern");
	type = text_attr(tup, desc, "budget_type");
	if (pattern == NULL || type == NULL)
		return PointerGetDatum(tup);	/* refused by NOT NULL */
	for (i = 0; i < 3; i++)
		threshold_attr(tup, desc, tier_names[i], &has[i], &value[i], &raw[i]);

	/* the method's rules are newer than any stored row: always checked */
	method_rule_check(trigdata, tup, desc, pattern, text_to_cstring(type));

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		HeapTuple	old = trigdata->tg_trigtuple;
		bool		same = same_text(pattern, text_attr(old, desc, "agent_pattern")) &&
			same_text(type, text_attr(old, desc, "budget_type"));

		for (i = 0; i < 3 && same; i++)
		{
			bool		old_has;
			double		old_value;
			Datum		old_raw;

			threshold_attr(old, desc, tier_names[i], &old_has, &old_value, &old_raw);
			same = old_has == has[i] &&
				(!has[i] || memcmp(&old_value, &value[i], sizeof(double)) == 0);
		}
		if (same)
			return PointerGetDatum(tup);
	}

	type_name = text_to_cstring(type);
	rule = gb_budget_problem(type_name, has, value, &hint);
	if (rule != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("invalid budget \"%s\" (%s): %s",
						gb_quote_clip(text_to_cstring(pattern)),
						gb_quote_clip(type_name), rule),
				 errdetail("The budget has %s.", gb_budget_values(has, value)),
				 hint ? errhint("%s", hint) : 0,
				 errtable(trigdata->tg_relation)));

	return PointerGetDatum(tup);
}

PG_FUNCTION_INFO_V1(gate_bridge_budget_problem);

/*
 * gate_bridge.budget_problem(budget_type text, warning float8, error float8,
 *							  critical float8) RETURNS text
 *
 * NULL for a budget that keeps the rules; otherwise the rule it breaks and
 * its values, as budgets_guard would refuse it.  The update to 1.2 uses it
 * to report stored budgets that break rules that did not exist before.
 */
Datum
gate_bridge_budget_problem(PG_FUNCTION_ARGS)
{
	bool		has[3];
	double		value[3];
	const char *rule;
	const char *hint;
	int			i;

	for (i = 0; i < 3; i++)
	{
		has[i] = !PG_ARGISNULL(i + 1);
		value[i] = has[i] ? PG_GETARG_FLOAT8(i + 1) : 0.0;
	}
	rule = gb_budget_problem(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
							 has, value, &hint);
	if (rule == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s (%s)", rule, gb_budget_values(has, value))));
}

PG_FUNCTION_INFO_V1(gate_bridge_incident_severity);

/* gate_bridge.incident_severity(violation_severity text) RETURNS text */
Datum
gate_bridge_incident_severity(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(
		gb_incident_severity_name(gb_severity_parse(name, "violation_severity"))));
}
