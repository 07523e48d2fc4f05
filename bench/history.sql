-- History for the "history" case of bench/measure.sh: resolved incidents of
-- keys first_key .. last_key (agents bench.hist.NNNNNN, budget type
-- quality), per_key incidents each, and their incident_keys rows.  Run by
-- psql with -v first_key=.. -v last_key=.. -v per_key=.. -v events=0|1;
-- measure.sh runs two of these at once over halves of the key range.
--
-- The rows are what the trigger and resolve() write: kind budget, key
-- BUDGET_<agent>_quality, subject quality, severity sev2 (an "error"
-- violation), status resolved with resolved_at set, every other incident
-- acked before it was resolved, details shaped as the trigger writes them.
-- Incident j of key k was first seen 400 days ago + j * 365 / per_key days
-- (all of it older than any rate window), and resolved two hours later.
-- Ids run in key order (k * per_key + j + 1), so that the primary key and
-- the (kind, agent, subject, first_seen_at) index are filled from left to
-- right: a fast load.  (Ids of a real history interleave the keys in time;
-- the paths measured here find a key's incidents through its index.)
--
-- incidents_guard stays enabled: every row passes its rules.
-- With events = 1, each incident also gets its timeline ("created", for
-- the acked ones "acked", and "resolved") with stream positions of its own
-- (rows that bring a position keep it), 2.5 events per incident on average.

\set ON_ERROR_STOP 1
BEGIN;
INSERT INTO gate_bridge.incident_rows
	(id, kind, key, agent, violation_type, severity, status, summary, details,
	 playbooks, occurrences, first_seen_at, last_seen_at, acked_at, acked_by,
	 resolved_at, resolved_by, resolution_note, subject)
SELECT k * :per_key + j + 1, 'budget', 'BUDGET_' || a || '_quality', a, 'quality', 'sev2',
	   'resolved', 'Budget violation: ' || a || ' quality',
	   jsonb_build_object(
		'budget', '{"error": 0.8, "warning": 0.9, "critical": 0.5, "lookback": "7 days", "budget_type": "quality", "agent_pattern": "bench.hist.*"}'::jsonb,
		'context', '{}'::jsonb,
		'violation', jsonb_build_object('agent', a, 'actual', 0.65, 'severity', 'error',
										 'threshold', 0.8, 'budget_type', 'quality'),
		'eval_result', jsonb_build_object('id', k * :per_key + j + 1, 'created_at', t,
										   'eval_run_id', NULL, 'triggered_by', NULL,
										   'planner_version', NULL)),
	   '{rerun_eval}', occ, t, t + (occ - 1) * interval '1 minute',
	   CASE WHEN j % 2 = 0 THEN t + interval '5 minutes' END,
	   CASE WHEN j % 2 = 0 THEN 'bench.oncall' END,
	   t + interval '2 hours', 'bench.oncall', NULL, 'quality'
  FROM generate_series(:first_key, :last_key) AS k,
	   LATERAL (SELECT 'bench.hist.' || lpad(k::text, 6, '0') AS a) AS x,
	   generate_series(0, :per_key - 1) AS j,
	   LATERAL (SELECT now() - interval '400 days'
					   + (j * 365.0 / :per_key) * interval '1 day'
					   + (k % 3600) * interval '1 second' AS t,
					   1 + (k * 7 + j * 13) % 40 AS occ) AS y;

INSERT INTO gate_bridge.incident_keys
	(kind, key, created, rate_limited, last_created_at, last_rate_limited_at, agent, subject)
SELECT 'budget', 'BUDGET_' || a || '_quality', :per_key, 0,
	   now() - interval '400 days' + ((:per_key - 1) * 365.0 / :per_key) * interval '1 day'
	   + (k % 3600) * interval '1 second',
	   NULL, a, 'quality'
  FROM generate_series(:first_key, :last_key) AS k,
	   LATERAL (SELECT 'bench.hist.' || lpad(k::text, 6, '0') AS a) AS x;

SELECT :events = 1 AS with_events \gset
\if :with_events
-- positions: 3 per incident id, in id order
INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail, position)
SELECT i.id, e.event, e.at, 'bench.oncall', e.detail, i.id * 3 + e.n
  FROM gate_bridge.incidents i
 CROSS JOIN LATERAL (VALUES
		(0, 'created', i.first_seen_at,
		 jsonb_build_object('id', i.id, 'key', i.key, 'kind', i.kind, 'agent', i.agent,
							'status', 'open', 'summary', i.summary, 'severity', i.severity,
							'created_at', i.first_seen_at)),
		(1, 'acked', i.acked_at, '{"role": "bench.oncall"}'::jsonb),
		(2, 'resolved', i.resolved_at, '{"role": "bench.oncall"}'::jsonb)) AS e (n, event, at, detail)
 WHERE i.id BETWEEN :first_key * :per_key + 1 AND (:last_key + 1) * :per_key
   AND e.at IS NOT NULL
 ORDER BY i.id, e.n;
\endif
COMMIT;
