/*-------------------------------------------------------------------------
 *
 * stream.c
 *		Stream positions in commit order, and the announcements.
 *
 * Every row of gate_bridge.incident_events gets a stream position when its
 * transaction commits, not when it is inserted.  A consumer that has read
 * position P must never later find a new event below P; ids cannot promise
 * that (a lower id can commit after a higher one), so positions are handed
 * out in a pre-commit step, under a lock that is held until the commit is
 * visible to every snapshot:
 *
 *	1. Just before commit (XACT_EVENT_PRE_COMMIT, after the folded counts
 *	   are written) a transaction that inserted events takes ExclusiveLock
 *	   on the position sequence.  Only this step takes positions, so the
 *	   lock orders every transaction that records events.
 *	2. It numbers its events, in the order they were recorded, from the
 *	   sequence's own state (never a backend's cache of it).
 *	3. It commits.  PostgreSQL ends the transaction in the proc array
 *	   (making it visible) before it releases its locks, so the next
 *	   transaction can take a position only after this one is visible.
 *
 * Hence, for any snapshot: if it sees position P, every transaction that
 * took a position below P had finished before P was taken; it committed
 * (and the snapshot, taken later, sees it) or aborted (its positions are
 * gone for good).  No event can appear below the last one a consumer read.
 * The window in which a taken position is not yet visible is exactly the
 * commit itself, and nothing can be taken behind it meanwhile.  Readers
 * never wait: events_after() is an index range scan that returns only
 * committed rows, and an uncommitted event has no position yet, so an idle
 * transaction holding an uncommitted incident holds back nobody.
 *
 * The lock is the last thing taken before commit, after everything that
 * could wait for another transaction (the folded counts are written first),
 * and PreCommit_Notify's lock comes after it: no deadlock can close through
 * it.
 *
 * History can be rewound under a consumer: a failover to a standby that was
 * behind, a crash with asynchronous commit, a restore of an older dump.
 * Positions taken before such an event may then be handed out again.  To
 * keep them apart, the first transaction that takes positions after a
 * server start (or in a database restored from a dump) moves the sequence
 * on to the next multiple of GB_POSITION_EPOCH, so positions of the new
 * history are above anything a consumer can have read from the old one,
 * and events_after() refuses a stored position that the server does not
 * hold (SQLSTATE SR001).  A crash of any one server process counts as a
 * start: the postmaster ends all the others and runs crash recovery
 * without restarting itself, which loses unflushed asynchronous commits
 * just as a restart does.
 *
 * Announcements are made in the same step, in position order: every event
 * on gate_bridge.events_channel, and created incidents (and those whose
 * silence ended unresolved) also on gate_bridge.notify_channel.  An event
 * marked silenced (a silence or the key's flapping held it back, see
 * incident_events_held()) is numbered but not announced.  NOTIFY is a wake-up and never a gate: when
 * PostgreSQL's notification queue is nearly full (a listener stuck in an
 * open transaction fills it), the transaction's notifications are skipped,
 * counted in gate_bridge.stream_status and logged at most once a minute;
 * the events commit as usual and consumers find them through
 * events_after().
 *
 * src/stream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/* positions of a new history start above a multiple of this */
#define GB_POSITION_EPOCH	INT64CONST(1000000000)

/* skip notifications when the queue is fuller than this */
#define GB_NOTIFY_QUEUE_LIMIT	0.5

/*
 * This transaction's events, waiting for their positions: recorded by the
 * row trigger on incident_events, so that the pre-commit step reads nothing
 * but its own rows, by TID (under SERIALIZABLE, reading the table or an
 * index there would take predicate locks that make other transactions
 * fail).  Entries belong to the subtransaction that inserted them: an
 * aborted one's rows are gone, a committed one's pass to its parent.
 */
