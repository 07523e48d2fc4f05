/*-------------------------------------------------------------------------
 *
 * heartbeats.c
 *		An agent that stops reporting: check_heartbeats(), for tick().
 *
 * gate_bridge.heartbeats names agent patterns and how long each may stay
 * silent.  For every agent that an enabled heartbeat covers (the most
 * specific pattern: exact, then the longest "prefix.*", then "*"), the
 * latest eval row decides: older than max_silence (or none at all, for an
 * agent named exactly) opens HEARTBEAT_{agent} through the decisions every
 * violation takes (deduplicated, rate limited, silenced, announced); a row
 * within max_silence resolves it.  A heartbeat incident whose agent no
 * enabled heartbeat covers any more is resolved too.  Like the rest of
 * tick(), it never waits: a key another transaction is deciding, or an
 * incident another holds, is left for the next tick.
 *
 * The agents are found as run_gates() finds them, with a loose index scan
 * over eval_results_agent_created_at_idx (one probe per agent), and each
 * agent's latest row with one more probe: tick() reads no table in full.
 * Without an enabled heartbeat and an unresolved heartbeat incident, it
 * runs one cheap query and nothing else.
 *
 * src/heartbeats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"
#include "privileged.h"

/* One covered agent, or one incident to resolve. */
typedef struct Beat
{
	char	   *agent;
	char	   *pattern;		/* NULL: no enabled heartbeat covers it */
	bool		exact;			/* the pattern names the agent */
	Interval	max_silence;
	GBSeverity	severity;
	bool		has_last;
	TimestampTz last_seen;
	int64		open_id;		/* its unresolved heartbeat incident, or 0 */
} Beat;

static SPIPlanPtr any_plan = NULL;
static SPIPlanPtr beats_plan = NULL;

/* A timestamp as to_jsonb() writes it. */
static void
jb_timestamptz(JsonbParseState **st, const char *key, TimestampTz ts)
{
	char		buf[MAXDATELEN + 1];

	gb_jb_text(st, key, JsonEncodeDateTime(buf, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL));
}

