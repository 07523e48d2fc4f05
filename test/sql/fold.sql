-- Repeats of one key within a transaction are counted in memory and written
-- once before commit; the counts must come out exact whatever happens in
-- between: many statements, savepoints released or rolled back, rate
-- limited keys, ack/resolve in the same transaction, the SQL functions.
\set VERBOSITY terse
SET client_min_messages = warning;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets RESTART IDENTITY CASCADE;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('fold.a', 'quality', 0.5), ('fold.b', 'quality', 0.5);

-- one statement, 5000 violations of one key
INSERT INTO gate_bridge.eval_results (agent, quality)
SELECT 'fold.a', 0.1 FROM generate_series(1, 5000);
SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY key, id;

-- 2000 statements in one transaction
DO $$
BEGIN
	FOR i IN 1..2000 LOOP
		INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fold.a', 0.1);
	END LOOP;
END
$$;
SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY key, id;

-- savepoints: released work counts, rolled-back work does not
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fold.a', 0.1);
SAVEPOINT s1;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.a', 0.1 FROM generate_series(1, 10);
RELEASE s1;
SAVEPOINT s2;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.a', 0.1 FROM generate_series(1, 100);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fold.b', 0.1);
ROLLBACK TO s2;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.a', 0.1 FROM generate_series(1, 3);
COMMIT;
-- 7001 + 1 + 10 + 3
SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY key, id;

-- a subtransaction that decides first and commits hands its count to the parent
BEGIN;
SAVEPOINT s1;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.b', 0.1 FROM generate_series(1, 4);
RELEASE s1;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.b', 0.1 FROM generate_series(1, 2);
COMMIT;
SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY key, id;

-- resolve in the same transaction: the transaction's violations are
-- decided when it commits, after the resolution, so all twelve open a new
-- incident
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.b', 0.1 FROM generate_series(1, 5);
SELECT gate_bridge.resolve(id, 'regress') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_fold.b_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.b', 0.1 FROM generate_series(1, 7);
COMMIT;
SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY key, id;

-- rate limited repeats are counted once each
SET gate_bridge.rate_limit = 2;
SELECT gate_bridge.resolve(id, 'regress') FROM gate_bridge.incidents
 WHERE key = 'BUDGET_fold.b_quality' AND status <> 'resolved';
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.b', 0.1 FROM generate_series(1, 500);
SELECT kind, key, created, rate_limited FROM gate_bridge.incident_keys ORDER BY key;
RESET gate_bridge.rate_limit;

-- the SQL functions fold the same way
SELECT count(*) FILTER (WHERE id IS NOT NULL) AS created, count(*) AS calls
  FROM (SELECT gate_bridge.on_budget_violation(
				'{"agent": "fold.c", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}') AS id
		  FROM generate_series(1, 3000)) s;
SELECT gate_bridge.on_gate_failure('fold.c', '{}',
	(SELECT jsonb_agg('{"budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}'::jsonb)
	   FROM generate_series(1, 50)));
SELECT key, status, occurrences FROM gate_bridge.incidents WHERE agent = 'fold.c';

-- an error after folding loses the whole transaction's counts, and nothing else
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT 'fold.a', 0.1 FROM generate_series(1, 50);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fold.a', 'NaN');
COMMIT;
SELECT key, status, occurrences FROM gate_bridge.incidents WHERE key = 'BUDGET_fold.a_quality';

TABLE gate_bridge.stats;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets RESTART IDENTITY CASCADE;
