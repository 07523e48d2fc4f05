-- The incident lifecycle: open -> ack -> resolved, open -> resolved; the
-- timeline; the dashboard views.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Times are not printed: each is checked against the ones before it.
CREATE FUNCTION pg_temp.state()
RETURNS TABLE (id bigint, key text, severity text, status text,
			   acked boolean, acked_by text, resolved boolean, resolved_by text,
			   resolution_note text, times_in_order boolean)
LANGUAGE sql AS $$
	SELECT i.id, i.key, i.severity, i.status,
		   i.acked_at IS NOT NULL,
		   CASE WHEN i.acked_by = current_user THEN '(current_user)' ELSE i.acked_by END,
		   i.resolved_at IS NOT NULL,
		   CASE WHEN i.resolved_by = current_user THEN '(current_user)' ELSE i.resolved_by END,
		   i.resolution_note,
		   i.first_seen_at <= i.last_seen_at
		   AND i.first_seen_at <= COALESCE(i.acked_at, i.first_seen_at)
		   AND COALESCE(i.acked_at, i.first_seen_at) <= COALESCE(i.resolved_at, 'infinity')
	  FROM gate_bridge.incidents i ORDER BY i.id
$$;
CREATE FUNCTION pg_temp.timeline()
RETURNS TABLE (id bigint, incident_id bigint, event text, actor text,
			   detail jsonb, in_order boolean)
LANGUAGE sql AS $$
	SELECT ev.id, ev.incident_id, ev.event,
		   CASE WHEN ev.actor = current_user THEN '(current_user)' ELSE ev.actor END,
		   ev.detail - 'created_at',
		   ev.at >= COALESCE(lag(ev.at) OVER (PARTITION BY ev.incident_id ORDER BY ev.id),
							 '-infinity')
	  FROM gate_bridge.incident_events ev ORDER BY ev.id
$$;

SELECT gate_bridge.on_budget_violation(jsonb_build_object(
		'agent', 'life.' || n, 'budget_type', 'quality', 'severity', s,
		'actual', 0.5, 'threshold', 0.7)) AS id
  FROM (VALUES (1, 'critical'), (2, 'error'), (3, 'warning'), (4, 'error')) AS v(n, s);
SELECT * FROM pg_temp.state();
SELECT * FROM gate_bridge.incident_counts;

-- ack with the default actor (the current user), then resolve with a note
SELECT gate_bridge.ack(1);
SELECT id, status, acked_by = current_user AS acked_by_current_user
  FROM gate_bridge.incidents WHERE id = 1;
SELECT gate_bridge.resolve(1, 'regress_alice', 'rolled back the prompt change');
-- resolve straight from open, with the default actor and no note
SELECT gate_bridge.resolve(2);
SELECT id, status, resolved_by = current_user AS resolved_by_current_user,
	   resolution_note
  FROM gate_bridge.incidents WHERE id = 2;
-- ack by name
SELECT gate_bridge.ack(3, 'regress_bob');
-- named arguments
SELECT gate_bridge.ack(incident_id => 4, actor => 'regress_carol');
SELECT gate_bridge.resolve(note => 'noise', incident_id => 4, actor => 'regress_carol');
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.timeline();

