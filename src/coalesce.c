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
 * Subtransactions.  A decision and the counts folded into it belong to the
 * (sub)transaction that holds the deciding lock, the entry's owner.  Entries
 * are kept per owner, and a repeat folds only into an entry of the current
 * subtransaction.  When a subtransaction commits, its locks pass to its
 * parent and so do its entries; when it aborts, its locks are released and
 * its entries are dropped with the violations they counted.  An ancestor's
 * lock outlives a subtransaction's abort, and so does the ancestor's entry.
 *
 * A count written by a flush belongs to the (sub)transaction that wrote
 * it, which need not be the owner: ack() or resolve() in a savepoint or in
 * a PL/pgSQL exception block writes every pending count first, its
 * ancestors' too, and a subtransaction that needs room in a full table
 * writes out its ancestors' counts.  Such counts are kept as written by that
 * subtransaction: on the owner's entry (ack, resolve) or in a small record
 * of their own once the entry has left the table (making room).  If the
 * writer aborts, its UPDATEs are undone and the counts are pending again,
 * to be written by the next flush (at the latest the owner's commit); if it
 * commits, they pass to its parent, and are final once they reach the
 * owner.  So every folded violation is written by exactly one UPDATE that
 * commits if and only if the violation does.
 *
 * Memory.  The table holds at most GB_COALESCE_MAX_KEYS entries, and the
 * records at most GB_COALESCE_HANDED_BYTES.  When the table is full, the
 * current subtransaction writes out and forgets its own entries, forgets
 * the decisions that have nothing to write, and hands its ancestors'
 * counts over to records while their budget lasts; at the top level
 * everything is its own and the table starts again.  Should at least half
 * of the table be left (savepoints nested deep, each with thousands of
 * keys), that subtransaction and those below it fold no new keys until
 * something is freed: each repeat is then decided in full, which is exact
 * too.
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
 * table starts again: about 9 MB at most.  A transaction that cycles
 * through more keys than this (a COPY of many agents, each violating over
 * and over) updates each incident once per repeat after that.
 */
#define GB_COALESCE_MAX_KEYS 10000

/*
 * Counts handed over from the table (see above), in records of 48 bytes
 * (plus the key's names for rate-limited counts): 1 MB is two full tables
 * of keys.
 */
#define GB_COALESCE_HANDED_BYTES (1024 * 1024)

typedef enum FoldDecision
{
	FOLD_NONE = 0,				/* none: only counts are left to write */
	FOLD_DEDUP,					/* repeats fold into incident_id */
	FOLD_RATE_LIMITED			/* repeats are rate limited until valid_until */
} FoldDecision;

typedef struct FoldedKey
{
	char		hkey[GB_HKEY_LEN];	/* hash key */
	char		kind[16];
	char		agent_subject[GB_KEY_MAX_BYTES + 2];	/* agent NUL subject */
	char		key[GB_KEY_MAX_BYTES + 1];	/* the key's text, for messages */
	SubTransactionId subxid;	/* the owner: holds the lock, and the
								 * violations counted here are its own */
	FoldDecision decision;		/* what a repeat folds into */
	int64		incident_id;	/* of the dedup decision and the dedup counts */
	TimestampTz valid_until;	/* rate limited: until a slot frees up */
	int64		pending_dedup;	/* occurrences not yet written */
	int64		pending_rl;		/* rate-limited violations not yet written */
	TimestampTz last_seen;

	/*
	 * Counts written by a subtransaction below the owner, which stand or
	 * fall with it.  Never set together with pending counts: those grow
	 * while the owner is the current subtransaction, when nothing below it
	 * is alive, or when its one live child commits into it, whose writes are
	 * settled first.
	 */
	SubTransactionId written_by;	/* InvalidSubTransactionId: none */
	int64		written_dedup;
	int64		written_rl;
} FoldedKey;

/*
 * Counts of an owner that are no longer in its entry: written by a
 * subtransaction below it (which stand or fall with that one), or, after
 * that one aborted, owed: to be written by the next flush.
 */
typedef struct HandedCounts
{
	SubTransactionId owner;
	SubTransactionId written_by;	/* InvalidSubTransactionId: owed */
	int64		incident_id;
	int64		dedup;
	int64		rl;
	TimestampTz last_seen;
	char	   *rl_key;			/* with rl: kind, agent, subject, each
								 * NUL-terminated */
} HandedCounts;

/* One UPDATE or two of a flush, copied out of the table and records. */
typedef struct FoldWrite
{
	int64		incident_id;
	int64		dedup;
	int64		rl;
	TimestampTz last_seen;
	char	   *kind;			/* kind, agent, subject: only with rl */
	char	   *agent;
	char	   *subject;
} FoldWrite;

static HTAB *folded = NULL;
static SPIPlanPtr flush_dedup_plan = NULL;
static SPIPlanPtr flush_rl_plan = NULL;

/* in TopTransactionContext, like the table */
static HandedCounts *handed = NULL;
static int	nhanded = 0;
static int	maxhanded = 0;
static Size handed_bytes = 0;

/*
 * The newest subtransaction that owns an entry or a record, or has written
 * counts for one.  Subtransaction ids only grow, so the end of any newer
 * one (a PL/pgSQL exception block per row, say) has nothing to look at.
 */
static SubTransactionId newest_subxid = InvalidSubTransactionId;

/*
 * "freed" counts the times an entry or a record went, or written counts
 * became final.  A subtransaction that could not empty a full table of its
 * ancestors' counts records its nesting level and that count: until the
 * count moves, the table cannot be emptier for it or anything below it,
 * and is not scanned again for every new key.
 */
static uint64 freed = 0;
static int	full_nestlevel = 0;
static uint64 full_freed = 0;

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
	handed = NULL;
	nhanded = 0;
	maxhanded = 0;
	handed_bytes = 0;
	newest_subxid = InvalidSubTransactionId;
	full_nestlevel = 0;
}

