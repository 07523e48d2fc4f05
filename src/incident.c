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
 *	- folds into the unresolved incident: occurrences + 1, last_seen_at
 *	  (a row appended to incident_folds, which the view incidents adds in);
 *	- is rate limited: gate_bridge.rate_limit incidents were already created
 *	  for the key within gate_bridge.rate_window;
 *	- or creates an incident and its "created" timeline row, which is
 *	  numbered and announced when the transaction commits (stream.c).
 *
 * Concurrency.  The common repeat is a violation for a key that already has
 * an unresolved incident; that costs one INSERT into incident_folds, which
 * finds the incident through the partial unique index and locks no row
 * (one UPDATE of the incident's row when the key's lock is not held, see
 * try_fold()).  Otherwise the key's row in gate_bridge.incident_keys is locked
 * (FOR NO KEY UPDATE), so creation and rate limiting for one key are
 * serialised while other keys proceed in parallel.  Under READ COMMITTED
 * every SPI statement takes a fresh snapshot, so after the lock we see what
 * the previous holder committed and decide again.  ack/resolve take the key's
 * lock (pending.c) and row before the incident's, the same order as here.
 * The trigger's violations are decided once per key, at commit
 * (pending.c).  Under REPEATABLE READ and SERIALIZABLE a competitor's
 * committed change to the key row or to the incident makes the
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

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

typedef struct GBPlans
{
	SPIPlanPtr	find;
	SPIPlanPtr	fold_row;
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
	Oid			t3[3] = {TEXTOID, TEXTOID, TEXTOID};
	Oid			t4[4] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			tfold[5] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID};
	Oid			tkey[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			tins[11] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID, INT4OID, INT8OID};
	Oid			tev[5] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};

	if (plans.insert_event != NULL)
		return;

	plans.find = gb_keep_plan(
		"SELECT id FROM gate_bridge.incident_rows"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 AND status <> 'resolved'",
		3, t3);
	plans.fold_row = gb_keep_plan(
		"UPDATE gate_bridge.incident_rows"
		"   SET occurrences = LEAST(occurrences::int8 + $4, 2147483647)::int4,"
		"       last_seen_at = GREATEST(last_seen_at, $5)"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 AND status <> 'resolved'"
		" RETURNING id", 5, tfold);
	plans.key_lock = gb_keep_plan(
		"SELECT last_rate_limited_at FROM gate_bridge.incident_keys"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 FOR NO KEY UPDATE",
		3, t3);
	plans.key_insert = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_keys"
		" (kind, agent, subject, key, created, last_created_at)"
		" VALUES ($1, $2, $3, $4, 1, $5)"
		" ON CONFLICT (kind, agent, subject) DO NOTHING", 5, tkey);
	plans.window_count = gb_keep_plan(
		"SELECT count(*), min(first_seen_at) FROM gate_bridge.incident_rows"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 AND first_seen_at > $4",
		4, t4);
	plans.rate_limited = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET rate_limited = rate_limited + $4, last_rate_limited_at = $5"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 5, tfold);
	plans.insert_incident = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_rows"
		" (kind, key, agent, violation_type, severity, status, summary,"
		"  details, playbooks, occurrences, first_seen_at, last_seen_at, subject,"
		"  context_id)"
		" VALUES ($1, $2, $3, $4, $5, 'open', $6, $7,"
		"         gate_bridge.suggest_playbooks($4, $3), $10, $8, $8, $9, $11)"
		" RETURNING id", 11, tins);
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

/*
 * The key's unresolved incident, or 0, as the latest committed state has
 * it whatever the isolation level: a REPEATABLE READ transaction must not
 * fold into an incident that was resolved after its snapshot was taken.
 */
