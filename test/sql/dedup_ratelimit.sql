-- Deduplication and rate limiting, counted in gate_bridge.stats.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

CREATE FUNCTION pg_temp.incidents(key_like text)
RETURNS TABLE (id bigint, key text, severity text, status text, occurrences int)
LANGUAGE sql AS $$
	SELECT i.id, i.key, i.severity, i.status, i.occurrences
	  FROM gate_bridge.incidents i WHERE i.key LIKE key_like ORDER BY i.id
$$;
CREATE FUNCTION pg_temp.stats()
RETURNS TABLE (kind text, created bigint, deduplicated bigint, rate_limited bigint)
LANGUAGE sql AS $$
	SELECT s.kind, s.created, s.deduplicated, s.rate_limited
	  FROM gate_bridge.stats s ORDER BY s.kind
$$;

SELECT * FROM pg_temp.stats();

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('dedup.agent', 'quality', 0.9, 0.8, 0.7);

-------------------------------------------------------------------------------
-- While an incident is open, further violations fold into it.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.85);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_%');
SELECT pg_sleep(0.01);
-- a worse violation is folded in too: the incident keeps its severity
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality)
SELECT 'dedup.agent', 0.6 FROM generate_series(1, 3);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_%');
SELECT last_seen_at > first_seen_at AS last_seen_moved
  FROM gate_bridge.incidents WHERE key = 'BUDGET_dedup.agent_quality';
-- a clean row changes nothing
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.95);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_%');
-- deduplicated violations write no timeline rows
SELECT incident_id, event FROM gate_bridge.incident_events ORDER BY id;
SELECT * FROM pg_temp.stats();
SELECT kind, key, created, rate_limited FROM gate_bridge.incident_keys ORDER BY kind, key;

-- Acknowledged is still unresolved: violations keep folding in.
SELECT gate_bridge.ack(1, 'regress_operator');
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.85);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_%');

-- Another key of the same agent is another incident.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error)
VALUES ('dedup.agent', 'cost', 1);
INSERT INTO gate_bridge.eval_results (agent, quality, cost_usd) VALUES ('dedup.agent', 0.85, 2);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_%');

-- The SQL functions fold into the same incident as the trigger.
SELECT gate_bridge.on_budget_violation(
	'{"agent": "dedup.agent", "budget_type": "quality", "severity": "critical",
	  "actual": 0.1, "threshold": 0.7}') AS created_id;
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');

-------------------------------------------------------------------------------
-- After resolve the next violation opens a new incident; at most
-- gate_bridge.rate_limit (3) incidents per key per gate_bridge.rate_window.
-------------------------------------------------------------------------------
SELECT gate_bridge.resolve(1, 'regress_operator', 'fixed the prompt');
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_dedup.agent_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_dedup.agent_quality' AND status <> 'resolved';
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
-- the fourth within the hour is rate limited: nothing is created
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.1);
SELECT gate_bridge.on_budget_violation(
	'{"agent": "dedup.agent", "budget_type": "quality", "severity": "critical",
	  "actual": 0.1, "threshold": 0.7}') AS created_id;
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
SELECT kind, key, created, rate_limited, last_created_at IS NOT NULL AS has_created_at,
	   last_rate_limited_at IS NOT NULL AS has_rate_limited_at
  FROM gate_bridge.incident_keys ORDER BY kind, key;
SELECT * FROM pg_temp.stats();
-- other keys are not affected
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.other', 0.1);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error)
VALUES ('dedup.other', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.other', 0.1);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.other_%');

-- A larger limit lets the next one through; the window counts creations,
-- not resolutions.
SET gate_bridge.rate_limit = 4;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_dedup.agent_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
-- a smaller limit applies at once
SET gate_bridge.rate_limit = 1;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.other', 0.1);
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_dedup.other_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.other', 0.1);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.other_%');
RESET gate_bridge.rate_limit;

-- A short window: once the earlier incidents are out of it, a new one opens.
SET gate_bridge.rate_window = '1s';
SELECT pg_sleep(1.2);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
SELECT * FROM pg_temp.incidents('BUDGET_dedup.agent_quality');
RESET gate_bridge.rate_window;
SELECT * FROM pg_temp.stats();

-- The counters do not depend on what the server log is told.
SET log_min_messages = panic;
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_dedup.agent_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dedup.agent', 0.75);
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('dedup.agent', 5);
RESET log_min_messages;
SELECT * FROM pg_temp.stats();
SELECT kind, key, created, rate_limited FROM gate_bridge.incident_keys ORDER BY kind, key;