typedef struct PendingEvent
{
	SubTransactionId subxid;
	ItemPointerData tid;
	int64		id;
	int64		incident_id;
	int64		position;
	char	   *event;
	char	   *created;		/* a created incident's data object, or NULL */
	bool		silenced;		/* held back: numbered, not announced */
} PendingEvent;

static List *pending = NIL;		/* of PendingEvent *, in TopTransactionContext */

/* this backend has checked the history (a crash ends every backend) */
static bool history_checked = false;

static SPIPlanPtr next_plan = NULL;
static SPIPlanPtr setval_plan = NULL;
static SPIPlanPtr number_plan = NULL;
static SPIPlanPtr number_by_id_plan = NULL;
static SPIPlanPtr history_plan = NULL;
static SPIPlanPtr new_history_plan = NULL;
static SPIPlanPtr bump_plan = NULL;
static SPIPlanPtr skipped_plan = NULL;

static void
prepare_plans(void)
{
	Oid			t_number[2] = {TIDARRAYOID, INT8ARRAYOID};
	Oid			t_number_id[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Oid			t_ts[1] = {TIMESTAMPTZOID};
	Oid			t_int8[1] = {INT8OID};

	if (skipped_plan != NULL)
		return;
	/*
	 * The next position, read from the sequence itself rather than with
	 * nextval(): a backend's cached values (ALTER SEQUENCE ... CACHE) would
	 * be handed out out of order.  Under the position lock nobody else
	 * moves the sequence.
	 */
	next_plan = gb_keep_plan(
		"SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
		"  FROM gate_bridge.incident_events_position_seq", 0, NULL);
	setval_plan = gb_keep_plan(
		"SELECT pg_catalog.setval('gate_bridge.incident_events_position_seq', $1)",
		1, t_int8);
	/* our own rows, by TID; an event deleted meanwhile is not returned */
	number_plan = gb_keep_plan(
		"UPDATE gate_bridge.incident_events e SET position = n.position"
		"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n (tid, position)"
		" WHERE e.ctid = n.tid AND e.ctid = ANY ($1)"
		" RETURNING e.id", 2, t_number);
	/* a row of ours updated meanwhile has moved: found by id */
	number_by_id_plan = gb_keep_plan(
		"UPDATE gate_bridge.incident_events e SET position = n.position"
		"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n (id, position)"
		" WHERE e.id = n.id AND e.position IS NULL"
		" RETURNING e.id", 2, t_number_id);
	history_plan = gb_keep_plan(
		"SELECT s.server_started_at,"
		"       EXISTS (SELECT FROM gate_bridge.incident_events e"
		"                WHERE e.position IS NOT NULL)"
		"  FROM (VALUES (1)) AS one (n)"
		"  LEFT JOIN gate_bridge.stream_status s ON true", 0, NULL);
	new_history_plan = gb_keep_plan(
		"INSERT INTO gate_bridge.stream_status AS s (singleton, server_started_at)"
		" VALUES (true, $1)"
		" ON CONFLICT (singleton) DO UPDATE SET server_started_at = EXCLUDED.server_started_at",
		1, t_ts);
	bump_plan = gb_keep_plan(
		"SELECT pg_catalog.setval('gate_bridge.incident_events_position_seq',"
		"       (GREATEST((SELECT last_value FROM gate_bridge.incident_events_position_seq),"
		"                 (SELECT pg_catalog.max(position) FROM gate_bridge.incident_events))"
		"        / $1 + 1) * $1)", 1, t_int8);
	skipped_plan = gb_keep_plan(
		"UPDATE gate_bridge.stream_status"
		"   SET notifications_skipped = notifications_skipped + $1,"
		"       last_skipped_at = pg_catalog.now(),"
		"       last_logged_at = CASE WHEN last_logged_at IS NULL"
		"                              OR last_logged_at <= pg_catalog.now() - interval '1 minute'"
		"                             THEN pg_catalog.now() ELSE last_logged_at END"
		" RETURNING last_logged_at = pg_catalog.now(), notifications_skipped",
		1, t_int8);
}

static Oid
position_seq_oid(void)
{
	Oid			nsp = get_namespace_oid("gate_bridge", false);
	Oid			seq = get_relname_relid("incident_events_position_seq", nsp);

	if (!OidIsValid(seq))
		elog(ERROR, "sequence gate_bridge.incident_events_position_seq does not exist");
	return seq;
}

static int64
int8_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Send the announcements of the events that got a position (one deleted
 * meanwhile did not), unless the queue is nearly full.
 */
static void
announce(PendingEvent **ev, const bool *numbered, int n)
{
	double		usage = DatumGetFloat8(DirectFunctionCall1(pg_notification_queue_usage,
														   (Datum) 0));
	int			i;

	if (usage < GB_NOTIFY_QUEUE_LIMIT)
	{
		for (i = 0; i < n; i++)
		{
			if (!numbered[i] || ev[i]->silenced)
				continue;
			Async_Notify(gb_events_channel,
						 gb_event_payload(ev[i]->event, ev[i]->position, ev[i]->id,
										  ev[i]->incident_id));
			if (ev[i]->created)
				Async_Notify(gb_notify_channel,
							 gb_created_payload(ev[i]->id, ev[i]->position,
												ev[i]->created));
		}
		return;
	}
	else
	{
		int			skipped = 0;
		Datum		arg;
		bool		isnull;
		bool		log_now;
		int64		total;

		for (i = 0; i < n; i++)
			if (numbered[i] && !ev[i]->silenced)
				skipped += ev[i]->created ? 2 : 1;
		arg = Int64GetDatum(skipped);
		gb_spi_run(skipped_plan, &arg, NULL, SPI_OK_UPDATE_RETURNING);
		if (SPI_processed == 0)
			return;
		log_now = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
		total = int8_col(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		ereport(log_now ? LOG : DEBUG1,
				(errmsg("gate_bridge: skipped %d notifications, the notification queue is %.0f%% full",
						skipped, usage * 100),
				 errdetail("The events are recorded; consumers find them with gate_bridge.events_after(). "
						   INT64_FORMAT " notifications have been skipped so far.", total),
				 errhint("A session that LISTENs and stays in an open transaction keeps the queue from being emptied; idle_in_transaction_session_timeout ends such sessions."),
				 errhidestmt(true)));
	}
}

/*
 * When the server last started its processes: the start of its
 * checkpointer.  After a crash of any server process the postmaster ends
 * every other one, runs crash recovery and starts them all again without
 * restarting itself (restart_after_crash), so PgStartTime
 * (pg_postmaster_start_time()) stays the same while asynchronous commits
 * that had not been flushed are gone.  Only such a crash or a start runs a
 * new checkpointer.  Without one (single-user mode) the postmaster's start.
 */
static TimestampTz
server_start(void)
{
	int			n = pgstat_fetch_stat_numbackends();
	int			i;

	for (i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *entry = pgstat_fetch_stat_local_beentry(i);

		if (entry != NULL && entry->backendStatus.st_backendType == B_CHECKPOINTER)
			return Max(entry->backendStatus.st_proc_start_timestamp, PgStartTime);
	}
	return PgStartTime;
}

/*
 * The first positions taken after a server start begin a new history: the
 * sequence moves on to the next multiple of GB_POSITION_EPOCH.  The row in
 * stream_status says which start the current positions belong to; a
 * failover lands on another server, and a restored dump brings the row of
 * the server it was taken from, so both count as a new start, and so does
 * a crash (server_start()).  A database with no row and no numbered event
 * (a fresh install) starts at 1.  Runs under the position lock.
 */
static void
check_history(void)
{
	bool		isnull;
	bool		started_null;
	bool		numbered;
	Datum		started;
	Datum		value;
	TimestampTz this_start = server_start();

	gb_spi_run(history_plan, NULL, NULL, SPI_OK_SELECT);
	started = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &started_null);
	if (!started_null && DatumGetTimestampTz(started) == this_start)
		return;
	numbered = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 2, &isnull));
	if (!started_null || numbered)
	{
		value = Int64GetDatum(GB_POSITION_EPOCH);
		gb_spi_run(bump_plan, &value, NULL, SPI_OK_SELECT);
		ereport(LOG,
				(errmsg("gate_bridge: event positions start a new history at " INT64_FORMAT,
						DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull)) + 1),
				 errdetail("The server was restarted, recovered from a crash, failed over or restored; positions handed out before may have been lost."),
				 errhidestmt(true)));
	}
	value = TimestampTzGetDatum(this_start);
	gb_spi_run(new_history_plan, &value, NULL, SPI_OK_INSERT);
}

