/*-------------------------------------------------------------------------
 *
 * severity.c
 *		Budget types, threshold tiers and severities.
 *
 * quality and success_rate are floors (a value below the threshold
 * violates); latency, cost and invariants are ceilings.  The severity of a
 * violation is the worst tier it crosses.
 *
 * src/severity.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

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
	}
	elog(ERROR, "unexpected incident kind %d", (int) kind);
	return NULL;				/* keep compiler quiet */
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

PG_FUNCTION_INFO_V1(gate_bridge_incident_severity);

/* gate_bridge.incident_severity(violation_severity text) RETURNS text */
Datum
gate_bridge_incident_severity(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(
		gb_incident_severity_name(gb_severity_parse(name, "violation_severity"))));
}