-------------------------------------------------------------------------------
-- Every kind is deduplicated and rate limited alike.
-------------------------------------------------------------------------------
SELECT gate_bridge.on_planner_regression('v9', '{}', '{}', '{}') AS created_id;
SELECT gate_bridge.on_planner_regression('v9', '{}', '{}', '{}') AS created_id;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('dedup.inv', '{no_pii}');
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('dedup.inv', '{no_pii}');
SELECT gate_bridge.on_invariant_failure('{"agent": "dedup.inv"}', '{"invariant": "no_pii"}') AS created_id;
SELECT * FROM pg_temp.incidents('PLANNER_%');
SELECT * FROM pg_temp.incidents('INVARIANT_%');
DO $$
BEGIN
	FOR i IN 1..3 LOOP
		PERFORM gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
		  WHERE kind IN ('planner', 'invariant') AND status <> 'resolved';
		PERFORM gate_bridge.on_planner_regression('v9', '{}', '{}', '{}');
		INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
		VALUES ('dedup.inv', '{no_pii}');
		COMMIT;		-- the trigger's violations are decided at commit
	END LOOP;
END
$$;
SELECT * FROM pg_temp.incidents('PLANNER_%');
SELECT * FROM pg_temp.incidents('INVARIANT_%');
SELECT * FROM pg_temp.stats();

-------------------------------------------------------------------------------
-- A rolled-back creation counts for nothing.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error)
VALUES ('dedup.rollback', 'latency', 100);
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('dedup.rollback', 200);
-- decided at commit: nothing yet
SELECT key, status FROM gate_bridge.incidents WHERE agent = 'dedup.rollback';
ROLLBACK;
SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'dedup.rollback';
SELECT count(*) FROM gate_bridge.incident_keys WHERE key = 'BUDGET_dedup.rollback_latency';
-- so three can still be created within the window
DO $$
BEGIN
	FOR i IN 1..4 LOOP
		PERFORM gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
		  WHERE agent = 'dedup.rollback' AND status <> 'resolved';
		INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms)
		VALUES ('dedup.rollback', 200);
		COMMIT;
	END LOOP;
END
$$;
SELECT * FROM pg_temp.incidents('BUDGET_dedup.rollback_%');
SELECT created, rate_limited FROM gate_bridge.incident_keys
 WHERE key = 'BUDGET_dedup.rollback_latency';

-------------------------------------------------------------------------------
-- A key is (kind, agent, subject), not its text.  These three agents and
-- invariants all spell INVARIANT_billing_bot_no_pii, yet they are three keys:
-- three incidents, each folding its own repeats and rate-limited on its own.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES
	('billing', '{bot_no_pii}'), ('billing_bot', '{no_pii}'), ('billing_bot_no', '{pii}'),
	('billing', '{bot_no_pii}'), ('billing', '{bot_no_pii}');
SELECT id, key, agent, subject, summary, occurrences FROM gate_bridge.incidents
 WHERE key = 'INVARIANT_billing_bot_no_pii' ORDER BY id;
-- Resolving one of them leaves the others alone, and the rate limit of one
-- does not count the others' incidents.
DO $$
BEGIN
	FOR i IN 1..4 LOOP
		PERFORM gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
		  WHERE agent = 'billing' AND status <> 'resolved';
		INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
		VALUES ('billing', '{bot_no_pii}');
		COMMIT;
	END LOOP;
END
$$;
SELECT agent, subject, status, count(*) FROM gate_bridge.incidents
 WHERE key = 'INVARIANT_billing_bot_no_pii' GROUP BY agent, subject, status ORDER BY 1, 2, 3;
SELECT kind, key, agent, subject, created, rate_limited FROM gate_bridge.incident_keys
 WHERE key = 'INVARIANT_billing_bot_no_pii' ORDER BY agent;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('billing_bot', '{no_pii}');
SELECT agent, occurrences FROM gate_bridge.incidents
 WHERE key = 'INVARIANT_billing_bot_no_pii' AND status <> 'resolved' ORDER BY agent;

-- Nothing ever had two unresolved incidents for one key.
SELECT kind, agent, subject, count(*) FROM gate_bridge.incidents
 WHERE status <> 'resolved' GROUP BY kind, agent, subject HAVING count(*) > 1;
-- The counters agree with the incidents table.
SELECT k.kind, k.key, k.created, count(i.id) AS incidents
  FROM gate_bridge.incident_keys k
  LEFT JOIN gate_bridge.incidents i
	ON i.kind = k.kind AND i.agent = k.agent AND i.subject = k.subject
 GROUP BY k.kind, k.key, k.agent, k.subject, k.created
HAVING k.created <> count(i.id);

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
