-- Bad input through every entry point: each is refused with a clear
-- message and its SQLSTATE, and a refused statement leaves nothing behind.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

\set ECHO none
\i test/sql/include/try.sql
\set ECHO all

-- Everything below would open incidents if it were accepted.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('*', 'quality', 0.9, 0.8, 0.7), ('*', 'latency', 100, 200, 300),
	   ('*', 'cost', 1, 2, 3), ('*', 'success_rate', 0.9, 0.8, 0.7);

-------------------------------------------------------------------------------
-- Eval rows
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', 'NaN')$$),
	(2, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', 'Infinity')$$),
	(3, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', '-Infinity')$$),
	(4, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', -0.01)$$),
	(5, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', 1.01)$$),
	(6, $$INSERT INTO gate_bridge.eval_results (agent, success_rate) VALUES ('e.agent', 'NaN')$$),
	(7, $$INSERT INTO gate_bridge.eval_results (agent, success_rate) VALUES ('e.agent', 1.5)$$),
	(8, $$INSERT INTO gate_bridge.eval_results (agent, success_rate) VALUES ('e.agent', -1)$$),
	(9, $$INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('e.agent', 'NaN')$$),
	(10, $$INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('e.agent', 'Infinity')$$),
	(11, $$INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('e.agent', '-Infinity')$$),
	(12, $$INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('e.agent', -1)$$),
	(13, $$INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('e.agent', 'NaN')$$),
	(14, $$INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('e.agent', 'Infinity')$$),
	(15, $$INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('e.agent', -0.5)$$),
	(16, $$INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('e.agent', '-Infinity')$$),
	(17, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('', 0.1)$$),
	(18, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (NULL, 0.1)$$),
	(19, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (repeat('a', 129), 0.1)$$),
	(20, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (repeat('€', 43), 0.1)$$),
	(21, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('e.agent', '{NULL}')$$),
	(22, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('e.agent', '{a,NULL}')$$),
	(23, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('e.agent', '{""}')$$),
	(24, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('e.agent', '{{a},{b}}')$$),
	-- "INVARIANT_" || agent || "_" || invariant would be 256 bytes
	(25, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('a', ARRAY[repeat('x', 244)])$$),
	(26, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES (repeat('a', 128), ARRAY['ok', repeat('x', 117)])$$),
	-- a violation in the same row does not open its incident either
	(27, $$INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed) VALUES ('e.agent', 0.1, ARRAY[repeat('x', 300)])$$),
	-- one bad row undoes the rows before it, and their incidents
	(28, $$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.first', 0.1), ('e.second', 'NaN')$$),
	(29, $$INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'e.many' || g, CASE WHEN g < 50 THEN 0.1 ELSE 2 END FROM generate_series(1, 50) g$$)
  ) AS t(n, stmt)
 ORDER BY n;
SELECT (SELECT count(*) FROM gate_bridge.eval_results) AS eval_rows,
	   (SELECT count(*) FROM gate_bridge.incidents) AS incidents,
	   (SELECT count(*) FROM gate_bridge.incident_events) AS events,
	   (SELECT count(*) FROM gate_bridge.incident_keys) AS keys;

-- The same, as psql shows two of them.
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.agent', 'NaN');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('a', ARRAY[repeat('x', 244)]);
\echo :LAST_ERROR_SQLSTATE

-- The limits themselves are accepted (committed, for the trigger decides at
-- commit; removed after).
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$INSERT INTO gate_bridge.eval_results (agent, quality, success_rate, latency_p95_ms, cost_usd) VALUES ('e.limits', 0, 1, 0, 0)$$),
	(2, $$INSERT INTO gate_bridge.eval_results (agent, quality, success_rate, latency_p95_ms, cost_usd) VALUES ('e.limits', 1, 0, 1e308, 1e308)$$),
	(3, $$INSERT INTO gate_bridge.eval_results (agent) VALUES (repeat('a', 128))$$),
	(4, $$INSERT INTO gate_bridge.eval_results (agent) VALUES (repeat('€', 42) || 'ab')$$),
	(5, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('a', ARRAY[repeat('x', 243)])$$),
	(6, $$INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('a', '{}')$$)
  ) AS t(n, stmt)
 ORDER BY n;
SELECT octet_length(key) AS longest_key FROM gate_bridge.incidents
 WHERE kind = 'invariant' ORDER BY 1 DESC LIMIT 1;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-------------------------------------------------------------------------------
-- Budgets
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('b.agent', 'speed', 1)$$),
	(2, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('b.agent', NULL, 1)$$),
	(3, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type) VALUES ('b.agent', 'cost')$$),
	(4, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('b.agent', 'cost', 'NaN')$$),
	(5, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('b.agent', 'cost', 'Infinity')$$),
	(6, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('b.agent', 'cost', '-Infinity')$$),
	(7, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback) VALUES ('b.agent', 'cost', 1, '0')$$),
	(8, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback) VALUES ('b.agent', 'cost', 1, '-1 day')$$),
	(9, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES (NULL, 'cost', 1)$$),
	(10, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('', 'cost', 1)$$),
	(11, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('warehouse*', 'cost', 1)$$),
	(12, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('a.*.b', 'cost', 1)$$),
	(13, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('**', 'cost', 1)$$),
	(14, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('.*', 'cost', 1)$$),
	(15, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES (repeat('a', 131), 'cost', 1)$$),
	(16, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('*', 'cost', 1)$$),
	(17, $$UPDATE gate_bridge.budgets SET warning = NULL, error = NULL, critical = NULL WHERE agent_pattern = '*' AND budget_type = 'cost'$$)
  ) AS t(n, stmt)
 ORDER BY n;
