-- Reopen window: a violation for a key whose incident was resolved less than
-- gate_bridge.reopen_window ago reopens that incident (reopened,
-- occurrences + 1) instead of creating a new one.  resolved_at is moved
-- back with UPDATE.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;

-- Times are not printed: a value that is a timestamp shows as "(time)".
CREATE FUNCTION pg_temp.masked(d jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT COALESCE(jsonb_object_agg(e.key,
			CASE WHEN jsonb_typeof(e.value) = 'string'
				  AND e.value #>> '{}' ~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d'
				 THEN '"(time)"'::jsonb ELSE e.value END), '{}')
	  FROM jsonb_each(d) e
$$;
CREATE FUNCTION pg_temp.state()
RETURNS TABLE (id bigint, key text, severity text, status text, occurrences integer,
			   snoozed boolean, silence_id bigint, flapping boolean, resolved_by text,
			   resolution_note text)
LANGUAGE sql AS $$
	SELECT i.id, i.key, i.severity, i.status, i.occurrences,
		   i.snoozed_until IS NOT NULL, i.silence_id, i.flapping,
		   CASE WHEN i.resolved_by = current_user THEN '(current_user)' ELSE i.resolved_by END,
		   i.resolution_note
	  FROM gate_bridge.incidents i ORDER BY i.id
$$;
CREATE FUNCTION pg_temp.timeline()
RETURNS TABLE (id bigint, incident_id bigint, event text, actor text,
			   detail jsonb, silenced boolean)
LANGUAGE sql AS $$
	SELECT ev.id, ev.incident_id, ev.event,
		   CASE WHEN ev.actor = current_user THEN '(current_user)' ELSE ev.actor END,
		   pg_temp.masked(ev.detail - 'created_at'), ev.silenced
	  FROM gate_bridge.incident_events ev ORDER BY ev.id
$$;
CREATE FUNCTION pg_temp.violation(agent text, severity text DEFAULT 'error')
RETURNS bigint LANGUAGE sql AS $$
	SELECT gate_bridge.on_budget_violation(jsonb_build_object(
		'agent', agent, 'budget_type', 'quality', 'severity', severity,
		'actual', 0.5, 'threshold', 0.7))
$$;

SHOW gate_bridge.reopen_window;
-- flapping is flapping.sql's: off here
SET gate_bridge.flap_threshold = 0;

-- off (0): a new incident
SELECT pg_temp.violation('re.agent') AS id;
SELECT gate_bridge.resolve(1, 'regress_alice', 'first fix');
SELECT pg_temp.violation('re.agent') AS id;
SELECT * FROM pg_temp.state();

SET gate_bridge.reopen_window = '10min';
SHOW gate_bridge.reopen_window;
-- within the window: incident 2 is reopened, a critical violation raising it
SELECT gate_bridge.ack(2, 'regress_bob');
SELECT gate_bridge.resolve(2, 'regress_bob', 'second fix');
SELECT pg_temp.violation('re.agent', 'critical') AS id;
SELECT * FROM pg_temp.state();
SELECT i.status, i.resolved_at IS NULL AS resolved_at_cleared, i.acked_at IS NULL AS ack_cleared
  FROM gate_bridge.incidents i WHERE i.id = 2;
SELECT * FROM pg_temp.timeline() WHERE incident_id = 2;
-- it folds repeats as before
SELECT pg_temp.violation('re.agent') AS id;
SELECT id, status, occurrences FROM gate_bridge.incidents WHERE id = 2;

-- just inside the window (9 min 50 s ago): reopened again
SELECT gate_bridge.resolve(2, 'regress_bob', 'third fix');
UPDATE gate_bridge.incident_rows SET resolved_at = now() - interval '9 minutes 50 seconds'
 WHERE id = 2;
SELECT pg_temp.violation('re.agent') AS id;
SELECT id, status, occurrences FROM gate_bridge.incidents WHERE id = 2;

-- outside the window (10 min 10 s ago): a new incident, and 2 stays resolved
SELECT gate_bridge.resolve(2, 'regress_bob', 'fourth fix');
UPDATE gate_bridge.incident_rows SET resolved_at = now() - interval '10 minutes 10 seconds'
 WHERE id = 2;
SELECT pg_temp.violation('re.agent') AS id;
SELECT * FROM pg_temp.state();
SELECT id, incident_id, event, actor, detail, silenced FROM pg_temp.timeline()
 WHERE incident_id >= 2 ORDER BY id;
SELECT key, created FROM gate_bridge.incident_keys;

-- A reopened incident under a silence is silenced again.
SELECT gate_bridge.resolve(3, 'regress_alice');
SELECT gate_bridge.silence('re.*', '1 hour', 'reopen while silenced');
SELECT pg_temp.violation('re.agent') AS id;
SELECT * FROM pg_temp.state() WHERE id = 3;
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id = 3;

-------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------
SET gate_bridge.reopen_window = 0;
SHOW gate_bridge.reopen_window;
SET gate_bridge.reopen_window = '366d';
SHOW gate_bridge.reopen_window;
SET gate_bridge.reopen_window = -1;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.reopen_window = '367d';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.reopen_window = 'a while';
\echo :LAST_ERROR_SQLSTATE
RESET gate_bridge.reopen_window;
RESET gate_bridge.flap_threshold;
CREATE ROLE regress_reopen_app;
SET ROLE regress_reopen_app;
SET gate_bridge.reopen_window = '1h';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_reopen_app;
SHOW gate_bridge.reopen_window;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
