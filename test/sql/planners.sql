-- compare_planners: a canary planner version against a baseline version.
-- The statistics themselves are checked against scipy and statsmodels in
-- test/stats; here: the arguments, the rows read, the edge cases whose
-- results are defined, the verdicts and the PLANNER_ incidents.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

\set ECHO none
\i test/sql/include/try.sql
\set ECHO all

-- A number rounded to 6 significant digits.
CREATE FUNCTION pg_temp.sig(x numeric) RETURNS numeric
LANGUAGE sql AS $$
	SELECT CASE WHEN x = 0 THEN 0
				ELSE trim_scale(round(x, 5 - floor(log(abs(x)))::int)) END
$$;

-- One line per metric of a comparison, in the result's metric order.
CREATE FUNCTION pg_temp.metrics(r jsonb)
RETURNS TABLE (metric text, test text, n_c int, n_b int, statistic numeric,
			   p_value numeric, p_adjusted numeric, effect numeric,
			   direction text, verdict text)
LANGUAGE sql AS $$
	SELECT m.key, m.value->>'test', (m.value->>'n_canary')::int,
		   (m.value->>'n_baseline')::int,
		   pg_temp.sig((m.value->>'statistic')::numeric),
		   pg_temp.sig((m.value->>'p_value')::numeric),
		   pg_temp.sig((m.value->>'p_adjusted')::numeric),
		   pg_temp.sig((m.value->>'effect')::numeric),
		   m.value->>'direction', m.value->>'verdict'
	  FROM jsonb_each(r->'metrics') m
	 ORDER BY array_position(ARRAY['quality', 'latency', 'cost', 'success_rate'], m.key)
$$;

-- The means of a comparison's metrics.
CREATE FUNCTION pg_temp.means(r jsonb)
RETURNS TABLE (metric text, mean_canary numeric, mean_baseline numeric)
LANGUAGE sql AS $$
	SELECT m.key, pg_temp.sig((m.value->>'mean_canary')::numeric),
		   pg_temp.sig((m.value->>'mean_baseline')::numeric)
	  FROM jsonb_each(r->'metrics') m
	 ORDER BY array_position(ARRAY['quality', 'latency', 'cost', 'success_rate'], m.key)
$$;

