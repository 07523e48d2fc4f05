-- burst case: :keys violating rows of :keys agents with no incident yet
-- (bench.burst.1 .. N, budget bench.burst.*), in one INSERT; with the
-- trigger on it creates :keys incidents in one transaction.
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
SELECT 'bench.burst.' || g, 'bench-burst', 0.65, 500, 0.01, 0.99,
	   '{}', 'bench', '{"suite": "bench"}'
  FROM generate_series(1, :keys) AS g;
