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
#include "utils/json.h"
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
	SPIPlanPtr	last_incident;
	SPIPlanPtr	silence;
	SPIPlanPtr	reopen;
	SPIPlanPtr	escalate;
	SPIPlanPtr	find_open;
	SPIPlanPtr	recovery_store;
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
	Oid			tins[13] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID, INT4OID, INT8OID, INT8OID, BOOLOID};
	Oid			tev[5] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Oid			tcreated[5] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Oid			tsilence[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Oid			treopen[6] = {INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID, BOOLOID, TEXTOID};
	Oid			tescalate[3] = {INT8OID, TEXTOID, INT8OID};
	Oid			tstore[5] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID};

	if (plans.recovery_store != NULL)
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
		" RETURNING id, severity", 5, tfold);
	plans.key_lock = gb_keep_plan(
		"SELECT last_rate_limited_at, refires, last_created_at,"
		"       flapping_since IS NOT NULL, recovery_passes, recovery_occurrences"
		"  FROM gate_bridge.incident_keys"
		" WHERE kind = $1 AND agent = $2 AND subject = $3 FOR NO KEY UPDATE",
		3, t3);
	plans.key_insert = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_keys"
		" (kind, agent, subject, key, created, last_created_at, refires)"
		" VALUES ($1, $2, $3, $4, 1, $5, 1)"
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
		"  context_id, silence_id, flapping)"
		" VALUES ($1, $2, $3, $4, $5, 'open', $6, $7,"
		"         gate_bridge.suggest_playbooks($4, $3), $10, $8, $8, $9, $11, $12, $13)"
		" RETURNING id", 13, tins);
	plans.created = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET created = created + 1, last_created_at = $4, refires = $5,"
		"       recovery_passes = 0, recovery_occurrences = NULL"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 5, tcreated);
	plans.insert_event = gb_keep_plan(
		"INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)"
		" VALUES ($1, $2, $3, $4, $5::jsonb)", 5, tev);
	/* the key's latest incident, for reopening and the re-fire backoff */
	plans.last_incident = gb_keep_plan(
		"SELECT i.id, i.status, i.resolved_at, i.last_seen_at, i.resolved_by, i.severity"
		"  FROM gate_bridge.incidents i"
		" WHERE i.kind = $1 AND i.agent = $2 AND i.subject = $3"
		" ORDER BY i.first_seen_at DESC, i.id DESC LIMIT 1", 3, t3);
	plans.silence = gb_keep_plan(
		"SELECT gate_bridge.silence_for($1, $2, $3, $4, $5)", 5, tsilence);
	plans.reopen = gb_keep_plan(
		"UPDATE gate_bridge.incident_rows"
		"   SET status = 'open', acked_at = NULL, acked_by = NULL, resolved_at = NULL,"
		"       resolved_by = NULL, resolution_note = NULL, snoozed_until = NULL,"
		"       occurrences = LEAST(occurrences::int8 + $2, 2147483647)::int4,"
		"       last_seen_at = GREATEST(last_seen_at, $3),"
		"       silence_id = $4, flapping = $5, severity = LEAST(severity, $6)"
		" WHERE id = $1 AND status = 'resolved'"
		" RETURNING id", 6, treopen);
	plans.escalate = gb_keep_plan(
		"UPDATE gate_bridge.incident_rows r"
		"   SET severity = $2, silence_id = COALESCE(r.silence_id, $3)"
		"  FROM (SELECT o.id, o.severity, o.silence_id FROM gate_bridge.incident_rows o"
		"         WHERE o.id = $1 FOR NO KEY UPDATE) o"
		" WHERE r.id = o.id AND o.severity > $2 AND r.status <> 'resolved'"
		" RETURNING o.severity, o.silence_id IS NULL AND $3 IS NOT NULL", 3, tescalate);
	plans.find_open = gb_keep_plan(
		"SELECT i.id, i.occurrences, i.flapping FROM gate_bridge.incidents i"
		" WHERE i.kind = $1 AND i.agent = $2 AND i.subject = $3 AND i.status <> 'resolved'",
		3, t3);
	plans.recovery_store = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET recovery_passes = $4, recovery_occurrences = $5"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 5, tstore);
}