/* f must not be used afterwards (removal is safe during a scan) */
static void
drop_entry(FoldedKey *f)
{
	(void) hash_search(folded, f->hkey, HASH_REMOVE, NULL);
	freed++;
}

static bool
has_pending(const FoldedKey *f)
{
	return f->pending_dedup > 0 || f->pending_rl > 0;
}

static bool
has_written(const FoldedKey *f)
{
	return f->written_by != InvalidSubTransactionId;
}

/*
 * Take f's counts (pending ones, or ones written by a subtransaction below
 * its owner) into a record written by written_by; false when the records'
 * budget has no room.  f is left to the caller to drop.
 */
static bool
hand_over(const FoldedKey *f, SubTransactionId written_by)
{
	bool		pending = has_pending(f);
	int64		rl = pending ? f->pending_rl : f->written_rl;
	size_t		klen = strlen(f->kind) + 1;
	size_t		aslen = 0;
	Size		cost = sizeof(HandedCounts);
	HandedCounts *h;

	if (rl > 0)
	{
		aslen = strlen(folded_agent(f)) + 1;
		aslen += strlen(folded_subject(f)) + 1;
		cost += klen + aslen;
	}
	if (handed_bytes + cost > GB_COALESCE_HANDED_BYTES)
		return false;
	if (nhanded == maxhanded)
	{
		maxhanded = Max(maxhanded * 2, 256);
		if (handed == NULL)
			handed = MemoryContextAlloc(TopTransactionContext,
										sizeof(HandedCounts) * maxhanded);
		else
			handed = repalloc(handed, sizeof(HandedCounts) * maxhanded);
	}
	h = &handed[nhanded++];
	handed_bytes += cost;
	h->owner = f->subxid;
	h->written_by = written_by;
	h->incident_id = f->incident_id;
	h->dedup = pending ? f->pending_dedup : f->written_dedup;
	h->rl = rl;
	h->last_seen = f->last_seen;
	h->rl_key = NULL;
	if (rl > 0)
	{
		h->rl_key = MemoryContextAlloc(TopTransactionContext, klen + aslen);
		memcpy(h->rl_key, f->kind, klen);
		memcpy(h->rl_key + klen, f->agent_subject, aslen);
	}
	newest_subxid = Max(newest_subxid, written_by);
	return true;
}

