-- One clean evaluation row of an agent whose quality budget has
-- resolve_after (recover-setup.sql) and no unresolved incident: clean.sql
-- for the agents bench.armed.0 .. 7.
\set a random(0, 7)
\set q random(850, 1000) / 1000.0
\set l random(100, 1500)
\set c random(1, 900) / 1000.0
\set s random(950, 1000) / 1000.0
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
VALUES ('bench.armed.' || :a, 'bench-' || :client_id, :q, :l, :c, :s,
		'{}', 'pgbench', '{"suite": "bench"}');
