-- The trigger on gate_bridge.eval_results: which rows violate which budget,
-- at which tier, and what incident each violation opens.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Every eval row with what it opened (budget kind), one line per violation.
CREATE FUNCTION pg_temp.outcome(agent_like text)
RETURNS TABLE (agent text, violation_type text, severity text,
			   tier text, actual text, threshold text, pattern text)
LANGUAGE sql AS $$
	SELECT e.agent, i.violation_type, i.severity,
		   i.details #>> '{violation,severity}',
		   i.details #>> '{violation,actual}',
		   i.details #>> '{violation,threshold}',
		   i.details #>> '{budget,agent_pattern}'
	  FROM gate_bridge.eval_results e
	  LEFT JOIN gate_bridge.incidents i
		ON i.details #>> '{eval_result,id}' = e.id::text
	 WHERE e.agent LIKE agent_like
	 ORDER BY e.id, i.id
$$;

-- No budget at all: a row is stored and nothing else happens.
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, success_rate)
VALUES ('nobudget.agent', 0, 1e9, 1e9, 0);
SELECT count(*) AS eval_rows FROM gate_bridge.eval_results;
SELECT count(*) AS incidents FROM gate_bridge.incidents;
SELECT count(*) AS incident_keys FROM gate_bridge.incident_keys;

-------------------------------------------------------------------------------
-- Floors (quality, success_rate) and ceilings (latency, cost), every tier.
-- Each agent is its own key, so no row is deduplicated against another.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('tier.*', 'quality',		0.9,  0.8,	0.7),
	('tier.*', 'success_rate',	0.95, 0.9,	0.5),
	('tier.*', 'latency',		1000, 2000, 5000),
	('tier.*', 'cost',			1,	  2,	5);

INSERT INTO gate_bridge.eval_results (agent, quality) VALUES
	('tier.quality_above',		0.95),
	('tier.quality_at_warning', 0.9),	-- equal to a floor is not below it
	('tier.quality_warning',	0.85),
	('tier.quality_at_error',	0.8),	-- crosses warning only
	('tier.quality_error',		0.75),
	('tier.quality_critical',	0.5),
	('tier.quality_zero',		0);
SELECT * FROM pg_temp.outcome('tier.quality%');

INSERT INTO gate_bridge.eval_results (agent, success_rate) VALUES
	('tier.success_ok',			1),
	('tier.success_warning',	0.94),
	('tier.success_error',		0.89),
	('tier.success_at_critical', 0.5),	-- crosses error only
	('tier.success_critical',	0.49);
SELECT * FROM pg_temp.outcome('tier.success%');

INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES
	('tier.latency_zero',		0),
	('tier.latency_at_warning', 1000),	-- equal to a ceiling is not above it
	('tier.latency_warning',	1000.5),
	('tier.latency_error',		2001),
	('tier.latency_at_critical', 5000),
	('tier.latency_critical',	5001);
SELECT * FROM pg_temp.outcome('tier.latency%');

INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES
	('tier.cost_ok',		0.99),
	('tier.cost_warning',	1.01),
	('tier.cost_error',		2.5),
	('tier.cost_critical',	1e6);
SELECT * FROM pg_temp.outcome('tier.cost%');

-- A NULL metric is not checked; one row can violate several budgets, and
-- each violation is its own incident, checked in column order.
INSERT INTO gate_bridge.eval_results (agent) VALUES ('tier.all_null');
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, success_rate)
VALUES ('tier.several', 0.1, 6000, 0.5, 0.92);
SELECT * FROM pg_temp.outcome('tier.all_null');
SELECT * FROM pg_temp.outcome('tier.several');
SELECT id, key, severity, summary FROM gate_bridge.incidents
 WHERE agent = 'tier.several' ORDER BY id;

-- A budget with only some tiers set checks only those.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('partial.*', 'cost', NULL, NULL, 10),
	('partial.*', 'quality', 0.5, NULL, NULL),
	('partial.*', 'latency', NULL, 100, NULL);