/* Remove record i (the last one takes its place). */
static void
drop_handed(int i)
{
	HandedCounts *h = &handed[i];
	Size		cost = sizeof(HandedCounts);

	if (h->rl_key != NULL)
	{
		char	   *agent = h->rl_key + strlen(h->rl_key) + 1;
		char	   *subject = agent + strlen(agent) + 1;

		cost += (subject + strlen(subject) + 1) - h->rl_key;
		pfree(h->rl_key);
	}
	handed_bytes -= cost;
	handed[i] = handed[--nhanded];
	freed++;
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
			if (folded != NULL || nhanded > 0)
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
	bool		commit = (event == SUBXACT_EVENT_COMMIT_SUB);
	SubTransactionId newest = InvalidSubTransactionId;
	int			i;

	if ((folded == NULL && nhanded == 0) ||
		(event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;
	if (mySubid > newest_subxid)
		return;					/* nothing here is its own */

	/*
	 * Records: its own go with it or to its parent (nothing below it is
	 * alive, so none is written by anyone); those it wrote are owed again,
	 * or pass to its parent, or are done once that is their owner.
	 */
	for (i = nhanded - 1; i >= 0; i--)
	{
		HandedCounts *h = &handed[i];

		if (h->owner == mySubid)
		{
			if (!commit)
			{
				drop_handed(i);
				continue;
			}
			h->owner = parentSubid;
		}
		else if (h->written_by == mySubid)
		{
			if (!commit)
				h->written_by = InvalidSubTransactionId;
			else if (parentSubid == h->owner)
			{
				drop_handed(i);
				continue;
			}
			else
				h->written_by = parentSubid;
		}
		newest = Max(newest, Max(h->owner, h->written_by));
	}

	if (folded == NULL)
	{
		newest_subxid = newest;
		return;
	}
	hash_seq_init(&seq, folded);
	while ((f = (FoldedKey *) hash_seq_search(&seq)) != NULL)
	{
		if (f->subxid == mySubid)
		{
			/* its entries pass to the parent with its locks, or go with them */
			if (commit)
			{
				FoldedKey  *copy = MemoryContextAlloc(TopTransactionContext,
													  sizeof(FoldedKey));

				memcpy(copy, f, sizeof(FoldedKey));
				moved = lappend(moved, copy);
			}
			drop_entry(f);
			continue;
		}
		if (f->written_by == mySubid)
		{
			if (!commit)
			{
				/* its UPDATEs are undone: the counts are pending again */
				f->pending_dedup += f->written_dedup;
				f->pending_rl += f->written_rl;
				f->written_dedup = 0;
				f->written_rl = 0;
				f->written_by = InvalidSubTransactionId;
			}
			else if (parentSubid != f->subxid)
				f->written_by = parentSubid;	/* now the parent's UPDATEs */
			else
			{
				/* the owner's own UPDATEs now: done */
				f->written_dedup = 0;
				f->written_rl = 0;
				f->written_by = InvalidSubTransactionId;
				freed++;
				if (f->decision == FOLD_NONE && !has_pending(f))
				{
					drop_entry(f);
					continue;
				}
			}
		}
		newest = Max(newest, Max(f->subxid, f->written_by));
	}

	/*
	 * A committed subtransaction's locks and counts pass to its parent.  The
	 * parent's counts written by this one were settled above, so that only
	 * the child's pending counts and the parent's are merged here.
	 */
	foreach(lc, moved)
	{
		FoldedKey  *from = (FoldedKey *) lfirst(lc);
		char		hkey[GB_HKEY_LEN];
		bool		found;

		make_hkey(hkey, parentSubid, from->kind, folded_agent(from),
				  folded_subject(from));
		f = (FoldedKey *) hash_search(folded, hkey, HASH_ENTER, &found);
		newest = Max(newest, parentSubid);
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
		 * child created an incident); the counts of both are kept.  Counts
		 * for two different incidents cannot meet here: while this
		 * transaction holds an incident's lock, only ack/resolve in this
		 * same transaction could end it, and those write all counts first.
		 */
		if (f->pending_dedup > 0 && from->incident_id != f->incident_id &&
			(from->pending_dedup > 0 || from->decision == FOLD_DEDUP))
			elog(ERROR, "gate_bridge: conflicting folded decisions for key \"%s\"",
				 from->key);
		f->pending_dedup += from->pending_dedup;
		f->pending_rl += from->pending_rl;
		f->last_seen = Max(f->last_seen, from->last_seen);
		if (from->pending_dedup > 0 || from->decision == FOLD_DEDUP)
			f->incident_id = from->incident_id;
		f->decision = from->decision;
		f->valid_until = from->valid_until;
		freed++;
	}
	list_free_deep(moved);
	newest_subxid = newest;
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
	bool		rate_limited;

	if (folded == NULL)
		return false;
	make_hkey(hkey, GetCurrentSubTransactionId(), k->kind, k->agent, k->subject);
	f = (FoldedKey *) hash_search(folded, hkey, HASH_FIND, NULL);
	if (f == NULL || f->decision == FOLD_NONE)
		return false;

	now = GetCurrentTimestamp();
	rate_limited = (f->decision == FOLD_RATE_LIMITED);
	if (rate_limited && now >= f->valid_until)
		return false;			/* a slot may have freed up: decide again */

	if (rate_limited)
		f->pending_rl++;
	else
		f->pending_dedup++;
	f->last_seen = Max(f->last_seen, now);
	ereport(DEBUG1,
			(errmsg(rate_limited ? "Rate limited %s incident: %s"
					: "Skipping duplicate %s incident: %s", k->kind, k->key),
			 errhidestmt(true)));
	return true;
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

static void
add_write(FoldWrite *w, int64 incident_id, int64 dedup, int64 rl,
		  TimestampTz last_seen, const char *kind, const char *agent,
		  const char *subject)
{
	w->incident_id = incident_id;
	w->dedup = dedup;
	w->rl = rl;
	w->last_seen = last_seen;
	w->kind = w->agent = w->subject = NULL;
	if (rl > 0)
	{
		w->kind = pstrdup(kind);
		w->agent = pstrdup(agent);
		w->subject = pstrdup(subject);
	}
}

static void
add_entry_write(FoldWrite *w, const FoldedKey *f)
{
	add_write(w, f->incident_id, f->pending_dedup, f->pending_rl, f->last_seen,
			  f->kind, folded_agent(f), folded_subject(f));
}

static void
add_handed_write(FoldWrite *w, const HandedCounts *h)
{
	const char *agent = NULL;
	const char *subject = NULL;

	if (h->rl_key != NULL)
	{
		agent = h->rl_key + strlen(h->rl_key) + 1;
		subject = agent + strlen(agent) + 1;
	}
	add_write(w, h->incident_id, h->dedup, h->rl, h->last_seen,
			  h->rl_key, agent, subject);
}

/*
 * Write pending counts, as the current (sub)transaction.  Its own entries
 * are written and forgotten, and so are its own owed records; owed records
 * of its ancestors are written and become written by it.  Its ancestors'
 * entries:
 *	- with "all" (ack, resolve, commit), their pending counts are written and
 *	  kept on the entry as written by it, and no decision is kept (a resolve
 *	  ends them);
 *	- without (making room), their counts leave the table for records while
 *	  the budget lasts, pending ones written by it, and what does not fit
 *	  stays as it is.
 * Either way a decision with nothing to write is forgotten: deciding again
 * is always exact.
 *
 * The table and records are brought up to date before any UPDATE runs, so
 * that what those UPDATEs may cause (user triggers, reaching this file
 * again) finds them consistent; and should one fail, the (sub)transaction
 * that ran it aborts, which undoes them all and takes back exactly what was
 * recorded here (gb_coalesce_subxact).
 */
static void
write_out(bool all)
{
	SubTransactionId me = GetCurrentSubTransactionId();
	HASH_SEQ_STATUS seq;
	FoldedKey  *f;
	MemoryContext cxt;
	MemoryContext old;
	FoldWrite  *writes;
	int			nwrites = 0;
	int			i;
	GBPrivileged priv;

	if (folded == NULL && nhanded == 0)
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "gate_bridge flush",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	writes = palloc(sizeof(FoldWrite) *
					((folded ? hash_get_num_entries(folded) : 0) + nhanded + 1));

	for (i = nhanded - 1; i >= 0; i--)
	{
		HandedCounts *h = &handed[i];

		if (h->written_by != InvalidSubTransactionId)
			continue;
		add_handed_write(&writes[nwrites++], h);
		if (h->owner == me)
			drop_handed(i);
		else
		{
			h->written_by = me;
			newest_subxid = Max(newest_subxid, me);
		}
	}

	if (folded != NULL)
	{
		hash_seq_init(&seq, folded);
		while ((f = (FoldedKey *) hash_seq_search(&seq)) != NULL)
		{
			if (f->subxid == me)
			{
				if (has_pending(f))
					add_entry_write(&writes[nwrites++], f);
				drop_entry(f);
			}
			else if (!has_pending(f) && !has_written(f))
				drop_entry(f);
			else if (!all)
			{
				if (!hand_over(f, has_pending(f) ? me : f->written_by))
					continue;	/* no room for it: it stays */
				if (has_pending(f))
					add_entry_write(&writes[nwrites++], f);
				drop_entry(f);
			}
			else
			{
				if (has_pending(f))
				{
					if (has_written(f))
						elog(ERROR, "gate_bridge: folded counts of key \"%s\" are written twice",
							 f->key);
					add_entry_write(&writes[nwrites++], f);
					f->written_by = me;
					f->written_dedup = f->pending_dedup;
					f->written_rl = f->pending_rl;
					f->pending_dedup = 0;
					f->pending_rl = 0;
					newest_subxid = Max(newest_subxid, me);
				}
				f->decision = FOLD_NONE;
			}
		}
	}
	MemoryContextSwitchTo(old);

	if (nwrites > 0)
	{
		gb_spi_begin(&priv);
		prepare_flush_plans();
		for (i = 0; i < nwrites; i++)
		{
			FoldWrite  *w = &writes[i];
			Datum		values[5];

			if (w->rl > 0)
			{
				values[0] = CStringGetTextDatum(w->kind);
				values[1] = CStringGetTextDatum(w->agent);
				values[2] = CStringGetTextDatum(w->subject);
				values[3] = Int64GetDatum(w->rl);
				values[4] = TimestampTzGetDatum(w->last_seen);
				gb_spi_run(flush_rl_plan, values, NULL, SPI_OK_UPDATE);
			}
			if (w->dedup > 0)
			{
				values[0] = Int64GetDatum(w->incident_id);
				values[1] = Int64GetDatum(w->dedup);
				values[2] = TimestampTzGetDatum(w->last_seen);
				gb_spi_run(flush_dedup_plan, values, NULL, SPI_OK_UPDATE);
			}
		}
		gb_spi_end(&priv);
	}
	MemoryContextDelete(cxt);
}

/*
 * The table is full and a new key was decided: write out what this
 * subtransaction may write (see the file header).  Returns false when there
 * is still no room, and the key is then not folded.
 */
static bool
make_room(void)
{
	int			level = GetCurrentTransactionNestLevel();

	if (full_nestlevel > 0 && level >= full_nestlevel && full_freed == freed)
		return false;
	write_out(false);
	if (hash_get_num_entries(folded) >= GB_COALESCE_MAX_KEYS / 2)
	{
		full_nestlevel = level;
		full_freed = freed;
	}
	return hash_get_num_entries(folded) < GB_COALESCE_MAX_KEYS;
}

static void
remember(const GBKey *k, FoldDecision decision, int64 incident_id,
		 TimestampTz valid_until)
{
	char		hkey[GB_HKEY_LEN];
	FoldedKey  *f = NULL;
	bool		found;
	SubTransactionId subxid = GetCurrentSubTransactionId();

	make_hkey(hkey, subxid, k->kind, k->agent, k->subject);
	if (folded != NULL)
		f = (FoldedKey *) hash_search(folded, hkey, HASH_FIND, NULL);
	if (f == NULL)
	{
		if (folded != NULL && hash_get_num_entries(folded) >= GB_COALESCE_MAX_KEYS &&
			!make_room())
			return;
		ensure_table();
		/* found: what making room ran decided this key meanwhile */
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
			f->written_by = InvalidSubTransactionId;
			f->written_dedup = 0;
			f->written_rl = 0;
			newest_subxid = Max(newest_subxid, subxid);
		}
	}
	if (decision == FOLD_DEDUP && f->pending_dedup > 0 &&
		f->incident_id != incident_id)
	{
		/* cannot happen (see gb_coalesce_subxact); never misattribute counts */
		elog(ERROR, "gate_bridge: conflicting folded decisions for key \"%s\"", k->key);
	}
	/* the new decision; counts pending for the earlier one are kept */
	f->decision = decision;
	f->valid_until = valid_until;
	if (decision == FOLD_DEDUP)
		f->incident_id = incident_id;
}

/* This transaction's decision for key k: folded into incident_id. */
void
gb_coalesce_remember_dedup(const GBKey *k, int64 incident_id)
{
	remember(k, FOLD_DEDUP, incident_id, 0);
}

/* This transaction's decision for key k: rate limited until valid_until. */
void
gb_coalesce_remember_rate_limited(const GBKey *k, TimestampTz valid_until)
{
	remember(k, FOLD_RATE_LIMITED, 0, valid_until);
}

/*
 * Write every pending count, this (sub)transaction's ancestors' included,
 * and forget the decisions: before ack/resolve and at commit.
 */
void
gb_coalesce_flush(void)
{
	write_out(true);
}
