-- Escalation in place: a worse violation for an unresolved incident raises
-- its severity (escalated, from and to); a milder one never lowers it.
\i test/sql/include/lifecycle.sql

SELECT pg_temp.violation('esc.agent', 'warning') AS id;
SELECT * FROM pg_temp.state();
-- as bad: folded, no event
SELECT pg_temp.violation('esc.agent', 'warning') AS id;
-- sev3 -> sev2
SELECT pg_temp.violation('esc.agent', 'error') AS id;
SELECT * FROM pg_temp.state();
-- acknowledged, then sev2 -> sev1: it stays acknowledged
SELECT gate_bridge.ack(1, 'regress_alice');
SELECT pg_temp.violation('esc.agent', 'critical') AS id;
SELECT * FROM pg_temp.state();
-- milder ones never lower it
SELECT pg_temp.violation('esc.agent', 'warning') AS id;
SELECT pg_temp.violation('esc.agent', 'error') AS id;
SELECT pg_temp.violation('esc.agent', 'critical') AS id;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.timeline();
SELECT sev1, sev2, sev3, open, ack FROM gate_bridge.incident_counts;

-- Through the trigger: several rows of one transaction, decided at commit,
-- raise the incident to the worst of them in one step.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('esc.*', 'quality', 0.875, 0.75, 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('esc.rows', 0.8);
SELECT * FROM pg_temp.state() WHERE id = 2;
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('esc.rows', 0.7), ('esc.rows', 0.25), ('esc.rows', 0.8);
COMMIT;
SELECT * FROM pg_temp.state() WHERE id = 2;
SELECT t.id, t.event, t.detail - 'eval_id' AS detail, t.detail ? 'eval_id' AS has_eval_id, t.silenced
  FROM pg_temp.timeline() t WHERE t.incident_id = 2;
SELECT (ev.detail->>'eval_id')::bigint = r.id AS eval_id_is_the_worst_row
  FROM gate_bridge.incident_events ev, gate_bridge.eval_results r
 WHERE ev.incident_id = 2 AND ev.event = 'escalated' AND r.quality = 0.25;

-- An escalation of a silenced incident is silenced; a resolved incident is
-- not escalated (the next violation opens a new one).
SELECT gate_bridge.silence('esc.agent', '1 hour', 'escalations held');
SELECT pg_temp.violation('esc.agent', 'warning') IS NULL AS folded;
SELECT gate_bridge.resolve(1, 'regress_alice');
SELECT pg_temp.violation('esc.agent', 'warning') AS id;
SELECT pg_temp.violation('esc.agent', 'critical') AS id;
SELECT * FROM pg_temp.state() WHERE id <> 2;
SELECT id, incident_id, event, detail, silenced FROM pg_temp.timeline() WHERE incident_id = 3;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
