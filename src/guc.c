/*-------------------------------------------------------------------------
 *
 * guc.c
 *		gate_bridge settings.
 *
 * Every setting is PGC_SUSET: an application role must not be able to
 * switch the bridge off, loosen the rate limit, raise the cap on the
 * incidents one row can open or divert notifications for its own session.
 * An administrator can delegate one with GRANT SET ON PARAMETER
 * (PostgreSQL 15 and later) or ALTER ROLE ... SET.
 *
 * src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"

bool		gb_enabled = true;
int			gb_rate_limit = 3;
int			gb_auto_run_limit = 10;
int			gb_rate_window = 3600;
char	   *gb_notify_channel = NULL;
char	   *gb_events_channel = NULL;
int			gb_max_invariants_per_row = 64;
char	   *gb_refire_backoff = NULL;
int			gb_backoff_reset = 24 * 3600;
int			gb_reopen_window = 0;
int			gb_flap_threshold = 4;
int			gb_flap_window = 3600;
int			gb_delivery_max_attempts = 10;

/* refire_backoff, parsed: the waits in seconds */
int			gb_backoff_steps = 0;
int64		gb_backoff_secs[GB_MAX_BACKOFF_STEPS];

static bool
check_notify_channel(char **newval, void **extra, GucSource source)
{
	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errmsg("a channel name must not be empty");
		return false;
	}
	if (strlen(*newval) >= NAMEDATALEN)
	{
		GUC_check_errmsg("a channel name is too long");
		GUC_check_errdetail("Channel names are at most %d bytes.",
							NAMEDATALEN - 1);
		return false;
	}
	return true;
}

/*
 * An interval in the input syntax of the interval type, parsed as
 * interval_in does but without raising an error: a check hook reports bad
 * input itself.
 */
static bool
parse_interval(const char *str, Interval *result)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_itm_in itm_in;
	int			dterr;

	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &itm_in);
	if (dterr == DTERR_BAD_FORMAT)
		dterr = DecodeISO8601Interval(unconstify(char *, str), &dtype, &itm_in);
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	return itmin2interval(&itm_in, result) == 0;
}

/*
 * refire_backoff: a comma-separated list of positive intervals ("1h, 4h,
 * 12h"), at most GB_MAX_BACKOFF_STEPS of them, each at most 366 days; empty
 * switches the backoff off.  The waits go, in seconds, to the assign hook.
 */
static bool
check_refire_backoff(char **newval, void **extra, GucSource source)
{
	int64	   *secs;
	char	   *copy;
	char	   *item;
	char	   *save = NULL;
	int			n = 0;

	(void) source;
	/* the GUC machinery frees "extra" with free() */
	secs = malloc(sizeof(int64) * (GB_MAX_BACKOFF_STEPS + 1));
	if (secs == NULL)
	{
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		GUC_check_errmsg("out of memory");
		return false;
	}
	copy = pstrdup(*newval ? *newval : "");
	for (item = strtok_r(copy, ",", &save); item != NULL;
		 item = strtok_r(NULL, ",", &save))
	{
		Interval	iv;
		int64		usecs;

		while (*item == ' ' || *item == '\t')
			item++;
		if (*item == '\0')
			continue;
		if (n == GB_MAX_BACKOFF_STEPS)
		{
			GUC_check_errmsg("too many backoff steps (at most %d)", GB_MAX_BACKOFF_STEPS);
			goto fail;
		}
		if (!parse_interval(item, &iv))
		{
			GUC_check_errmsg("invalid backoff step \"%s\"", item);
			GUC_check_errhint("Give intervals separated by commas, for example \"1h, 4h, 12h\".");
			goto fail;
		}
		/* months count as 30 days, as interval comparison does */
		usecs = iv.time + (int64) iv.day * USECS_PER_DAY +
			(int64) iv.month * DAYS_PER_MONTH * USECS_PER_DAY;
		if (usecs <= 0 || usecs > (int64) 366 * USECS_PER_DAY)
		{
			GUC_check_errmsg("backoff step \"%s\" must be positive and at most 366 days", item);
			goto fail;
		}
		secs[1 + n++] = usecs / USECS_PER_SEC;
	}
	secs[0] = n;
	pfree(copy);
	*extra = secs;
	return true;

fail:
	pfree(copy);
	free(secs);
	return false;
}

