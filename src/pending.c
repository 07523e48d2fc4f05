/*-------------------------------------------------------------------------
 *
 * pending.c
 *		Violations decided when their transaction commits, in key order.
 *
 * The trigger on eval_results does not decide a violation when the row is
 * inserted: it records it here, per key, and the decisions are taken just
 * before commit (XACT_EVENT_PRE_COMMIT), one per key with the number of
 * violations the transaction brought for it.  So that
 *
 *	- a transaction takes gate_bridge's locks only while it commits: a writer
 *	  idle in its transaction holds nothing that another writer, ack() or
 *	  resolve() could wait for;
 *	- the keys are decided in one global order (kind, agent, subject,
 *	  bytewise), whatever the order of rows, statements and transactions, so
 *	  the rows they lock are locked in that order; and the lock manager's
 *	  locks below are never waited for while another is held (lock_keys()):
 *	  gate_bridge's own locks cannot deadlock;
 *	- a batch of violations of one key costs one decision.
 *
 * A violation that one of the SQL functions (on_budget_violation, ...)
 * finds to be a repeat of an unresolved incident is recorded here too; one
 * that would create an incident is decided at once, so that the function
 * can return the incident's id.
 *
 * Each key taken here is locked in the lock manager (a ShareLock on an
 * advisory lock tag of our own, see gb_key_locktag()) from the moment it is
 * decided until the transaction ends, that is for the duration of the
 * commit.  resolve() takes the same tag in ExclusiveLock: a violation
 * folded into an incident cannot commit after that incident's resolution,
 * and the ShareLocks of many committing writers do not conflict with each
 * other, so group commit keeps working under an alert storm.
 *
 * Subtransactions.  An entry belongs to the (sub)transaction that recorded
 * its violations: when that one aborts, the entry goes with its rows; when
 * it commits, the entry passes to its parent (merged with the parent's
 * entry for the same key).  Nothing is written before commit, so nothing
 * written needs undoing.
 *
 * Memory.  An entry is a few hundred bytes: the key, the first violation's
 * severity and figures, the budget it broke, and the eval row's id — the
 * details are built from the eval row when an incident is created.  Once
 * GB_PENDING_MAX_KEYS keys are pending and the transaction is at its top
 * level, they are decided at once, in key order, and forgotten; their
 * locks are then held from that moment until the end of the transaction.
 * Inside a subtransaction the table grows until the transaction is back at
 * its top level (a PL/pgSQL loop with an exception block per row inserts
 * each row in a subtransaction of its own, which commits into the top level
 * before the next row: the bound holds there too).
 *
 * src/pending.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"

/* "subxid:kind:agentlen:agent:subject" */
#define GB_HKEY_LEN			(12 + 16 + 12 + GB_KEY_MAX_BYTES + 2)

/* keys pending before they are decided at once (at the top level) */
#define GB_PENDING_MAX_KEYS 10000

/*
 * The most keys a round locks in the lock manager, whose table is shared
 * and small (max_locks_per_transaction for every connection).  A round of
 * more keys relies on the incidents' row locks alone, taken in key order:
 * exact too, but a resolve() in a transaction that resolves several
 * incidents could then meet them in another order.
 */
#define GB_MAX_KEY_LOCKS	256

typedef struct PendingEntry
{
	char		hkey[GB_HKEY_LEN];	/* hash key */
	GBPending	p;
} PendingEntry;

static MemoryContext pending_cxt = NULL;
static HTAB *pending = NULL;

/* the newest subtransaction that owns an entry */
static SubTransactionId newest_subxid = InvalidSubTransactionId;

static int64 decide_owned_by(SubTransactionId owner);

static void
make_hkey(char *hkey, SubTransactionId subxid, const char *kind,
		  const char *agent, const char *subject)
{
	snprintf(hkey, GB_HKEY_LEN, "%u:%s:%zu:%s:%s",
			 subxid, kind, strlen(agent), agent, subject);
}

static void
forget_all(void)
{
	/* the context is TopTransactionContext's child, and goes with it */
	pending_cxt = NULL;
	pending = NULL;
	newest_subxid = InvalidSubTransactionId;
	gb_contexts_forget();
}

