/*-------------------------------------------------------------------------
 *
 * coalesce.c
 *		Folding repeated violations of one key within one transaction.
 *
 * A batch INSERT, a COPY, or a loader sending thousands of single-row
 * INSERTs in one transaction brings many violations of the same key.
 * Updating the incident row once per violation would leave thousands of row
 * versions that the same transaction must walk past on every following
 * update (they cannot be pruned before commit): quadratic time.  Instead,
 * once a decision for a key has been taken in the transaction, further
 * violations of that key are counted here and written with one UPDATE just
 * before commit (or before ack/resolve in the same transaction).
 *
 * This is exact: after the first decision this transaction holds the lock
 * that decided it — the incident's row (deduplicated or just created), or
 * the key's row in incident_keys (rate limited) — so no other session can
 * resolve that incident or create one for that key until we commit.  A
 * rate-limited key is folded only until the oldest incident it counted
 * leaves the window.
 *
 * Subtransactions: a count belongs to the (sub)transaction that holds the
 * deciding lock.  Entries are kept per subtransaction; when one commits its
 * entries merge into its parent's, when one aborts they are dropped with
 * the work they stand for.
 *
 * src/coalesce.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/*
 * "subxid:kind:agentlen:agent:subject".  Agent and subject together are
 * shorter than the key text they make (at most GB_KEY_MAX_BYTES); the
 * agent's length keeps two identities from spelling one hash key.
 */
#define GB_HKEY_LEN			(12 + 16 + 12 + GB_KEY_MAX_BYTES + 2)

/*
 * Distinct keys held before the pending counts are written out and the
 * table starts again: about 7 MB at most.  A transaction that cycles
 * through more keys than this (a COPY of many agents, each violating over
 * and over) updates each incident once per repeat after that.
 */
#define GB_COALESCE_MAX_KEYS 10000

typedef struct FoldedKey
{
	char		hkey[GB_HKEY_LEN];	/* hash key */
	char		kind[16];
	char		agent_subject[GB_KEY_MAX_BYTES + 2];	/* agent NUL subject */
	char		key[GB_KEY_MAX_BYTES + 1];	/* the key's text, for messages */
	SubTransactionId subxid;	/* (sub)transaction that holds the lock */
	bool		rate_limited;	/* the current decision: rate limited, or */
	int64		incident_id;	/* folded into this incident (0: none) */
	TimestampTz valid_until;	/* rate limited: until a slot frees up */
	int64		pending_dedup;	/* occurrences not yet written */
	int64		pending_rl;		/* rate-limited violations not yet written */
	TimestampTz last_seen;
} FoldedKey;

static HTAB *folded = NULL;
static SPIPlanPtr flush_dedup_plan = NULL;
static SPIPlanPtr flush_rl_plan = NULL;

static void
make_hkey(char *hkey, SubTransactionId subxid, const char *kind,
		  const char *agent, const char *subject)
{
	snprintf(hkey, GB_HKEY_LEN, "%u:%s:%zu:%s:%s",
			 subxid, kind, strlen(agent), agent, subject);
}

static const char *
folded_agent(const FoldedKey *f)
{
	return f->agent_subject;
}

static const char *
folded_subject(const FoldedKey *f)
{
	return f->agent_subject + strlen(f->agent_subject) + 1;
}

/* the table lives in TopTransactionContext and goes with it */
static void
forget_all(void)
{
	folded = NULL;
}

static void
ensure_table(void)
{
	HASHCTL		ctl;

	if (folded != NULL)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GB_HKEY_LEN;
	ctl.entrysize = sizeof(FoldedKey);
	ctl.hcxt = TopTransactionContext;
	folded = hash_create("gate_bridge folded violations", 16, &ctl,
#if PG_VERSION_NUM >= 140000
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
#else
						 HASH_ELEM | HASH_CONTEXT);
#endif
}

void
gb_coalesce_xact(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (folded != NULL)
				gb_coalesce_flush();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			forget_all();
			break;
		default:
			break;
	}
}