static Datum
int8_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* Mark the events that the last UPDATE ... RETURNING id numbered. */
static int
mark_numbered(PendingEvent **ev, bool *numbered, int n)
{
	int			found = 0;
	uint64		r;
	int			i;

	for (r = 0; r < SPI_processed; r++)
	{
		int64		id = int8_col(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		for (i = 0; i < n; i++)
			if (ev[i]->id == id && !numbered[i])
			{
				numbered[i] = true;
				found++;
				break;
			}
	}
	return found;
}

/*
 * Number this transaction's events and announce them.  Runs just before
 * commit; see the file header for why this order is safe.
 */
static void
stream_precommit(void)
{
	GBPrivileged priv;
	PendingEvent **ev;
	bool	   *numbered;
	Datum	   *keys;
	Datum	   *positions;
	Datum		values[2];
	int64		first;
	int			n = list_length(pending);
	int			found;
	int			i;
	ListCell   *lc;

	ev = palloc(sizeof(PendingEvent *) * n);
	i = 0;
	foreach(lc, pending)
		ev[i++] = (PendingEvent *) lfirst(lc);
	pending = NIL;

	gb_spi_begin(&priv);
	prepare_plans();

	/* step 1: the lock that orders every transaction taking positions */
	LockRelationOid(position_seq_oid(), ExclusiveLock);

	if (!history_checked)
	{
		check_history();
		history_checked = true;
	}

	/* step 2: n positions in a row, in the order the events were recorded */
	gb_spi_run(next_plan, NULL, NULL, SPI_OK_SELECT);
	first = int8_col(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	values[0] = Int64GetDatum(first + (int64) n - 1);
	gb_spi_run(setval_plan, values, NULL, SPI_OK_SELECT);
	keys = palloc(sizeof(Datum) * n);
	positions = palloc(sizeof(Datum) * n);
	numbered = palloc0(sizeof(bool) * n);
	for (i = 0; i < n; i++)
	{
		ev[i]->position = first + (int64) i;
		keys[i] = PointerGetDatum(&ev[i]->tid);
		positions[i] = Int64GetDatum(ev[i]->position);
	}
	values[0] = PointerGetDatum(construct_array(keys, n, TIDOID, sizeof(ItemPointerData),
												false, TYPALIGN_SHORT));
	values[1] = int8_array(positions, n);
	gb_spi_run(number_plan, values, NULL, SPI_OK_UPDATE_RETURNING);
	found = mark_numbered(ev, numbered, n);
	if (found < n)
	{
		int			m = 0;

		for (i = 0; i < n; i++)
			if (!numbered[i])
			{
				keys[m] = Int64GetDatum(ev[i]->id);
				positions[m] = Int64GetDatum(ev[i]->position);
				m++;
			}
		values[0] = int8_array(keys, m);
		values[1] = int8_array(positions, m);
		gb_spi_run(number_by_id_plan, values, NULL, SPI_OK_UPDATE_RETURNING);
		(void) mark_numbered(ev, numbered, n);
	}

	announce(ev, numbered, n);

	gb_spi_end(&priv);
}

void
gb_stream_xact(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending != NIL)
				stream_precommit();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that recorded incident events"),
						 errdetail("Events get their stream position when their transaction commits."),
						 errhint("Create, acknowledge and resolve incidents outside two-phase transactions.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* the list lived in TopTransactionContext */
			pending = NIL;
			break;
		default:
			break;
	}
}

void
gb_stream_subxact(SubXactEvent event, SubTransactionId mySubid,
				  SubTransactionId parentSubid)
{
	ListCell   *lc;

	if (pending == NIL)
		return;
	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, pending)
		{
			PendingEvent *p = (PendingEvent *) lfirst(lc);

			if (p->subxid == mySubid)
				p->subxid = parentSubid;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		/* the subtransaction's rows are gone, and so are its events */
		foreach(lc, pending)
		{
			PendingEvent *p = (PendingEvent *) lfirst(lc);

			if (p->subxid == mySubid)
				pending = foreach_delete_current(pending, lc);
		}
	}
}

