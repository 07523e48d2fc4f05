-- gate_bridge benchmark: budgets with auto-resolve (budgets.resolve_after)
-- for the armed-N and recover-N cases; measure.sh runs it after setup.sql
-- when one of those cases is asked for (so that the other cases see the
-- budgets they always saw).  psql variable resolve_after: passing rows in
-- a row that resolve an incident, large enough that none resolves during
-- a run.
--
-- bench.armed.0 .. 7 and bench.recover.0 .. 7: the same budgets as the
-- clean agents (setup.sql), a prefix glob for each group and exact budgets
-- for four of its agents, with resolve_after on every quality budget.

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, resolve_after)
SELECT g || '.*', t.budget_type, t.warning, t.error, t.critical,
	   CASE WHEN t.budget_type = 'quality' THEN :resolve_after END
  FROM (VALUES ('bench.armed'), ('bench.recover')) AS a(g),
	   (VALUES ('quality',		0.80,	0.70,	0.50),
			   ('success_rate',	0.90,	0.80,	0.60),
			   ('latency',		2000,	4000,	8000)) AS t(budget_type, warning, error, critical);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, resolve_after)
SELECT g || '.' || n, t.budget_type, t.warning, t.error, t.critical,
	   CASE WHEN t.budget_type = 'quality' THEN :resolve_after END
  FROM (VALUES ('bench.armed'), ('bench.recover')) AS a(g),
	   generate_series(0, 3) AS n,
	   (VALUES ('quality',		0.75,	0.60,	0.40),
			   ('cost',			1.5,	3.0,	6.0)) AS t(budget_type, warning, error, critical);

-- The recover agents' quality incidents: one violating row each (0.30,
-- below every critical floor), with the trigger on, before any
-- measurement; the clean rows of recover.sql then count towards their
-- recovery.  The armed agents have none.
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, cost_usd,
									  success_rate, invariants_failed, triggered_by)
SELECT 'bench.recover.' || n, 'bench-setup', 0.30, 500, 0.5, 0.99, '{}', 'bench'
  FROM generate_series(0, 7) AS n;
