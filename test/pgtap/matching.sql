-- Budget matching: the budget cache's pattern index gives every agent, for
-- every budget type, the budget that gate_bridge.pattern_rank() ranks
-- highest (exact name, then the longest "prefix.*" glob, then "*").
-- Checked over generated patterns and agents, edge cases included, through
-- evaluate_agent() (the budgets the trigger would apply) and through the
-- trigger itself; answered fresh from the index, again from the per-agent
-- memo, after the memo has been emptied, and after the budgets change.
BEGIN;
SELECT plan(20);

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

SELECT setseed(0.2024);

-------------------------------------------------------------------------------
-- Agents: every name of one to four segments from {a, b, ab, é, ""} joined
-- by dots ("a.b", "a.", ".a", "a..b", "é.ab.b", ...), and some odd ones.
-------------------------------------------------------------------------------
CREATE TEMP TABLE regress_segs (s text);
INSERT INTO regress_segs VALUES ('a'), ('b'), ('ab'), ('é'), ('');

CREATE TEMP TABLE regress_agents (name text PRIMARY KEY);
INSERT INTO regress_agents
SELECT DISTINCT n FROM (
	SELECT s1.s AS n FROM regress_segs s1
	UNION ALL
	SELECT s1.s || '.' || s2.s FROM regress_segs s1, regress_segs s2
	UNION ALL
	SELECT s1.s || '.' || s2.s || '.' || s3.s
	  FROM regress_segs s1, regress_segs s2, regress_segs s3
	UNION ALL
	SELECT s1.s || '.' || s2.s || '.' || s3.s || '.' || s4.s
	  FROM regress_segs s1, regress_segs s2, regress_segs s3, regress_segs s4
) AS x
 WHERE n <> '';
INSERT INTO regress_agents VALUES
	('a.*'),					-- a name that looks like a glob: only globs match it
	('a*'), ('*'), ('*.a'),
	('a.b.c.d.e.f'),
	(repeat('a.', 64)),			-- 128 bytes, the longest name; "a.a. ... a." prefixes
	(repeat('a.', 63) || 'ab'),
	('....'), ('é.é.é.é.é');

-------------------------------------------------------------------------------
-- Patterns: every agent name as an exact pattern, every name followed by
-- ".*" as a glob (the 128-byte one gives a 130-byte glob), and "*"; each
-- budget type takes a random share of them, one in ten disabled.
-------------------------------------------------------------------------------
CREATE TEMP TABLE regress_candidates (pattern text PRIMARY KEY);
INSERT INTO regress_candidates
SELECT name FROM regress_agents WHERE strpos(name, '*') = 0
UNION SELECT name || '.*' FROM regress_agents WHERE strpos(name, '*') = 0
UNION SELECT '*';

CREATE TEMP TABLE regress_types (budget_type text, share float8,
								 warning float8, error float8, critical float8);
INSERT INTO regress_types VALUES
	('quality',		 0.40, 0.8, 0.7, 0.5),
	('latency',		 0.15, 1000, 2000, 4000),
	('cost',		 0.05, 1, 2, 5),
	('success_rate', 0.01, 0.9, 0.8, 0.6),
	('invariants',	 0.20, 0, 2, 5);

-- (the pairs are materialized so that random() is drawn for each pair)
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, enabled)
WITH pairs AS MATERIALIZED (
	SELECT c.pattern, t.* FROM regress_candidates c, regress_types t
)
SELECT p.pattern, p.budget_type, p.warning, p.error, p.critical, random() >= 0.1
  FROM pairs p
 WHERE random() < p.share
 ORDER BY random();

