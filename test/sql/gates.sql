-- Gate evaluation over time windows: evaluate_agent and run_gates.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Loading test rows must not open incidents through the trigger; incidents
-- here come from run_gates only.
SET gate_bridge.enabled = off;

-- One line per evaluation: the fields that say what was decided.
CREATE FUNCTION pg_temp.gate(agent text, lookback interval DEFAULT '7 days')
RETURNS TABLE (passed boolean, samples bigint, metrics jsonb, violations jsonb)
LANGUAGE sql AS $$
	SELECT (r->>'passed')::boolean, (r->>'samples')::bigint, r->'metrics', r->'violations'
	  FROM gate_bridge.evaluate_agent(agent, lookback) r
$$;

-------------------------------------------------------------------------------
-- Budgets: which one applies (most specific enabled pattern per type).
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, lookback, enabled) VALUES
	('*',				'cost',			1,		2,		3,		'7 days', true),
	('shop.*',			'cost',			0.5,	NULL,	NULL,	'7 days', true),
	('shop.cart.*',		'cost',			0.25,	NULL,	NULL,	'7 days', true),
	('shop.cart.api',	'cost',			0.125,	NULL,	NULL,	'7 days', false),
	('shop.*',			'latency',		100,	200,	300,	'1 day',  true),
	('shop.cart.api',	'quality',		0.9,	0.8,	0.5,	'7 days', true);

-- shop.cart.api: its own cost budget is disabled, so shop.cart.* applies;
-- latency from shop.*; quality from its own; nothing for success_rate.
SELECT jsonb_pretty(gate_bridge.evaluate_agent('shop.cart.api')->'budget');
SELECT t, b->>'agent_pattern' AS cost_budget
  FROM unnest(ARRAY['shop.cart.api', 'shop.cart.web', 'shop.orders', 'shop', 'shopx.cart', 'other']) AS t,
	   LATERAL (SELECT gate_bridge.evaluate_agent(t)->'budget'->'cost') AS x (b)
 ORDER BY t COLLATE "C";

-------------------------------------------------------------------------------
-- Unknown agent and empty windows: "samples": 0, nothing judged (insufficient_data).
-------------------------------------------------------------------------------
SELECT gate_bridge.evaluate_agent('nobody.at.all');
SELECT gate_bridge.evaluate_agent('shop.cart.api', '1 hour');

-------------------------------------------------------------------------------
-- Window edges: created_at > now() - lookback, no upper bound.  now() is the
-- transaction's start, so inside one transaction the edges are exact.
-------------------------------------------------------------------------------
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality, created_at) VALUES
	('edge.agent', 0.125, now() - interval '2 days'),					-- out
	('edge.agent', 0.25,  now() - interval '1 day'),					-- out: exactly the edge
	('edge.agent', 0.5,   now() - interval '1 day' + interval '1 microsecond'),	-- in
	('edge.agent', 0.75,  now()),										-- in
	('edge.agent', 1,     now() + interval '1 hour');					-- in: ahead of the clock
SELECT samples, metrics->'quality' AS avg_quality FROM pg_temp.gate('edge.agent', '1 day');
SELECT samples, metrics->'quality' AS avg_quality FROM pg_temp.gate('edge.agent', '1 day 00:00:00.000001');
SELECT samples, metrics->'quality' AS avg_quality FROM pg_temp.gate('edge.agent', '2 days');
SELECT samples, metrics->'quality' AS avg_quality FROM pg_temp.gate('edge.agent', '2 days 00:00:00.000001');
SELECT samples, metrics->'quality' AS avg_quality FROM pg_temp.gate('edge.agent', '1 microsecond');
-- the lookback is calendar arithmetic, as in now() - lookback
SELECT samples FROM pg_temp.gate('edge.agent', '1 mon');
ROLLBACK;

