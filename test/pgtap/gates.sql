-- Gate evaluation over time windows: the functions' signatures, who may
-- call them, that running the gates needs no other privilege, and errors by
-- SQLSTATE.
BEGIN;
SELECT plan(78);

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-------------------------------------------------------------------------------
-- Signatures.
-------------------------------------------------------------------------------
SELECT has_function('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval']);
SELECT has_function('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer']);
SELECT hasnt_function('gate_bridge', 'run_gates_impl', ARRAY['text', 'interval', 'boolean'],
					  'run_gates is one C function: no separate body to call');
SELECT has_function('gate_bridge', 'window_start', ARRAY['interval']);

SELECT is(pg_get_function_arguments('gate_bridge.evaluate_agent(text, interval)'::regprocedure),
		  'agent text, lookback interval DEFAULT NULL::interval',
		  'evaluate_agent(agent text, lookback interval DEFAULT NULL)');
SELECT is(pg_get_function_result('gate_bridge.evaluate_agent(text, interval)'::regprocedure),
		  'jsonb', 'evaluate_agent returns jsonb');
SELECT is(pg_get_function_arguments('gate_bridge.run_gates(text, interval, boolean, integer)'::regprocedure),
		  'agent text DEFAULT NULL::text, lookback interval DEFAULT NULL::interval, create_incidents boolean DEFAULT false, min_samples integer DEFAULT NULL::integer',
		  'run_gates(agent text DEFAULT NULL, lookback interval DEFAULT NULL, create_incidents boolean DEFAULT false, min_samples integer DEFAULT NULL)');
SELECT is(pg_get_function_result('gate_bridge.run_gates(text, interval, boolean, integer)'::regprocedure),
		  'TABLE(agent text, status text, passed boolean, samples bigint, violations jsonb, insufficient jsonb, incident_ids bigint[])',
		  'run_gates returns TABLE(agent text, status text, passed boolean, samples bigint, violations jsonb, insufficient jsonb, incident_ids bigint[])');

SELECT function_lang_is('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval'], 'c');
SELECT function_lang_is('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer'], 'c');
SELECT function_lang_is('gate_bridge', 'window_start', ARRAY['interval'], 'c');
SELECT volatility_is('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval'], 'stable');
SELECT volatility_is('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer'], 'volatile');
SELECT volatility_is('gate_bridge', 'window_start', ARRAY['interval'], 'stable');
-- evaluate_agent does its reading as the owner with search_path pinned in
-- C (as the trigger does); run_gates is SECURITY DEFINER as well
SELECT isnt_definer('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval']);
SELECT is_definer('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer']);
SELECT isnt_definer('gate_bridge', 'window_start', ARRAY['interval']);
SELECT is((SELECT p.proconfig FROM pg_proc p
			WHERE p.oid = 'gate_bridge.run_gates(text, interval, boolean, integer)'::regprocedure),
		  ARRAY['search_path=pg_catalog, pg_temp'],
		  'run_gates pins search_path');

-------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; EXECUTE is granted deliberately.
-------------------------------------------------------------------------------
SELECT function_privs_are('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval'],
						  'public', ARRAY[]::text[]);
SELECT function_privs_are('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer'],
						  'public', ARRAY[]::text[]);
SELECT function_privs_are('gate_bridge', 'window_start', ARRAY['interval'],
						  'public', ARRAY[]::text[]);

CREATE ROLE regress_gates_nobody;
CREATE ROLE regress_gates_viewer;	-- may evaluate
CREATE ROLE regress_gates_ci;		-- may run the gates and open incidents
GRANT USAGE ON SCHEMA gate_bridge
	TO regress_gates_nobody, regress_gates_viewer, regress_gates_ci;
GRANT EXECUTE ON FUNCTION gate_bridge.evaluate_agent(text, interval) TO regress_gates_viewer;
GRANT EXECUTE ON FUNCTION gate_bridge.run_gates(text, interval, boolean, integer) TO regress_gates_ci;

SELECT function_privs_are('gate_bridge', 'evaluate_agent', ARRAY['text', 'interval'],
						  'regress_gates_viewer', ARRAY['EXECUTE']);