INSERT INTO gate_bridge.eval_results (agent, cost_usd, quality, latency_p95_ms) VALUES
	('partial.a', 9.99, 0.5, 100),
	('partial.b', 10.01, 0.49, 100.1),
	('partial.c', 0, 0.01, 1e9);
SELECT * FROM pg_temp.outcome('partial.%');

-- A multi-row INSERT and COPY go through the trigger row by row.
COPY gate_bridge.eval_results (agent, quality, cost_usd) FROM stdin;
tier.copy_clean	0.99	0.1
tier.copy_quality	0.2	\N
tier.copy_cost	\N	3
\.
SELECT * FROM pg_temp.outcome('tier.copy%');

-------------------------------------------------------------------------------
-- The most specific pattern wins: exact, then the longest glob, then "*".
-------------------------------------------------------------------------------
DELETE FROM gate_bridge.budgets;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES
	('*',				 'cost', 100),
	('spec.*',			 'cost', 50),
	('spec.deep.*',		 'cost', 20),
	('spec.deep.exact',	 'cost', 10);
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES
	('spec.deep.exact',		15),	-- exact: 10
	('spec.deep.exact2',	15),	-- not the exact name: spec.deep.* (20)
	('spec.deep.other',		25),	-- spec.deep.* (20)
	('spec.deep',			25),	-- "spec.deep.*" needs the dot: spec.* (50)
	('spec.shallow',		25),	-- spec.* (50)
	('spec.shallow',		55),	-- spec.* (50)
	('spec',				55),	-- "spec.*" needs the dot: * (100)
	('specx.y',				55),	-- * (100)
	('elsewhere',			101);	-- * (100)
SELECT * FROM pg_temp.outcome('spec%');
SELECT * FROM pg_temp.outcome('elsewhere');

-- A disabled budget is ignored: the next most specific enabled one applies.
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE agent = 'spec.deep.exact';
UPDATE gate_bridge.budgets SET enabled = false WHERE agent_pattern = 'spec.deep.exact';
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES
	('spec.deep.exact', 15),	-- nothing: 15 is within spec.deep.* (20)
	('spec.deep.exact', 30);	-- spec.deep.* (20)
SELECT * FROM pg_temp.outcome('spec.deep.exact');

-- With every budget of an agent disabled, nothing applies.
UPDATE gate_bridge.budgets SET enabled = false;
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('disabled.agent', 1e9);
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'disabled.agent';

