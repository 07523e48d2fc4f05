/*-------------------------------------------------------------------------
 *
 * incident.c
 *		The incident decision: gate_bridge_on_violation().
 *
 * Every violation, from the trigger or from the SQL functions, comes here.
 * For its (kind, key) it either
 *	- folds into the unresolved incident: occurrences + 1, last_seen_at;
 *	- is rate limited: gate_bridge.rate_limit incidents were already created
 *	  for the key within gate_bridge.rate_window;
 *	- or creates an incident, its "created" timeline row, and a NOTIFY that
 *	  is delivered when the transaction commits.
 *
 * Concurrency.  The common repeat is a violation for a key that already has
 * an unresolved incident; that costs one UPDATE through the partial unique
 * index.  Otherwise the key's row in gate_bridge.incident_keys is locked
 * (FOR NO KEY UPDATE), so creation and rate limiting for one key are
 * serialised while other keys proceed in parallel.  Under READ COMMITTED
 * every SPI statement takes a fresh snapshot, so after the lock we see what
 * the previous holder committed and decide again.  ack/resolve take the key's
 * row before the incident's, the same order as here.  Repeats within one
 * transaction do not come here again (coalesce.c).  Under REPEATABLE READ and SERIALIZABLE a
 * competitor's committed change to the key row or to the incident makes the
 * lock or the UPDATE fail with SQLSTATE 40001, which the client retries; a
 * stale snapshot can never produce a second unresolved incident or exceed
 * the rate limit.  The unique partial index is the last line of defence.
 *
 * Rate window.  Decisions for a key are serialised, and each is stamped
 * with the clock time at which it holds the lock, so "fewer than rate_limit
 * incidents with first_seen_at in (t - window, t]" is exact.
 *
 * src/incident.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

typedef struct GBPlans
{
	SPIPlanPtr	dedup;
	SPIPlanPtr	key_lock;
	SPIPlanPtr	key_insert;
	SPIPlanPtr	window_count;
	SPIPlanPtr	rate_limited;
	SPIPlanPtr	insert_incident;
	SPIPlanPtr	created;
	SPIPlanPtr	insert_event;
} GBPlans;

static GBPlans plans;

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/*
 * Prepare the decision's statements once per backend.  Every name is
 * schema-qualified and the statements run with search_path pinned to
 * pg_catalog.  The dedup statement repeats the partial index's predicate
 * (status <> 'resolved') word for word so that the index is used.
 */
static void
prepare_plans(void)
{
	Oid			t3[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			t2[2] = {TEXTOID, TEXTOID};
	Oid			tins[8] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, JSONBOID, TIMESTAMPTZOID};
	Oid			tev[5] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};

	if (plans.insert_event != NULL)
		return;

	plans.dedup = prepare(
		"UPDATE gate_bridge.incidents"
		"   SET occurrences = CASE WHEN occurrences < 2147483647"
		"                          THEN occurrences + 1 ELSE occurrences END,"
		"       last_seen_at = GREATEST(last_seen_at, $3)"
		" WHERE kind = $1 AND key = $2 AND status <> 'resolved'"
		" RETURNING id", 3, t3);
	plans.key_lock = prepare(
		"SELECT last_rate_limited_at FROM gate_bridge.incident_keys"
		" WHERE kind = $1 AND key = $2 FOR NO KEY UPDATE", 2, t2);
	plans.key_insert = prepare(
		"INSERT INTO gate_bridge.incident_keys (kind, key) VALUES ($1, $2)"
		" ON CONFLICT (kind, key) DO NOTHING", 2, t2);
	plans.window_count = prepare(
		"SELECT count(*), min(first_seen_at) FROM gate_bridge.incidents"
		" WHERE kind = $1 AND key = $2 AND first_seen_at > $3", 3, t3);
	plans.rate_limited = prepare(
		"UPDATE gate_bridge.incident_keys"
		"   SET rate_limited = rate_limited + 1, last_rate_limited_at = $3"
		" WHERE kind = $1 AND key = $2", 3, t3);
	plans.insert_incident = prepare(
		"INSERT INTO gate_bridge.incidents"
		" (kind, key, agent, violation_type, severity, status, summary,"
		"  details, playbooks, occurrences, first_seen_at, last_seen_at)"
		" VALUES ($1, $2, $3, $4, $5, 'open', $6, $7,"
		"         gate_bridge.suggest_playbooks($4, $3), 1, $8, $8)"
		" RETURNING id", 8, tins);
	plans.created = prepare(
		"UPDATE gate_bridge.incident_keys"
		"   SET created = created + 1, last_created_at = $3"
		" WHERE kind = $1 AND key = $2", 3, t3);
	plans.insert_event = prepare(
		"INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)"
		" VALUES ($1, $2, $3, $4, $5::jsonb)", 5, tev);
}