-- The values of one metric, as compare_planners reads them: the agent's
-- rows of the last 24 hours of the version.  Built with fixed formulas
-- (no random()), every value exact in binary where a sum is shown.
-- Rows are stamped a minute apart, within the last hour.
CREATE PROCEDURE pg_temp.load(agent text, version text, n int,
							  quality text, latency text, cost text, success text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format(
		'INSERT INTO gate_bridge.eval_results'
		'  (agent, planner_version, quality, latency_p95_ms, cost_usd, success_rate, created_at)'
		' SELECT %L, %L, %s, %s, %s, %s, now() - g * interval ''1 minute'''
		'   FROM generate_series(1, %s) g',
		agent, version, quality, latency, cost, success, n);
END
$$;

-------------------------------------------------------------------------------
-- Arguments: every one is required and checked, before any row is read.
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$SELECT gate_bridge.compare_planners(NULL, 'v2', 'v1')$$),
	(2, $$SELECT gate_bridge.compare_planners('a', NULL, 'v1')$$),
	(3, $$SELECT gate_bridge.compare_planners('a', 'v2', NULL)$$),
	(4, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', NULL)$$),
	(5, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', min_samples => NULL)$$),
	(6, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => NULL)$$),
	(7, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', create_incident => NULL)$$),
	(8, $$SELECT gate_bridge.compare_planners('', 'v2', 'v1')$$),
	(9, $$SELECT gate_bridge.compare_planners(repeat('x', 129), 'v2', 'v1')$$),
	(10, $$SELECT gate_bridge.compare_planners('a', '', 'v1')$$),
	(11, $$SELECT gate_bridge.compare_planners('a', 'v2', '')$$),
	(12, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v2')$$),
	(13, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', '0')$$),
	(14, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', '-1 day')$$),
	(15, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', '1 mon -40 days')$$),
	(16, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', '10000 years')$$),
	(17, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', min_samples => 1)$$),
	(18, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', min_samples => 0)$$),
	(19, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', min_samples => -5)$$),
	(20, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 0)$$),
	(21, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 1)$$),
	(22, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => -0.05)$$),
	(23, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 1.5)$$),
	(24, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 'NaN')$$),
	(25, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 'Infinity')$$),
	(26, $$SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => '-Infinity')$$),
	-- the limits are accepted
	(27, $$SELECT gate_bridge.compare_planners(repeat('x', 128), 'v2', 'v1', '1 microsecond', 2, 0.000001)$$),
	(28, $$SELECT gate_bridge.compare_planners('a', 'v2', 'V2', alpha => 0.999999)$$)
  ) AS t(n, stmt)
 ORDER BY n;

-- The same, as psql shows two of them.
SELECT gate_bridge.compare_planners('a', 'v2', 'v1', alpha => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.compare_planners('a', NULL, 'v1');
\echo :LAST_ERROR_SQLSTATE

-------------------------------------------------------------------------------
-- No rows, or one sample empty: insufficient_data, the sizes still given,
-- the means of an empty sample null.  The whole result, once.
-------------------------------------------------------------------------------
SELECT jsonb_pretty(gate_bridge.compare_planners('nobody', 'v2', 'v1'));
CALL pg_temp.load('plan.empty', 'v1', 40, '0.5', '100', '0.25', '1');
SELECT r->'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.empty', 'v2', 'v1', create_incident => true) r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.empty', 'v2', 'v1'));
SELECT * FROM pg_temp.means(gate_bridge.compare_planners('plan.empty', 'v2', 'v1'));
-- the other way round
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.empty', 'v1', 'v2'));

-------------------------------------------------------------------------------
-- All values tied: no variance, p = 1 (U1 = n1 n2 / 2); a success rate of 1
-- (or 0) everywhere: z = 0, p = 1.  The whole result, once.
-------------------------------------------------------------------------------
CALL pg_temp.load('plan.ties', 'v1', 40, '0.5', '100', '0.25', '1');
CALL pg_temp.load('plan.ties', 'v2', 30, '0.5', '100', '0.25', '1');
SELECT jsonb_pretty(gate_bridge.compare_planners('plan.ties', 'v2', 'v1'));
CALL pg_temp.load('plan.ties0', 'v1', 40, '0', '0', '0', '0');
CALL pg_temp.load('plan.ties0', 'v2', 40, '0', '0', '0', '0');
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.ties0', 'v2', 'v1'));

-------------------------------------------------------------------------------
-- Identical samples: U1 = n1 n2 / 2, z = -0.5 / sigma, p = 1 after clipping;
-- z = 0 for the success rates.  Equal means: effect 0, direction same.
-------------------------------------------------------------------------------
CALL pg_temp.load('plan.same', 'v1', 40, '(g % 8) / 8.0', 'g * 10', '(g % 4) * 0.25', 'g % 2');
CALL pg_temp.load('plan.same', 'v2', 40, '(g % 8) / 8.0', 'g * 10', '(g % 4) * 0.25', 'g % 2');
SELECT r->>'verdict' AS verdict FROM gate_bridge.compare_planners('plan.same', 'v2', 'v1') r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.same', 'v2', 'v1'));
SELECT * FROM pg_temp.means(gate_bridge.compare_planners('plan.same', 'v2', 'v1'));

-------------------------------------------------------------------------------
-- Fewer values than min_samples in either sample: insufficient_data for that
-- metric.  NULL values are left out of their metric's samples; Holm adjusts
-- over the metrics tested only.
-------------------------------------------------------------------------------
-- canary: 12 rows, 2 of them without a cost, 4 without a success rate
CALL pg_temp.load('plan.small', 'v2', 12, '0.25 + (g % 4) * 0.125', '200 + g * 10',
				  'CASE WHEN g <= 2 THEN NULL ELSE 0.5 END',
				  'CASE WHEN g <= 4 THEN NULL ELSE (g % 2)::float8 END');
CALL pg_temp.load('plan.small', 'v1', 40, '0.5 + (g % 4) * 0.125', '100 + g * 5', '0.5', 'g % 2');
-- the default 30: nothing tested
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.small', 'v2', 'v1'));
-- 11: quality and latency tested (m = 2), cost (10) and success_rate (8) not
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.small', 'v2', 'v1', min_samples => 11));
SELECT r->>'verdict' AS verdict, r->'min_samples' AS min_samples
  FROM gate_bridge.compare_planners('plan.small', 'v2', 'v1', min_samples => 11) r;
-- 8: all four tested (m = 4)
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.small', 'v2', 'v1', min_samples => 8));
-- 13: the canary is short everywhere
SELECT r->>'verdict' AS verdict
  FROM gate_bridge.compare_planners('plan.small', 'v2', 'v1', min_samples => 13) r;

-------------------------------------------------------------------------------
-- The rows read: the agent's, in the window, of the two versions.  now() is
-- the transaction's start, so inside one transaction the edges are exact.
-------------------------------------------------------------------------------
BEGIN;
CALL pg_temp.load('plan.rows', 'v1', 30, '0.75', '100', '0.25', '1');
CALL pg_temp.load('plan.rows', 'v2', 30, '0.5', '100', '0.25', '1');
INSERT INTO gate_bridge.eval_results (agent, planner_version, quality, created_at) VALUES
	('plan.rows', 'v2', 1, now() - interval '24 hours'),		-- out: the window's edge
	('plan.rows', 'v2', 1, now() - interval '3 days'),			-- out of 24 hours, in 7 days
	('plan.rows', 'v2', 1, now() + interval '1 hour'),			-- in: ahead of the clock
	('plan.rows', 'v3', 1, now()),								-- another version
	('plan.rows', NULL, 1, now()),								-- no version
	('plan.rows2', 'v2', 1, now()),								-- another agent
	('plan.rowsx', 'v2', 1, now());
SELECT lookback, r->>'lookback' AS shown,
	   r->'metrics'->'quality'->'n_canary' AS n_canary,
	   r->'metrics'->'quality'->'n_baseline' AS n_baseline,
	   r->'metrics'->'latency'->'n_canary' AS latency_n_canary
  FROM unnest(ARRAY['24 hours', '1 day 00:00:01', '7 days', '1 mon', '30 minutes']::interval[]) lookback,
	   LATERAL gate_bridge.compare_planners('plan.rows', 'v2', 'v1', lookback) r;
-- version names are compared exactly
SELECT r->'metrics'->'quality'->'n_canary' AS n_canary
  FROM gate_bridge.compare_planners('plan.rows', 'V2', 'v1') r;
COMMIT;

-------------------------------------------------------------------------------
-- Verdicts.
-------------------------------------------------------------------------------
-- A worse canary: lower quality and success rate, higher latency; the same
-- costs.  quality, latency and success_rate fail.
CALL pg_temp.load('plan.shop', 'v1', 40, '0.5 + (g % 10) / 20.0', '100 + (g % 10) * 10',
				  '(g % 4) * 0.25', '(g % 4 <> 0)::int');
CALL pg_temp.load('plan.shop', 'v2', 40, '0.3 + (g % 10) / 20.0', '150 + (g % 10) * 10',
				  '(g % 4) * 0.25', '(g % 2)::int');
SELECT r->>'verdict' AS verdict FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1') r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.shop', 'v2', 'v1'));
SELECT * FROM pg_temp.means(gate_bridge.compare_planners('plan.shop', 'v2', 'v1'));
-- The same canary as the baseline of v2: every significant difference is an
-- improvement, which passes.
SELECT r->>'verdict' AS verdict FROM gate_bridge.compare_planners('plan.shop', 'v1', 'v2') r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.shop', 'v1', 'v2'));

