-- bulk case: :rows clean rows (the agents and value ranges of clean.sql) in
-- one INSERT ... SELECT; the same rows on both sides (setseed).
SELECT setseed(0.42) AS seeded \gset
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
SELECT 'bench.clean.' || (g % 8), 'bench-bulk', 0.85 + random() * 0.15,
	   100 + floor(random() * 1401), 0.001 + floor(random() * 900) / 1000,
	   0.95 + floor(random() * 51) / 1000, '{}', 'bench', '{"suite": "bench"}'
  FROM generate_series(1, :rows) AS g;