-------------------------------------------------------------------------------
-- p95 on known data: percentile_cont(0.95) of 1..100 is 95.05.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms, cost_usd, created_at)
SELECT 'p95.agent', g, g / 100.0, now() - interval '1 hour'
  FROM generate_series(1, 100) g;
-- a row outside the window does not count
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms, created_at)
VALUES ('p95.agent', 100000, now() - interval '8 days');
SELECT samples, metrics->'latency' AS p95, metrics->'cost' AS avg_cost
  FROM pg_temp.gate('p95.agent');
-- the same as the plain aggregate over the same rows
SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_p95_ms) AS p95
  FROM gate_bridge.eval_results
 WHERE agent = 'p95.agent' AND created_at > now() - interval '7 days';

-------------------------------------------------------------------------------
-- Tiers: floors (quality, success_rate) violate below the threshold,
-- ceilings (latency, cost, invariants) above it; the worst tier crossed
-- wins; a threshold left NULL is skipped; the threshold itself passes.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('tier.*', 'quality',		0.875,	0.75,	0.5),
	('tier.*', 'success_rate',	0.875,	NULL,	0.5),
	('tier.*', 'latency',		100,	200,	300),
	('tier.*', 'invariants',	0,		2,		NULL);

-- one agent per case; each row is the whole window of its agent
INSERT INTO gate_bridge.eval_results (agent, quality, success_rate, latency_p95_ms, invariants_failed)
VALUES
	('tier.ok',			0.875,	0.875,	100,	'{}'),			-- every value on its threshold
	('tier.warning',	0.8125,	0.75,	150,	'{a}'),			-- all warning
	('tier.error',		0.625,	0.625,	250,	'{a,b,c}'),		-- success_rate has no error tier
	('tier.critical',	0.25,	0.25,	301,	'{a,b,c,d,e}'),	-- invariants has no critical tier
	('tier.nulls',		NULL,	NULL,	NULL,	NULL);			-- nothing to check
SELECT a.agent, g.passed, g.samples, g.violations
  FROM unnest(ARRAY['tier.ok', 'tier.warning', 'tier.error', 'tier.critical', 'tier.nulls'])
	   WITH ORDINALITY AS a (agent, n),
	   LATERAL pg_temp.gate(a.agent) g
 ORDER BY a.n;
SELECT g.metrics FROM pg_temp.gate('tier.nulls') g;

-- Aggregates: averages and totals over several rows; NULLs left out.
INSERT INTO gate_bridge.eval_results (agent, quality, success_rate, invariants_failed) VALUES
	('tier.mixed', 1,		NULL,	'{a}'),
	('tier.mixed', 0.5,		NULL,	NULL),
	('tier.mixed', NULL,	NULL,	'{b,c}'),
	('tier.mixed', 0.75,	NULL,	'{}');
SELECT g.samples, g.metrics, g.violations FROM pg_temp.gate('tier.mixed') g;

-- Every violation has the shape on_budget_violation takes.
SELECT v ?& ARRAY['agent', 'budget_type', 'severity', 'actual', 'threshold'] AS complete,
	   (SELECT count(*) FROM jsonb_object_keys(v)) AS keys
  FROM jsonb_array_elements(gate_bridge.evaluate_agent('tier.critical')->'violations') v;

-------------------------------------------------------------------------------
-- run_gates: which agents.  Agents with rows (at any time) that a budget
-- applies to, and agents an exact-pattern budget names; no others.
-------------------------------------------------------------------------------
DELETE FROM gate_bridge.budgets WHERE agent_pattern = '*';
INSERT INTO gate_bridge.eval_results (agent, quality, created_at) VALUES
	('shop.old', 0.1, now() - interval '30 days'),	-- a budget applies; no row in the window
	('unbudgeted', 0.1, now()),						-- no budget applies
	('p95.other', 0.1, now());						-- nor here
SELECT r.agent, r.passed, jsonb_array_length(r.violations) AS violations, r.incident_ids
  FROM gate_bridge.run_gates() r;