-- Marginal: the canary's quality is a little lower (p < alpha), the rest
-- identical (p = 1); Holm over 4 metrics takes the adjusted p (4 p) above
-- alpha.
CALL pg_temp.load('plan.slight', 'v1', 40, '0.5 + (g % 10) / 20.0', 'g', '0.25', 'g % 2');
CALL pg_temp.load('plan.slight', 'v2', 40, '0.425 + (g % 10) / 20.0', 'g', '0.25', 'g % 2');
SELECT r->>'verdict' AS verdict FROM gate_bridge.compare_planners('plan.slight', 'v2', 'v1') r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.slight', 'v2', 'v1'));
-- alpha 0.2: the adjusted p-value is below it, so quality fails
SELECT r->>'verdict' AS verdict, r->'alpha' AS alpha,
	   r->'metrics'->'quality'->>'verdict' AS quality
  FROM gate_bridge.compare_planners('plan.slight', 'v2', 'v1', alpha => 0.2) r;
-- alpha 0.01: the p-value is not below it, so quality passes
SELECT r->>'verdict' AS verdict, r->'metrics'->'quality'->>'verdict' AS quality
  FROM gate_bridge.compare_planners('plan.slight', 'v2', 'v1', alpha => 0.01) r;
-- with min_samples 41 nothing is tested
SELECT r->>'verdict' AS verdict
  FROM gate_bridge.compare_planners('plan.slight', 'v2', 'v1', min_samples => 41) r;

