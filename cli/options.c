/*-------------------------------------------------------------------------
 *
 * options.c
 *		Values of options and of the environment, shared by the commands.
 *
 * cli/options.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate_bridge_cli.h"

/* An incident or event id: a decimal integer, 0 .. 2^63-1. */
bool
gb_parse_id(const char *s, int64_t *out)
{
	char	   *end;
	long long	v;

	if (s == NULL || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = (int64_t) v;
	return true;
}

/* A positive, finite number of seconds. */
bool
gb_parse_seconds(const char *s, double *out)
{
	char	   *end;
	double		v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || *end != '\0' || !isfinite(v) || v <= 0 || v > 86400)
		return false;
	*out = v;
	return true;
}

/* A whole number from min to max, and nothing after it. */
bool
gb_parse_int(const char *s, int min, int max, int *out)
{
	char	   *end;
	long		v;

	if (s == NULL)
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = (int) v;
	return true;
}

/*
 * --lookback: "7d", "12h", "30m", "45s" (and "2w") become the PostgreSQL
 * interval "7 days" and so on; anything else is passed on unchanged as an
 * interval string for the server to check.  Returns false for text that
 * cannot be a lookback at all.
 */
bool
gb_lookback_to_interval(const char *s, char *out, size_t outlen)
{
	static const struct
	{
		char		suffix;
		const char *unit;
	}			units[] = {
		{'s', "seconds"}, {'m', "minutes"}, {'h', "hours"},
		{'d', "days"}, {'w', "weeks"}
	};
	size_t		len;
	size_t		i;
	size_t		k;

	if (s == NULL)
		return false;
	len = strlen(s);
	if (len == 0 || len >= outlen - 16)
		return false;

	for (i = 0; i + 1 < len && s[i] >= '0' && s[i] <= '9'; i++)
		;
	if (i > 0 && i == len - 1 && i <= 9)
	{
		for (k = 0; k < lengthof(units); k++)
			if (s[i] == units[k].suffix)
			{
				snprintf(out, outlen, "%.*s %s", (int) i, s, units[k].unit);
				return true;
			}
	}
	snprintf(out, outlen, "%s", s);
	return true;
}

/*
 * INTERVENTIONS_ENABLED: 1 when incidents may be created (unset, empty,
 * true/1/yes/on), 0 when not (false/0/no/off), -1 for anything else; any
 * case.  *value receives the variable's text.
 */
int
gb_env_interventions_enabled(const char **value)
{
	static const char *const off[] = {"false", "0", "no", "off"};
	static const char *const on[] = {"true", "1", "yes", "on"};
	const char *v = getenv("INTERVENTIONS_ENABLED");
	size_t		i;

	*value = v;
	if (v == NULL || *v == '\0')
		return 1;
	for (i = 0; i < lengthof(off); i++)
		if (strcasecmp(v, off[i]) == 0)
			return 0;
	for (i = 0; i < lengthof(on); i++)
		if (strcasecmp(v, on[i]) == 0)
			return 1;
	return -1;
}
