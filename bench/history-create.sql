-- history case, "create": one violating row of an agent never seen before
-- (bench.new.N, N from a sequence), so every row creates an incident.
\set l random(100, 1500)
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate, invariants_failed, triggered_by, context) VALUES ('bench.new.' || nextval('public.gb_new_agent'), 'bench-' || :client_id, 0.65, :l, 0.01, 0.99, '{}', 'pgbench', '{"suite": "bench"}');