SELECT count(*) AS budgets FROM gate_bridge.budgets;

-------------------------------------------------------------------------------
-- on_budget_violation
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.on_budget_violation(NULL)$$),
	(2, $$SELECT gate_bridge.on_budget_violation('null')$$),
	(3, $$SELECT gate_bridge.on_budget_violation('[]')$$),
	(4, $$SELECT gate_bridge.on_budget_violation('"x"')$$),
	(5, $$SELECT gate_bridge.on_budget_violation('{}')$$),
	(6, $$SELECT gate_bridge.on_budget_violation('{"agent": null, "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(7, $$SELECT gate_bridge.on_budget_violation('{"agent": 7, "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(8, $$SELECT gate_bridge.on_budget_violation('{"agent": ["a"], "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(9, $$SELECT gate_bridge.on_budget_violation('{"agent": "", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(10, $$SELECT gate_bridge.on_budget_violation(jsonb_build_object('agent', repeat('a', 129), 'budget_type', 'cost', 'severity', 'error', 'actual', 1, 'threshold', 0))$$),
	(11, $$SELECT gate_bridge.on_budget_violation(jsonb_build_object('agent', repeat('€', 43), 'budget_type', 'cost', 'severity', 'error', 'actual', 1, 'threshold', 0))$$),
	(12, $$SELECT gate_bridge.on_budget_violation('{"agent": "a\u0000b", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(13, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(14, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "speed", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(15, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "Cost", "severity": "error", "actual": 1, "threshold": 0}')$$),
	(16, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": 3, "severity": "error", "actual": 1, "threshold": 0}')$$),
	(17, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "actual": 1, "threshold": 0}')$$),
	(18, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "fatal", "actual": 1, "threshold": 0}')$$),
	(19, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "sev1", "actual": 1, "threshold": 0}')$$),
	(20, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "", "actual": 1, "threshold": 0}')$$),
	(21, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "threshold": 0}')$$),
	(22, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": "1", "threshold": 0}')$$),
	(23, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": true, "threshold": 0}')$$),
	(24, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1}')$$),
	(25, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": {}}')$$),
	(26, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1e400, "threshold": 0}')$$),
	(27, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}', '[1]')$$),
	(28, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}', '"b"')$$),
	(29, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}', NULL, '[]')$$),
	(30, $$SELECT gate_bridge.on_budget_violation('{"agent": "v.agent", "budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}', NULL, '42')$$)
  ) AS t(n, stmt)
 ORDER BY n;

-------------------------------------------------------------------------------
-- on_invariant_failure
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.on_invariant_failure(NULL, '{"invariant": "i"}')$$),
	(2, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', NULL)$$),
	(3, $$SELECT gate_bridge.on_invariant_failure('[]', '{"invariant": "i"}')$$),
	(4, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '"i"')$$),
	(5, $$SELECT gate_bridge.on_invariant_failure('{}', '{"invariant": "i"}')$$),
	(6, $$SELECT gate_bridge.on_invariant_failure('{"agent": ""}', '{"invariant": "i"}')$$),
	(7, $$SELECT gate_bridge.on_invariant_failure(jsonb_build_object('agent', repeat('a', 129)), '{"invariant": "i"}')$$),
	(8, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{}')$$),
	(9, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": ""}')$$),
	(10, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": 7}')$$),
	(11, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": "i", "message": 7}')$$),
	(12, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": "i", "severity": "high"}')$$),
	(13, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": "i", "severity": ["error"]}')$$),
	(14, $$SELECT gate_bridge.on_invariant_failure('{"agent": "v.agent"}', '{"invariant": "i"}', '"c"')$$),
	-- "INVARIANT_a_" || invariant would be 256 bytes
	(15, $$SELECT gate_bridge.on_invariant_failure('{"agent": "a"}', jsonb_build_object('invariant', repeat('x', 244)))$$)
  ) AS t(n, stmt)
 ORDER BY n;

-------------------------------------------------------------------------------
-- on_planner_regression
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.on_planner_regression(NULL, '{}', '{}', '{}')$$),
	(2, $$SELECT gate_bridge.on_planner_regression('', '{}', '{}', '{}')$$),
	(3, $$SELECT gate_bridge.on_planner_regression('v1', '"m"', '{}', '{}')$$),
	(4, $$SELECT gate_bridge.on_planner_regression('v1', '{}', '[]', '{}')$$),
	(5, $$SELECT gate_bridge.on_planner_regression('v1', '{}', '{}', '[]')$$),
	(6, $$SELECT gate_bridge.on_planner_regression('v1', '{}', '{}', '{"severity": "bad"}')$$),
	(7, $$SELECT gate_bridge.on_planner_regression('v1', '{}', '{}', '{"severity": 1}')$$),
	(8, $$SELECT gate_bridge.on_planner_regression('v1', '{}', '{}', '{}', 'true')$$),
	-- "PLANNER_" || version would be 256 bytes
	(9, $$SELECT gate_bridge.on_planner_regression(repeat('v', 248), '{}', '{}', '{}')$$)
  ) AS t(n, stmt)
 ORDER BY n;

-------------------------------------------------------------------------------
-- on_gate_failure: every element is checked before any decision is taken
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.on_gate_failure(NULL, '{}', '[]')$$),
	(2, $$SELECT gate_bridge.on_gate_failure('', '{}', '[]')$$),
	(3, $$SELECT gate_bridge.on_gate_failure(repeat('a', 129), '{}', '[]')$$),
	(4, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', NULL)$$),
	(5, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '{}')$$),
	(6, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', 'null')$$),
	(7, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '"v"')$$),
	(8, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[1]')$$),
	(9, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[[]]')$$),
	(10, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[{"budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}, {"severity": "error", "actual": 1, "threshold": 0}]')$$),
	(11, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[{"budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}, {"budget_type": "quality", "severity": "bad", "actual": 1, "threshold": 0}]')$$),
	(12, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[{"budget_type": "cost", "severity": "error", "actual": 1, "threshold": 0}, {"agent": "g.other", "budget_type": "quality", "severity": "error", "actual": 1, "threshold": 0}]')$$),
	(13, $$SELECT gate_bridge.on_gate_failure('g.agent', '[]', '[]')$$),
	(14, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[]', '1')$$),
	(15, $$SELECT gate_bridge.on_gate_failure('g.agent', '{}', '[]', NULL, '"c"')$$)
  ) AS t(n, stmt)
 ORDER BY n;

-- incident_severity
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.incident_severity('fatal')$$),
	(2, $$SELECT gate_bridge.incident_severity(' error')$$)
  ) AS t(n, stmt)
 ORDER BY n;

-- Nothing above left anything behind.
SELECT (SELECT count(*) FROM gate_bridge.eval_results) AS eval_rows,
	   (SELECT count(*) FROM gate_bridge.incidents) AS incidents,
	   (SELECT count(*) FROM gate_bridge.incident_events) AS events,
	   (SELECT count(*) FROM gate_bridge.incident_keys) AS keys;

-------------------------------------------------------------------------------
-- The trigger function refuses to run where it does not belong.
-------------------------------------------------------------------------------
SELECT gate_bridge.gate_bridge_on_violation();
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE gate_misuse (LIKE gate_bridge.eval_results INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TRIGGER misuse_before BEFORE INSERT ON gate_misuse
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.gate_bridge_on_violation();
INSERT INTO gate_misuse (agent, quality) VALUES ('m.agent', 0.1);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER misuse_before ON gate_misuse;
CREATE TRIGGER misuse_statement AFTER INSERT ON gate_misuse
	FOR EACH STATEMENT EXECUTE FUNCTION gate_bridge.gate_bridge_on_violation();
INSERT INTO gate_misuse (agent, quality) VALUES ('m.agent', 0.1);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER misuse_statement ON gate_misuse;
CREATE TRIGGER misuse_update AFTER UPDATE ON gate_misuse
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.gate_bridge_on_violation();
INSERT INTO gate_misuse (agent, quality) VALUES ('m.agent', 0.1);
UPDATE gate_misuse SET quality = 0.2;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE gate_misuse;
CREATE TABLE gate_misuse (id bigint, agent text, quality numeric);
CREATE TRIGGER misuse_columns AFTER INSERT ON gate_misuse
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.gate_bridge_on_violation();
INSERT INTO gate_misuse (id, agent, quality) VALUES (1, 'm.agent', 0.1);
\echo :LAST_ERROR_SQLSTATE
DROP TABLE gate_misuse;
-- and the real table still works after that
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('e.after', 0.1);
SELECT key, severity FROM gate_bridge.incidents;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
