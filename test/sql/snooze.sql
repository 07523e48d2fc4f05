-- Snoozes: snooze() acknowledges an incident until a time; tick() puts it
-- back to open when that passes (snooze_expired); resolving ends the snooze.
\i test/sql/include/lifecycle.sql

SELECT gate_bridge.on_budget_violation(jsonb_build_object(
		'agent', 'snooze.' || n, 'budget_type', 'quality', 'severity', 'error',
		'actual', 0.5, 'threshold', 0.7)) AS id
  FROM generate_series(1, 3) AS n;

-- snooze an open incident: acknowledged until now() + duration
CREATE TEMP TABLE snoozed AS
SELECT now() AS t0, gate_bridge.snooze(1, '1 hour', 'regress_alice', 'deploy in progress') AS until,
	   clock_timestamp() AS t1;
SELECT s.until BETWEEN s.t0 + interval '1 hour' AND s.t1 + interval '1 hour' AS until_in_an_hour,
	   i.snoozed_until = s.until AS snoozed_until_returned,
	   (ev.detail->>'until')::timestamptz = s.until AS event_until_returned,
	   i.acked_by
  FROM snoozed s, gate_bridge.incidents i, gate_bridge.incident_events ev
 WHERE i.id = 1 AND ev.incident_id = 1 AND ev.event = 'snoozed';
-- an acknowledged incident can be snoozed too, and snoozed again
SELECT gate_bridge.ack(2, 'regress_bob');
SELECT gate_bridge.snooze(2, '2 hours') IS NOT NULL AS snoozed;
SELECT gate_bridge.snooze(incident_id => 2, duration => '30 days', actor => 'regress_bob') IS NOT NULL AS snoozed_again;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.timeline();

-- Nothing is due: tick() makes no transition.
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state();

-- The snooze of 1 runs out (backdated): tick() reopens it, once.
UPDATE gate_bridge.incident_rows SET snoozed_until = now() - interval '1 second' WHERE id = 1;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state();
SELECT i.status, i.acked_at IS NULL AS ack_cleared, i.acked_by
  FROM gate_bridge.incidents i WHERE i.id = 1;
SELECT * FROM pg_temp.timeline() WHERE incident_id = 1;

-- Resolving ends a snooze: snoozed_until is cleared, and no tick reopens it.
SELECT gate_bridge.resolve(2, 'regress_bob', 'fixed while snoozed');
SELECT * FROM pg_temp.state() WHERE id = 2;
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.timeline() WHERE incident_id = 2;

-- A snoozed incident that sees the violation again stays snoozed.
SELECT gate_bridge.snooze(3, '1 day') IS NOT NULL AS snoozed;
SELECT gate_bridge.on_budget_violation(
	'{"agent": "snooze.3", "budget_type": "quality", "severity": "error",
	  "actual": 0.5, "threshold": 0.7}') AS id;
SELECT * FROM pg_temp.state() WHERE id = 3;

-------------------------------------------------------------------------------
-- Bad input is refused and changes nothing.
-------------------------------------------------------------------------------
SELECT gate_bridge.snooze(3, '0');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '-1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '1 day -25 hours');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '31 days');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '30 days 1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '2 months');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(99, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(NULL, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(2, '1 hour');			-- resolved
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '1 hour', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '1 hour', '');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.snooze(3, '1 hour', 'regress_bob', repeat('n', 8193));
\echo :LAST_ERROR_SQLSTATE
BEGIN READ ONLY;
SELECT gate_bridge.snooze(3, '1 hour');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT * FROM pg_temp.state();
SELECT count(*) AS events FROM gate_bridge.incident_events;

-- Only the roles it is granted to may snooze.
CREATE ROLE regress_snooze_reader;
GRANT USAGE ON SCHEMA gate_bridge TO regress_snooze_reader;
SET ROLE regress_snooze_reader;
SELECT gate_bridge.snooze(3, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.tick();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE USAGE ON SCHEMA gate_bridge FROM regress_snooze_reader;
DROP ROLE regress_snooze_reader;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