SELECT count(*) AS incidents FROM gate_bridge.incidents;

-- one agent, by name: always one row, budget or not
SELECT * FROM gate_bridge.run_gates('unbudgeted');
SELECT * FROM gate_bridge.run_gates('tier.warning', '7 days');
SELECT * FROM gate_bridge.run_gates(agent => 'nobody.at.all');

-- the result is evaluate_agent's, agent by agent
SELECT count(*) AS differing
  FROM gate_bridge.run_gates() r
 WHERE r.passed IS DISTINCT FROM (gate_bridge.evaluate_agent(r.agent)->>'passed')::boolean
	OR r.violations IS DISTINCT FROM gate_bridge.evaluate_agent(r.agent)->'violations';

-------------------------------------------------------------------------------
-- run_gates with create_incidents: the same decision as every other path
-- (dedup, rate limit, counters).
-------------------------------------------------------------------------------
RESET gate_bridge.enabled;
CREATE TEMP TABLE run1 AS SELECT * FROM gate_bridge.run_gates(create_incidents => true);
SELECT r.agent, r.passed, jsonb_array_length(r.violations) AS violations,
	   cardinality(r.incident_ids) AS created
  FROM run1 r;
-- the ids returned are the incidents created, one per violation
SELECT (SELECT array_agg(x ORDER BY x) FROM run1 r, unnest(r.incident_ids) x)
		= (SELECT array_agg(i.id ORDER BY i.id) FROM gate_bridge.incidents i) AS ids_match,
	   (SELECT sum(jsonb_array_length(r.violations)) FROM run1 r) AS violations,
	   (SELECT count(*) FROM gate_bridge.incidents) AS incidents;
SELECT i.kind, i.key, i.agent, i.violation_type, i.severity, i.status, i.occurrences,
	   i.details->'violation'->>'actual' AS actual,
	   i.details->'violation'->>'threshold' AS threshold,
	   i.details->'budget'->>'agent_pattern' AS budget_pattern,
	   i.details->'context'->>'triggered_by' AS triggered_by,
	   i.details->'context'->>'lookback' AS lookback,
	   i.details->'context'->>'samples' AS samples,
	   i.details->'context'->>'session_user' = session_user AS by_session_user
  FROM gate_bridge.incidents i
 ORDER BY i.id;
SELECT count(*) AS created_events FROM gate_bridge.incident_events WHERE event = 'created';

-- Second run: every violation folds into its open incident.
SELECT r.agent, r.incident_ids
  FROM gate_bridge.run_gates(create_incidents => true) r
 WHERE NOT r.passed;
SELECT i.key, i.occurrences FROM gate_bridge.incidents i ORDER BY i.id;
SELECT * FROM gate_bridge.stats WHERE kind = 'budget';

-- The issue's recipe: each violation straight into on_budget_violation.
SELECT v->>'budget_type' AS budget_type,
	   gate_bridge.on_budget_violation(v, r->'budget') AS created
  FROM gate_bridge.evaluate_agent('tier.warning') r,
	   LATERAL jsonb_array_elements(r->'violations') v;

-- Rate limit: resolve and re-run; the 4th incident for a key within the
-- hour is refused (gate_bridge.rate_limit = 3).
DO $$
DECLARE
	n int;
	ids bigint[];
BEGIN
	FOR n IN 1..3 LOOP
		PERFORM gate_bridge.resolve(i.id, 'regress')
		   FROM gate_bridge.incidents i
		  WHERE i.key = 'BUDGET_tier.critical_latency' AND i.status <> 'resolved';
		SELECT r.incident_ids INTO ids FROM gate_bridge.run_gates('tier.critical', '7 days', true) r;
		RAISE NOTICE 'run %: % incident(s) created: %', n, cardinality(array_remove(ids, NULL)),
			(SELECT string_agg(CASE WHEN x IS NULL THEN '-' ELSE 'id' END, ' ') FROM unnest(ids) x);
	END LOOP;