-------------------------------------------------------------------------------
-- Budget changes are seen at once by this session's budget cache.
-------------------------------------------------------------------------------
DELETE FROM gate_bridge.budgets;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('cache.a', 0.6);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('cache.a', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('cache.a', 0.6);
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cache.a';
UPDATE gate_bridge.budgets SET warning = 0.7 WHERE agent_pattern = 'cache.a';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('cache.a', 0.6);
SELECT severity, details #>> '{violation,threshold}' AS threshold
  FROM gate_bridge.incidents WHERE agent = 'cache.a';
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents WHERE agent = 'cache.a';
-- a tier added to the budget
UPDATE gate_bridge.budgets SET critical = 0.65 WHERE agent_pattern = 'cache.a';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('cache.a', 0.6);
SELECT id, severity, status FROM gate_bridge.incidents WHERE agent = 'cache.a' ORDER BY id;
SELECT gate_bridge.resolve(id, 'regress_operator') FROM gate_bridge.incidents
 WHERE agent = 'cache.a' AND status = 'open';
-- a deleted budget
DELETE FROM gate_bridge.budgets WHERE agent_pattern = 'cache.a';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('cache.a', 0.0);
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cache.a';
-- inside a transaction (its violations are decided when it commits), and
-- forgotten again when it rolls back
BEGIN;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('cache.*', 'latency', 100);
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.b', 150);
COMMIT;
SELECT key, severity FROM gate_bridge.incidents WHERE agent = 'cache.b';
DELETE FROM gate_bridge.budgets WHERE agent_pattern = 'cache.*';
BEGIN;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('cache.*', 'latency', 100);
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.b2', 150);
ROLLBACK;
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.b2', 150);
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cache.b2';
-- and a change undone by ROLLBACK TO SAVEPOINT
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('cache.*', 'latency', 100);
BEGIN;
SAVEPOINT s;
UPDATE gate_bridge.budgets SET error = 1000 WHERE agent_pattern = 'cache.*';
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.c', 150);
ROLLBACK TO SAVEPOINT s;
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.c', 150);
COMMIT;
-- one incident, of the second row, checked against error = 100
SELECT key, severity, occurrences FROM gate_bridge.incidents WHERE agent = 'cache.c';
-- TRUNCATE empties the cache as well
TRUNCATE gate_bridge.budgets;
INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES ('cache.d', 1e6);
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cache.d';

-------------------------------------------------------------------------------
-- Failed invariants: one incident per invariant.
-------------------------------------------------------------------------------
-- Without an invariants budget the severity is "error".
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
VALUES ('inv.nobudget', '{no_pii,cites_sources}');
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
VALUES ('inv.nobudget', '{}');		-- nothing failed
SELECT key, violation_type, severity, summary, playbooks,
	   details #> '{violation}' AS violation, details -> 'budget' AS budget
  FROM gate_bridge.incidents WHERE kind = 'invariant' ORDER BY id;

-- With one, its tiers apply to the number of failed invariants in the row.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('inv.*', 'invariants', 0, 1, 2),
	   ('inv.lenient', 'invariants', 2, NULL, NULL);
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES
	('inv.one',		'{a}'),
	('inv.two',		'{a,b}'),
	('inv.three',	'{a,b,c}'),
	('inv.lenient', '{a,b}'),	-- 2 is not above 2: nothing
	('inv.lenient', '{a,b,c}');
SELECT agent, key, severity, details #>> '{violation,actual}' AS failed,
	   details #>> '{violation,threshold}' AS threshold
  FROM gate_bridge.incidents WHERE kind = 'invariant' AND agent <> 'inv.nobudget'
 ORDER BY id;
-- the invariants budget opens no budget incident of its own
SELECT count(*) FROM gate_bridge.incidents WHERE kind = 'budget' AND agent LIKE 'inv.%';
-- a disabled invariants budget: back to "error"
UPDATE gate_bridge.budgets SET enabled = false WHERE agent_pattern = 'inv.*';
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('inv.four', '{a}');
SELECT key, severity FROM gate_bridge.incidents WHERE agent = 'inv.four';
-- a row with budget violations and failed invariants opens both
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('inv.mixed', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
VALUES ('inv.mixed', 0.4, '{x}');
SELECT kind, key, severity FROM gate_bridge.incidents WHERE agent = 'inv.mixed' ORDER BY id;
-- The failed invariants are read however the array is stored: with a
-- 1-byte header (the small arrays above), a 4-byte header, compressed,
-- or out of line.  (200 names are more than gate_bridge.max_invariants_per_row
-- allows by default.)
SET gate_bridge.max_invariants_per_row = 200;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
SELECT 'inv.stored.' || how, names
  FROM (VALUES
		('header4', (SELECT array_agg('check_' || g) FROM generate_series(1, 20) g)),
		('compressed', (SELECT array_agg('check_number_' || lpad(g::text, 4, '0'))
						  FROM generate_series(1, 200) g)),
		('external', (SELECT array_agg(md5(g::text)) FROM generate_series(1, 200) g))
	   ) AS v(how, names);
RESET gate_bridge.max_invariants_per_row;
SELECT e.agent, pg_column_size(e.invariants_failed) > 127 AS over_127_bytes,
	   pg_column_compression(e.invariants_failed) AS compression,
	   cardinality(e.invariants_failed) AS failed,
	   (SELECT count(*) FROM gate_bridge.incidents i
		 WHERE i.agent = e.agent AND i.kind = 'invariant') AS incidents
  FROM gate_bridge.eval_results e WHERE e.agent LIKE 'inv.stored.%' ORDER BY e.id;
-- (md5 text does not compress, so that 7 kB array went out of line)
SELECT pg_relation_size(reltoastrelid) > 0 AS toast_holds_data
  FROM pg_class WHERE oid = 'gate_bridge.eval_results'::regclass;

-------------------------------------------------------------------------------
-- The details of an incident opened by the trigger (the row's created_at
-- varies, so it is checked and left out).
-------------------------------------------------------------------------------
DELETE FROM gate_bridge.budgets;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, lookback)
VALUES ('inbox.*', 'quality', 0.9, 0.8, 0.7, '1 day');
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, planner_version, triggered_by, context)
VALUES ('inbox.triage', 'eval-123', 0.65, 'v1.2.3', 'cron',
		'{"commit": "abc123", "attempt": 2, "tags": ["nightly"]}');