/* A column of the row, by name; NULL when missing or NULL. */
static bool
row_attr(TupleTableSlot *slot, TupleDesc desc, const char *name, Datum *value)
{
	int			attno = SPI_fnumber(desc, name);
	bool		isnull;

	if (attno <= 0)
		return false;
	*value = slot_getattr(slot, attno, &isnull);
	return !isnull;
}

PG_FUNCTION_INFO_V1(gate_bridge_events_recorded);

/*
 * AFTER INSERT row trigger on gate_bridge.incident_events: remember the
 * event, to be numbered and announced when the transaction commits.  Rows
 * applied by logical replication bring their positions and do not fire it.
 */
Datum
gate_bridge_events_recorded(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleTableSlot *slot;
	TupleDesc	desc;
	MemoryContext old;
	PendingEvent *p;
	Datum		d;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_events_recorded: not called by trigger manager")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("gate_bridge_events_recorded: must be fired AFTER INSERT FOR EACH ROW")));

	slot = trigdata->tg_trigslot;
	desc = RelationGetDescr(trigdata->tg_relation);

	/* a row that brings its position (a restore, a copy) keeps it */
	if (row_attr(slot, desc, "position", &d))
		return PointerGetDatum(NULL);

	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(PendingEvent));
	p->subxid = GetCurrentSubTransactionId();
	ItemPointerCopy(&slot->tts_tid, &p->tid);
	if (row_attr(slot, desc, "id", &d))
		p->id = DatumGetInt64(d);
	if (row_attr(slot, desc, "incident_id", &d))
		p->incident_id = DatumGetInt64(d);
	p->event = row_attr(slot, desc, "event", &d) ? TextDatumGetCString(d) : pstrdup("");
	p->silenced = row_attr(slot, desc, "silenced", &d) && DatumGetBool(d);

	/*
	 * A created incident is announced on notify_channel too, and so is one
	 * whose silence ended while it was unresolved: that is when it pages.
	 */
	if ((strcmp(p->event, "created") == 0 || strcmp(p->event, "silence_ended") == 0) &&
		row_attr(slot, desc, "detail", &d))
	{
		Jsonb	   *detail = DatumGetJsonbP(d);
		Datum		at;
		const char *kind = gb_json_get_text(detail, "detail", "kind", false);
		const char *key = gb_json_get_text(detail, "detail", "key", false);
		const char *severity = gb_json_get_text(detail, "detail", "severity", false);
		const char *summary = gb_json_get_text(detail, "detail", "summary", false);
		const char *agent = gb_json_get_text(detail, "detail", "agent", false);

		p->created = gb_created_data(p->incident_id,
									 kind ? kind : "", key ? key : "",
									 severity ? severity : "",
									 summary ? summary : "",
									 row_attr(slot, desc, "at", &at) ?
									 DatumGetTimestampTz(at) : DT_NOBEGIN,
									 agent);
	}
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);

	return PointerGetDatum(NULL);
}
