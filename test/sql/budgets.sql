-- The rules of a budget (budgets_guard, in C next to the tiers), and the
-- rules of agent names and patterns that the CHECK constraints call.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Runs one statement; returns "ok" or the error's SQLSTATE and message,
-- with its detail and hint unless "terse".
CREATE FUNCTION pg_temp.try(stmt text, terse boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	d text;
	h text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
	IF terse THEN
		RETURN SQLSTATE || ': ' || SQLERRM;
	END IF;
	RETURN SQLSTATE || ': ' || SQLERRM || E'\n  DETAIL: ' || d || E'\n  HINT: ' || h;
END
$$;

-------------------------------------------------------------------------------
-- Refused: inverted tiers, thresholds outside the metric's domain, none.
-------------------------------------------------------------------------------
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	-- a floor: 0.90 would be a sev1 under these tiers
	(1, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES ('inv.*', 'quality', 0.50, 0.80, 0.95)$$),
	-- a ceiling: 200 would be a sev2
	(2, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, critical) VALUES ('inv.*', 'latency', 9000, 100)$$),
	(3, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error, critical) VALUES ('inv.*', 'success_rate', 0.5, 0.6)$$),
	(4, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error) VALUES ('inv.*', 'cost', 2, 1)$$),
	(5, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES ('inv.*', 'invariants', 0, 3, 2)$$),
	-- outside the domain
	(6, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('dom.a', 'quality', 5)$$),
	(7, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('dom.a', 'success_rate', -0.1)$$),
	(8, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('dom.a', 'latency', -1)$$),
	(9, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('dom.a', 'cost', -0.01)$$),
	(10, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('dom.a', 'invariants', -1)$$),
	(11, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('dom.a', 'quality', 'NaN')$$),
	(12, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('dom.a', 'latency', 'Infinity')$$),
	-- no threshold, unknown type
	(13, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type) VALUES ('dom.a', 'latency')$$),
	(14, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('dom.a', 'Quality', 0.5)$$),
	-- a long pattern is shortened in the message
	(15, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES (repeat('p', 100), 'quality', 2)$$)
  ) AS t(n, stmt)
 ORDER BY n;

-- Accepted: ordered tiers (equal ones too), the domain's ends, one tier.
BEGIN;
SELECT n, pg_temp.try(stmt) AS result
  FROM (VALUES
	(1, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES ('ok.a', 'quality', 1, 0.5, 0)$$),
	(2, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES ('ok.a', 'success_rate', 0.8, 0.8, 0.8)$$),
	(3, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES ('ok.a', 'latency', 0, 0, 1e308)$$),
	(4, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, critical) VALUES ('ok.a', 'cost', 1, 2)$$),
	(5, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('ok.a', 'invariants', 0)$$),
	(6, $$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, critical) VALUES ('ok.b', 'quality', 0.9, 0.5)$$)
  ) AS t(n, stmt)
 ORDER BY n;
ROLLBACK;

-- UPDATE is checked as INSERT is.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('upd.a', 'quality', 0.9, 0.8, 0.7);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET critical = 0.95 WHERE agent_pattern = 'upd.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET budget_type = 'latency' WHERE agent_pattern = 'upd.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET warning = NULL, error = NULL, critical = NULL WHERE agent_pattern = 'upd.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET warning = 0.95, lookback = '1 day' WHERE agent_pattern = 'upd.a'$$);
SELECT agent_pattern, budget_type, warning, error, critical, lookback FROM gate_bridge.budgets;

-- COPY goes through the same trigger.
COPY gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) FROM stdin;
copy.a	latency	300	200	100
\.
SELECT count(*) AS copied FROM gate_bridge.budgets WHERE agent_pattern = 'copy.a';

-- The trigger fires ALWAYS: also for rows that replication or a restore
-- writes (session_replication_role = replica).
SET session_replication_role = replica;
SELECT pg_temp.try($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, critical) VALUES ('repl.a', 'quality', 0.5, 0.9)$$);
RESET session_replication_role;
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'gate_bridge.budgets'::regclass AND tgname = 'budgets_guard';

-------------------------------------------------------------------------------
-- A budget stored before the rules existed (here: written while the guard
-- was off) is kept: it goes on applying, an UPDATE that leaves its type and
-- thresholds alone is allowed, one that touches them must fix it.
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.budgets DISABLE TRIGGER budgets_guard;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('old.a', 'quality', 0.50, 0.80, 0.95);
ALTER TABLE gate_bridge.budgets ENABLE ALWAYS TRIGGER budgets_guard;
SELECT agent_pattern, budget_type,
	   gate_bridge.budget_problem(budget_type, warning, error, critical) AS problem
  FROM gate_bridge.budgets ORDER BY agent_pattern;