/* The details of a HEARTBEAT incident. */
static Jsonb *
heartbeat_details(void *arg)
{
	const Beat *b = (const Beat *) arg;
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "agent", b->agent);
	gb_jb_text(&st, "agent_pattern", b->pattern);
	gb_jb_text(&st, "max_silence", gb_interval_text(&b->max_silence));
	if (b->has_last)
		jb_timestamptz(&st, "last_seen_at", b->last_seen);
	else
	{
		JsonbValue	v;

		gb_jb_key(&st, "last_seen_at");
		v.type = jbvNull;
		pushJsonbValue(&st, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* The evidence of an auto-resolved HEARTBEAT incident. */
static Jsonb *
resolve_evidence(const Beat *b, const char *reason)
{
	JsonbParseState *st = NULL;

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	gb_jb_text(&st, "reason", reason);
	if (b->has_last)
		jb_timestamptz(&st, "last_seen_at", b->last_seen);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * The covered agents with their latest row and open incident, and the
 * open heartbeat incidents of agents no longer covered; in "cxt".
 */
static Beat *
read_beats(MemoryContext cxt, int *count)
{
	GBPrivileged priv;
	Beat	   *beats = NULL;
	bool		isnull;
	uint64		i;

	*count = 0;
	gb_spi_begin(&priv);
	if (any_plan == NULL)
		any_plan = gb_keep_plan(
			"SELECT EXISTS (SELECT FROM gate_bridge.heartbeats h WHERE h.enabled)"
			"    OR EXISTS (SELECT FROM gate_bridge.incident_rows i"
			"                WHERE i.kind = 'heartbeat' AND i.status <> 'resolved')",
			0, NULL);
	gb_spi_run(any_plan, NULL, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		gb_spi_end(&priv);
		return NULL;
	}

	if (beats_plan == NULL)
		beats_plan = gb_keep_plan(
			GB_KNOWN_AGENTS_CTE
			", agents AS ("
			"    SELECT s.agent FROM seen s"
			"     WHERE s.agent IS NOT NULL"
			"       AND EXISTS (SELECT FROM gate_bridge.heartbeats h WHERE h.enabled)"
			"    UNION"
			"    SELECT h.agent_pattern FROM gate_bridge.heartbeats h"
			"     WHERE h.enabled AND strpos(h.agent_pattern, '*') = 0"
			"    UNION"
			"    SELECT i.agent FROM gate_bridge.incident_rows i"
			"     WHERE i.kind = 'heartbeat' AND i.status <> 'resolved'"
			")"
			"SELECT a.agent, hb.agent_pattern, hb.max_silence, hb.severity,"
			"       (SELECT max(e.created_at) FROM gate_bridge.eval_results e"
			"         WHERE e.agent = a.agent),"
			"       (SELECT min(i.id) FROM gate_bridge.incident_rows i"
			"         WHERE i.kind = 'heartbeat' AND i.agent = a.agent"
			"           AND i.subject = 'heartbeat' AND i.status <> 'resolved')"
			"  FROM agents a"
			"  LEFT JOIN LATERAL ("
			"       SELECT h.agent_pattern, h.max_silence, h.severity"
			"         FROM gate_bridge.heartbeats h"
			"        WHERE h.enabled"
			"          AND gate_bridge.pattern_rank(h.agent_pattern, a.agent) IS NOT NULL"
			"        ORDER BY gate_bridge.pattern_rank(h.agent_pattern, a.agent) DESC"
			"        LIMIT 1) hb ON true"
			" ORDER BY a.agent COLLATE \"C\"",
			0, NULL);
	gb_spi_run(beats_plan, NULL, NULL, SPI_OK_SELECT);

	beats = MemoryContextAllocZero(cxt, sizeof(Beat) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Beat	   *b = &beats[*count];
		char	   *agent = SPI_getvalue(tup, desc, 1);
		char	   *pattern = SPI_getvalue(tup, desc, 2);
		Datum		d;

		/* an exact pattern too long to be an agent's name matches nothing */
		if (agent == NULL || !gb_agent_name_valid(strlen(agent)))
			continue;
		b->agent = MemoryContextStrdup(cxt, agent);
		if (pattern != NULL)
		{
			b->pattern = MemoryContextStrdup(cxt, pattern);
			b->exact = strchr(pattern, '*') == NULL;
			b->max_silence = *DatumGetIntervalP(SPI_getbinval(tup, desc, 3, &isnull));
			b->severity = gb_severity_parse(SPI_getvalue(tup, desc, 4), "severity");
		}
		d = SPI_getbinval(tup, desc, 5, &isnull);
		b->has_last = !isnull;
		if (!isnull)
			b->last_seen = DatumGetTimestampTz(d);
		d = SPI_getbinval(tup, desc, 6, &isnull);
		b->open_id = isnull ? 0 : DatumGetInt64(d);
		(*count)++;
	}
	gb_spi_end(&priv);
	return beats;
}

PG_FUNCTION_INFO_V1(gate_bridge_check_heartbeats);

/*
 * gate_bridge.check_heartbeats() RETURNS integer
 *
 * tick()'s part: HEARTBEAT incidents opened and resolved.
 */
Datum
gate_bridge_check_heartbeats(PG_FUNCTION_ARGS)
{
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();
	Beat	   *beats;
	int			count;
	int			n = 0;
	int			i;

	beats = read_beats(cxt, &count);
	for (i = 0; i < count; i++)
	{
		Beat	   *b = &beats[i];
		bool		silent;

		/*
		 * A glob covers the agents it has seen; an agent without rows is
		 * known only to an exact pattern.
		 */
		if (b->pattern == NULL || (!b->exact && !b->has_last))
		{
			/* no enabled heartbeat covers the agent any more */
			if (b->open_id != 0 &&
				gb_auto_resolve(b->open_id, "auto-resolved: no heartbeat covers the agent any more",
								resolve_evidence(b, "heartbeat_removed"), true, DT_NOBEGIN))
				n++;
			continue;
		}

		silent = !b->has_last ||
			b->last_seen <= DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
																	TimestampTzGetDatum(now),
																	IntervalPGetDatum(&b->max_silence)));
		if (silent && b->open_id == 0)
		{
			GBViolation v;
			LOCKTAG		tag;

			/*
			 * The key's lock, without waiting: a tick (or anything else)
			 * deciding this key now is left to it, as tick() leaves every
			 * busy row to the next tick.
			 */
			gb_key_locktag(&tag, gb_kind_name(GB_KIND_HEARTBEAT), b->agent, "heartbeat");
			if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
				continue;

			memset(&v, 0, sizeof(v));
			v.kind = GB_KIND_HEARTBEAT;
			v.agent = b->agent;
			v.violation_type = "heartbeat";
			v.subject = "heartbeat";
			v.severity = b->severity;
			v.build_details = heartbeat_details;
			v.details_arg = b;
			if (gate_bridge_on_violation(&v) != 0)
				n++;
		}
		else if (!silent && b->open_id != 0 &&
				 gb_auto_resolve(b->open_id, "auto-resolved: the agent reports again",
								 resolve_evidence(b, "rows_arrived"), true, DT_NOBEGIN))
			n++;
	}
	PG_RETURN_INT32(n);
}
