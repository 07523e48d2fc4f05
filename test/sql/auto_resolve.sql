-- Auto-resolve: budgets.resolve_after (N passing rows in a row of the agent
-- resolve its incident; a violation resets the count), run_gates with
-- create_incidents (a passing window), and budgets.resolve_quiet (tick(),
-- when no violation came for that long).  NULL: only by hand.
\i test/sql/include/lifecycle.sql

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, resolve_after)
VALUES ('ar.*', 'quality', 0.875, 0.75, 0.5, 3),
	   ('ar.*', 'invariants', 0, NULL, NULL, 2);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('manual.*', 'quality', 0.875, 0.75, 0.5);

-- a violation opens the incident; two passing rows, then a violation:
-- the count starts again
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 0.7);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 0.9);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 0.95);
SELECT key, recovery_passes FROM gate_bridge.incident_keys ORDER BY key;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 0.8);
SELECT key, recovery_passes FROM gate_bridge.incident_keys ORDER BY key;
-- rows without the metric do not count
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('ar.agent', 10);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 0.9), ('ar.agent', 0.9);
SELECT * FROM pg_temp.state();
-- the third passing row in a row resolves it
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 1);
SELECT * FROM pg_temp.state();
SELECT id, incident_id, event, actor, detail - 'last_eval_id' AS detail,
	   (detail->>'last_eval_id')::bigint = (SELECT max(id) FROM gate_bridge.eval_results) AS last_eval_id,
	   silenced
  FROM pg_temp.timeline();
-- more passing rows do nothing
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.agent', 1), ('ar.agent', 1), ('ar.agent', 1);
SELECT count(*) AS events FROM gate_bridge.incident_events;

-- A violation and enough passing rows in one transaction: the rows after
-- the violation count, at commit.
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES
	('ar.batch', 0.9), ('ar.batch', 0.6), ('ar.batch', 0.9), ('ar.batch', 0.9);
COMMIT;
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.batch%';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ar.batch', 0.9);
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.batch%';

-- Without resolve_after, passing rows resolve nothing.
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('manual.agent', 0.7);
INSERT INTO gate_bridge.eval_results (agent, quality)
SELECT 'manual.agent', 1 FROM generate_series(1, 5);
SELECT * FROM pg_temp.state() WHERE key LIKE '%manual%';

-- Invariants: a passing row names invariants_failed (not NULL) without
-- the incident's invariant.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', '{no_pii}');
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.inv%';
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', NULL);
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', '{}');
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.inv%';
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', '{no_pii}');
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', '{}');
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.inv%';
-- another invariant's failure is a pass for this one (and opens its own)
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('ar.inv', '{tone}');
SELECT * FROM pg_temp.state() WHERE key LIKE '%ar.inv%';
SELECT t.incident_id, t.event, t.actor, t.detail - 'last_eval_id' AS detail
  FROM pg_temp.timeline() t JOIN gate_bridge.incidents i ON i.id = t.incident_id
 WHERE i.key LIKE '%ar.inv%' AND t.event = 'auto_resolved';

-------------------------------------------------------------------------------
-- run_gates(create_incidents => true): a passing window auto-resolves the
-- budget incident, when the budget auto-resolves at all.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_after, lookback)
VALUES ('gate.auto', 'quality', 0.875, 1000, '1 day');
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback)
VALUES ('gate.manual', 'quality', 0.875, '1 day');
SELECT pg_temp.violation('gate.auto') AS id \gset auto_
SELECT pg_temp.violation('gate.manual') AS id \gset manual_
INSERT INTO gate_bridge.eval_results (agent, quality, created_at) VALUES
	('gate.auto', 0.95, now() - interval '1 hour'), ('gate.auto', 0.9, now() - interval '2 hours'),
	('gate.manual', 0.95, now() - interval '1 hour');
SELECT r.agent, r.passed, r.samples, r.incident_ids
  FROM gate_bridge.run_gates(create_incidents => true) r
 WHERE r.agent LIKE 'gate.%' ORDER BY r.agent;
SELECT * FROM pg_temp.state() WHERE id IN (:auto_id, :manual_id);
SELECT t.incident_id, t.event, t.actor, t.detail, t.silenced
  FROM pg_temp.timeline() t WHERE t.incident_id IN (:auto_id, :manual_id);
-- (the incident without auto-resolve is resolved by hand)
SELECT gate_bridge.resolve(:manual_id, 'regress_alice');

-------------------------------------------------------------------------------
-- resolve_quiet: tick() resolves an incident that saw no violation for that
-- long.  The folded violations are compacted into the row first, then its
-- last_seen_at is moved back.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_quiet)
VALUES ('quiet.*', 'quality', 0.875, '1 hour');
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('quiet.agent', 0.7);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('quiet.agent', 0.7);
SELECT id AS quiet_id FROM gate_bridge.incidents WHERE agent = 'quiet.agent' \gset
SELECT gate_bridge.tick();
SELECT gate_bridge.compact_folds(NULL) >= 0 AS compacted;
UPDATE gate_bridge.incident_rows SET last_seen_at = now() - interval '59 minutes'
 WHERE id = :quiet_id;
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state() WHERE id = :quiet_id;
UPDATE gate_bridge.incident_rows SET last_seen_at = now() - interval '61 minutes'
 WHERE id = :quiet_id;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state() WHERE id = :quiet_id;
SELECT t.event, t.actor, t.detail, t.silenced
  FROM pg_temp.timeline() t WHERE t.incident_id = :quiet_id;

-- A fold newer than the row's last_seen_at keeps it unresolved.
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('quiet.folds', 0.7);
SELECT id AS folds_id FROM gate_bridge.incidents WHERE agent = 'quiet.folds' \gset
SELECT gate_bridge.compact_folds(NULL) >= 0 AS compacted;
UPDATE gate_bridge.incident_rows SET last_seen_at = now() - interval '2 hours'
 WHERE id = :folds_id;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('quiet.folds', 0.7);
SELECT gate_bridge.tick();
SELECT id, status, occurrences FROM gate_bridge.incidents WHERE id = :folds_id;

-- resolve_quiet and resolve_after are checked
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_after)
VALUES ('bad.*', 'quality', 0.875, 0);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_after)
VALUES ('bad.*', 'quality', 0.875, 1000001);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_quiet)
VALUES ('bad.*', 'quality', 0.875, '0');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, resolve_quiet)
VALUES ('bad.*', 'quality', 0.875, '367 days');
\echo :LAST_ERROR_SQLSTATE

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