-- Fractional success rates: x is the sum of the rates.  Canary: 0.25, 0.5,
-- 0.75, 1 in turn (mean 0.625); baseline 0.75, 1 in turn (mean 0.875).
CALL pg_temp.load('plan.frac', 'v1', 40, '0.5', '100', '0.25', '0.75 + (g % 2) * 0.25');
CALL pg_temp.load('plan.frac', 'v2', 40, '0.5', '100', '0.25', '0.25 + (g % 4) * 0.25');
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('plan.frac', 'v2', 'v1'))
 WHERE metric = 'success_rate';
SELECT * FROM pg_temp.means(gate_bridge.compare_planners('plan.frac', 'v2', 'v1'))
 WHERE metric = 'success_rate';

-------------------------------------------------------------------------------
-- create_incident: a failing canary opens PLANNER_{canary} (kind planner,
-- agent "planner.{canary}") and later ones fold into it; a canary that does
-- not fail opens nothing.
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.planner_incidents()
RETURNS TABLE (id bigint, kind text, key text, agent text, violation_type text,
			   severity text, status text, summary text, occurrences int)
LANGUAGE sql AS $$
	SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity, i.status,
		   i.summary, i.occurrences
	  FROM gate_bridge.incidents i WHERE i.kind = 'planner' ORDER BY i.id
$$;
-- without create_incident: nothing
SELECT r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1') r;
SELECT count(*) FROM gate_bridge.incidents;
-- passing, marginal, insufficient_data: nothing either
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v1', 'v2', create_incident => true) r;
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.slight', 'v2', 'v1', create_incident => true) r;
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1', min_samples => 41, create_incident => true) r;
SELECT count(*) FROM gate_bridge.incidents;
-- failing: opens it
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1', create_incident => true) r \gset
\echo :verdict :incident_id
SELECT * FROM pg_temp.planner_incidents();
-- its details: the comparison, the real agent's
SELECT d->>'agent' AS agent, d->>'canary' AS canary, d->>'baseline' AS baseline,
	   d->>'lookback' AS lookback, d->'alpha' AS alpha, d->'min_samples' AS min_samples,
	   d->>'verdict' AS verdict,
	   d->'metrics' = gate_bridge.compare_planners('plan.shop', 'v2', 'v1')->'metrics' AS same_metrics,
	   (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(d) k) AS keys
  FROM gate_bridge.incidents i, LATERAL (SELECT i.details) AS x (d)
 WHERE i.id = :incident_id;
-- again (another transaction): folded in, NULL; one incident, two occurrences
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1', create_incident => true) r;
SELECT * FROM pg_temp.planner_incidents();
-- the incident's agent is planner.{canary}: another canary has its own
CALL pg_temp.load('plan.shop', 'v3', 40, '0.3 + (g % 10) / 20.0', '100 + (g % 10) * 10',
				  '(g % 4) * 0.25', '(g % 4 <> 0)::int');
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v3', 'v1', create_incident => true) r;
SELECT * FROM pg_temp.planner_incidents();
-- resolved, a new failure opens a new one
SELECT gate_bridge.resolve(:incident_id, 'ops', 'rolled back');
SELECT jsonb_typeof(r->'incident_id') AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v2', 'v1', create_incident => true) r;
SELECT key, status, occurrences FROM pg_temp.planner_incidents();
-- with the bridge disabled: the verdict, and nothing opened
BEGIN;
SET LOCAL gate_bridge.enabled = off;
SELECT r->>'verdict' AS verdict, r->'incident_id' AS incident_id
  FROM gate_bridge.compare_planners('plan.shop', 'v3', 'v1', create_incident => true) r;
COMMIT;
SELECT key, status, occurrences FROM pg_temp.planner_incidents();
-- a version too long for an incident key is refused when the incident is due
CALL pg_temp.load('plan.shop', repeat('v', 250), 40, '0.3 + (g % 10) / 20.0', '100',
				  '0.25', '(g % 2)::int');
SELECT r->>'verdict' AS verdict
  FROM gate_bridge.compare_planners('plan.shop', repeat('v', 250), 'v1') r;