/*
 * Run a statement that changes an incident's row with the latest committed
 * state, whatever the isolation level: under the key's lock a row that a
 * compaction changed after a REPEATABLE READ snapshot is no conflict.
 */
static void
run_latest(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(),
										   InvalidSnapshot, false, true, 0);

	if (ret != expected)
		elog(ERROR, "gate_bridge statement failed: %s", SPI_result_code_string(ret));
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

/* What the key's decision row says, read under its lock. */
typedef struct KeyState
{
	bool		is_new;			/* inserted now, counting the incident to come */
	TimestampTz last_rate_limited_at;	/* DT_NOBEGIN: never */
	int32		refires;
	TimestampTz last_created_at;	/* DT_NOBEGIN: never */
	bool		flapping;
	int64		recovery_passes;
	int64		recovery_occurrences;	/* -1: none */
} KeyState;

static TimestampTz
ts_col(int col, TimestampTz ifnull)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? ifnull : DatumGetTimestampTz(d);
}

static int64
int8_col(int col, int64 ifnull)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? ifnull : DatumGetInt64(d);
}

/*
 * Lock the key's decision row.  A key seen for the first time gets its row
 * here, already counting the incident that is about to be created at
 * "now": no incident of it can exist (whoever creates one inserts this row
 * first, and waits for ours), so it needs neither a second look nor a rate
 * count (ks->is_new).
 */
static void
lock_key(const GBKey *k, Datum *kv, TimestampTz now, KeyState *ks)
{
	bool		isnull;

	memset(ks, 0, sizeof(KeyState));
	gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		Datum		values[5] = {kv[0], kv[1], kv[2], CStringGetTextDatum(k->key),
		TimestampTzGetDatum(now)};

		gb_spi_run(plans.key_insert, values, NULL, SPI_OK_INSERT);
		if (SPI_processed == 1)
		{
			ks->is_new = true;
			ks->refires = 1;
			ks->recovery_occurrences = -1;
			return;
		}
		gb_spi_run(plans.key_lock, kv, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			elog(ERROR, "could not lock the decision row for incident key \"%s\"",
				 k->key);
	}
	ks->last_rate_limited_at = ts_col(1, DT_NOBEGIN);
	ks->refires = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 2, &isnull));
	ks->last_created_at = ts_col(3, DT_NOBEGIN);
	ks->flapping = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 4, &isnull));
	ks->recovery_passes = int8_col(5, 0);
	ks->recovery_occurrences = int8_col(6, -1);
}

/*
 * The key's text: BUDGET_{agent}_{type}, INVARIANT_{agent}_{name},
 * PLANNER_{version}, DELIVERY_{destination}, HEARTBEAT_{agent}.
 */
char *
gb_key_text(GBKind kind, const char *agent, const char *subject)
{
	switch (kind)
	{
		case GB_KIND_BUDGET:
			return psprintf("BUDGET_%s_%s", agent, subject);
		case GB_KIND_INVARIANT:
			return psprintf("INVARIANT_%s_%s", agent, subject);
		case GB_KIND_DELIVERY:
			return psprintf("DELIVERY_%s", subject);
		case GB_KIND_HEARTBEAT:
			return psprintf("HEARTBEAT_%s", agent);
		default:
			return psprintf("PLANNER_%s", subject);
	}
}

static char *
build_key(const GBViolation *v)
{
	char	   *key = gb_key_text(v->kind, v->agent, v->subject);
	size_t		len = strlen(key);

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
		case GB_KIND_DELIVERY:
			return psprintf("Delivery failed: %s", subject);
		case GB_KIND_HEARTBEAT:
			return psprintf("Agent silent: %s", agent);
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
	int64		count;			/* violations; 0: passing rows only */
	TimestampTz last_at;
	Oid			role;
	bool		locked;			/* the key's lock is held (pending.c) */
	const GBViolation *v;		/* a single violation: its details */
	GBPending  *p;				/* pending violations: theirs */
	int			worst_rank;		/* the worst violation: 1 (sev1) .. 3 */
	int64		worst_eval_id;
	int64		passes;			/* passing rows after the last violation */
	int32		resolve_after;
	int64		last_pass_eval_id;
} Decision;

