/*-------------------------------------------------------------------------
 *
 * jsonutil.c
 *		Reading arguments out of jsonb objects, and building jsonb.
 *
 * Missing or mistyped keys are the caller's mistake: they get SQLSTATE
 * 22023 and a message that names the argument and the key.
 *
 * src/jsonutil.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "gate_bridge.h"

static const char *
json_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "array" : "object";
		default:
			return "value";
	}
}

void
gb_json_require_object(Jsonb *obj, const char *argname)
{
	if (obj == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	if (!JB_ROOT_IS_OBJECT(obj))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", argname)));
}

/* The value of "key" in object "obj", or NULL when absent or JSON null. */
JsonbValue *
gb_json_get(Jsonb *obj, const char *key, JsonbValue *result)
{
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), result);
	if (v == NULL || v->type == jbvNull)
		return NULL;
	return v;
}

/*
 * A string member.  Missing (or null) is an error when "required", else
 * NULL.  Empty strings count as missing for required keys.
 */
const char *
gb_json_get_text(Jsonb *obj, const char *argname, const char *key, bool required)
{
	JsonbValue	vbuf;
	JsonbValue *v = gb_json_get(obj, key, &vbuf);

	if (v == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is missing key \"%s\"", argname, key)));
		return NULL;
	}
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key \"%s\" in %s must be a string, not %s",
						key, argname, json_type_name(v))));
	if (required && v->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key \"%s\" in %s must not be empty", key, argname)));
	if (memchr(v->val.string.val, '\0', v->val.string.len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("key \"%s\" in %s contains a NUL character", key, argname)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * A finite number member; returns false when absent and not required.
 */
bool
gb_json_get_number(Jsonb *obj, const char *argname, const char *key,
				   bool required, double *result)
{
	JsonbValue	vbuf;
	JsonbValue *v = gb_json_get(obj, key, &vbuf);
	double		d;

	if (v == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is missing key \"%s\"", argname, key)));
		return false;
	}
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key \"%s\" in %s must be a number, not %s",
						key, argname, json_type_name(v))));
	/*
	 * numeric_float8() would raise its own error, quoting the whole number,
	 * for values beyond float8's range; strtod() lets us name the key.
	 */
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric)));

		errno = 0;
		d = strtod(s, NULL);
		if (errno == ERANGE && d != 0)
			d = HUGE_VAL;
		else if (errno == ERANGE)
			d = 0.0;			/* underflow: a tiny number is 0 for us */
		pfree(s);
	}
	if (isnan(d) || isinf(d))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("key \"%s\" in %s is out of range for a float8", key, argname)));
	*result = d;
	return true;
}

/* Building: the caller has pushed WJB_BEGIN_OBJECT. */

void
gb_jb_key(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

void
gb_jb_text(JsonbParseState **state, const char *key, const char *value)
{
	JsonbValue	v;

	gb_jb_key(state, key);
	if (value == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) value;
		v.val.string.len = strlen(value);
	}
	pushJsonbValue(state, WJB_VALUE, &v);
}

void
gb_jb_float8(JsonbParseState **state, const char *key, double value)
{
	JsonbValue	v;

	gb_jb_key(state, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(float8_numeric,
														Float8GetDatum(value)));
	pushJsonbValue(state, WJB_VALUE, &v);
}

void
gb_jb_int8(JsonbParseState **state, const char *key, int64 value)
{
	JsonbValue	v;

	gb_jb_key(state, key);
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric,
														Int64GetDatum(value)));
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* Nested jsonb (NULL gives JSON null). */
void
gb_jb_jsonb(JsonbParseState **state, const char *key, Jsonb *value)
{
	JsonbValue	v;

	gb_jb_key(state, key);
	if (value == NULL)
	{
		v.type = jbvNull;
		pushJsonbValue(state, WJB_VALUE, &v);
	}
	else if (JB_ROOT_IS_SCALAR(value))
	{
		JsonbValue	scalar;

		/* a raw scalar is stored as a one-element array; unwrap it */
		(void) JsonbExtractScalar(&value->root, &scalar);
		pushJsonbValue(state, WJB_VALUE, &scalar);
	}
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
		pushJsonbValue(state, WJB_VALUE, &v);
	}
}