SELECT function_privs_are('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer'],
						  'regress_gates_viewer', ARRAY[]::text[]);
SELECT function_privs_are('gate_bridge', 'run_gates', ARRAY['text', 'interval', 'boolean', 'integer'],
						  'regress_gates_ci', ARRAY['EXECUTE']);
SELECT function_privs_are('gate_bridge', 'on_budget_violation', ARRAY['jsonb', 'jsonb', 'jsonb'],
						  'regress_gates_ci', ARRAY[]::text[]);

-- Data: one failing agent.  The trigger is off while loading so that the
-- incidents below come from run_gates.
SET LOCAL gate_bridge.enabled = off;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('regress.gates', 'quality', 0.9, 0.8, 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality, created_at) VALUES
	('regress.gates', 0.25, now() - interval '1 hour'),
	('regress.gates', 0.5,  now() - interval '2 hours'),
	('regress.gates', 0.0,  now() - interval '30 days');
RESET gate_bridge.enabled;

SELECT current_setting('search_path') AS search_path_before \gset

SET LOCAL ROLE regress_gates_nobody;
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('regress.gates')$$, '42501', NULL,
				 'without a grant, evaluate_agent is refused');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates()$$, '42501', NULL,
				 'without a grant, run_gates is refused');
SELECT throws_ok($$SELECT gate_bridge.window_start('1 day')$$, '42501', NULL,
				 'without a grant, window_start is refused');
RESET ROLE;

SET LOCAL ROLE regress_gates_viewer;
SELECT is((SELECT (r->>'samples')::int FROM gate_bridge.evaluate_agent('regress.gates') r), 2,
		  'viewer: evaluate_agent reads the window without SELECT on eval_results');
SELECT is((SELECT r->'violations'->0->>'severity' FROM gate_bridge.evaluate_agent('regress.gates') r),
		  'critical', 'viewer: evaluate_agent checks against budgets without SELECT on budgets');
SELECT throws_ok($$SELECT count(*) FROM gate_bridge.eval_results$$, '42501', NULL,
				 'viewer: eval_results itself stays closed');
SELECT throws_ok($$SELECT count(*) FROM gate_bridge.budgets$$, '42501', NULL,
				 'viewer: budgets itself stays closed');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates()$$, '42501', NULL,
				 'viewer: run_gates is refused');
SELECT is(current_user::text, 'regress_gates_viewer',
		  'viewer: the switch to the owner does not outlive the call');
SELECT is(current_setting('search_path'), :'search_path_before',
		  'viewer: the pinned search_path does not outlive the call');
RESET ROLE;

SET LOCAL ROLE regress_gates_ci;
SELECT throws_ok($$SELECT gate_bridge.on_budget_violation('{"agent": "regress.gates", "budget_type": "quality", "severity": "critical", "actual": 0, "threshold": 1}')$$,
				 '42501', NULL, 'ci: cannot open an incident of its choosing');
SELECT throws_ok($$SELECT gate_bridge.window_start('1 day')$$, '42501', NULL,
				 'ci: window_start is refused');
SELECT results_eq(
	$$SELECT r.agent, r.passed, r.samples, cardinality(r.incident_ids), r.incident_ids[1] IS NOT NULL
		FROM gate_bridge.run_gates(create_incidents => true) r$$,
	$$VALUES ('regress.gates'::text, false, 2::bigint, 1, true)$$,
	'ci: run_gates(create_incidents => true) opens the incident, with EXECUTE on run_gates only');
SELECT results_eq(
	$$SELECT r.agent, r.incident_ids FROM gate_bridge.run_gates('regress.gates', '7 days', true) r$$,
	$$VALUES ('regress.gates'::text, '{NULL}'::bigint[])$$,
	'ci: a second run folds into the open incident: its position is NULL');
-- That fold is decided at commit; decide it now, as ci, to count it below.
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT is(current_user::text, 'regress_gates_ci',
		  'ci: the switch to the owner does not outlive the call');
RESET ROLE;

