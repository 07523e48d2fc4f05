/*-------------------------------------------------------------------------
 *
 * incident.c
 *		The incident decision: gate_bridge_on_violation().
 *
 * Every violation, from the trigger or from the SQL functions, comes here.
 * A key is identified by (kind, agent, subject): the key text
 * (BUDGET_{agent}_{budget_type}, ...) is what people read, but agents
 * "billing" and "billing_bot" with invariants "bot_no_pii" and "no_pii"
 * spell the same text, so it decides nothing.  For its key a violation
 * either
 *	- folds into the unresolved incident: occurrences + 1, last_seen_at;
 *	- is rate limited: gate_bridge.rate_limit incidents were already created
 *	  for the key within gate_bridge.rate_window;
 *	- or creates an incident and its "created" timeline row, which is
 *	  numbered and announced when the transaction commits (stream.c).
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

/*
 * Prepare the decision's statements once per backend.  The statements that
 * look for the unresolved incident repeat the partial index's predicate
 * (status <> 'resolved') word for word so that the index is used.
 * Parameters $1, $2, $3 are always kind, agent and subject.
 */
static void
prepare_plans(void)
{
	Oid			t4[4] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			tkey[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Oid			tins[9] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID};
	Oid			tev[5] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};

	if (plans.insert_event != NULL)
		return;

	plans.dedup = gb_keep_plan(
		"UPDATE gate_bridge.incidents"
		"   SET occurrences = CASE WHEN occurrences < 2147483647"
		"                          THEN occurrences + 1 ELSE occurrences END,"
		"       last_seen_at = GREATEST(last_seen_at, $4)"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 AND status <> 'resolved'"
		" RETURNING id", 4, t4);
	plans.key_lock = gb_keep_plan(
		"SELECT last_rate_limited_at FROM gate_bridge.incident_keys"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 FOR NO KEY UPDATE",
		3, t4);
	plans.key_insert = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_keys (kind, agent, subject, key)"
		" VALUES ($1, $2, $3, $4)"
		" ON CONFLICT (kind, agent, subject) DO NOTHING", 4, tkey);
	plans.window_count = gb_keep_plan(
		"SELECT count(*), min(first_seen_at) FROM gate_bridge.incidents"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 AND first_seen_at > $4",
		4, t4);
	plans.rate_limited = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET rate_limited = rate_limited + 1, last_rate_limited_at = $4"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 4, t4);
	plans.insert_incident = gb_keep_plan(
		"INSERT INTO gate_bridge.incidents"
		" (kind, key, agent, violation_type, severity, status, summary,"
		"  details, playbooks, occurrences, first_seen_at, last_seen_at, subject)"
		" VALUES ($1, $2, $3, $4, $5, 'open', $6, $7,"
		"         gate_bridge.suggest_playbooks($4, $3), 1, $8, $8, $9)"
		" RETURNING id", 9, tins);
	plans.created = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET created = created + 1, last_created_at = $4"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 4, t4);
	plans.insert_event = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)"
		" VALUES ($1, $2, $3, $4, $5::jsonb)", 5, tev);
}

static int64
first_int8(bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, isnull));
}