static int64
find_unresolved(Datum *kv)
{
	bool		isnull;
	int			ret;

	ret = SPI_execute_snapshot(plans.find, kv, NULL, GetLatestSnapshot(),
							   InvalidSnapshot, false, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "gate_bridge statement failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;
	return first_int8(&isnull);
}

/*
 * Lock the key's decision row.  A key seen for the first time gets its row
 * here, already counting the incident that is about to be created at
 * "now": no incident of it can exist (whoever creates one inserts this row
 * first, and waits for ours), so it needs neither a second look nor a rate
 * count.  Returns true for such a new key.
 */
static bool
lock_key(const GBKey *k, Datum *kv, TimestampTz now,
		 TimestampTz *last_rate_limited_at)
{
	bool		isnull;

	gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		Datum		values[5] = {kv[0], kv[1], kv[2], CStringGetTextDatum(k->key),
		TimestampTzGetDatum(now)};

		gb_spi_run(plans.key_insert, values, NULL, SPI_OK_INSERT);
		if (SPI_processed == 1)
			return true;
		gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			elog(ERROR, "could not lock the decision row for incident key \"%s\"",
				 k->key);
	}
	*last_rate_limited_at = DatumGetTimestampTz(
		SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		*last_rate_limited_at = DT_NOBEGIN;
	return false;
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
build_summary(GBKind kind, const char *agent, const char *subject)
{
	switch (kind)
	{
		case GB_KIND_BUDGET:
			return psprintf("Budget violation: %s %s", agent, subject);
		case GB_KIND_INVARIANT:
			return psprintf("Invariant failed: %s %s", agent, subject);
		default:
			return psprintf("Planner regression: %s", subject);
	}
}

/* One decision's input: a single violation, or a key's pending ones. */
typedef struct Decision
{
	const GBKey *k;
	GBKind		kind;
	const char *violation_type;
	const char *severity;
	int64		count;
	TimestampTz last_at;
	Oid			role;
	bool		locked;			/* the key's lock is held (pending.c) */
	const GBViolation *v;		/* a single violation: its details */
	GBPending  *p;				/* pending violations: theirs */
} Decision;

/* Create the incident and its "created" event (announced at commit). */
static int64
create_incident(const Decision *d, Datum *kv, TimestampTz now, bool counted)
{
	const GBKey *k = d->k;
	char	   *summary = build_summary(d->kind, k->agent, k->subject);
	Jsonb	   *details;
	int64		context_id = 0;
	Datum		values[11];
	char		nulls[11];
	char	   *data;
	char	   *actor;
	int64		id;
	bool		isnull;

	if (d->v != NULL)
		details = d->v->build_details(d->v->details_arg);
	else if (d->p->from_row)
		details = gb_row_details(d->p, k->agent, k->subject, &context_id);
	else
		details = d->p->details;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = kv[0];
	values[1] = CStringGetTextDatum(k->key);
	values[2] = kv[1];
	values[3] = CStringGetTextDatum(d->violation_type);
	values[4] = CStringGetTextDatum(d->severity);
	values[5] = CStringGetTextDatum(summary);
	values[6] = JsonbPGetDatum(details);
	values[7] = TimestampTzGetDatum(now);
	values[8] = kv[2];
	values[9] = Int32GetDatum((int32) Min(d->count, PG_INT32_MAX));
	values[10] = Int64GetDatum(context_id);
	nulls[10] = context_id != 0 ? ' ' : 'n';
	gb_spi_run(plans.insert_incident, values, nulls, SPI_OK_INSERT_RETURNING);
	id = first_int8(&isnull);

	if (!counted)
	{
		values[0] = kv[0];
		values[1] = kv[1];
		values[2] = kv[2];
		values[3] = TimestampTzGetDatum(now);
		gb_spi_run(plans.created, values, NULL, SPI_OK_UPDATE);
	}

	/* the notification is sent at commit, with the event's position (stream.c) */
	data = gb_created_data(id, k->kind, k->key, d->severity, summary, now, k->agent);

	actor = GetUserNameFromId(d->role, true);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum("created");
	values[2] = TimestampTzGetDatum(now);
	values[3] = actor ? CStringGetTextDatum(actor) : (Datum) 0;
	values[4] = CStringGetTextDatum(data);
	nulls[3] = actor ? ' ' : 'n';
	gb_spi_run(plans.insert_event, values, nulls, SPI_OK_INSERT);
	return id;
}

static void
fold_debug(const GBKey *k, int64 id, int64 count)
{
	ereport(DEBUG1,
			(errmsg("Skipping duplicate %s incident: %s", k->kind, k->key),
			 errdetail(INT64_FORMAT " violation(s) folded into incident " INT64_FORMAT ".",
					   count, id),
			 errhidestmt(true)));
}

/*
 * Fold the decision's violations into the key's unresolved incident, if
 * there is one.  When the transaction holds the key's lock ("locked",
 * pending.c), the incident cannot be resolved before it commits: the fold
 * is one row appended to incident_folds, found with the latest committed
 * state whatever the isolation level, and no writer of the key waits for
 * another.  Otherwise (a round of more keys than the lock manager takes)
 * it is one UPDATE of the incident's row, whose row lock and condition make
 * it exact (and whose snapshot, at REPEATABLE READ, makes a change it
 * cannot see a serialization failure); the row lock is then held for the
 * duration of the commit.
 * "defer": a single violation from a SQL function, recorded to be folded
 * at commit if the key has an unresolved incident now.
 */
static bool
try_fold(const Decision *d, Datum *kv, bool defer)
{
	int64		id;
	bool		isnull;

	if (defer)
	{
		id = find_unresolved(kv);
		if (id == 0)
			return false;
		fold_debug(d->k, id, 1);
		gb_pending_add(d->v, d->k, d->severity);
		return true;
	}
	else if (d->locked)
	{
		id = gb_fold_append(d->k->kind, d->k->agent, d->k->subject,
							d->count, d->last_at);
		if (id == 0)
			return false;
	}
	else
	{
		Datum		values[5] = {kv[0], kv[1], kv[2], Int64GetDatum(d->count),
		TimestampTzGetDatum(d->last_at)};

		gb_spi_run(plans.fold_row, values, NULL, SPI_OK_UPDATE_RETURNING);
		if (SPI_processed == 0)
			return false;
		id = first_int8(&isnull);
	}
	fold_debug(d->k, id, d->count);
	return true;
}

/*
 * The decision for a key: fold, rate limit or create.  Returns the id of
 * the incident created, or 0.  summary is NULL for a single violation from
 * a SQL function, whose creation is logged at once.
 */
static int64
decide(const Decision *d, bool defer, GBDecideSummary *summary)
{
	const GBKey *k = d->k;
	GBPrivileged priv;
	Datum		kv[3];
	int64		id = 0;
	TimestampTz now;
	TimestampTz last_rl;
	TimestampTz window_start;
	Datum		values[5];
	int64		recent;
	bool		isnull;

	/*
	 * The commonest decision of all, a repeat folded under the key's lock,
	 * needs neither SPI nor a change of user (folds.c).
	 */
	if (!defer && d->locked)
	{
		(void) gb_schema_ready(true);
		id = gb_fold_append(k->kind, k->agent, k->subject, d->count, d->last_at);
		if (id != 0)
		{
			fold_debug(k, id, d->count);
			return 0;
		}
	}

	kv[0] = CStringGetTextDatum(k->kind);
	kv[1] = CStringGetTextDatum(k->agent);
	kv[2] = CStringGetTextDatum(k->subject);

	gb_spi_begin(&priv);
	prepare_plans();

	/* the common repeat: fold into the unresolved incident (tried above when locked) */
	if (!(!defer && d->locked) && try_fold(d, kv, defer))
		goto done;

	/*
	 * Serialise with every other decision for this key, then look again.
	 * An unlocked fold above may have waited for the incident while it was
	 * being resolved, and then keeps that row locked although it no longer
	 * matches.  That is safe because resolve() takes the key's lock and row
	 * before the incident's (lifecycle.c): whoever holds the key's row here
	 * cannot be waiting for a resolution, and the incident it could wait
	 * for is already resolved in its snapshot.
	 *
	 * The decision's time is read after the fold, which may have waited for
	 * the previous incident's resolution: the new incident must not predate
	 * it.
	 */
	now = GetCurrentTimestamp();
	if (lock_key(k, kv, now, &last_rl))
	{
		id = create_incident(d, kv, now, true);
		goto created;
	}

	if (try_fold(d, kv, defer))
		goto done;

	/* the clock again: locking the key's row may have waited */
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
		bool		first_in_window = (last_rl <= window_start);

		values[3] = Int64GetDatum(d->count);
		values[4] = TimestampTzGetDatum(now);
		gb_spi_run(plans.rate_limited, values, NULL, SPI_OK_UPDATE);
		/*
		 * One LOG line per key and window, and one per round of decisions
		 * (the others are counted in its summary); the rest at DEBUG1.
		 */
		if (first_in_window && summary != NULL &&
			summary->rate_limited_logged++ > 0)
			first_in_window = false;
		ereport(first_in_window ? LOG : DEBUG1,
				(errmsg("Rate limited %s incident: %s", k->kind, k->key),
				 errdetail(INT64_FORMAT " incidents were created for this key in the last %d s; gate_bridge.rate_limit is %d.",
						   recent, gb_rate_window, gb_rate_limit),
				 errhidestmt(true)));
		goto done;
	}

	id = create_incident(d, kv, now, false);
created:
	if (summary == NULL)
		ereport(LOG,
				(errmsg("Created %s incident: " INT64_FORMAT " (%s)", k->kind, id, k->key),
				 errhidestmt(true)));
	else
	{
		if (summary->created++ == 0)
		{
			summary->first_id = id;
			strlcpy(summary->first_key, k->key, sizeof(summary->first_key));
			strlcpy(summary->first_kind, k->kind, sizeof(summary->first_kind));
		}
		summary->last_id = id;
	}

done:
	gb_spi_end(&priv);
	return id;
}

/*
 * Decide what a violation does.  Returns the id of the incident created, or
 * 0 when none was (deduplicated, rate limited, decided at commit, or the
 * bridge is disabled).
 */
int64
gate_bridge_on_violation(const GBViolation *v)
{
	const char *severity;
	GBKey		k;
	Decision	d;

	/* bad input is refused whether or not the bridge is enabled */
	severity = gb_incident_severity_name(v->severity);
	k.kind = gb_kind_name(v->kind);
	k.agent = v->agent;
	k.subject = v->subject;
	k.key = build_key(v);

	if (!gb_enabled)
		return 0;

	/* from the trigger: decided at commit, in key order (pending.c) */
	if (v->row != NULL)
	{
		gb_pending_add(v, &k, severity);
		return 0;
	}

	/*
	 * From a SQL function: a repeat is folded at commit too; a violation
	 * that may create an incident is decided now, to return its id.
	 */
	d.k = &k;
	d.kind = v->kind;
	d.violation_type = v->violation_type;
	d.severity = severity;
	d.count = 1;
	d.last_at = GetCurrentTimestamp();
	d.role = GetUserId();
	d.locked = false;
	d.v = v;
	d.p = NULL;
	return decide(&d, true, NULL);
}

/* Decide a key's pending violations (pending.c), as it commits. */
void
gb_decide_pending(GBPending *p, const char *agent, const char *subject,
				  GBDecideSummary *summary)
{
	GBKey		k;
	Decision	d;

	k.kind = p->kind_name;
	k.agent = agent;
	k.subject = subject;
	k.key = p->key;
	d.k = &k;
	d.kind = p->kind;
	d.violation_type = p->violation_type;
	d.severity = p->severity;
	d.count = p->count;
	d.last_at = p->last_at;
	d.role = p->role;
	d.locked = p->locked;
	d.v = NULL;
	d.p = p;
	(void) decide(&d, false, summary);
}

/* One LOG line for a round of decisions, however many incidents it made. */
void
gb_decide_summary(const GBDecideSummary *s)
{
	if (s->created == 1)
		ereport(LOG,
				(errmsg("Created %s incident: " INT64_FORMAT " (%s)",
						s->first_kind, s->first_id, s->first_key),
				 errhidestmt(true)));
	else if (s->created > 1)
		ereport(LOG,
				(errmsg("Created " INT64_FORMAT " incidents: " INT64_FORMAT " (%s) to " INT64_FORMAT,
						s->created, s->first_id, s->first_key, s->last_id),
				 errhidestmt(true)));
	if (s->rate_limited_logged > 1)
		ereport(LOG,
				(errmsg("Rate limited " INT64_FORMAT " more incident keys at this commit",
						s->rate_limited_logged - 1),
				 errdetail("gate_bridge.rate_limit is %d per %d s.",
						   gb_rate_limit, gb_rate_window),
				 errhidestmt(true)));
}