-- the trigger and the gates still decide with it: the worst tier crossed
-- (0.90 is below the critical 0.95) is what its numbers say
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('old.a', 0.90);
SELECT key, severity FROM gate_bridge.incidents WHERE agent = 'old.a';
SELECT gate_bridge.evaluate_agent('old.a')->'violations' AS violations;
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET enabled = false WHERE agent_pattern = 'old.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET lookback = '2 days', enabled = true WHERE agent_pattern = 'old.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET warning = 0.55 WHERE agent_pattern = 'old.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET agent_pattern = 'old.b' WHERE agent_pattern = 'old.a'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.budgets SET warning = 0.95, critical = 0.5 WHERE agent_pattern = 'old.a'$$);
SELECT agent_pattern, warning, error, critical, enabled, lookback
  FROM gate_bridge.budgets WHERE agent_pattern LIKE 'old.%';

-- budget_problem() is the trigger's rule, for any values
SELECT t, w, e, c, gate_bridge.budget_problem(t, w, e, c) AS problem
  FROM (VALUES ('quality', 0.9, 0.8, 0.7), ('quality', 0.7, 0.8, 0.9), ('quality', NULL, 0.8, 0.9),
			   ('latency', 100, 200, NULL), ('latency', 100, NULL, 50), ('cost', -1, NULL, NULL),
			   ('invariants', 0, 0, 0), ('success_rate', NULL, NULL, NULL), ('speed', 1, 2, 3),
			   (NULL, 1, 2, 3)) AS v (t, w, e, c);

-------------------------------------------------------------------------------
-- Agent names and patterns: the C rules accept exactly what the 1.0 CHECK
-- expressions accepted.
-------------------------------------------------------------------------------
CREATE TEMP TABLE names (s text);
INSERT INTO names VALUES
	(''), ('a'), ('*'), ('**'), ('.*'), ('a.*'), ('..*'), ('a*'), ('a.*.b'), ('*.a'), ('a.**'),
	('a.b.*'), ('a b'), ('é.*'), ('€'), (E'a\nb.*'), ('a.*' || chr(10)), (repeat('a', 128)),
	(repeat('a', 129)), (repeat('a', 130)), (repeat('a', 131)), (repeat('a', 128) || '.*'),
	(repeat('a', 129) || '.*'), (repeat('€', 42) || 'ab'), (repeat('€', 43)), (repeat('€', 43) || '.*');
SELECT count(*) AS names,
	   count(*) FILTER (WHERE gate_bridge.valid_agent_name(s)
						IS DISTINCT FROM (s <> '' AND octet_length(s) <= 128)) AS name_differs,
	   count(*) FILTER (WHERE gate_bridge.valid_agent_pattern(s)
						IS DISTINCT FROM (octet_length(s) <= 130
										  AND (s = '*' OR s ~ '^[^*]+$' OR s ~ '^[^*]+\.\*$'))) AS pattern_differs,
	   count(*) FILTER (WHERE gate_bridge.valid_agent_name(s)) AS valid_names,
	   count(*) FILTER (WHERE gate_bridge.valid_agent_pattern(s)) AS valid_patterns
  FROM names;
SELECT gate_bridge.valid_agent_name(NULL) IS NULL AS strict_name,
	   gate_bridge.valid_agent_pattern(NULL) IS NULL AS strict_pattern;
-- and the CHECK constraints use them
SELECT pg_temp.try($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('a.*.b', 'cost', 1)$$, true);
SELECT pg_temp.try($$INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks) VALUES ('cost', 'x*', '{rerun_eval}')$$, true);
SELECT pg_temp.try($$INSERT INTO gate_bridge.eval_results (agent) VALUES (repeat('a', 129))$$, true);
-- a writer with INSERT on eval_results only passes the CHECK: the rule
-- functions are for everyone
CREATE ROLE regress_budgets_writer;
GRANT USAGE ON SCHEMA gate_bridge TO regress_budgets_writer;
GRANT INSERT (agent, quality) ON gate_bridge.eval_results TO regress_budgets_writer;
SET ROLE regress_budgets_writer;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('writer.a', 0.5);
SELECT pg_temp.try($$INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('', 0.5)$$, true);
RESET ROLE;
REVOKE ALL ON gate_bridge.eval_results FROM regress_budgets_writer;
REVOKE ALL ON SCHEMA gate_bridge FROM regress_budgets_writer;
DROP ROLE regress_budgets_writer;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
