-- history case, "reopen": a violating row for one of the keys 1 ..
-- :reopen_keys of the history, whose incidents are all resolved, so the row
-- creates the key's next incident (the INSERT is what is measured); then
-- that incident is resolved, so the key is ready to reopen again.  One
-- client: no two transactions pick the same key at the same time.
\set k random(1, :reopen_keys)
\set l random(100, 1500)
INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate, invariants_failed, triggered_by, context) VALUES ('bench.hist.' || lpad(:k::text, 6, '0'), 'bench-' || :client_id, 0.65, :l, 0.01, 0.99, '{}', 'pgbench', '{"suite": "bench"}');
SELECT gate_bridge.resolve(i.id, 'bench.oncall') FROM gate_bridge.incidents i WHERE i.kind = 'budget' AND i.agent = 'bench.hist.' || lpad(:k::text, 6, '0') AND i.subject = 'quality' AND i.status <> 'resolved';