SELECT results_eq(
	$$SELECT i.key, i.severity, i.occurrences,
			 i.details->'context'->>'session_user' = session_user
		FROM gate_bridge.incidents i$$,
	$$VALUES ('BUDGET_regress.gates_quality'::text, 'sev1'::text, 2, true)$$,
	'the incident is the violation''s, deduplicated, and names the session that ran the gates');
SELECT is((SELECT count(*) FROM gate_bridge.incident_events e WHERE e.event = 'created')::int, 1,
		  'one created timeline row');

-------------------------------------------------------------------------------
-- The caller's search_path cannot steer the functions.
-------------------------------------------------------------------------------
CREATE SCHEMA regress_gates_evil;
CREATE FUNCTION regress_gates_evil.now() RETURNS timestamptz
	LANGUAGE sql AS $$ SELECT '2000-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION regress_gates_evil.pattern_rank(text, text) RETURNS integer
	LANGUAGE sql AS $$ SELECT 0 $$;
SET LOCAL search_path = regress_gates_evil, public, gate_bridge, pg_catalog;
SELECT is(now()::date, '2000-01-01'::date, 'the planted now() is what an unqualified call finds');
SELECT is((SELECT (r->>'samples')::int FROM gate_bridge.evaluate_agent('regress.gates') r), 2,
		  'evaluate_agent ignores a planted now()');
SELECT is((SELECT r->'budget'->'quality'->>'agent_pattern'
			 FROM gate_bridge.evaluate_agent('regress.gates') r),
		  'regress.gates', 'evaluate_agent ignores a planted pattern_rank()');
RESET search_path;

-------------------------------------------------------------------------------
-- Without a lookback each metric uses its budget's: 90 minutes holds only
-- the row of an hour ago; a lookback given overrides it.
-------------------------------------------------------------------------------
UPDATE gate_bridge.budgets SET lookback = '90 minutes' WHERE agent_pattern = 'regress.gates';
SELECT results_eq(
	$$SELECT (r->>'samples')::int, r->>'lookback', r->'windows'->'quality'->>'lookback',
			 (r->'windows'->'quality'->>'samples')::int, (r->'metrics'->>'quality')::float8
		FROM gate_bridge.evaluate_agent('regress.gates') r$$,
	$$VALUES (1, '01:30:00', '01:30:00', 1, 0.25::float8)$$,
	'evaluate_agent: the budget''s lookback is the quality window');
SELECT results_eq(
	$$SELECT r.samples, jsonb_array_length(r.violations) FROM gate_bridge.run_gates('regress.gates') r
	  UNION ALL
	  SELECT r.samples, jsonb_array_length(r.violations) FROM gate_bridge.run_gates('regress.gates', '7 days') r$$,
	$$VALUES (1::bigint, 1), (2::bigint, 1)$$,
	'run_gates: samples over the budget''s window, or over the lookback given');

-------------------------------------------------------------------------------
-- Errors by SQLSTATE.
-------------------------------------------------------------------------------
SELECT is((SELECT r->'windows'->'quality'->>'lookback' FROM gate_bridge.evaluate_agent('regress.gates', NULL) r),
		  '01:30:00', 'evaluate_agent: a NULL lookback means each budget''s own');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('regress.gates', '-1 day')$$, '22023',
				 NULL, 'evaluate_agent: negative lookback');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('regress.gates', '0')$$, '22023',
				 NULL, 'evaluate_agent: zero lookback');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('regress.gates', '1 day -24 hours')$$, '22023',
				 NULL, 'evaluate_agent: a lookback that adds up to zero');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('regress.gates', '300000 years')$$, '22023',
				 NULL, 'evaluate_agent: a lookback past the earliest timestamp');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent(NULL)$$, '22004',
				 'agent must not be null', 'evaluate_agent: NULL agent');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent('')$$, '22023',
				 NULL, 'evaluate_agent: empty agent');
SELECT throws_ok($$SELECT gate_bridge.evaluate_agent(repeat('a', 129))$$, '22023',
				 NULL, 'evaluate_agent: agent over 128 bytes');
SELECT lives_ok($$SELECT gate_bridge.evaluate_agent(repeat('a', 128), '1 microsecond')$$,
				'evaluate_agent: 128 bytes and a tiny window are fine');