END
$$;
SELECT i.key, i.status, count(*)
  FROM gate_bridge.incidents i
 WHERE i.key = 'BUDGET_tier.critical_latency'
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT k.key, k.created, k.rate_limited
  FROM gate_bridge.incident_keys k
 WHERE k.key = 'BUDGET_tier.critical_latency';

-- With the bridge off, nothing is created.
SET gate_bridge.enabled = off;
SELECT gate_bridge.resolve(i.id, 'regress') FROM gate_bridge.incidents i
 WHERE i.key = 'BUDGET_tier.error_quality';
SELECT r.agent, r.passed, r.incident_ids FROM gate_bridge.run_gates('tier.error', create_incidents => true) r;
RESET gate_bridge.enabled;

-------------------------------------------------------------------------------
-- Windows: without a lookback, each metric is computed over the lookback of
-- the budget that checks it; a metric no budget checks over the widest of
-- them (7 days when no budget applies); a lookback given overrides all.
-------------------------------------------------------------------------------
SET gate_bridge.enabled = off;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback) VALUES
	('win.a', 'quality',	0.5,	'1 day'),
	('win.*', 'latency',	100,	'3 days'),
	('win.a', 'cost',		1,		'12:00:00');
-- one row per age: 1 h, 18 h, 2 days, 5 days, 10 days
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, success_rate, created_at)
VALUES ('win.a', 0.75, 50,  0.5, 1.0, now() - interval '1 hour'),
	   ('win.a', 0.25, 50,  2.5, 0.5, now() - interval '18 hours'),
	   ('win.a', 0.0,  500, 9,   0.0, now() - interval '2 days'),
	   ('win.a', 0.0,  500, 9,   0.0, now() - interval '5 days'),
	   ('win.a', 0.0,  900, 9,   0.0, now() - interval '10 days');
RESET gate_bridge.enabled;
SELECT r->'lookback' AS lookback, r->'samples' AS samples, jsonb_pretty(r->'windows') AS windows,
	   jsonb_pretty(r->'metrics') AS metrics, jsonb_pretty(r->'violations') AS violations
  FROM gate_bridge.evaluate_agent('win.a') r;
-- quality over 1 day: (0.75 + 0.25) / 2 = 0.5, on the threshold: passes;
-- latency over 3 days: p95 of 50, 50, 500 is 455 > 100; cost over 12 h: 0.5
SELECT t, (r->'windows'->t->>'samples')::int AS samples, r->'metrics'->t AS metric
  FROM gate_bridge.evaluate_agent('win.a') r,
	   unnest(ARRAY['quality', 'latency', 'cost', 'success_rate', 'invariants']) t;
-- the same as the plain aggregates over each budget's window
SELECT avg(quality) FILTER (WHERE created_at > now() - interval '1 day') AS quality_1d,
	   percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_p95_ms)
		   FILTER (WHERE created_at > now() - interval '3 days') AS latency_3d,
	   avg(cost_usd) FILTER (WHERE created_at > now() - interval '12 hours') AS cost_12h,
	   avg(success_rate) FILTER (WHERE created_at > now() - interval '3 days') AS success_rate_3d
  FROM gate_bridge.eval_results WHERE agent = 'win.a';
-- a lookback given is every metric's window
SELECT r->'lookback' AS lookback, r->'samples' AS samples,
	   (SELECT jsonb_object_agg(k, v->'samples') FROM jsonb_each(r->'windows') w (k, v)) AS window_samples,
	   r->'metrics'->'quality' AS quality,
	   jsonb_array_length(r->'violations') AS violations
  FROM gate_bridge.evaluate_agent('win.a', '30 days') r;
-- another agent under win.* has only the latency budget: everything over 3 days
SELECT r->'lookback' AS lookback, r->'windows'->'quality'->'lookback' AS quality_window
  FROM gate_bridge.evaluate_agent('win.other') r;
