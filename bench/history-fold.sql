-- history case, "fold": one violating row of bench.hist.000000, whose
-- incident is open, so every row is folded into it (key 0 of the history).
\set l random(100, 1500)
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate, invariants_failed, triggered_by, context) VALUES ('bench.hist.000000', 'bench-' || :client_id, 0.65, :l, 0.01, 0.99, '{}', 'pgbench', '{"suite": "bench"}');