SELECT lives_ok($$SELECT * FROM gate_bridge.run_gates(lookback => NULL)$$,
				'run_gates: a NULL lookback means each budget''s own');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates(lookback => '-1 hour')$$, '22023',
				 NULL, 'run_gates: negative lookback');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates('regress.gates', '0')$$, '22023',
				 NULL, 'run_gates: zero lookback for a named agent');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates(create_incidents => NULL)$$, '22004',
				 NULL, 'run_gates: NULL create_incidents');
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates('')$$, '22023',
				 NULL, 'run_gates: empty agent');
SELECT throws_ok($$SELECT gate_bridge.window_start(NULL)$$, '22023',
				 NULL, 'window_start: NULL lookback');
SELECT is(gate_bridge.window_start('1 day'), now() - interval '1 day',
		  'window_start is now() - lookback');

-- Bad arguments are refused before anything is read or created.
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets;
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates(lookback => '-7 days', create_incidents => true)$$,
				 '22023', NULL, 'run_gates: bad lookback with nothing to evaluate');
SELECT is_empty($$SELECT * FROM gate_bridge.run_gates()$$, 'run_gates: no budgets, no rows');

-------------------------------------------------------------------------------
-- Signal from noise: the tables and functions of min_samples, baselines,
-- canary statistics and heartbeats, and who may use them.
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM gate_bridge.run_gates(min_samples => 0)$$, '22023',
				 NULL, 'run_gates: min_samples below 1');
SELECT has_table('gate_bridge', 'heartbeats', 'heartbeats exists');
SELECT has_table('gate_bridge', 'gate_windows', 'gate_windows exists');
SELECT table_privs_are('gate_bridge', 'heartbeats', 'public', ARRAY[]::text[],
					   'PUBLIC has no privilege on heartbeats');
SELECT table_privs_are('gate_bridge', 'gate_windows', 'public', ARRAY[]::text[],
					   'PUBLIC has no privilege on gate_windows');
SELECT function_privs_are('gate_bridge', 'compare_planners',
						  ARRAY['text', 'text', 'text', 'interval', 'integer', 'double precision', 'boolean'],
						  'public', ARRAY[]::text[]);
SELECT function_privs_are('gate_bridge', 'check_heartbeats', ARRAY[]::text[], 'public', ARRAY[]::text[]);
SELECT is_definer('gate_bridge', 'compare_planners',
				  ARRAY['text', 'text', 'text', 'interval', 'integer', 'double precision', 'boolean']);
SELECT isnt_definer('gate_bridge', 'check_heartbeats', ARRAY[]::text[]);
SELECT is(pg_get_function_arguments('gate_bridge.compare_planners(text, text, text, interval, integer, float8, boolean)'::regprocedure),
		  'agent text, canary text, baseline text, lookback interval DEFAULT ''24:00:00''::interval, min_samples integer DEFAULT 30, alpha double precision DEFAULT 0.05, create_incident boolean DEFAULT false',
		  'compare_planners(agent, canary, baseline, lookback DEFAULT ''24 hours'', min_samples DEFAULT 30, alpha DEFAULT 0.05, create_incident DEFAULT false)');

-- EXECUTE on run_gates is all a baseline needs: it keeps its past windows
-- as the owner, while the caller cannot even read them.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method, lookback)
VALUES ('regress.base', 'quality', 0.5, 'baseline', '1 day');
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT 'regress.base', 0.9, now() - d * interval '1 day' - interval '1 hour' FROM generate_series(0, 4) d;
SET LOCAL ROLE regress_gates_ci;
SELECT is((SELECT status FROM gate_bridge.run_gates('regress.base')), 'passed',
		  'ci: run_gates with a baseline budget');
SELECT throws_ok($$SELECT count(*) FROM gate_bridge.gate_windows$$, '42501', NULL,
				 'ci: gate_windows is not readable');
RESET ROLE;
SELECT ok((SELECT count(*) FROM gate_bridge.gate_windows WHERE agent = 'regress.base') = 4,
		  'run_gates kept the 4 past windows as the owner');

SELECT * FROM finish();
ROLLBACK;