void
gb_coalesce_subxact(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid)
{
	HASH_SEQ_STATUS seq;
	FoldedKey  *f;
	List	   *moved = NIL;
	ListCell   *lc;

	if (folded == NULL ||
		(event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;

	/* take the subtransaction's entries out (removal is safe during a scan) */
	hash_seq_init(&seq, folded);
	while ((f = (FoldedKey *) hash_seq_search(&seq)) != NULL)
	{
		if (f->subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			FoldedKey  *copy = MemoryContextAlloc(TopTransactionContext,
												  sizeof(FoldedKey));

			memcpy(copy, f, sizeof(FoldedKey));
			moved = lappend(moved, copy);
		}
		(void) hash_search(folded, f->hkey, HASH_REMOVE, NULL);
	}

	/* a committed subtransaction's locks and counts pass to its parent */
	foreach(lc, moved)
	{
		FoldedKey  *from = (FoldedKey *) lfirst(lc);
		char		hkey[GB_HKEY_LEN];
		bool		found;

		make_hkey(hkey, parentSubid, from->kind, folded_agent(from),
				  folded_subject(from));
		f = (FoldedKey *) hash_search(folded, hkey, HASH_ENTER, &found);
		if (!found)
		{
			memcpy(f, from, sizeof(FoldedKey));
			memcpy(f->hkey, hkey, GB_HKEY_LEN);
			f->subxid = parentSubid;
			continue;
		}

		/*
		 * Both decided for this key.  The child's decision is the newer one
		 * (e.g. the parent was rate limited, then a slot freed up and the
		 * child created an incident); the counts of both are kept.  Both
		 * folding into different incidents cannot happen: while this
		 * transaction holds an incident's lock, only ack/resolve in this
		 * same transaction could end it, and those write all counts first.
		 */
		if (from->incident_id != 0 && f->incident_id != 0 &&
			from->incident_id != f->incident_id && f->pending_dedup > 0)
			elog(ERROR, "gate_bridge: conflicting folded decisions for key \"%s\"",
				 from->key);
		f->pending_dedup += from->pending_dedup;
		f->pending_rl += from->pending_rl;
		f->last_seen = Max(f->last_seen, from->last_seen);
		f->rate_limited = from->rate_limited;
		f->valid_until = from->valid_until;
		if (from->incident_id != 0)
			f->incident_id = from->incident_id;
	}
	list_free_deep(moved);
}

/*
 * Fold a violation of key k into this (sub)transaction's earlier decision,
 * if there is one that still holds.  Returns true when nothing else needs
 * to be done.
 */
bool
gb_coalesce_try(const GBKey *k)
{
	char		hkey[GB_HKEY_LEN];
	FoldedKey  *f;
	TimestampTz now;

	if (folded == NULL)
		return false;
	make_hkey(hkey, GetCurrentSubTransactionId(), k->kind, k->agent, k->subject);
	f = (FoldedKey *) hash_search(folded, hkey, HASH_FIND, NULL);
	if (f == NULL)
		return false;

	now = GetCurrentTimestamp();
	if (f->rate_limited && now >= f->valid_until)
		return false;			/* a slot may have freed up: decide again */

	if (f->rate_limited)
		f->pending_rl++;
	else
		f->pending_dedup++;
	f->last_seen = Max(f->last_seen, now);
	ereport(DEBUG1,
			(errmsg(f->rate_limited ? "Rate limited %s incident: %s"
					: "Skipping duplicate %s incident: %s", k->kind, k->key),
			 errhidestmt(true)));
	return true;
}

static void
remember(const GBKey *k, bool rate_limited, int64 incident_id,
		 TimestampTz valid_until)
{
	char		hkey[GB_HKEY_LEN];
	FoldedKey  *f;
	bool		found;
	SubTransactionId subxid = GetCurrentSubTransactionId();

	/* many keys: write the counts out and start again */
	if (folded != NULL && hash_get_num_entries(folded) >= GB_COALESCE_MAX_KEYS)
		gb_coalesce_flush();
	ensure_table();

	make_hkey(hkey, subxid, k->kind, k->agent, k->subject);
	f = (FoldedKey *) hash_search(folded, hkey, HASH_ENTER, &found);
	if (!found)
	{
		size_t		alen = strlen(k->agent);

		/* the key text is longer than agent and subject together */
		Assert(alen + strlen(k->subject) + 2 <= sizeof(f->agent_subject));
		strlcpy(f->kind, k->kind, sizeof(f->kind));
		memcpy(f->agent_subject, k->agent, alen + 1);
		strlcpy(f->agent_subject + alen + 1, k->subject,
				sizeof(f->agent_subject) - alen - 1);
		strlcpy(f->key, k->key, sizeof(f->key));
		f->subxid = subxid;
		f->incident_id = 0;
		f->pending_dedup = 0;
		f->pending_rl = 0;
		f->last_seen = 0;
	}
	else if (!rate_limited && f->incident_id != 0 &&
			 f->incident_id != incident_id && f->pending_dedup > 0)
	{
		/* cannot happen (see subxact_callback); never misattribute counts */
		elog(ERROR, "gate_bridge: conflicting folded decisions for key \"%s\"", k->key);
	}
	/* the new decision; counts pending for the earlier one are kept */
	f->rate_limited = rate_limited;
	f->valid_until = valid_until;
	if (!rate_limited)
		f->incident_id = incident_id;
}

/* This transaction's decision for key k: folded into incident_id. */
void
gb_coalesce_remember_dedup(const GBKey *k, int64 incident_id)
{
	remember(k, false, incident_id, 0);
}

/* This transaction's decision for key k: rate limited until valid_until. */
void
gb_coalesce_remember_rate_limited(const GBKey *k, TimestampTz valid_until)
{
	remember(k, true, 0, valid_until);
}

static void
prepare_flush_plans(void)
{
	Oid			td[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};
	Oid			tr[5] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID};

	if (flush_rl_plan != NULL)
		return;
	flush_dedup_plan = gb_keep_plan(
		"UPDATE gate_bridge.incidents"
		"   SET occurrences = LEAST(occurrences::int8 + $2, 2147483647)::int4,"
		"       last_seen_at = GREATEST(last_seen_at, $3)"
		" WHERE id = $1", 3, td);
	flush_rl_plan = gb_keep_plan(
		"UPDATE gate_bridge.incident_keys"
		"   SET rate_limited = rate_limited + $4,"
		"       last_rate_limited_at = GREATEST(last_rate_limited_at, $5)"
		" WHERE kind = $1 AND agent = $2 AND subject = $3", 5, tr);
}

/* Write every pending count, and forget the decisions. */
void
gb_coalesce_flush(void)
{
	HASH_SEQ_STATUS seq;
	FoldedKey  *f;
	GBPrivileged priv;
	bool		connected = false;
	HTAB	   *table = folded;

	if (table == NULL)
		return;
	/* forget first: an error below must not leave counts to write twice */
	forget_all();

	hash_seq_init(&seq, table);
	while ((f = (FoldedKey *) hash_seq_search(&seq)) != NULL)
	{
		Datum		values[5];

		if (f->pending_dedup == 0 && f->pending_rl == 0)
			continue;
		if (!connected)
		{
			gb_spi_begin(&priv);
			prepare_flush_plans();
			connected = true;
		}
		if (f->pending_rl > 0)
		{
			values[0] = CStringGetTextDatum(f->kind);
			values[1] = CStringGetTextDatum(folded_agent(f));
			values[2] = CStringGetTextDatum(folded_subject(f));
			values[3] = Int64GetDatum(f->pending_rl);
			values[4] = TimestampTzGetDatum(f->last_seen);
			gb_spi_run(flush_rl_plan, values, NULL, SPI_OK_UPDATE);
		}
		if (f->pending_dedup > 0)
		{
			values[0] = Int64GetDatum(f->incident_id);
			values[1] = Int64GetDatum(f->pending_dedup);
			values[2] = TimestampTzGetDatum(f->last_seen);
			gb_spi_run(flush_dedup_plan, values, NULL, SPI_OK_UPDATE);
		}
	}
	if (connected)
		gb_spi_end(&priv);
	hash_destroy(table);
}