-- The edge cases, whatever the draw: for the agents named below, the
-- quality budgets are "a.*", "a.b.*", "*", the exact names "a.b" and
-- "a.b.", and a disabled "a.b.c.*"; and there is a "*" for cost.
DELETE FROM gate_bridge.budgets b
 WHERE (b.budget_type = 'quality'
		AND EXISTS (SELECT FROM unnest(ARRAY['a.b.c', 'a.b.c.d', 'a.b', 'a.b.', 'a.ab',
											 'a.', 'a', 'a.*']) AS x(agent)
					 WHERE gate_bridge.pattern_rank(b.agent_pattern, x.agent) IS NOT NULL))
	OR (b.budget_type = 'cost' AND b.agent_pattern = '*');
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('a.*', 'quality', 0.8, 0.7, 0.5),
	('a.b.*', 'quality', 0.8, 0.7, 0.5),
	('*', 'quality', 0.8, 0.7, 0.5),
	('a.b', 'quality', 0.8, 0.7, 0.5),
	('a.b.', 'quality', 0.8, 0.7, 0.5),
	('*', 'cost', 1, 2, 5);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, enabled)
VALUES ('a.b.c.*', 'quality', 0.8, 0.7, 0.5, false);

SELECT cmp_ok((SELECT count(*) FROM regress_agents), '>', 700::bigint,
			  'more than 700 agents');
SELECT cmp_ok((SELECT count(*) FROM gate_bridge.budgets), '>', 1000::bigint,
			  'more than 1,000 budgets');
SELECT cmp_ok((SELECT count(DISTINCT length(agent_pattern))
				 FROM gate_bridge.budgets WHERE agent_pattern LIKE '%.*'),
			  '>=', 8::bigint, 'globs of at least 8 prefix lengths');

-------------------------------------------------------------------------------
-- The reference: for each agent and type, the enabled budget of the type
-- that pattern_rank() ranks highest.  (Two patterns of one type never rank
-- the same for one agent: equal ranks mean the same pattern.)
-------------------------------------------------------------------------------
CREATE TEMP TABLE regress_expected (agent text, budget_type text, pattern text);
CREATE FUNCTION pg_temp.regress_reference() RETURNS void
LANGUAGE sql AS $$
	TRUNCATE regress_expected;
	INSERT INTO regress_expected
	SELECT a.name, t.budget_type, best.agent_pattern
	  FROM regress_agents a CROSS JOIN regress_types t
	  LEFT JOIN (
		SELECT DISTINCT ON (a2.name, b.budget_type) a2.name, b.budget_type, b.agent_pattern
		  FROM regress_agents a2
		  JOIN gate_bridge.budgets b
			ON b.enabled AND gate_bridge.pattern_rank(b.agent_pattern, a2.name) IS NOT NULL
		 ORDER BY a2.name, b.budget_type,
				  gate_bridge.pattern_rank(b.agent_pattern, a2.name) DESC
	  ) AS best ON best.name = a.name AND best.budget_type = t.budget_type;
$$;

-- What the cache answers, through evaluate_agent(): one row per agent and
-- type, the pattern of the budget it applies (NULL: none).
CREATE FUNCTION pg_temp.regress_mismatches() RETURNS TABLE (agent text, budget_type text,
															 expected text, got text)
LANGUAGE sql AS $$
	WITH got AS (
		SELECT a.name, gate_bridge.evaluate_agent(a.name) -> 'budget' AS budget
		  FROM regress_agents a
	)
	SELECT e.agent, e.budget_type, e.pattern, g.budget -> e.budget_type ->> 'agent_pattern'
	  FROM regress_expected e JOIN got g ON g.name = e.agent
	 WHERE e.pattern IS DISTINCT FROM g.budget -> e.budget_type ->> 'agent_pattern'
	 ORDER BY 1, 2
$$;

SELECT pg_temp.regress_reference();
-- the reference as such is not trivial
SELECT cmp_ok((SELECT count(DISTINCT pattern) FROM regress_expected), '>', 300::bigint,
			  'the reference picks more than 300 distinct patterns');
SELECT ok((SELECT count(*) FILTER (WHERE pattern IS NULL) > 0
			  AND count(*) FILTER (WHERE pattern = '*') > 0
			  AND count(*) FILTER (WHERE pattern LIKE '%.*') > 0
			  AND count(*) FILTER (WHERE strpos(pattern, '*') = 0) > 0
			 FROM regress_expected),
		  'the reference has agents without a budget, with "*", with a glob and with an exact name');

CREATE TEMP TABLE regress_seen AS SELECT * FROM pg_temp.regress_mismatches();
SELECT is((SELECT count(*) FROM regress_seen), 0::bigint,
		  'every agent and type: the index picks the budget pattern_rank ranks highest');
