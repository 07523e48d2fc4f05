-- Ten storm rows in one transaction (see storm.sql): a loader that batches.
-- rows per transaction: 10
\set l random(100, 1500)
\set c random(1, 900) / 1000.0
BEGIN;
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
SELECT 'bench.storm', 'bench-' || :client_id, 0.65, :l, :c, 0.99,
	   '{}', 'pgbench', '{"suite": "bench"}'
  FROM generate_series(1, 10);
COMMIT;
