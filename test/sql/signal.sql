-- Gates that tell signal from noise: min_samples and insufficient_data,
-- agents no budget covers, the wilson and baseline methods, the windows a
-- baseline keeps, and heartbeats.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys,
		 gate_bridge.gate_windows, gate_bridge.heartbeats RESTART IDENTITY CASCADE;
SET gate_bridge.enabled = off;

-- One line per gate: what was decided and why.
CREATE FUNCTION pg_temp.gate(agent text, min_samples integer DEFAULT NULL)
RETURNS TABLE (status text, passed boolean, samples bigint, violations jsonb, insufficient jsonb)
LANGUAGE sql AS $$
	SELECT g.status, g.passed, g.samples,
		   (SELECT COALESCE(jsonb_agg(jsonb_build_object('type', v->>'budget_type',
														 'severity', v->>'severity',
														 'actual', round((v->>'actual')::numeric, 6),
														 'threshold', round((v->>'threshold')::numeric, 6))), '[]')
			  FROM jsonb_array_elements(g.violations) v),
		   g.insufficient
	  FROM gate_bridge.run_gates(agent, min_samples => min_samples) g
$$;

-------------------------------------------------------------------------------
-- Budget columns: defaults, ranges, the method's rules.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('cols', 'quality', 0.5)
RETURNING min_samples, method, baseline_windows, baseline_k;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, min_samples) VALUES ('bad', 'quality', 0.5, 0);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, baseline_windows) VALUES ('bad', 'quality', 0.5, 1);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, baseline_k) VALUES ('bad', 'quality', 0.5, 'NaN');
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, baseline_k) VALUES ('bad', 'quality', 0.5, 0);
\set VERBOSITY default
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method) VALUES ('bad', 'quality', 0.5, 'median');
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method) VALUES ('bad', 'quality', 0.5, 'wilson');
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method, lookback)
VALUES ('bad', 'quality', 0.5, 'baseline', '1 mon');
-- an UPDATE that leaves the thresholds alone is checked for the method too
UPDATE gate_bridge.budgets SET method = 'wilson' WHERE agent_pattern = 'cols';
\set VERBOSITY terse
DELETE FROM gate_bridge.budgets;

-------------------------------------------------------------------------------
-- min_samples: fewer values in a metric's window is insufficient_data,
-- neither passed nor failed; passed is NULL.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, min_samples) VALUES
	('few',		'quality',	0.8, 0.5, 3),
	('enough',	'quality',	0.8, 0.5, 3),
	('mixed',	'quality',	0.8, 0.5, 1),
	('mixed',	'latency',	100, 200, 5),
	('empty',	'quality',	0.8, 0.5, 1),
	('nulls',	'quality',	0.8, 0.5, 1),
	('nulls',	'invariants', 1, 2, 1);
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms) VALUES
	('few', 0.1, NULL), ('few', 0.1, NULL),
	('enough', 0.9, NULL), ('enough', 0.9, NULL), ('enough', 0.9, NULL),
	('mixed', 0.1, 10), ('mixed', 0.1, 10),
	-- rows without a quality: the quality gate has nothing to judge; no
	-- invariants reported means none failed
	('nulls', NULL, 10), ('nulls', NULL, 10);
SELECT a, g.* FROM unnest(ARRAY['few', 'enough', 'mixed', 'empty', 'nulls']) a, pg_temp.gate(a) g ORDER BY a;
-- the caller's min_samples raises the budgets' (never lowers them)
SELECT a, g.status, g.insufficient FROM unnest(ARRAY['few', 'enough']) a, pg_temp.gate(a, 4) g ORDER BY a;
SELECT a, g.status FROM unnest(ARRAY['few', 'enough']) a, pg_temp.gate(a, 1) g ORDER BY a;
SELECT * FROM gate_bridge.run_gates(min_samples => 0);
SELECT * FROM gate_bridge.run_gates(min_samples => 1000001);
-- every gate over all agents, and the incidents: none for a gate not judged
SELECT agent, status, passed, cardinality(incident_ids) AS incidents
  FROM gate_bridge.run_gates(create_incidents => true) ORDER BY agent COLLATE "C";
-- evaluate_agent says the same
SELECT r->>'status' AS status, r->'passed' AS passed, r->'insufficient' AS insufficient
  FROM gate_bridge.evaluate_agent('few') r;