static void
assign_refire_backoff(const char *newval, void *extra)
{
	const int64 *secs = (const int64 *) extra;
	int			i;

	(void) newval;
	gb_backoff_steps = (int) secs[0];
	for (i = 0; i < gb_backoff_steps; i++)
		gb_backoff_secs[i] = secs[1 + i];
}

void
gb_define_gucs(void)
{
	DefineCustomBoolVariable("gate_bridge.enabled",
							 gettext_noop("Creates incidents for evaluation rows that violate their budgets."),
							 gettext_noop("When off, evaluation rows are stored but no incident is created and nothing is notified."),
							 &gb_enabled,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.rate_limit",
							gettext_noop("Maximum number of incidents created per key within the rate window."),
							NULL,
							&gb_rate_limit,
							3,
							1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.rate_window",
							gettext_noop("Length of the window the rate limit counts incidents in."),
							NULL,
							&gb_rate_window,
							3600,
							1, 366 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomStringVariable("gate_bridge.notify_channel",
							   gettext_noop("Channel that created incidents are announced on."),
							   NULL,
							   &gb_notify_channel,
							   "incident_created",
							   PGC_SUSET,
							   0,
							   check_notify_channel, NULL, NULL);

	DefineCustomStringVariable("gate_bridge.events_channel",
							   gettext_noop("Channel that every incident event is announced on, with its stream position."),
							   NULL,
							   &gb_events_channel,
							   "incident_events",
							   PGC_SUSET,
							   0,
							   check_notify_channel, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.max_invariants_per_row",
							gettext_noop("Maximum number of distinct failed invariants one evaluation row may name."),
							gettext_noop("Each failed invariant can open an incident; a row naming more is refused."),
							&gb_max_invariants_per_row,
							64,
							1, 10000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("gate_bridge.refire_backoff",
							   gettext_noop("Waits between the incidents of a key that keeps re-firing, as a list of intervals."),
							   gettext_noop("With \"1h, 4h, 12h\", after a key's incident is resolved the next may be created 1 h after the previous creation, the one after that 4 h, then 12 h; empty switches the backoff off."),
							   &gb_refire_backoff,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   check_refire_backoff, assign_refire_backoff, NULL);

	DefineCustomIntVariable("gate_bridge.backoff_reset",
							gettext_noop("A key quiet for this long starts its re-fire backoff again from the first step."),
							NULL,
							&gb_backoff_reset,
							24 * 3600,
							1, 366 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.reopen_window",
							gettext_noop("A violation this soon after its key's incident was resolved reopens it instead of creating a new one."),
							gettext_noop("0 switches reopening off."),
							&gb_reopen_window,
							0,
							0, 366 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.flap_threshold",
							gettext_noop("State changes of a key within flap_window that mark its incident flapping."),
							gettext_noop("Created, reopened, resolved and auto-resolved count; 0 switches flapping detection off."),
							&gb_flap_threshold,
							4,
							0, GB_MAX_STATE_CHANGES,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.flap_window",
							gettext_noop("The window flap_threshold counts state changes in; a flapping key clears after a full window without one."),
							NULL,
							&gb_flap_window,
							3600,
							1, 7 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.delivery_max_attempts",
							gettext_noop("Attempts after which a delivery that keeps failing is dead."),
							gettext_noop("A dead delivery opens the incident DELIVERY_{destination}."),
							&gb_delivery_max_attempts,
							10,
							1, 100,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("gate_bridge.auto_run_limit",
							gettext_noop("Runs per hour that each auto-run playbook may make by itself."),
							gettext_noop("tick() runs a low-risk playbook with auto_run once per incident, and at most this often per playbook; 0 runs none."),
							&gb_auto_run_limit,
							10,
							0, 10000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("gate_bridge");
#else
	EmitWarningsOnPlaceholders("gate_bridge");
#endif
}
