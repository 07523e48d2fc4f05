-- Flapping: gate_bridge.flap_threshold state changes (created, reopened,
-- resolved, auto_resolved) of a key within gate_bridge.flap_window mark its
-- incident flapping (one flapping event); while flapping, its creations are
-- silenced and auto-resolve holds it open; tick() ends it after a full window
-- without a state change (flapping_ended).  Times are moved back with UPDATE.
\i test/sql/include/lifecycle.sql

CREATE FUNCTION pg_temp.key()
RETURNS TABLE (key text, state_changes integer, flapping boolean)
LANGUAGE sql AS $$
	SELECT k.key, cardinality(k.state_changes), k.flapping_since IS NOT NULL
	  FROM gate_bridge.incident_keys k ORDER BY k.key
$$;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, resolve_after)
VALUES ('flap.*', 'quality', 0.875, 0.75, 0.5, 1);

SHOW gate_bridge.flap_threshold;
SHOW gate_bridge.flap_window;

-- three state changes: not yet flapping
SELECT pg_temp.violation('flap.agent') AS id;
SELECT gate_bridge.resolve(1, 'regress_alice');
SELECT pg_temp.violation('flap.agent') AS id;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.key();
-- the fourth (a resolution): flapping, announced once
SELECT gate_bridge.resolve(2, 'regress_alice');
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.key();
SELECT * FROM pg_temp.timeline();

-- while flapping: the next incident's creation is silenced (the incident
-- is not: its other events are announced)
SELECT pg_temp.violation('flap.agent') AS id;
SELECT * FROM pg_temp.state() WHERE id = 3;
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id = 3;
SELECT gate_bridge.ack(3, 'regress_bob');
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id = 3;

-- while flapping, auto-resolve holds it open: a passing row (resolve_after
-- is 1) does not resolve it
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('flap.agent', 0.95);
SELECT * FROM pg_temp.state() WHERE id = 3;
SELECT count(*) AS flapping_events FROM gate_bridge.incident_events WHERE event = 'flapping';

-- not yet a full window without a state change: tick() leaves it
SELECT gate_bridge.tick();
UPDATE gate_bridge.incident_keys
   SET state_changes = ARRAY(SELECT t - interval '59 minutes' FROM unnest(state_changes) t),
	   flapping_since = flapping_since - interval '59 minutes';
UPDATE gate_bridge.incident_rows SET resolved_at = resolved_at - interval '59 minutes'
 WHERE resolved_at IS NOT NULL;
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.key();
-- a full window: flapping ends, once
UPDATE gate_bridge.incident_keys
   SET state_changes = ARRAY(SELECT t - interval '2 minutes' FROM unnest(state_changes) t),
	   flapping_since = flapping_since - interval '2 minutes';
UPDATE gate_bridge.incident_rows SET resolved_at = resolved_at - interval '2 minutes'
 WHERE resolved_at IS NOT NULL;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.key();
SELECT * FROM pg_temp.timeline() WHERE id > 5;

-- no longer flapping: the next passing row auto-resolves it
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('flap.agent', 0.95);
SELECT * FROM pg_temp.state() WHERE id = 3;
SELECT id, incident_id, event, actor, detail - 'last_eval_id' AS detail, silenced
  FROM pg_temp.timeline() WHERE incident_id = 3;

-- Off (0): no flapping however often the key changes state.
SET gate_bridge.flap_threshold = 0;
SELECT gate_bridge.resolve(pg_temp.violation('flap.off'), 'regress_alice');
SELECT gate_bridge.resolve(pg_temp.violation('flap.off'), 'regress_alice');
SELECT gate_bridge.resolve(pg_temp.violation('flap.off'), 'regress_alice');
SELECT key, flapping FROM pg_temp.key() WHERE key LIKE '%flap.off%';
RESET gate_bridge.flap_threshold;

-- A smaller threshold and window.
SET gate_bridge.flap_threshold = 2;
SET gate_bridge.flap_window = '10min';
SELECT pg_temp.violation('flap.two') AS id \gset
SELECT gate_bridge.resolve(:id, 'regress_alice');
SELECT i.flapping FROM gate_bridge.incidents i WHERE i.id = :id;
SELECT event, detail FROM pg_temp.timeline() WHERE incident_id = :id;
RESET gate_bridge.flap_threshold;
RESET gate_bridge.flap_window;

-------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------
SET gate_bridge.flap_threshold = 64;
SHOW gate_bridge.flap_threshold;
SET gate_bridge.flap_threshold = 65;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_threshold = -1;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_threshold = 'often';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_window = '7d';
SHOW gate_bridge.flap_window;
SET gate_bridge.flap_window = 0;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_window = '-1h';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_window = '8d';
\echo :LAST_ERROR_SQLSTATE
RESET gate_bridge.flap_threshold;
RESET gate_bridge.flap_window;
CREATE ROLE regress_flap_app;
SET ROLE regress_flap_app;
SET gate_bridge.flap_threshold = 2;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.flap_window = '1min';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_flap_app;
SHOW gate_bridge.flap_threshold;
SHOW gate_bridge.flap_window;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
