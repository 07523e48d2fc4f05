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

#include "utils/guc.h"

#include "gate_bridge.h"

bool		gb_enabled = true;
int			gb_rate_limit = 3;
int			gb_rate_window = 3600;
char	   *gb_notify_channel = NULL;
char	   *gb_events_channel = NULL;
int			gb_max_invariants_per_row = 64;

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

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("gate_bridge");
#else
	EmitWarningsOnPlaceholders("gate_bridge");
#endif
}