static const char *const severity_names[] = {"sev1", "sev2", "sev3"};

/* 1 for sev1 (the worst) .. 3 for sev3 */
static int
severity_rank_of(const char *severity)
{
	return (strlen(severity) == 4 && severity[3] >= '1' && severity[3] <= '3') ?
		severity[3] - '0' : 3;
}

/* The role that brought the violations, as the timeline's actor. */
static Datum
actor_datum(const Decision *d, char *isnull)
{
	char	   *actor = GetUserNameFromId(d->role, true);

	*isnull = actor ? ' ' : 'n';
	return actor ? CStringGetTextDatum(actor) : (Datum) 0;
}

/* A timeline row; detail is a JSON object's text. */
static void
insert_event(int64 id, const char *event, TimestampTz at, const Decision *d,
			 const char *detail)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(event);
	values[2] = TimestampTzGetDatum(at);
	values[3] = actor_datum(d, &nulls[3]);
	values[4] = CStringGetTextDatum(detail);
	gb_spi_run(plans.insert_event, values, nulls, SPI_OK_INSERT);
}

/* The silence that holds the key back now, or 0. */
static int64
silence_now(const Decision *d, Datum *kv, TimestampTz now)
{
	Datum		values[5] = {kv[0], kv[1], CStringGetTextDatum(d->violation_type),
	CStringGetTextDatum(d->k->key), TimestampTzGetDatum(now)};
	bool		isnull;
	int64		id;

	gb_spi_run(plans.silence, values, NULL, SPI_OK_SELECT);
	id = first_int8(&isnull);
	return isnull ? 0 : id;
}

/*
 * A silence holds the incident back from now on: a "silenced" event, by
 * gate_bridge, naming the silence (held back itself, like every event of
 * the incident until the silence ends).
 */
static void
note_silenced(int64 id, int64 silence_id, TimestampTz at)
{
	Datum		values[5];
	char	   *detail = psprintf("{\"silence_id\": " INT64_FORMAT "}", silence_id);

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum("silenced");
	values[2] = TimestampTzGetDatum(at);
	values[3] = CStringGetTextDatum("gate_bridge");
	values[4] = CStringGetTextDatum(detail);
	gb_spi_run(plans.insert_event, values, NULL, SPI_OK_INSERT);
}