SELECT id, kind, key, agent, violation_type, severity, status, summary,
	   playbooks, occurrences, acked_at, acked_by, resolved_at, resolved_by,
	   resolution_note, first_seen_at = last_seen_at AS seen_once
  FROM gate_bridge.incidents WHERE agent = 'inbox.triage';
-- (the budget's lookback is checked as an interval: its text follows the
-- IntervalStyle of the session that loaded the budget cache)
SELECT jsonb_pretty(details #- '{eval_result,created_at}' #- '{budget,lookback}')
  FROM gate_bridge.incidents WHERE agent = 'inbox.triage';
SELECT (details #>> '{budget,lookback}')::interval = '1 day' AS lookback_is_1_day
  FROM gate_bridge.incidents WHERE agent = 'inbox.triage';
SELECT (i.details #>> '{eval_result,created_at}')::timestamptz = e.created_at AS created_at_matches
  FROM gate_bridge.incidents i
  JOIN gate_bridge.eval_results e ON e.id = (i.details #>> '{eval_result,id}')::bigint
 WHERE i.agent = 'inbox.triage';
-- a row without context gets an empty object
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('inbox.nocontext', 0.85);
SELECT details -> 'context' AS context, (details -> 'eval_result') - 'created_at' AS eval_result
  FROM gate_bridge.incidents WHERE agent = 'inbox.nocontext';

-- The trigger and on_invariant_failure() take the severity from one rule:
-- the agent's invariants budget applied to the count, "error" without one,
-- nothing when no tier is crossed.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('sevrule.*', 'invariants', 1, 2, 3);
CREATE TEMP TABLE sevrule AS
SELECT a.agent, n,
	   (SELECT array_agg('c' || g) FROM generate_series(1, n) g) AS failed
  FROM unnest(ARRAY['sevrule.a', 'nosevrule.a']) a (agent), generate_series(1, 5) n;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
SELECT agent || '.row' || n, failed FROM sevrule;
CREATE TEMP TABLE sevrule_fn AS
SELECT s.agent, s.n,
	   gate_bridge.on_invariant_failure(
		   jsonb_build_object('agent', s.agent || '.fn' || s.n, 'invariants_failed', to_jsonb(s.failed)),
		   '{"invariant": "c1"}') AS id
  FROM sevrule s;
SELECT s.agent, s.n,
	   (SELECT string_agg(DISTINCT i.severity, ',') FROM gate_bridge.incidents i
		 WHERE i.agent = s.agent || '.row' || s.n) AS by_trigger,
	   (SELECT i.severity FROM gate_bridge.incidents i WHERE i.id = f.id) AS by_function
  FROM sevrule s JOIN sevrule_fn f USING (agent, n)
 ORDER BY s.agent, s.n;
DELETE FROM gate_bridge.budgets WHERE agent_pattern = 'sevrule.*';

-------------------------------------------------------------------------------
-- Deciding a violation runs SQL, at commit.  Here a trigger on incidents
-- changes the budgets and inserts another eval row, whose check reloads the
-- budget cache; its violation is decided in a second round before commit.
-- The outer row's violations still describe the budgets they were checked
-- against.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error, lookback)
VALUES ('reent.a', 'quality', 0.8, '1 day'),
	   ('reent.a', 'latency', 1000, '2 days'),
	   ('reent.b', 'quality', 0.8, '3 days');
CREATE FUNCTION public.reent_trigger() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
	IF NEW.agent = 'reent.a' AND NEW.violation_type = 'quality' THEN
		UPDATE gate_bridge.budgets SET lookback = '30 days', error = error
		 WHERE agent_pattern IN ('reent.a', 'reent.b');
		INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('reent.b', 0.5);
	END IF;
	RETURN NULL;
END
$fn$;
CREATE TRIGGER reent AFTER INSERT ON gate_bridge.incident_rows
	FOR EACH ROW EXECUTE FUNCTION public.reent_trigger();
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms)
VALUES ('reent.a', 0.5, 5000);
SELECT key, details #>> '{budget,agent_pattern}' AS pattern,
	   details #>> '{budget,budget_type}' AS budget_type,
	   (details #>> '{budget,error}')::float8 AS error,
	   (details #>> '{budget,lookback}')::interval AS lookback
  FROM gate_bridge.incidents WHERE agent LIKE 'reent.%' ORDER BY id;

-- The same, where the nested row is rolled back inside a savepoint that the
-- trigger's code catches: its pending violation goes with its
-- subtransaction, while the outer transaction commits.  A hold on the
-- budget cache that outlived its transaction would be reported at commit
-- with a WARNING.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error, lookback)
VALUES ('reent.c', 'quality', 0.8, '4 days'), ('reent.d', 'quality', 0.8, '5 days'),
	   ('reent.d', 'cost', 1, '6 days');
CREATE OR REPLACE FUNCTION public.reent_trigger() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
	IF NEW.agent = 'reent.d' AND NEW.violation_type = 'quality' THEN
		BEGIN
			UPDATE gate_bridge.budgets SET lookback = '40 days' WHERE agent_pattern LIKE 'reent.%';
			INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('reent.e', 'quality', 0.8);
			INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('reent.e', 0.5);
			RAISE EXCEPTION 'refused';
		EXCEPTION WHEN raise_exception THEN
			RAISE NOTICE 'nested row refused: %', SQLERRM;
		END;
		UPDATE gate_bridge.budgets SET lookback = '50 days' WHERE agent_pattern = 'reent.c';
		INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('reent.c', 0.5);
	END IF;
	RETURN NULL;
END
$fn$;
INSERT INTO gate_bridge.eval_results (agent, quality, cost_usd)
VALUES ('reent.d', 0.5, 5);
SELECT key, details #>> '{budget,agent_pattern}' AS pattern,
	   (details #>> '{budget,lookback}')::interval AS lookback
  FROM gate_bridge.incidents WHERE agent IN ('reent.c', 'reent.d', 'reent.e') ORDER BY id;
SELECT count(*) AS budgets_of_e FROM gate_bridge.budgets WHERE agent_pattern = 'reent.e';
DROP TRIGGER reent ON gate_bridge.incident_rows;
DROP FUNCTION public.reent_trigger();

-- Every incident opened here has exactly one "created" event.
SELECT count(*) AS incidents,
	   count(*) FILTER (WHERE (SELECT count(*) FROM gate_bridge.incident_events ev
							  WHERE ev.incident_id = i.id AND ev.event = 'created') = 1)
		   AS with_one_created_event
  FROM gate_bridge.incidents i;
SELECT count(*) AS events FROM gate_bridge.incident_events WHERE event = 'created';

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