/* Fold into the unresolved incident for the key, if there is one. */
static bool
try_dedup(const GBKey *k, Datum *kv, int64 *id)
{
	Datum		values[4] = {kv[0], kv[1], kv[2],
	TimestampTzGetDatum(GetCurrentTimestamp())};
	bool		isnull;

	gb_spi_run(plans.dedup, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	*id = first_int8(&isnull);
	ereport(DEBUG1,
			(errmsg("Skipping duplicate %s incident: %s", k->kind, k->key),
			 errdetail("Folded into incident " INT64_FORMAT ".", *id),
			 errhidestmt(true)));
	gb_coalesce_remember_dedup(k, *id);
	return true;
}

/* Lock the key's decision row, creating it on first use. */
static void
lock_key(const GBKey *k, Datum *kv, TimestampTz *last_rate_limited_at)
{
	bool		isnull;

	gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		Datum		values[4] = {kv[0], kv[1], kv[2], CStringGetTextDatum(k->key)};

		gb_spi_run(plans.key_insert, values, NULL, SPI_OK_INSERT);
		gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			elog(ERROR, "could not lock the decision row for incident key \"%s\"",
				 k->key);
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

/* Create the incident, its "created" event and its notification. */
static int64
create_incident(const GBViolation *v, const GBKey *k, Datum *kv,
				const char *severity, TimestampTz now, Oid caller)
{
	char	   *summary = build_summary(v);
	Jsonb	   *details = v->build_details(v->details_arg);
	Datum		values[9];
	char		nulls[9];
	char	   *data;
	char	   *actor;
	int64		id;
	bool		isnull;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = kv[0];
	values[1] = CStringGetTextDatum(k->key);
	values[2] = kv[1];
	values[3] = CStringGetTextDatum(v->violation_type);
	values[4] = CStringGetTextDatum(severity);
	values[5] = CStringGetTextDatum(summary);
	values[6] = JsonbPGetDatum(details);
	values[7] = TimestampTzGetDatum(now);
	values[8] = kv[2];
	gb_spi_run(plans.insert_incident, values, nulls, SPI_OK_INSERT_RETURNING);
	id = first_int8(&isnull);

	values[0] = kv[0];
	values[1] = kv[1];
	values[2] = kv[2];
	values[3] = TimestampTzGetDatum(now);
	gb_spi_run(plans.created, values, NULL, SPI_OK_UPDATE);

	/* the notification is sent at commit, with the event's position (stream.c) */
	data = gb_created_data(id, k->kind, k->key, severity, summary, now, k->agent);

	actor = GetUserNameFromId(caller, true);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum("created");
	values[2] = TimestampTzGetDatum(now);
	values[3] = actor ? CStringGetTextDatum(actor) : (Datum) 0;
	values[4] = CStringGetTextDatum(data);
	nulls[3] = actor ? ' ' : 'n';
	gb_spi_run(plans.insert_event, values, nulls, SPI_OK_INSERT);

	gb_coalesce_remember_dedup(k, id);

	ereport(LOG,
			(errmsg("Created %s incident: " INT64_FORMAT " (%s)", k->kind, id, k->key),
			 errhidestmt(true)));
	return id;
}

/*
 * Decide what a violation does.  Returns the id of the incident created, or
 * 0 when none was (deduplicated, rate limited, or the bridge is disabled).
 */
int64
gate_bridge_on_violation(const GBViolation *v)
{
	const char *severity;
	GBKey		k;
	GBPrivileged priv;
	Datum		kv[3];
	int64		id = 0;
	TimestampTz now;
	TimestampTz last_rl;
	TimestampTz window_start;
	Datum		values[4];
	int64		recent;
	bool		isnull;

	/* bad input is refused whether or not the bridge is enabled */
	severity = gb_incident_severity_name(v->severity);
	k.kind = gb_kind_name(v->kind);
	k.agent = v->agent;
	k.subject = v->subject;
	k.key = build_key(v);

	if (!gb_enabled)
		return 0;

	/* a repeat within this transaction: counted in memory (coalesce.c) */
	if (gb_coalesce_try(&k))
		return 0;

	kv[0] = CStringGetTextDatum(k.kind);
	kv[1] = CStringGetTextDatum(k.agent);
	kv[2] = CStringGetTextDatum(k.subject);

	gb_spi_begin(&priv);
	prepare_plans();

	/* the common repeat: fold into the unresolved incident */
	if (try_dedup(&k, kv, &id))
	{
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
	lock_key(&k, kv, &last_rl);

	if (try_dedup(&k, kv, &id))
	{
		id = 0;
		goto done;
	}

	/*
	 * The decision's time, read after the dedup: that may have waited for
	 * the previous incident's resolution, which the new incident must not
	 * predate.
	 */
	now = GetCurrentTimestamp();
	window_start = now - (TimestampTz) gb_rate_window * USECS_PER_SEC;

	values[0] = kv[0];
	values[1] = kv[1];
	values[2] = kv[2];
	values[3] = TimestampTzGetDatum(window_start);
	gb_spi_run(plans.window_count, values, NULL, SPI_OK_SELECT);
	recent = first_int8(&isnull);
	if (recent >= gb_rate_limit)
	{
		TimestampTz oldest = DatumGetTimestampTz(
			SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		values[3] = TimestampTzGetDatum(now);
		gb_spi_run(plans.rate_limited, values, NULL, SPI_OK_UPDATE);
		/* rate limited until the oldest counted incident leaves the window */
		if (!isnull)
			gb_coalesce_remember_rate_limited(&k,
											  oldest + (TimestampTz) gb_rate_window * USECS_PER_SEC);
		/* one LOG line per key and window; the rest at DEBUG1 */
		ereport(last_rl <= window_start ? LOG : DEBUG1,
				(errmsg("Rate limited %s incident: %s", k.kind, k.key),
				 errdetail(INT64_FORMAT " incidents were created for this key in the last %d s; gate_bridge.rate_limit is %d.",
						   recent, gb_rate_window, gb_rate_limit),
				 errhidestmt(true)));
		goto done;
	}

	id = create_incident(v, &k, kv, severity, now, priv.save_userid);

done:
	gb_spi_end(&priv);
	return id;
}