-- run_gates: samples is the widest window's; an explicit lookback again overrides
SELECT agent, passed, samples, jsonb_array_length(violations) AS violations
  FROM gate_bridge.run_gates('win.a');
SELECT agent, passed, samples, jsonb_array_length(violations) AS violations
  FROM gate_bridge.run_gates('win.a', '30 days');
SELECT agent, passed, samples FROM gate_bridge.run_gates() WHERE agent LIKE 'win.%';

-------------------------------------------------------------------------------
-- incident_ids is positional: one element per violation, the incident
-- created or NULL.  Each incident records its violation's own window.
-------------------------------------------------------------------------------
SELECT r.incident_ids, r.violations->0->>'budget_type' AS violated
  FROM gate_bridge.run_gates('win.a', create_incidents => true) r;
-- over 30 days three metrics violate; latency folds into its open incident
SELECT r.incident_ids, jsonb_array_length(r.violations) AS violations
  FROM gate_bridge.run_gates('win.a', '30 days', true) r;
SELECT i.key, i.details->'context'->>'lookback' AS lookback,
	   i.details->'context'->>'samples' AS samples
  FROM gate_bridge.incidents i WHERE i.agent = 'win.a' ORDER BY i.id;
-- resolve the latency incident: in the next run only that position gets an id
SELECT gate_bridge.resolve(i.id, 'regress') FROM gate_bridge.incidents i
 WHERE i.key = 'BUDGET_win.a_latency';
CREATE TEMP TABLE run2 AS SELECT * FROM gate_bridge.run_gates('win.a', '30 days', true);
SELECT v.n, v.v->>'budget_type' AS budget_type, r.incident_ids[v.n] IS NOT NULL AS created,
	   (SELECT i.violation_type FROM gate_bridge.incidents i WHERE i.id = r.incident_ids[v.n]) AS incident_type
  FROM run2 r, jsonb_array_elements(r.violations) WITH ORDINALITY AS v (v, n)
 ORDER BY v.n;
SELECT cardinality(incident_ids) = jsonb_array_length(violations) AS one_per_violation FROM run2;
-- without create_incidents, no ids at all
SELECT incident_ids FROM gate_bridge.run_gates('win.a', '30 days');
DELETE FROM gate_bridge.budgets WHERE agent_pattern LIKE 'win.%';

-------------------------------------------------------------------------------
-- Bad arguments.
-------------------------------------------------------------------------------
SELECT gate_bridge.evaluate_agent('shop.cart.api', '-1 day');
SELECT gate_bridge.evaluate_agent('shop.cart.api', '0');
SELECT gate_bridge.evaluate_agent('shop.cart.api', '1 mon -31 days');
SELECT gate_bridge.evaluate_agent('shop.cart.api', '300000 years');
SELECT gate_bridge.evaluate_agent(NULL);
SELECT gate_bridge.evaluate_agent('');
SELECT gate_bridge.evaluate_agent(repeat('x', 129));
SELECT gate_bridge.window_start(NULL);
SELECT * FROM gate_bridge.run_gates(lookback => '-7 days');
SELECT * FROM gate_bridge.run_gates(create_incidents => NULL);
SELECT * FROM gate_bridge.run_gates('');
-- checked even when there is no agent to evaluate
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets;
SELECT * FROM gate_bridge.run_gates(lookback => '0');
SELECT count(*) FROM gate_bridge.run_gates();

-------------------------------------------------------------------------------
-- Speed: with realistic data (200 agents), one agent's evaluation reads
-- that agent's rows in the window through (agent, created_at), and nothing
-- else of eval_results.
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
SET gate_bridge.enabled = off;
-- 200 agents x 60 rows, one every 12 hours over 30 days: 14 in a 7-day window
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, created_at)
SELECT format('load.agent%s', a), CASE WHEN a % 5 = 0 THEN 0.5 ELSE 0.75 END, r * 10, 0.01,
	   now() - interval '1 minute' - r * interval '12 hours'
  FROM generate_series(1, 200) a, generate_series(0, 59) r;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning)