SELECT diag(format('%s: %s expected %s, got %s', agent, budget_type, expected, got))
  FROM regress_seen LIMIT 10;

SELECT is((SELECT count(*) FROM pg_temp.regress_mismatches()), 0::bigint,
		  'the same, answered from the memo');

-------------------------------------------------------------------------------
-- Edge cases, by name.
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.regress_quality(agent text) RETURNS text
LANGUAGE sql AS $$
	SELECT gate_bridge.evaluate_agent(agent) -> 'budget' -> 'quality' ->> 'agent_pattern'
$$;
SELECT is(pg_temp.regress_quality('a.b.c'), 'a.b.*', '"a.b.c": "a.b.*" beats "a.*" (the disabled "a.b.c.*" does not count)');
SELECT is(pg_temp.regress_quality('a.b.c.d'), 'a.b.*', '"a.b.c.d": "a.b.*", the disabled "a.b.c.*" does not count');
SELECT is(pg_temp.regress_quality('a.b'), 'a.b', '"a.b": the exact name beats "a.*"');
SELECT is(pg_temp.regress_quality('a.b.'), 'a.b.', '"a.b.": the exact name beats "a.b.*", which matches it too');
SELECT is(pg_temp.regress_quality('a.ab'), 'a.*', '"a.ab": "a.*" ("a.b.*" needs "a.b.")');
SELECT is(pg_temp.regress_quality('a.'), 'a.*', '"a.": "a.*" matches (its prefix is "a.")');
SELECT is(pg_temp.regress_quality('a'), '*', '"a": only "*" ("a.*" needs "a.")');
SELECT is(pg_temp.regress_quality('a.*'), 'a.*', 'an agent named "a.*": the glob "a.*"');
SELECT is(gate_bridge.evaluate_agent('zzz.unknown') -> 'budget' -> 'cost' ->> 'agent_pattern', '*',
		  'an agent no other pattern names: "*"');

-------------------------------------------------------------------------------
-- The trigger applies the same budgets: a row with quality 0 crosses every
-- quality budget's critical floor, and the incident records the budget.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality) SELECT name, 0 FROM regress_agents;
-- decided at commit otherwise; this file rolls back
SELECT gate_bridge.decide_pending() IS NOT NULL AS decided \gset
SELECT is((SELECT count(*)
			 FROM regress_expected e
			 FULL JOIN (SELECT agent, details -> 'budget' ->> 'agent_pattern' AS pattern
						  FROM gate_bridge.incidents WHERE subject = 'quality') AS i
			   ON i.agent = e.agent
			WHERE e.budget_type = 'quality'
			  AND e.pattern IS DISTINCT FROM i.pattern),
		  0::bigint, 'the trigger: one quality incident per agent with a quality budget, with that budget');

-------------------------------------------------------------------------------
-- More distinct agents than the memo keeps (10,000): it is emptied and
-- filled again, and the answers stay the same.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent)
SELECT 'memo.' || g FROM generate_series(1, 12000) AS g;
SELECT is((SELECT count(*) FROM pg_temp.regress_mismatches()), 0::bigint,
		  'the same after 12,000 other agents');

-------------------------------------------------------------------------------
-- Budgets change: the cache is loaded again and the new index agrees too.
-------------------------------------------------------------------------------
DELETE FROM gate_bridge.budgets WHERE random() < 0.3;
UPDATE gate_bridge.budgets SET enabled = NOT enabled WHERE random() < 0.2;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT c.pattern, 'success_rate', 0.9, 0.8, 0.6
  FROM regress_candidates c
 WHERE random() < 0.1
ON CONFLICT DO NOTHING;
SELECT pg_temp.regress_reference();
SELECT is((SELECT count(*) FROM pg_temp.regress_mismatches()), 0::bigint,
		  'the same after budgets were deleted, switched and added');

-- No budget at all.
DELETE FROM gate_bridge.budgets;
SELECT pg_temp.regress_reference();
SELECT is((SELECT count(*) FROM pg_temp.regress_mismatches()), 0::bigint,
		  'the same without budgets');

SELECT * FROM finish();
ROLLBACK;
