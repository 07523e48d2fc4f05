-- The gate_bridge demo: budgets, eval rows, incidents, lifecycle.
\pset footer off
\echo
\echo '== 1. Budgets: quality floors for inbox.triage, a latency ceiling for every agent'
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('inbox.triage', 'quality',      0.90, 0.80, 0.60),
	('*',            'latency',      1500, 3000, 8000),
	('warehouse.*',  'success_rate', 0.99, 0.95, 0.90);
TABLE gate_bridge.budgets;

\echo '== 2. A clean eval row: stored, nothing else happens'
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms)
VALUES ('inbox.triage', 'run-1', 0.97, 420);

\echo '== 3. A failing run: quality 0.55 (critical) and latency 3200 ms (error)'
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, triggered_by)
VALUES ('inbox.triage', 'run-2', 0.55, 3200, 'ci');

\echo '== 4. The same failure five more times: folded into the open incidents'
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms)
SELECT 'inbox.triage', 'run-' || g, 0.55, 3200 FROM generate_series(3, 7) g;

\echo '== 5. A failed invariant and a warehouse agent below its success-rate floor'
INSERT INTO gate_bridge.eval_results (agent, success_rate, invariants_failed)
VALUES ('warehouse.health', 0.93, '{row_counts_match}');

SELECT id, key, severity, status, occurrences, playbooks
  FROM gate_bridge.open_incidents;

\echo '== 6. Operators acknowledge and resolve'
\o /dev/null
SELECT gate_bridge.ack(1, 'alice');
SELECT gate_bridge.resolve(1, 'alice', 'prompt rolled back');
\o
SELECT incident_id, event, actor, detail->>'note' AS note
  FROM gate_bridge.incident_events WHERE incident_id = 1 ORDER BY id;

\echo '== 7. A storm on one key after resolutions: the rate limit (3 per hour) holds'
DO $$
BEGIN
	FOR n IN 1..5 LOOP
		INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('inbox.triage', 0.10);
		PERFORM gate_bridge.resolve(inc.id, 'bot')
		   FROM gate_bridge.incidents inc
		  WHERE inc.key = 'BUDGET_inbox.triage_quality' AND inc.status <> 'resolved';
	END LOOP;
END
$$;
SELECT key, count(*) AS incidents FROM gate_bridge.incidents
 WHERE key = 'BUDGET_inbox.triage_quality' GROUP BY key;

\echo '== 8. Counters and the dashboard view'
TABLE gate_bridge.stats;
TABLE gate_bridge.incident_counts;