/* Create the incident and its "created" event (announced at commit). */
static int64
create_incident(const Decision *d, Datum *kv, TimestampTz now,
				const KeyState *ks, int32 refires, TimestampTz prev_resolved)
{
	const GBKey *k = d->k;
	char	   *summary = build_summary(d->kind, k->agent, k->subject);
	Jsonb	   *details;
	int64		context_id = 0;
	int64		silence_id = silence_now(d, kv, now);
	Datum		values[13];
	char		nulls[13];
	char	   *data;
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
	values[11] = Int64GetDatum(silence_id);
	nulls[11] = silence_id != 0 ? ' ' : 'n';
	values[12] = BoolGetDatum(ks->flapping);
	gb_spi_run(plans.insert_incident, values, nulls, SPI_OK_INSERT_RETURNING);
	id = first_int8(&isnull);

	if (!ks->is_new)
	{
		values[0] = kv[0];
		values[1] = kv[1];
		values[2] = kv[2];
		values[3] = TimestampTzGetDatum(now);
		values[4] = Int32GetDatum(refires);
		gb_spi_run(plans.created, values, NULL, SPI_OK_UPDATE);
	}

	/* the notification is sent at commit, with the event's position (stream.c) */
	data = gb_created_data(id, k->kind, k->key, d->severity, summary, now, k->agent);
	insert_event(id, "created", now, d, data);
	if (silence_id != 0)
		note_silenced(id, silence_id, now);

	gb_key_changed(kv, id, now, true, prev_resolved);
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
 * there is one; *id and *rank (its severity, 1 for sev1 .. 3) say which.
 * When the transaction holds the key's lock ("locked", pending.c), the
 * incident cannot be resolved before it commits: the fold is one row
 * appended to incident_folds, found with the latest committed state
 * whatever the isolation level, and no writer of the key waits for
 * another.  Otherwise (a round of more keys than the lock manager takes)
 * it is one UPDATE of the incident's row, whose row lock and condition make
 * it exact (and whose snapshot, at REPEATABLE READ, makes a change it
 * cannot see a serialization failure); the row lock is then held for the
 * duration of the commit.
 * "defer": a single violation from a SQL function, recorded to be folded
 * at commit if the key has an unresolved incident now (*id stays 0: the
 * fold is decided then).
 */
static bool
try_fold(const Decision *d, Datum *kv, bool defer, int64 *id, int *rank)
{
	bool		isnull;

	*id = 0;
	if (defer)
	{
		int64		found = find_unresolved(kv);

		if (found == 0)
			return false;
		fold_debug(d->k, found, 1);
		gb_pending_add(d->v, d->k, d->severity);
		return true;
	}
	else if (d->locked)
	{
		*id = gb_fold_append(d->k->kind, d->k->agent, d->k->subject,
							 d->count, d->last_at, rank);
		if (*id == 0)
			return false;
	}
	else
	{
		Datum		values[5] = {kv[0], kv[1], kv[2], Int64GetDatum(d->count),
		TimestampTzGetDatum(d->last_at)};
		char	   *sev;

		gb_spi_run(plans.fold_row, values, NULL, SPI_OK_UPDATE_RETURNING);
		if (SPI_processed == 0)
			return false;
		*id = first_int8(&isnull);
		sev = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		*rank = (sev != NULL && strlen(sev) == 4) ? sev[3] - '0' : 3;
	}
	fold_debug(d->k, *id, d->count);
	return true;
}

/*
 * Escalation in place: a violation worse than the unresolved incident it
 * folded into raises the incident's severity, never lowers it.  The
 * "escalated" event names both; a silence that matches now holds it back.
 */
static void
escalate(const Decision *d, Datum *kv, int64 id)
{
	const char *to = severity_names[d->worst_rank - 1];
	TimestampTz now = GetCurrentTimestamp();
	int64		silence_id = silence_now(d, kv, now);
	Datum		values[3] = {Int64GetDatum(id), CStringGetTextDatum(to),
	Int64GetDatum(silence_id)};
	char		nulls[3] = {' ', ' ', silence_id != 0 ? ' ' : 'n'};
	char	   *from;
	bool		newly_silenced;
	bool		isnull;
	StringInfoData detail;

	run_latest(plans.escalate, values, nulls, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return;					/* escalated meanwhile, or resolved */
	from = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	newly_silenced = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull));

	initStringInfo(&detail);
	appendStringInfo(&detail, "{\"from\": \"%s\", \"to\": \"%s\"", from, to);
	if (d->worst_eval_id != 0)
		appendStringInfo(&detail, ", \"eval_id\": " INT64_FORMAT, d->worst_eval_id);
	appendStringInfoChar(&detail, '}');
	insert_event(id, "escalated", now, d, detail.data);
	if (newly_silenced)
		note_silenced(id, silence_id, now);
	ereport(LOG,
			(errmsg("Escalated %s incident " INT64_FORMAT " (%s) from %s to %s",
					d->k->kind, id, d->k->key, from, to),
			 errhidestmt(true)));
}

static void
maybe_escalate(const Decision *d, Datum *kv, int64 id, int rank)
{
	if (id != 0 && d->worst_rank >= 1 && d->worst_rank < rank)
		escalate(d, kv, id);
}