-------------------------------------------------------------------------------
-- Wrong moves and unknown ids are errors, and change nothing.
-------------------------------------------------------------------------------
SELECT gate_bridge.ack(3, 'regress_bob');			-- already acknowledged
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(1, 'regress_bob');			-- resolved is final
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(1, 'regress_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(2, 'regress_bob', 'again');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(99);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(99);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(NULL, 'regress_bob');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(3, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(3, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(3, '');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(3, '', 'note');
\echo :LAST_ERROR_SQLSTATE
-- an actor of at most 128 bytes and a note of at most 8 kB reach the timeline
SELECT gate_bridge.ack(3, repeat('a', 129));
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(3, repeat('é', 65));
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.resolve(3, 'regress_bob', repeat('n', 8193));
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.ack(3, repeat('x', 100 * 1024 * 1024));
\echo :LAST_ERROR_SQLSTATE
-- a read-only transaction says so before it touches anything
BEGIN READ ONLY;
SELECT gate_bridge.ack(3, 'regress_bob');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT gate_bridge.resolve(3, 'regress_bob');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- one bad move in a statement undoes the good ones before it
SELECT gate_bridge.resolve(v.id, 'regress_bob') FROM (VALUES (3), (1)) AS v(id);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pg_temp.state();
SELECT count(*) AS events FROM gate_bridge.incident_events;

-- A rolled-back move leaves no trace.
BEGIN;
SELECT gate_bridge.resolve(3, 'regress_bob', 'oops');
SELECT status FROM gate_bridge.incidents WHERE id = 3;
ROLLBACK;
SELECT status, resolved_by FROM gate_bridge.incidents WHERE id = 3;
SELECT count(*) AS events FROM gate_bridge.incident_events WHERE incident_id = 3;

-- The status cannot be moved around the functions' checks.
UPDATE gate_bridge.incidents SET status = 'ack' WHERE id = 3 AND false;
UPDATE gate_bridge.incidents SET status = 'open' WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE
UPDATE gate_bridge.incidents SET status = 'closed' WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE
-- and at most one unresolved incident per key, whatever writes it
INSERT INTO gate_bridge.incidents (kind, key, agent, subject, violation_type, severity, summary)
VALUES ('budget', 'BUDGET_life.3_quality', 'life.3', 'quality', 'quality', 'sev3', 'duplicate');
\echo :LAST_ERROR_SQLSTATE

-------------------------------------------------------------------------------
-- After resolve, the next violation opens a new incident with its own
-- timeline; the views show only unresolved incidents.
-------------------------------------------------------------------------------
SELECT gate_bridge.on_budget_violation(
	'{"agent": "life.1", "budget_type": "quality", "severity": "warning",
	  "actual": 0.85, "threshold": 0.9}') AS id;
SELECT gate_bridge.on_budget_violation(
	'{"agent": "life.3", "budget_type": "quality", "severity": "warning",
	  "actual": 0.85, "threshold": 0.9}') AS id;
SELECT * FROM pg_temp.state();
SELECT id, kind, key, agent, violation_type, severity, status, summary,
	   playbooks, occurrences, acked_by
  FROM gate_bridge.open_incidents;
SELECT * FROM gate_bridge.incident_counts;
SELECT gate_bridge.resolve(id, 'regress_alice') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_life.1_quality' AND status = 'open';
SELECT gate_bridge.resolve(3, 'regress_bob', 'fixed');
SELECT id, key, status FROM gate_bridge.open_incidents;
SELECT * FROM gate_bridge.incident_counts;
SELECT * FROM pg_temp.timeline();
-- every incident's timeline starts with exactly one "created" event
SELECT i.id, array_agg(ev.event ORDER BY ev.id) AS events
  FROM gate_bridge.incidents i
  JOIN gate_bridge.incident_events ev ON ev.incident_id = i.id
 GROUP BY i.id ORDER BY i.id;

-- Created, acknowledged and resolved in one transaction: the times still
-- follow the order of the moves (nothing is acknowledged before it was seen).
BEGIN;
SELECT pg_sleep(0.01);
SELECT gate_bridge.on_planner_regression('life-v1', '{}', '{}', '{}') IS NOT NULL AS created;
SELECT gate_bridge.ack(id, 'regress_alice') FROM gate_bridge.incidents
 WHERE key = 'PLANNER_life-v1';
SELECT gate_bridge.resolve(id, 'regress_alice') FROM gate_bridge.incidents
 WHERE key = 'PLANNER_life-v1';
COMMIT;
SELECT key, status, times_in_order FROM pg_temp.state() WHERE key = 'PLANNER_life-v1';
SELECT t.event, t.in_order
  FROM pg_temp.timeline() t
  JOIN gate_bridge.incidents i ON i.id = t.incident_id
 WHERE i.key = 'PLANNER_life-v1' ORDER BY t.id;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
