-- One clean evaluation row: an agent with budgets (exact, glob and "*"
-- patterns, several budget types) whose metrics violate none of them.
\set a random(0, 7)
\set q random(850, 1000) / 1000.0
\set l random(100, 1500)
\set c random(1, 900) / 1000.0
\set s random(950, 1000) / 1000.0
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
VALUES ('bench.clean.' || :a, 'bench-' || :client_id, :q, :l, :c, :s,
		'{}', 'pgbench', '{"suite": "bench"}');