static int
run(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(plan, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "gate_bridge decision statement failed: %s",
			 SPI_result_code_string(ret));
	return ret;
}

static int64
first_int8(bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, isnull));
}

/* Fold into the unresolved incident for the key, if there is one. */
static bool
try_dedup(Datum *kv, TimestampTz now, int64 *id)
{
	Datum		values[3] = {kv[0], kv[1], TimestampTzGetDatum(now)};
	bool		isnull;

	run(plans.dedup, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	*id = first_int8(&isnull);
	return true;
}

/* Lock the key's decision row, creating it on first use. */
static void
lock_key(Datum *kv, TimestampTz *last_rate_limited_at)
{
	bool		isnull;

	run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		run(plans.key_insert, kv, NULL, SPI_OK_INSERT);
		run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			elog(ERROR, "could not lock the decision row for incident key \"%s\"",
				 TextDatumGetCString(kv[1]));
	}
	*last_rate_limited_at = DatumGetTimestampTz(
		SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		*last_rate_limited_at = DT_NOBEGIN;
}

static char *
build_key(const GBViolation *v)
{
	char	   *key;
	size_t		len;

	switch (v->kind)
	{
		case GB_KIND_BUDGET:
			key = psprintf("BUDGET_%s_%s", v->agent, v->subject);
			break;
		case GB_KIND_INVARIANT:
			key = psprintf("INVARIANT_%s_%s", v->agent, v->subject);
			break;
		default:
			key = psprintf("PLANNER_%s", v->subject);
			break;
	}
	len = strlen(key);
	if (len > GB_KEY_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("incident key is too long (%zu bytes, at most %d)",
						len, GB_KEY_MAX_BYTES),
				 errdetail("The key starts with \"%s\".",
						   pnstrdup(key, pg_mbcliplen(key, len, 64))),
				 errhint("Use a shorter agent, invariant or version name.")));
	return key;
}

static char *
build_summary(const GBViolation *v)
{
	switch (v->kind)
	{
		case GB_KIND_BUDGET:
			return psprintf("Budget violation: %s %s", v->agent, v->subject);
		case GB_KIND_INVARIANT:
			return psprintf("Invariant failed: %s %s", v->agent, v->subject);
		default:
			return psprintf("Planner regression: %s", v->subject);
	}
}

/*
 * Decide what a violation does.  Returns the id of the incident created, or
 * 0 when none was (deduplicated, rate limited, or the bridge is disabled).
 */
