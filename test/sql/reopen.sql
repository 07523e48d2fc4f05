-- Reopen window: a violation for a key whose incident was resolved less than
-- gate_bridge.reopen_window ago reopens that incident (reopened,
-- occurrences + 1) instead of creating a new one.  resolved_at is moved
-- back with UPDATE.
\i test/sql/include/lifecycle.sql

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
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