/* What the key's latest incident was, for reopening and the backoff. */
typedef struct LastIncident
{
	int64		id;				/* 0: none */
	bool		resolved;
	TimestampTz resolved_at;
	TimestampTz last_seen_at;
	char	   *resolved_by;
	char	   *severity;
} LastIncident;

static void
last_incident(Datum *kv, LastIncident *last)
{
	bool		isnull;
	char	   *status;

	memset(last, 0, sizeof(LastIncident));
	gb_spi_run(plans.last_incident, kv, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	last->id = first_int8(&isnull);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	last->resolved = status != NULL && strcmp(status, "resolved") == 0;
	last->resolved_at = ts_col(3, DT_NOBEGIN);
	last->last_seen_at = ts_col(4, DT_NOBEGIN);
	last->resolved_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5);
	last->severity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6);
}

/*
 * Reopen the key's incident resolved less than reopen_window ago: back to
 * open with the violations added ("reopened"), rather than a new incident.
 */
static bool
reopen(const Decision *d, Datum *kv, const LastIncident *last, TimestampTz now,
	   const KeyState *ks)
{
	int64		silence_id = silence_now(d, kv, now);
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData detail;
	Datum		store[5];
	char		store_nulls[5] = {' ', ' ', ' ', ' ', 'n'};

	values[0] = Int64GetDatum(last->id);
	values[1] = Int64GetDatum(d->count);
	values[2] = TimestampTzGetDatum(d->last_at);
	values[3] = Int64GetDatum(silence_id);
	nulls[3] = silence_id != 0 ? ' ' : 'n';
	values[4] = BoolGetDatum(ks->flapping);
	values[5] = CStringGetTextDatum(severity_names[Max(1, Min(3, d->worst_rank)) - 1]);
	run_latest(plans.reopen, values, nulls, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;

	initStringInfo(&detail);
	appendStringInfo(&detail, "{\"occurrences\": " INT64_FORMAT ", \"resolved_at\": \"%s\"",
					 d->count, JsonEncodeDateTime(NULL, TimestampTzGetDatum(last->resolved_at),
												  TIMESTAMPTZOID, NULL));
	if (last->resolved_by)
	{
		appendStringInfoString(&detail, ", \"resolved_by\": ");
		escape_json(&detail, last->resolved_by);
	}
	appendStringInfo(&detail, ", \"reopen_window\": %d, \"violation_severity\": \"%s\"}",
					 gb_reopen_window, severity_names[Max(1, Min(3, d->worst_rank)) - 1]);
	insert_event(last->id, "reopened", now, d, detail.data);
	if (silence_id != 0)
		note_silenced(last->id, silence_id, now);

	/* the recovery count starts again */
	store[0] = kv[0];
	store[1] = kv[1];
	store[2] = kv[2];
	store[3] = Int64GetDatum(0);
	store[4] = (Datum) 0;
	gb_spi_run(plans.recovery_store, store, store_nulls, SPI_OK_UPDATE);

	gb_key_changed(kv, last->id, now, true, last->resolved_at);
	ereport(LOG,
			(errmsg("Reopened %s incident: " INT64_FORMAT " (%s)", d->k->kind, last->id,
					d->k->key),
			 errdetail("It was resolved at %s, less than gate_bridge.reopen_window (%d s) ago.",
					   timestamptz_to_str(last->resolved_at), gb_reopen_window),
			 errhidestmt(true)));
	return true;
}

/*
 * The re-fire backoff: when does the key's next incident become allowed?
 * refires counts the incidents of the current chain; a key quiet for
 * backoff_reset (no violation, none held back) starts a new chain.  Sets
 * *chain to the count the next incident gets; returns the time before which
 * a violation is held back (DT_NOBEGIN: not held back).
 */
static TimestampTz
backoff_until(const KeyState *ks, const LastIncident *last, TimestampTz now,
			  int32 *chain)
{
	TimestampTz activity = Max(last->last_seen_at, ks->last_rate_limited_at);
	int			step;

	if (last->id == 0 || activity == DT_NOBEGIN ||
		now - activity > (TimestampTz) gb_backoff_reset * USECS_PER_SEC)
	{
		*chain = 1;
		return DT_NOBEGIN;
	}
	*chain = Min(ks->refires, PG_INT32_MAX - 1) + 1;
	if (gb_backoff_steps == 0 || ks->refires < 1 || ks->last_created_at == DT_NOBEGIN)
		return DT_NOBEGIN;
	step = Min(ks->refires, gb_backoff_steps) - 1;
	return ks->last_created_at + gb_backoff_secs[step] * USECS_PER_SEC;
}

/*
 * Count the decision's passing rows towards the recovery of the key's
 * unresolved incident, under the key's ExclusiveLock (pending.c), and
 * resolve it when resolve_after passing rows came in a row.  A violation
 * committed since the last count changed the incident's occurrences, and
 * the count starts again; so does this transaction's own violation, after
 * which d->passes were seen.  While the key is flapping the count goes on
 * but the incident is held open.
 */
static void
recover(const Decision *d, Datum *kv)
{
	KeyState	ks;
	int64		id;
	int64		occurrences;
	bool		flapping;
	bool		isnull;
	int64		total;
	int			ret;

	if (d->passes <= 0 || d->resolve_after <= 0 || !d->locked)
		return;
	ret = SPI_execute_snapshot(plans.find_open, kv, NULL, GetLatestSnapshot(),
							   InvalidSnapshot, false, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "gate_bridge statement failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return;					/* resolved meanwhile */
	id = first_int8(&isnull);
	occurrences = int8_col(2, 0);
	flapping = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 3, &isnull));

	lock_key(d->k, kv, GetCurrentTimestamp(), &ks);
	total = d->passes;
	if (!ks.is_new && ks.recovery_occurrences == occurrences)
		total += ks.recovery_passes;

	if (total >= d->resolve_after && !flapping)
	{
		char	   *note = psprintf("recovered: " INT64_FORMAT " passing rows in a row", total);
		JsonbParseState *st = NULL;
		JsonbValue *res;

		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		gb_jb_text(&st, "reason", "recovered");
		gb_jb_int8(&st, "passes", total);
		gb_jb_int8(&st, "resolve_after", d->resolve_after);
		if (d->last_pass_eval_id != 0)
			gb_jb_int8(&st, "last_eval_id", d->last_pass_eval_id);
		res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);
		if (gb_auto_resolve(id, note, JsonbValueToJsonb(res), false, DT_NOBEGIN))
			total = 0;			/* counted again for the key's next incident */
	}
	{
		Datum		store[5] = {kv[0], kv[1], kv[2], Int64GetDatum(total),
		Int64GetDatum(occurrences)};
		char		store_nulls[5] = {' ', ' ', ' ', ' ', total == 0 ? 'n' : ' '};

		gb_spi_run(plans.recovery_store, store, store_nulls, SPI_OK_UPDATE);
	}
}

