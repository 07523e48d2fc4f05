/*-------------------------------------------------------------------------
 *
 * retry.c
 *		Sorting failed statements by what cures them, and the backoff
 *		between tries, for the commands that run for a long time (listen,
 *		deliver).
 *
 *	- the connection broke, the server is shutting down, crashed or is
 *	  starting (57P01, 57P02, 57P03, class 08), or it is a standby (25006):
 *	  connect again, so that a multi-host connection string with
 *	  target_session_attrs=read-write finds the primary;
 *	- a deadlock, a serialization failure, a cancelled query (statement
 *	  timeout, pg_cancel_backend) or a lock timeout (40P01, 40001, 57014,
 *	  55P03): run it again on the same connection;
 *	- SR001, the event stream no longer holds a position (see listen);
 *	- anything else is for good.
 *
 * cli/retry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <string.h>

#include "gate_bridge_cli.h"

static bool
sqlstate_is(const char *state, const char *const *codes)
{
	for (; *codes != NULL; codes++)
		if (strcmp(state, *codes) == 0)
			return true;
	return false;
}

/*
 * What a failed statement calls for.  A NULL result or one without a
 * SQLSTATE comes from libpq itself: the connection is in trouble.
 */
GBFailure
gb_classify_failure(PGconn *conn, const PGresult *res)
{
	static const char *const reconnect_codes[] = {
		"57P01",				/* admin_shutdown: terminated, fast shutdown */
		"57P02",				/* crash_shutdown */
		"57P03",				/* cannot_connect_now: starting up */
		"25006",				/* read_only_sql_transaction: a standby */
		NULL
	};
	static const char *const retry_codes[] = {
		"40P01",				/* deadlock_detected */
		"40001",				/* serialization_failure */
		"57014",				/* query_canceled: statement_timeout, cancel */
		"55P03",				/* lock_not_available: lock_timeout */
		NULL
	};
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (gb_connection_lost(conn) || state == NULL)
		return GB_FAILURE_RECONNECT;
	if (strcmp(state, "SR001") == 0)
		return GB_FAILURE_REWOUND;
	if (strncmp(state, "08", 2) == 0 || sqlstate_is(state, reconnect_codes))
		return GB_FAILURE_RECONNECT;
	if (sqlstate_is(state, retry_codes))
		return GB_FAILURE_RETRY;
	return GB_FAILURE_FATAL;
}

/* The wait after this one: doubled, up to GB_BACKOFF_MAX. */
double
gb_backoff_next(double delay)
{
	return delay * 2 > GB_BACKOFF_MAX ? GB_BACKOFF_MAX : delay * 2;
}

/*
 * The first line of a message, for one-line reports, without the severity
 * libpq puts before a server's message it kept as text ("FATAL:  ...").
 */
void
gb_first_line(const char *msg, char *out, size_t outlen)
{
	static const char *const severities[] = {"FATAL:  ", "PANIC:  ", "ERROR:  ", NULL};
	const char *const *sev;
	size_t		len;

	for (sev = severities; *sev != NULL; sev++)
		if (strncmp(msg, *sev, strlen(*sev)) == 0)
		{
			msg += strlen(*sev);
			break;
		}
	len = strcspn(msg, "\n");
	while (len > 0 && msg[len - 1] == ' ')
		len--;
	snprintf(out, outlen, "%.*s", (int) len, msg);
}