static void
ensure_table(void)
{
	HASHCTL		ctl;

	if (pending != NULL)
		return;
	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopTransactionContext,
											"gate_bridge pending violations",
											ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = GB_HKEY_LEN;
	ctl.entrysize = sizeof(PendingEntry);
	ctl.hcxt = pending_cxt;
	pending = hash_create("gate_bridge pending violations", 64, &ctl,
						  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* The lock tag of a key: ours, in the advisory space of this database. */
void
gb_key_locktag(LOCKTAG *tag, const char *kind, const char *agent,
			   const char *subject)
{
	uint64		h;

	h = hash_bytes_extended((const unsigned char *) kind, strlen(kind), 0);
	h = hash_bytes_extended((const unsigned char *) agent, strlen(agent), h);
	h = hash_bytes_extended((const unsigned char *) subject, strlen(subject), h);
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 GB_KEY_LOCK_SPACE);
}

static void
free_pending(GBPending *p)
{
	if (p->details)
		pfree(p->details);
	if (p->has_budget)
	{
		pfree(p->budget.agent_pattern);
		pfree(p->budget.lookback);
	}
	pfree(p->key);
}

static const char *
pending_agent(const GBPending *p)
{
	return p->agent_subject;
}

static const char *
pending_subject(const GBPending *p)
{
	return p->agent_subject + strlen(p->agent_subject) + 1;
}

/* the severity's rank: 1 for sev1 (the worst) .. 3 for sev3 */
static int
severity_rank(const char *severity)
{
	return (severity[0] == 's' && severity[3] >= '1' && severity[3] <= '3') ?
		severity[3] - '0' : 3;
}

static void
note_worst(GBPending *p, const GBViolation *v, const char *severity)
{
	int			rank = severity_rank(severity);

	if (rank < p->worst_rank)
	{
		p->worst_rank = rank;
		p->worst_eval_id = v->row != NULL ? v->row->eval_id : 0;
	}
}

/* A new entry for the violation v of key k. */
static void
fill_entry(GBPending *p, SubTransactionId subxid, const GBViolation *v,
		   const GBKey *k, const char *severity, TimestampTz now)
{
	MemoryContext old = MemoryContextSwitchTo(pending_cxt);
	size_t		alen = strlen(k->agent);

	memset(p, 0, sizeof(GBPending));
	p->subxid = subxid;
	p->kind = v->kind;
	strlcpy(p->kind_name, k->kind, sizeof(p->kind_name));
	Assert(alen + strlen(k->subject) + 2 <= sizeof(p->agent_subject));
	memcpy(p->agent_subject, k->agent, alen + 1);
	strlcpy(p->agent_subject + alen + 1, k->subject,
			sizeof(p->agent_subject) - alen - 1);
	strlcpy(p->violation_type, v->violation_type, sizeof(p->violation_type));
	strlcpy(p->severity, severity, sizeof(p->severity));
	p->key = pstrdup(k->key);
	p->count = 1;
	p->first_at = p->last_at = now;
	p->role = GetUserId();
	p->worst_rank = severity_rank(severity);
	if (v->row != NULL)
	{
		p->eval_id = v->row->eval_id;
		p->worst_eval_id = v->row->eval_id;
		p->actual = v->row->actual;
		p->threshold = v->row->threshold;
		p->row_severity = v->severity;
		p->has_budget = v->row->budget != NULL;
		if (p->has_budget)
		{
			p->budget = *v->row->budget;
			p->budget.agent_pattern = pstrdup(v->row->budget->agent_pattern);
			p->budget.lookback = pstrdup(v->row->budget->lookback);
		}
		p->from_row = true;
	}
	else
	{
		Jsonb	   *d = v->build_details(v->details_arg);

		p->details = palloc(VARSIZE(d));
		memcpy(p->details, d, VARSIZE(d));
	}
	MemoryContextSwitchTo(old);
	newest_subxid = Max(newest_subxid, subxid);
}

/*
 * Record one violation of key k, to be decided at commit.  "row" describes
 * it when it comes from the trigger; otherwise its details are copied now.
 */
void
gb_pending_add(const GBViolation *v, const GBKey *k, const char *severity)
{
	char		hkey[GB_HKEY_LEN];
	SubTransactionId subxid = GetCurrentSubTransactionId();
	PendingEntry *e;
	GBPending  *p;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();

	ensure_table();
	make_hkey(hkey, subxid, k->kind, k->agent, k->subject);
	e = (PendingEntry *) hash_search(pending, hkey, HASH_ENTER, &found);
	p = &e->p;
	if (found && p->count > 0)
	{
		p->count++;
		p->last_at = Max(p->last_at, now);
		p->passes = 0;
		note_worst(p, v, severity);
		return;
	}
	if (found)
	{
		/* only passing rows so far: this violation resets their count */
		int32		resolve_after = p->resolve_after;

		free_pending(p);
		fill_entry(p, subxid, v, k, severity, now);
		p->resolve_after = resolve_after;
		return;
	}

	fill_entry(p, subxid, v, k, severity, now);

	/* bound the memory of a transaction that brings many keys */
	if (hash_get_num_entries(pending) >= GB_PENDING_MAX_KEYS &&
		GetCurrentTransactionNestLevel() == 1)
		gb_pending_decide();
}

/*
 * Record a row that passes for key (kind, agent, subject), whose
 * unresolved incident resolves after resolve_after passing rows in a row
 * (recovery.c): counted at commit, under the key's lock in ExclusiveLock.
 */
void
gb_pending_pass(GBKind kind, const char *agent, const char *subject,
				const char *violation_type, int64 eval_id, int32 resolve_after)
{
	char		hkey[GB_HKEY_LEN];
	SubTransactionId subxid = GetCurrentSubTransactionId();
	const char *kind_name = gb_kind_name(kind);
	PendingEntry *e;
	GBPending  *p;
	bool		found;

	ensure_table();
	make_hkey(hkey, subxid, kind_name, agent, subject);
	e = (PendingEntry *) hash_search(pending, hkey, HASH_ENTER, &found);
	p = &e->p;
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(pending_cxt);
		size_t		alen = strlen(agent);

		memset(p, 0, sizeof(GBPending));
		p->subxid = subxid;
		p->kind = kind;
		strlcpy(p->kind_name, kind_name, sizeof(p->kind_name));
		memcpy(p->agent_subject, agent, alen + 1);
		strlcpy(p->agent_subject + alen + 1, subject,
				sizeof(p->agent_subject) - alen - 1);
		strlcpy(p->violation_type, violation_type, sizeof(p->violation_type));
		p->key = gb_key_text(kind, agent, subject);
		p->first_at = p->last_at = GetCurrentTimestamp();
		p->role = GetUserId();
		p->worst_rank = 4;
		MemoryContextSwitchTo(old);
		newest_subxid = Max(newest_subxid, subxid);
	}
	p->passes++;
	p->resolve_after = resolve_after;
	p->last_pass_eval_id = eval_id;
}

