-- tick(): the time-driven transitions in one call, counted: snooze expiry,
-- silence end, quiet auto-resolve and flapping end; a second tick has
-- nothing left to do.  Times are moved back with UPDATE.
\i test/sql/include/lifecycle.sql

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_quiet)
VALUES ('tick.quiet', 'quality', 0.875, '1 hour');

SELECT gate_bridge.tick();

-- 1: snoozed; 2: silenced; 3: quiet; 4..5: a flapping key
SELECT pg_temp.violation('tick.snooze') AS id;
SELECT gate_bridge.snooze(1, '1 hour', 'regress_alice') IS NOT NULL AS snoozed;
SELECT gate_bridge.silence('tick.silence', '1 hour', 'tick test');
SELECT pg_temp.violation('tick.silence') AS id;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('tick.quiet', 0.5);
SELECT pg_temp.violation('tick.flap') AS id;
SELECT gate_bridge.resolve(4);
SELECT pg_temp.violation('tick.flap') AS id;
SELECT gate_bridge.resolve(5);
SELECT * FROM pg_temp.state();
SELECT gate_bridge.tick();

-- everything falls due
UPDATE gate_bridge.incident_rows SET snoozed_until = now() - interval '1 second' WHERE id = 1;
UPDATE gate_bridge.silences SET starts_at = now() - interval '2 hours',
	   ends_at = now() - interval '1 hour';
SELECT gate_bridge.compact_folds(NULL) >= 0 AS compacted;
UPDATE gate_bridge.incident_rows SET last_seen_at = now() - interval '2 hours' WHERE id = 3;
UPDATE gate_bridge.incident_keys
   SET state_changes = ARRAY(SELECT t - interval '2 hours' FROM unnest(state_changes) t),
	   flapping_since = flapping_since - interval '2 hours'
 WHERE flapping_since IS NOT NULL;
UPDATE gate_bridge.incident_rows SET resolved_at = resolved_at - interval '2 hours'
 WHERE resolved_at IS NOT NULL;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state();
-- the transitions tick() made (the creation under the silence was marked silenced then)
SELECT id, incident_id, event, actor, detail - 'summary' AS detail, silenced
  FROM pg_temp.timeline() WHERE actor = 'gate_bridge' AND event <> 'silenced' ORDER BY id;

-- A role granted EXECUTE on tick() may run it (SECURITY DEFINER); others not.
CREATE ROLE regress_tick_operator;
GRANT USAGE ON SCHEMA gate_bridge TO regress_tick_operator;
SET ROLE regress_tick_operator;
SELECT gate_bridge.tick();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION gate_bridge.tick() TO regress_tick_operator;
SET ROLE regress_tick_operator;
SELECT gate_bridge.tick();
RESET ROLE;
REVOKE ALL ON FUNCTION gate_bridge.tick() FROM regress_tick_operator;
REVOKE USAGE ON SCHEMA gate_bridge FROM regress_tick_operator;
DROP ROLE regress_tick_operator;

-- In a read-only transaction it refuses.
BEGIN READ ONLY;
SELECT gate_bridge.tick();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