-- An agent no budget covers is reported as such, with a warning.
SELECT * FROM gate_bridge.run_gates('typo');
SELECT r->>'status' AS status, r->'passed' AS passed FROM gate_bridge.evaluate_agent('typo') r;
DELETE FROM gate_bridge.budgets;
DELETE FROM gate_bridge.eval_results;

-------------------------------------------------------------------------------
-- wilson: success_rate judged by the 95 % Wilson lower bound of the rate.
-- 18 of 20 successes: rate 0.9, lower bound 0.699 (statsmodels'
-- proportion_confint(18, 20, method="wilson") gives 0.6989700...).
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, method) VALUES
	('wilson.a', 'success_rate', 0.8, 0.7, 'wilson'),
	('mean.a',	 'success_rate', 0.8, 0.7, 'mean');
INSERT INTO gate_bridge.eval_results (agent, success_rate)
SELECT a, CASE WHEN g <= 18 THEN 1 ELSE 0 END
  FROM unnest(ARRAY['wilson.a', 'mean.a']) a, generate_series(1, 20) g;
SELECT a, g.* FROM unnest(ARRAY['mean.a', 'wilson.a']) a, pg_temp.gate(a) g ORDER BY a;
SELECT round((r->'windows'->'success_rate'->>'wilson_lower')::numeric, 10) AS wilson_lower,
	   r->'budget'->'success_rate'->>'method' AS method
  FROM gate_bridge.evaluate_agent('wilson.a') r;
-- with 200 rows at the same rate the bound is 0.850: passes
INSERT INTO gate_bridge.eval_results (agent, success_rate)
SELECT 'wilson.a', CASE WHEN g <= 162 THEN 1 ELSE 0 END FROM generate_series(1, 180) g;
SELECT g.* FROM pg_temp.gate('wilson.a') g;
SELECT round((gate_bridge.evaluate_agent('wilson.a')->'windows'->'success_rate'->>'wilson_lower')::numeric, 10);
DELETE FROM gate_bridge.budgets;
DELETE FROM gate_bridge.eval_results;

-------------------------------------------------------------------------------
-- baseline: against the median +- k * MAD of the previous windows, whole
-- windows of the lookback aligned to 2000-01-01 00:00 UTC.  With a lookback
-- of 1 day, the past windows are the UTC days before the day the current
-- window starts in.
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.past_day(n integer) RETURNS timestamptz
LANGUAGE sql AS $$
	SELECT date_bin('1 day', now() - interval '1 day', '2000-01-01 00:00:00+00')
		   - n * interval '1 day' + interval '12 hours'
$$;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, critical, method, lookback,
								 baseline_windows, baseline_k) VALUES
	('base.*', 'quality', 0.5, 0.1, 'baseline', '1 day', 4, 3),
	('base.*', 'latency', 1000, 5000, 'baseline', '1 day', 4, 3);
-- past quality 0.80, 0.82, 0.84, 0.86: median 0.83, MAD 0.02, floor 0.77;
-- past latency 100, 110, 120, 130: median 115, MAD 10, ceiling 145
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, created_at)
SELECT a, 0.78 + 0.02 * d, 90 + 10 * d, pg_temp.past_day(d)
  FROM unnest(ARRAY['base.steady', 'base.drop', 'base.slow']) a, generate_series(1, 4) d;
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, created_at) VALUES
	('base.steady', 0.80, 120, now() - interval '1 minute'),	-- inside the band
	('base.drop',   0.70, 120, now() - interval '1 minute'),	-- below 0.77: warning
	('base.slow',   0.80, 150, now() - interval '1 minute'),	-- above 145: warning
	('base.young',  0.80, 120, now() - interval '1 minute'),	-- no past windows
	('base.new',    0.05, 120, now() - interval '1 minute');	-- none, but below the critical 0.1
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, created_at)
VALUES ('base.young', 0.80, 120, pg_temp.past_day(1));
SELECT a, g.status, g.passed, g.violations, g.insufficient
  FROM unnest(ARRAY['base.steady', 'base.drop', 'base.slow', 'base.young', 'base.new']) a, pg_temp.gate(a) g ORDER BY a;
SELECT r->'windows'->'quality'->'baseline' AS quality, r->'windows'->'latency'->'baseline' AS latency
  FROM gate_bridge.evaluate_agent('base.drop') r;
-- the past windows were kept, one per day and metric, empty days too
SELECT agent, budget_type, lookback, count(*), sum(samples) AS samples,
	   round(min(value)::numeric, 2) AS min, round(max(value)::numeric, 2) AS max
  FROM gate_bridge.gate_windows GROUP BY 1, 2, 3 ORDER BY agent COLLATE "C", budget_type COLLATE "C";