SELECT format('load.agent%s', a), 'quality', 0.6 FROM generate_series(1, 200) a;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning)
VALUES ('load.*', 'latency', 1000);
VACUUM ANALYZE gate_bridge.eval_results;
RESET gate_bridge.enabled;

-- The plan of evaluate_agent's aggregate query for one agent: no
-- sequential scan, and the index bounds both the agent and the window.
CREATE FUNCTION pg_temp.scans(query text)
RETURNS TABLE (seq_scan boolean, index_scan boolean, index_cond text)
LANGUAGE plpgsql AS $$
DECLARE
	plan jsonb;
BEGIN
	EXECUTE 'EXPLAIN (FORMAT JSON, COSTS OFF) ' || query INTO plan;
	RETURN QUERY
		SELECT bool_or(n->>'Node Type' = 'Seq Scan'),
			   bool_or(n->>'Index Name' = 'eval_results_agent_created_at_idx'),
			   string_agg(n->>'Index Cond', ' ')
		  FROM jsonb_path_query(plan, 'strict $.**') n
		 WHERE jsonb_typeof(n) = 'object' AND n ? 'Node Type';
END
$$;
SELECT * FROM pg_temp.scans($q$
	SELECT count(*), avg(e.quality),
		   percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_p95_ms),
		   avg(e.cost_usd), avg(e.success_rate), sum(cardinality(e.invariants_failed))
	  FROM gate_bridge.eval_results e
	 WHERE e.agent = 'load.agent42' AND e.created_at > now() - interval '7 days'
$q$);

-- What the function itself read, from this transaction's statistics.
CREATE FUNCTION pg_temp.reads(OUT seq_scans bigint, OUT index_entries bigint, OUT heap_fetches bigint)
LANGUAGE sql AS $$
	SELECT t.seq_scan,
		   pg_stat_get_xact_tuples_returned('gate_bridge.eval_results_agent_created_at_idx'::regclass),
		   t.idx_tup_fetch
	  FROM pg_stat_xact_user_tables t
	 WHERE t.relid = 'gate_bridge.eval_results'::regclass
$$;
BEGIN;
SELECT * FROM pg_temp.reads() \gset before_
SELECT (r->>'samples')::int AS samples, r->'passed' AS passed
  FROM gate_bridge.evaluate_agent('load.agent42') r;
-- no sequential scan; index entries read = rows fetched = samples
SELECT r.seq_scans - :before_seq_scans AS seq_scans,
	   r.index_entries - :before_index_entries AS index_entries,
	   r.heap_fetches - :before_heap_fetches AS heap_fetches
  FROM pg_temp.reads() r;
COMMIT;

-- run_gates() over every agent: one index probe per agent to find them,
-- then each agent's window; no sequential scan.
SELECT count(*) AS in_window FROM gate_bridge.eval_results e
 WHERE e.created_at > now() - interval '7 days' \gset
BEGIN;
SELECT * FROM pg_temp.reads() \gset before_
SELECT count(*) AS agents, count(*) FILTER (WHERE NOT passed) AS failing,
	   sum(jsonb_array_length(violations)) AS violations
  FROM gate_bridge.run_gates();
-- (heap fetches beyond the windows are the probes' visibility checks: none
-- once the table is vacuumed, at most one per probe)
SELECT r.seq_scans - :before_seq_scans AS seq_scans,
	   r.index_entries - :before_index_entries - :in_window AS index_entries_beyond_windows,
	   r.heap_fetches - :before_heap_fetches - :in_window BETWEEN 0 AND 201 AS heap_fetches_ok
  FROM pg_temp.reads() r;
COMMIT;

-- Leave the tables empty for the tests that follow.
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
