-- One storm row: agent bench.storm, quality 0.65 below its 0.80 "error"
-- floor, so every row violates the same key, BUDGET_bench.storm_quality.
\set l random(100, 1500)
\set c random(1, 900) / 1000.0
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
VALUES ('bench.storm', 'bench-' || :client_id, 0.65, :l, :c, 0.99,
		'{}', 'pgbench', '{"suite": "bench"}');