SELECT count(*) FILTER (WHERE window_end = date_bin('1 day', now() - interval '1 day', '2000-01-01 00:00:00+00'))
	   AS latest_ends_at_the_aligned_day
  FROM gate_bridge.gate_windows WHERE agent = 'base.drop';
-- what is kept is used: rows added to past days later do not move the
-- baseline until its windows are deleted (then days 1 and 2 average 0.40
-- and 0.42: median 0.63, MAD 0.22, floor -0.03)
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, created_at)
VALUES ('base.drop', 0.0, 120, pg_temp.past_day(1)), ('base.drop', 0.0, 120, pg_temp.past_day(2));
SELECT g.status, g.violations FROM pg_temp.gate('base.drop') g;
DELETE FROM gate_bridge.gate_windows WHERE agent = 'base.drop';
SELECT g.status, g.violations FROM pg_temp.gate('base.drop') g;
-- a fixed tier still applies: the window's quality 0.08 (0.80 and nine
-- zeros) is below the critical 0.1
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT 'base.steady', 0.0, now() - interval '1 second' FROM generate_series(1, 9);
SELECT g.status, g.violations FROM pg_temp.gate('base.steady') g;
-- evaluate_agent reads the kept windows and keeps none; neither does a
-- read-only transaction
DELETE FROM gate_bridge.gate_windows;
SELECT gate_bridge.evaluate_agent('base.slow')->>'status' AS status;
SELECT count(*) FROM gate_bridge.gate_windows;
BEGIN READ ONLY;
SELECT agent, status FROM gate_bridge.run_gates('base.slow');
COMMIT;
SELECT count(*) FROM gate_bridge.gate_windows;
DELETE FROM gate_bridge.budgets;
DELETE FROM gate_bridge.eval_results;

-------------------------------------------------------------------------------
-- Heartbeats: tick() opens HEARTBEAT_{agent} for an agent silent for longer
-- than max_silence, and resolves it when rows arrive again.
-------------------------------------------------------------------------------
SET gate_bridge.enabled = on;
INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence) VALUES ('bad', '0 seconds');
INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence, severity) VALUES ('bad', '1 hour', 'sev1');
INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence) VALUES ('bad*', '1 hour');
INSERT INTO gate_bridge.eval_results (agent, quality, created_at) VALUES
	('hb.quiet', 0.9, now() - interval '2 hours'),
	('hb.alive', 0.9, now() - interval '10 minutes'),
	('hb.slow', 0.9, now() - interval '2 hours'),
	('other', 0.9, now() - interval '2 days');
INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence, severity) VALUES
	('hb.*', '1 hour', 'error'),
	('hb.slow', '3 hours', 'warning'),	-- the most specific pattern applies
	('hb.never', '1 hour', 'critical');	-- named exactly: no row at all is silence
SELECT gate_bridge.tick();
SELECT key, kind, agent, subject, violation_type, severity, status,
	   details->>'agent_pattern' AS pattern, details->>'max_silence' AS max_silence,
	   details->>'last_seen_at' IS NOT NULL AS has_last_seen
  FROM gate_bridge.incidents ORDER BY id;
-- a second tick neither opens nor folds anything
SELECT gate_bridge.tick();
SELECT key, occurrences FROM gate_bridge.incidents ORDER BY id;
-- a row arrives: resolved with the evidence
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('hb.quiet', 0.9);
SELECT gate_bridge.tick();
SELECT i.key, i.status, e.event, e.detail->>'reason' AS reason
  FROM gate_bridge.incidents i JOIN gate_bridge.incident_events e ON e.incident_id = i.id
 WHERE e.event <> 'created' ORDER BY e.id;
-- the heartbeat removed (or disabled): its incident is resolved
DELETE FROM gate_bridge.heartbeats WHERE agent_pattern = 'hb.never';
SELECT gate_bridge.tick();
SELECT key, status FROM gate_bridge.incidents ORDER BY id;
-- silences know the kind and the violation type
SELECT gate_bridge.silence('hb.*', '1 hour', 'maintenance', kind => 'heartbeat', violation_type => 'heartbeat') > 0;
-- the decision counters know the kind
SELECT kind, created FROM gate_bridge.stats WHERE kind = 'heartbeat';
DELETE FROM gate_bridge.heartbeats;
SELECT gate_bridge.tick();
SELECT count(*) FILTER (WHERE status <> 'resolved') AS unresolved FROM gate_bridge.incidents;