SELECT pg_temp.try($$SELECT gate_bridge.compare_planners('plan.shop', repeat('v', 250), 'v1', create_incident => true)$$);

-------------------------------------------------------------------------------
-- The rows are read through (agent, created_at), and nothing else of
-- eval_results: with realistic data (200 agents, 3 versions each, a row an
-- hour over 200 hours), the index entries read are the agent's rows in
-- the window.
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.eval_results;
INSERT INTO gate_bridge.eval_results
	(agent, planner_version, quality, latency_p95_ms, cost_usd, success_rate, created_at)
SELECT format('load.agent%s', a), format('v%s', r % 3), (r % 10) / 10.0, r, 0.01, r % 2,
	   now() - interval '1 minute' - r * interval '1 hour'
  FROM generate_series(1, 200) a, generate_series(0, 199) r;
VACUUM ANALYZE gate_bridge.eval_results;
-- The statement's plan, as a custom and as a generic plan: no sequential
-- scan, the index bounds both the agent and the window (constants shown
-- as '...').
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
			   regexp_replace(string_agg(n->>'Index Cond', ' '), '''[^'']*''', '''...''', 'g')
		  FROM jsonb_path_query(plan, 'strict $.**') n
		 WHERE jsonb_typeof(n) = 'object' AND n ? 'Node Type';
END
$$;
PREPARE planner_rows (text, timestamptz, text, text) AS
	SELECT e.planner_version = $3,
		   e.quality, e.latency_p95_ms, e.cost_usd, e.success_rate
	  FROM gate_bridge.eval_results e
	 WHERE e.agent = $1 AND e.created_at > $2
	   AND e.planner_version IN ($3, $4);
SET plan_cache_mode = force_custom_plan;
SELECT * FROM pg_temp.scans($$EXECUTE planner_rows('load.agent42', now() - interval '24 hours', 'v1', 'v2')$$);
SET plan_cache_mode = force_generic_plan;
SELECT * FROM pg_temp.scans($$EXECUTE planner_rows('load.agent42', now() - interval '24 hours', 'v1', 'v2')$$);
RESET plan_cache_mode;
DEALLOCATE planner_rows;

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
-- 24 rows in 24 hours (16 of them of v1 or v2), 168 in 7 days (112); ten
-- calls, so that the kept statement also runs as a generic plan
SELECT count(*) AS calls,
	   sum((r->'metrics'->'quality'->>'n_canary')::int + (r->'metrics'->'quality'->>'n_baseline')::int) AS samples
  FROM generate_series(1, 10) i,
	   LATERAL gate_bridge.compare_planners('load.agent42', 'v1', 'v2',
											CASE WHEN i % 2 = 0 THEN '24 hours' ELSE '7 days' END::interval,
											min_samples => 2) r;
-- no sequential scan; index entries read = rows fetched = 5 * (24 + 168),
-- the rows of v0 filtered out after the fetch
SELECT r.seq_scans - :before_seq_scans AS seq_scans,
	   r.index_entries - :before_index_entries AS index_entries,
	   r.heap_fetches - :before_heap_fetches AS heap_fetches
  FROM pg_temp.reads() r;
COMMIT;

-------------------------------------------------------------------------------
-- Many rows (100000 of one agent, more than a fetch): the same result, on
-- every call.
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.eval_results;
INSERT INTO gate_bridge.eval_results
	(agent, planner_version, quality, latency_p95_ms, cost_usd, success_rate, created_at)
SELECT 'big.agent', CASE WHEN g % 2 = 0 THEN 'v1' ELSE 'v2' END, (g % 100) / 100.0,
	   g % 1000, (g % 7) * 0.125, (g % 3 = 0)::int, now() - interval '1 minute'
  FROM generate_series(1, 100000) g;
SELECT count(DISTINCT r) AS results,
	   min((r->'metrics'->'quality'->>'n_canary')::int) AS n_canary,
	   min((r->'metrics'->'quality'->>'n_baseline')::int) AS n_baseline
  FROM generate_series(1, 3) i, LATERAL gate_bridge.compare_planners('big.agent', 'v2', 'v1') r;
SELECT * FROM pg_temp.metrics(gate_bridge.compare_planners('big.agent', 'v2', 'v1'));

-- leave nothing behind for the tests that follow
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events,
		 gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