int64
gate_bridge_on_violation(const GBViolation *v)
{
	const char *kind = gb_kind_name(v->kind);
	const char *severity;
	char	   *key;
	GBPrivileged priv;
	Datum		kv[2];
	int64		id = 0;
	TimestampTz now;
	TimestampTz last_rl;
	bool		isnull;

	/* bad input is refused whether or not the bridge is enabled */
	severity = gb_incident_severity_name(v->severity);
	key = build_key(v);

	if (!gb_enabled)
		return 0;

	/* a repeat within this transaction: counted in memory (coalesce.c) */
	if (v->coalesce && gb_coalesce_try(kind, key))
		return 0;

	kv[0] = CStringGetTextDatum(kind);
	kv[1] = CStringGetTextDatum(key);

	gb_privileged_begin(&priv);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();

	/* the common repeat: fold into the unresolved incident */
	if (try_dedup(kv, GetCurrentTimestamp(), &id))
	{
		ereport(DEBUG1,
				(errmsg("Skipping duplicate %s incident: %s", kind, key),
				 errdetail("Folded into incident " INT64_FORMAT ".", id),
				 errhidestmt(true)));
		if (v->coalesce)
			gb_coalesce_remember_dedup(kind, key, id);
		id = 0;
		goto done;
	}

	/*
	 * Serialise with every other decision for this key, then look again.
	 * The dedup above may have waited for the incident while it was being
	 * resolved, and then keeps that row locked although it no longer
	 * matches.  That is safe because ack/resolve take the key's row before
	 * the incident's (lifecycle.c): whoever holds the key's row here cannot
	 * be waiting for a resolution, and the incident it could wait for is
	 * already resolved in its snapshot.
	 */
	lock_key(kv, &last_rl);

	if (try_dedup(kv, GetCurrentTimestamp(), &id))
	{
		ereport(DEBUG1,
				(errmsg("Skipping duplicate %s incident: %s", kind, key),
				 errdetail("Folded into incident " INT64_FORMAT ".", id),
				 errhidestmt(true)));
		if (v->coalesce)
			gb_coalesce_remember_dedup(kind, key, id);
		id = 0;
		goto done;
	}

	/*
	 * The decision's time, read after the dedup: that may have waited for
	 * the previous incident's resolution, which the new incident must not
	 * predate.
	 */
	now = GetCurrentTimestamp();

	{
		TimestampTz window_start = now - (TimestampTz) gb_rate_window * USECS_PER_SEC;
		Datum		values[3] = {kv[0], kv[1], TimestampTzGetDatum(window_start)};
		int64		recent;

		run(plans.window_count, values, NULL, SPI_OK_SELECT);
		recent = first_int8(&isnull);
		if (recent >= gb_rate_limit)
		{
			TimestampTz oldest = DatumGetTimestampTz(
				SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

			values[2] = TimestampTzGetDatum(now);
			run(plans.rate_limited, values, NULL, SPI_OK_UPDATE);
			/* rate limited until the oldest counted incident leaves the window */
			if (v->coalesce && !isnull)
				gb_coalesce_remember_rate_limited(kind, key,
												  oldest + (TimestampTz) gb_rate_window * USECS_PER_SEC);
			/* one LOG line per key and window; the rest at DEBUG1 */
			ereport(last_rl <= window_start ? LOG : DEBUG1,
					(errmsg("Rate limited %s incident: %s", kind, key),
					 errdetail(INT64_FORMAT " incidents were created for this key in the last %d s; gate_bridge.rate_limit is %d.",
							   recent, gb_rate_window, gb_rate_limit),
					 errhidestmt(true)));
			goto done;
		}
	}

	/* Create. */
	{
		char	   *summary = build_summary(v);
		Jsonb	   *details = v->build_details ? v->build_details(v->details_arg) : NULL;
		Datum		values[8];
		char		nulls[8];
		char	   *payload;
		char	   *data;
		char	   *actor;

		memset(nulls, ' ', sizeof(nulls));
		values[0] = kv[0];
		values[1] = kv[1];
		values[2] = CStringGetTextDatum(v->agent);
		values[3] = CStringGetTextDatum(v->violation_type);
		values[4] = CStringGetTextDatum(severity);
		values[5] = CStringGetTextDatum(summary);
		if (details == NULL)
			details = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		values[6] = JsonbPGetDatum(details);
		values[7] = TimestampTzGetDatum(now);

		run(plans.insert_incident, values, nulls, SPI_OK_INSERT_RETURNING);
		id = first_int8(&isnull);

		values[2] = TimestampTzGetDatum(now);
		run(plans.created, values, NULL, SPI_OK_UPDATE);

		payload = gb_created_payload(id, kind, key, severity, summary, now, &data);

		actor = GetUserNameFromId(priv.save_userid, true);
		values[0] = Int64GetDatum(id);
		values[1] = CStringGetTextDatum("created");
		values[2] = TimestampTzGetDatum(now);
		values[3] = actor ? CStringGetTextDatum(actor) : (Datum) 0;
		values[4] = CStringGetTextDatum(data);
		nulls[3] = actor ? ' ' : 'n';
		run(plans.insert_event, values, nulls, SPI_OK_INSERT);

		if (v->coalesce)
			gb_coalesce_remember_dedup(kind, key, id);

		/* delivered at commit, discarded on rollback */
		Async_Notify(gb_notify_channel, payload);

		ereport(LOG,
				(errmsg("Created %s incident: " INT64_FORMAT " (%s)", kind, id, key),
				 errhidestmt(true)));
	}

done:
	SPI_finish();
	gb_privileged_end(&priv);
	return id;
}