/*
 * The decision for a key: fold (escalating), reopen, rate limit, hold back
 * or create; then count its passing rows.  Returns the id of the incident
 * created, or 0.  summary is NULL for a single violation from a SQL
 * function, whose creation is logged at once.
 */
static int64
decide(const Decision *d, bool defer, GBDecideSummary *summary)
{
	const GBKey *k = d->k;
	GBPrivileged priv;
	Datum		kv[3];
	int64		id = 0;
	int64		folded = 0;
	int			rank = 3;
	TimestampTz now;
	TimestampTz window_start;
	TimestampTz held_until;
	KeyState	ks;
	LastIncident last;
	int32		chain;
	Datum		values[5];
	int64		recent;
	bool		isnull;

	/*
	 * The commonest decision of all, a repeat folded under the key's lock,
	 * needs neither SPI nor a change of user (folds.c), unless it escalates
	 * or brings passing rows.
	 */
	if (!defer && d->locked && d->count > 0)
	{
		(void) gb_schema_ready(true);
		folded = gb_fold_append(k->kind, k->agent, k->subject, d->count,
								d->last_at, &rank);
		if (folded != 0)
		{
			fold_debug(k, folded, d->count);
			if (d->worst_rank >= rank && d->passes == 0)
				return 0;
		}
	}

	kv[0] = CStringGetTextDatum(k->kind);
	kv[1] = CStringGetTextDatum(k->agent);
	kv[2] = CStringGetTextDatum(k->subject);

	gb_spi_begin(&priv);
	prepare_plans();

	if (d->count == 0)
		goto after;				/* passing rows only */
	if (folded != 0)
	{
		maybe_escalate(d, kv, folded, rank);
		goto after;
	}

	/* the common repeat: fold into the unresolved incident (tried above when locked) */
	if (!(!defer && d->locked) && try_fold(d, kv, defer, &folded, &rank))
	{
		maybe_escalate(d, kv, folded, rank);
		goto after;
	}

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
	lock_key(k, kv, now, &ks);
	if (ks.is_new)
	{
		id = create_incident(d, kv, now, &ks, 1, DT_NOBEGIN);
		goto created;
	}

	if (try_fold(d, kv, defer, &folded, &rank))
	{
		maybe_escalate(d, kv, folded, rank);
		goto after;
	}

	/* the clock again: locking the key's row may have waited */
	now = GetCurrentTimestamp();
	last_incident(kv, &last);

	/* a quick re-fire reopens the incident resolved a moment ago */
	if (gb_reopen_window > 0 && last.id != 0 && last.resolved &&
		last.resolved_at != DT_NOBEGIN &&
		now - last.resolved_at < (TimestampTz) gb_reopen_window * USECS_PER_SEC &&
		reopen(d, kv, &last, now, &ks))
		goto after;

	window_start = now - (TimestampTz) gb_rate_window * USECS_PER_SEC;
	values[0] = kv[0];
	values[1] = kv[1];
	values[2] = kv[2];
	values[3] = TimestampTzGetDatum(window_start);
	gb_spi_run(plans.window_count, values, NULL, SPI_OK_SELECT);
	recent = first_int8(&isnull);
	held_until = backoff_until(&ks, &last, now, &chain);
	if (recent >= gb_rate_limit || (held_until != DT_NOBEGIN && now < held_until))
	{
		bool		first_in_window = (ks.last_rate_limited_at <= window_start);

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
		if (recent >= gb_rate_limit)
			ereport(first_in_window ? LOG : DEBUG1,
					(errmsg("Rate limited %s incident: %s", k->kind, k->key),
					 errdetail(INT64_FORMAT " incidents were created for this key in the last %d s; gate_bridge.rate_limit is %d.",
							   recent, gb_rate_window, gb_rate_limit),
					 errhidestmt(true)));
		else
			ereport(first_in_window ? LOG : DEBUG1,
					(errmsg("Held back %s incident: %s", k->kind, k->key),
					 errdetail("The key keeps re-firing: gate_bridge.refire_backoff allows its next incident at %s.",
							   timestamptz_to_str(held_until)),
					 errhidestmt(true)));
		goto after;
	}

	id = create_incident(d, kv, now, &ks, chain,
						 last.resolved ? last.resolved_at : DT_NOBEGIN);
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
	/* the incident takes the worst of the violations that created it */
	maybe_escalate(d, kv, id, severity_rank_of(d->severity));

after:
	if (!defer)
		recover(d, kv);
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
	d.worst_rank = severity_rank_of(severity);
	d.worst_eval_id = 0;
	d.passes = 0;
	d.resolve_after = 0;
	d.last_pass_eval_id = 0;
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
	d.worst_rank = p->count > 0 ? p->worst_rank : 4;
	d.worst_eval_id = p->worst_eval_id;
	d.passes = p->passes;
	d.resolve_after = p->resolve_after;
	d.last_pass_eval_id = p->last_pass_eval_id;
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