/* Has this subtransaction recorded a violation of the key? */
bool
gb_pending_has(GBKind kind, const char *agent, const char *subject)
{
	char		hkey[GB_HKEY_LEN];
	PendingEntry *e;

	if (pending == NULL)
		return false;
	make_hkey(hkey, GetCurrentSubTransactionId(), gb_kind_name(kind), agent, subject);
	e = (PendingEntry *) hash_search(pending, hkey, HASH_FIND, NULL);
	return e != NULL && e->p.count > 0;
}

void
gb_pending_subxact(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid)
{
	HASH_SEQ_STATUS seq;
	PendingEntry *e;
	List	   *moved = NIL;
	ListCell   *lc;

	if (pending == NULL || mySubid > newest_subxid ||
		(event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;

	hash_seq_init(&seq, pending);
	while ((e = (PendingEntry *) hash_seq_search(&seq)) != NULL)
	{
		if (e->p.subxid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
		{
			GBPending  *copy = MemoryContextAlloc(pending_cxt, sizeof(GBPending));

			memcpy(copy, &e->p, sizeof(GBPending));
			moved = lappend(moved, copy);
		}
		else
			free_pending(&e->p);
		(void) hash_search(pending, e->hkey, HASH_REMOVE, NULL);
	}

	/* a committed subtransaction's violations are its parent's now */
	foreach(lc, moved)
	{
		GBPending  *from = (GBPending *) lfirst(lc);
		char		hkey[GB_HKEY_LEN];
		bool		found;

		make_hkey(hkey, parentSubid, from->kind_name, pending_agent(from),
				  pending_subject(from));
		e = (PendingEntry *) hash_search(pending, hkey, HASH_ENTER, &found);
		if (!found)
		{
			memcpy(&e->p, from, sizeof(GBPending));
			e->p.subxid = parentSubid;
		}
		else
		{
			/* the parent's violations came first: its details stay */
			if (e->p.count == 0 && from->count > 0)
			{
				/* the parent had passing rows only: the child's violations reset them */
				GBPending	parent = e->p;

				memcpy(&e->p, from, sizeof(GBPending));
				e->p.subxid = parentSubid;
				free_pending(&parent);
			}
			else
			{
				e->p.count += from->count;
				e->p.last_at = Max(e->p.last_at, from->last_at);
				if (from->count > 0)
					e->p.passes = from->passes;
				else
					e->p.passes += from->passes;
				if (from->passes > 0)
				{
					e->p.resolve_after = from->resolve_after;
					e->p.last_pass_eval_id = from->last_pass_eval_id;
				}
				if (from->worst_rank < e->p.worst_rank)
				{
					e->p.worst_rank = from->worst_rank;
					e->p.worst_eval_id = from->worst_eval_id;
				}
				free_pending(from);
			}
		}
		pfree(from);
	}
	list_free(moved);
	if (mySubid == newest_subxid)
		newest_subxid = parentSubid;
}

/* the global order of keys: kind, agent, subject, bytewise */
static int
pending_cmp(const void *a, const void *b)
{
	const GBPending *pa = *(GBPending *const *) a;
	const GBPending *pb = *(GBPending *const *) b;
	int			c;

	c = strcmp(pa->kind_name, pb->kind_name);
	if (c == 0)
		c = strcmp(pending_agent(pa), pending_agent(pb));
	if (c == 0)
		c = strcmp(pending_subject(pa), pending_subject(pb));
	return c;
}

/*
 * A key whose decision folds or creates takes its lock in ShareLock, which
 * writers of the key share; one that counts passing rows, and may resolve
 * the key's incident, takes it in ExclusiveLock, as resolve() does.
 */
static LOCKMODE
key_lock_mode(const GBPending *p)
{
	return p->passes > 0 ? ExclusiveLock : ShareLock;
}

/*
 * Take the lock of every key without ever waiting while holding one:
 * when a lock is not free, give back those taken in this round, wait for
 * that one alone, and start again.  (Two keys may share a tag: the lock is
 * then taken twice, and given back twice.)  Whoever holds the
 * lock in ExclusiveLock (a resolve) can then never wait for us, however
 * many keys it holds.  Locks that this transaction held before (a decision
 * made earlier) are held still; LockRelease only undoes this round's.
 */
static void
lock_keys(GBPending **ps, int n)
{
	bool	   *held = palloc0(sizeof(bool) * n);
	int			i;

	for (;;)
	{
		int			blocked = -1;

		for (i = 0; i < n; i++)
		{
			if (held[i])
				continue;
			if (LockAcquire(&ps[i]->locktag, key_lock_mode(ps[i]), false, true) ==
				LOCKACQUIRE_NOT_AVAIL)
			{
				blocked = i;
				break;
			}
			held[i] = true;
		}
		if (blocked < 0)
			break;
		for (i = 0; i < n; i++)
		{
			if (!held[i])
				continue;
			LockRelease(&ps[i]->locktag, key_lock_mode(ps[i]), false);
			held[i] = false;
		}
		CHECK_FOR_INTERRUPTS();
		(void) LockAcquire(&ps[blocked]->locktag, key_lock_mode(ps[blocked]),
						   false, false);
		held[blocked] = true;
	}
	pfree(held);
}

/*
 * Decide every pending violation, in key order, and forget them.  What the
 * decisions cause (user triggers on the incident tables, say) may bring new
 * violations: those are decided in a next round.
 */
void
gb_pending_decide(void)
{
	decide_owned_by(InvalidSubTransactionId);
}

/*
 * Decide the pending violations of "owner" (all of them when it is
 * InvalidSubTransactionId: at commit, and at the top level, where every
 * entry is the top level's).  Returns the number of keys decided.
 */
static int64
decide_owned_by(SubTransactionId owner)
{
	int64		decided = 0;

	while (pending != NULL && hash_get_num_entries(pending) > 0)
	{
		HTAB	   *table = pending;
		MemoryContext cxt = pending_cxt;
		HASH_SEQ_STATUS seq;
		PendingEntry *e;
		GBPending **ps;
		int			n = 0;
		int			i;
		GBDecideSummary summary = {0};

		if (owner != InvalidSubTransactionId)
		{
			/* the others stay; ours are copied out and leave the table */
			cxt = AllocSetContextCreate(CurrentMemoryContext,
										"gate_bridge decisions",
										ALLOCSET_DEFAULT_SIZES);
			ps = MemoryContextAlloc(cxt, sizeof(GBPending *) * hash_get_num_entries(table));
			hash_seq_init(&seq, table);
			while ((e = (PendingEntry *) hash_seq_search(&seq)) != NULL)
			{
				GBPending  *copy;

				if (e->p.subxid != owner)
					continue;
				copy = MemoryContextAlloc(cxt, sizeof(GBPending));
				memcpy(copy, &e->p, sizeof(GBPending));
				gb_key_locktag(&copy->locktag, copy->kind_name,
							   pending_agent(copy), pending_subject(copy));
				ps[n++] = copy;
				(void) hash_search(table, e->hkey, HASH_REMOVE, NULL);
			}
			if (n == 0)
			{
				MemoryContextDelete(cxt);
				break;
			}
		}
		else
		{
			/* a new round starts with a table of its own */
			pending = NULL;
			pending_cxt = NULL;
			newest_subxid = InvalidSubTransactionId;

			ps = MemoryContextAlloc(cxt, sizeof(GBPending *) * hash_get_num_entries(table));
			hash_seq_init(&seq, table);
			while ((e = (PendingEntry *) hash_seq_search(&seq)) != NULL)
			{
				gb_key_locktag(&e->p.locktag, e->p.kind_name, pending_agent(&e->p),
							   pending_subject(&e->p));
				ps[n++] = &e->p;
			}
		}
		qsort(ps, n, sizeof(GBPending *), pending_cmp);

		for (i = 0; i < n; i++)
			ps[i]->locked = (n <= GB_MAX_KEY_LOCKS);
		if (n <= GB_MAX_KEY_LOCKS)
			lock_keys(ps, n);
		for (i = 0; i < n; i++)
			gb_decide_pending(ps[i], pending_agent(ps[i]), pending_subject(ps[i]),
							  &summary);
		gb_decide_summary(&summary);
		/* the copies' strings stay in the table's context until it goes */
		MemoryContextDelete(cxt);
		decided += n;
	}
	return decided;
}

PG_FUNCTION_INFO_V1(gate_bridge_decide_pending);

/*
 * decide_pending(): decide now the violations that this (sub)transaction's
 * rows brought, as commit would, and return the number of keys decided.
 * For a test that looks at its incidents before rolling back, say.  The
 * keys stay locked until the transaction ends.  Violations of rows that an
 * enclosing subtransaction inserted are left for commit: deciding them here
 * would lose them should this subtransaction roll back while their rows
 * stay.
 */
Datum
gate_bridge_decide_pending(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(decide_owned_by(GetCurrentSubTransactionId()));
}

void
gb_pending_xact(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			gb_pending_decide();
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
