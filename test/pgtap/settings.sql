-- Settings: an application role cannot switch the bridge off, loosen the
-- rate limit, raise the cap on failed invariants per row or divert
-- notifications for itself; an administrator can let
-- a role switch the bridge off with GRANT SET ON PARAMETER.
BEGIN;
SELECT plan(96);

CREATE ROLE regress_set_writer;
CREATE ROLE regress_set_operator;
CREATE ROLE regress_set_reader;

-- The documented grants.
GRANT USAGE ON SCHEMA gate_bridge TO regress_set_writer, regress_set_operator,
	regress_set_reader;
GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
			  invariants_failed, planner_version, triggered_by, context, created_at)
	ON gate_bridge.eval_results TO regress_set_writer;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats
	TO regress_set_operator, regress_set_reader;
GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),
	gate_bridge.resolve(bigint, text, text) TO regress_set_operator;

-------------------------------------------------------------------------------
-- This session has not run any gate_bridge code yet, so the module may not
-- be loaded (nothing has fired a gate_bridge trigger or called one of its
-- functions) and a SET would only create a placeholder.  Whichever it is,
-- the writer's attempt must not switch the bridge off: loading the module
-- re-checks a placeholder against the role that set it.
-------------------------------------------------------------------------------
SELECT diag(CASE WHEN current_setting('gate_bridge.rate_limit', true) IS NULL
				 THEN 'gate_bridge is not loaded yet: the writer''s SET makes a placeholder'
				 ELSE 'gate_bridge is already loaded: the writer''s SET is refused' END);
SET ROLE regress_set_writer;
SET client_min_messages = error;	-- the discarded placeholder is a WARNING
DO $$
BEGIN
	BEGIN
		SET gate_bridge.enabled = off;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
	BEGIN
		SET gate_bridge.rate_limit = 1000000;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
	BEGIN
		SET gate_bridge.flap_threshold = 0;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
	BEGIN
		SET gate_bridge.reopen_window = '1d';
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;
END
$$;
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
				  VALUES ('regress.set', '{regress_inv}')$$,
				'writer: a violating row is accepted after trying to switch the bridge off');
-- decided at commit otherwise: decide it now, to look at it below
SELECT gate_bridge.decide_pending() \g /dev/null
RESET client_min_messages;
SELECT is(current_setting('gate_bridge.enabled'), 'on',
		  'writer: the bridge is still on');
SELECT isnt(current_setting('gate_bridge.rate_limit'), '1000000',
			'writer: the rate limit is not the one the writer tried to set');
SELECT is(ARRAY[current_setting('gate_bridge.flap_threshold'), current_setting('gate_bridge.reopen_window')],
		  ARRAY['4', '0'],
		  'writer: flapping detection and the reopen window are as they were');
RESET ROLE;
SELECT is((SELECT count(*) FROM gate_bridge.incidents
			WHERE key = 'INVARIANT_regress.set_regress_inv'),
		  1::bigint, 'the writer''s row opened an incident all the same');

-------------------------------------------------------------------------------
-- With the module loaded, every setting is refused to application roles.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('regress.set', 'cost', 1, 2, 3);

SELECT current_setting('gate_bridge.enabled') AS enabled_before,
	   current_setting('gate_bridge.rate_limit') AS rate_limit_before,
	   current_setting('gate_bridge.rate_window') AS rate_window_before,
	   current_setting('gate_bridge.notify_channel') AS notify_channel_before,
	   current_setting('gate_bridge.max_invariants_per_row') AS max_invariants_before,
	   current_setting('gate_bridge.refire_backoff') AS refire_backoff_before,
	   current_setting('gate_bridge.backoff_reset') AS backoff_reset_before,
	   current_setting('gate_bridge.reopen_window') AS reopen_window_before,
	   current_setting('gate_bridge.flap_threshold') AS flap_threshold_before,
	   current_setting('gate_bridge.flap_window') AS flap_window_before \gset

SET ROLE regress_set_writer;
SELECT throws_ok(q, '42501', NULL, 'writer: ' || q)
  FROM unnest(ARRAY[
	'SET gate_bridge.enabled = off',
	'SET LOCAL gate_bridge.enabled = off',
	$$SELECT set_config('gate_bridge.enabled', 'off', false)$$,
	$$SELECT set_config('gate_bridge.enabled', 'off', true)$$,
	'SET gate_bridge.rate_limit = 1000000',
	$$SELECT set_config('gate_bridge.rate_limit', '1000000', false)$$,
	'SET gate_bridge.rate_window = 1',
	$$SET gate_bridge.rate_window = '1s'$$,
	'SET gate_bridge.notify_channel = regress_elsewhere',
	'RESET gate_bridge.rate_limit',
	'SET gate_bridge.max_invariants_per_row = 10000',
	'ALTER ROLE regress_set_writer SET gate_bridge.max_invariants_per_row = 10000',
	'ALTER ROLE regress_set_writer SET gate_bridge.enabled = off',
	'ALTER ROLE regress_set_writer SET gate_bridge.rate_limit = 1000000',
	-- the lifecycle: a writer must not silence its own re-fires, nor keep
	-- its keys from being marked flapping (or from being un-marked)
	$$SET gate_bridge.refire_backoff = '366 days'$$,
	$$SET gate_bridge.refire_backoff = ''$$,
	$$SELECT set_config('gate_bridge.refire_backoff', '1h, 4h', true)$$,
	$$SET gate_bridge.backoff_reset = '1s'$$,
	$$SET gate_bridge.reopen_window = '366d'$$,
	'SET gate_bridge.reopen_window = 0',
	'SET gate_bridge.flap_threshold = 0',
	'SET LOCAL gate_bridge.flap_threshold = 64',
	$$SET gate_bridge.flap_window = '7d'$$,
	'RESET gate_bridge.flap_window',
	'ALTER ROLE regress_set_writer SET gate_bridge.flap_threshold = 0',
	$$ALTER ROLE regress_set_writer SET gate_bridge.refire_backoff = '1h'$$
  ]) AS q;
SELECT is(ARRAY[current_setting('gate_bridge.enabled'),
				current_setting('gate_bridge.rate_limit'),
				current_setting('gate_bridge.rate_window'),
				current_setting('gate_bridge.notify_channel'),
				current_setting('gate_bridge.max_invariants_per_row'),
				current_setting('gate_bridge.refire_backoff'),
				current_setting('gate_bridge.backoff_reset'),
				current_setting('gate_bridge.reopen_window'),
				current_setting('gate_bridge.flap_threshold'),
				current_setting('gate_bridge.flap_window')],
		  ARRAY[:'enabled_before', :'rate_limit_before', :'rate_window_before',
				:'notify_channel_before', :'max_invariants_before',
				:'refire_backoff_before', :'backoff_reset_before', :'reopen_window_before',
				:'flap_threshold_before', :'flap_window_before'],
		  'writer: every setting is as it was');
SELECT lives_ok('RESET ALL', 'writer: RESET ALL runs');
SELECT is(current_setting('gate_bridge.enabled'), :'enabled_before',
		  'writer: RESET ALL leaves the bridge as it was');
RESET ROLE;

SET ROLE regress_set_operator;
SELECT throws_ok('SET gate_bridge.enabled = off', '42501', NULL,
				 'operator: cannot switch the bridge off');
SELECT throws_ok('SET gate_bridge.rate_limit = 1000000', '42501', NULL,
				 'operator: cannot change the rate limit');
SELECT throws_ok(q, '42501', NULL, 'operator: ' || q)
  FROM unnest(ARRAY[
	$$SET gate_bridge.refire_backoff = '1h'$$,
	$$SET gate_bridge.backoff_reset = '1h'$$,
	$$SET gate_bridge.reopen_window = '1h'$$,
	'SET gate_bridge.flap_threshold = 0',
	$$SET gate_bridge.flap_window = '1h'$$
  ]) AS q;
RESET ROLE;

SET ROLE regress_set_reader;
SELECT throws_ok('SET gate_bridge.enabled = off', '42501', NULL,
				 'reader: cannot switch the bridge off');
SELECT throws_ok('SET gate_bridge.notify_channel = regress_elsewhere', '42501', NULL,
				 'reader: cannot divert notifications');
SELECT throws_ok('SET gate_bridge.flap_threshold = 0', '42501', NULL,
				 'reader: cannot switch flapping detection off');
RESET ROLE;

SELECT is((SELECT count(*) FROM pg_db_role_setting s
			WHERE s.setrole IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'regress\_set\_%')),
		  0::bigint, 'no role stored a setting for itself');

-------------------------------------------------------------------------------
-- An administrator lets the writer switch the bridge off (PostgreSQL 15).
-------------------------------------------------------------------------------
SELECT ok(NOT has_parameter_privilege('regress_set_writer', 'gate_bridge.enabled', 'SET'),
		  'writer: no SET privilege on gate_bridge.enabled before the grant');
GRANT SET ON PARAMETER gate_bridge.enabled TO regress_set_writer;
SELECT ok(has_parameter_privilege('regress_set_writer', 'gate_bridge.enabled', 'SET'),
		  'writer: SET privilege on gate_bridge.enabled after the grant');
SELECT ok(NOT has_parameter_privilege('regress_set_writer', 'gate_bridge.rate_limit', 'SET'),
		  'writer: the grant does not extend to gate_bridge.rate_limit');

SET ROLE regress_set_writer;
SELECT lives_ok('SET gate_bridge.enabled = off', 'writer: switches the bridge off, once allowed');
SELECT is(current_setting('gate_bridge.enabled'), 'off', 'writer: the bridge is off');
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('regress.set', 10)$$,
				'writer: a violating row is stored while the bridge is off');
-- anything that row left pending would be decided here, and show below
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT throws_ok('SET gate_bridge.rate_limit = 1000000', '42501', NULL,
				 'writer: still cannot change the rate limit');
SELECT throws_ok('SET gate_bridge.rate_window = 1', '42501', NULL,
				 'writer: still cannot change the rate window');
SELECT throws_ok('SET gate_bridge.notify_channel = regress_elsewhere', '42501', NULL,
				 'writer: still cannot divert notifications');
RESET ROLE;

SELECT is((SELECT count(*) FROM gate_bridge.eval_results
			WHERE agent = 'regress.set' AND cost_usd = 10),
		  1::bigint, 'the row inserted while the bridge was off is stored');
SELECT is((SELECT count(*) FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.set_cost'),
		  0::bigint, 'no incident was opened while the bridge was off');
SELECT is((SELECT count(*) FROM gate_bridge.incident_keys WHERE key = 'BUDGET_regress.set_cost'),
		  0::bigint, 'no decision was even counted while the bridge was off');

SET ROLE regress_set_writer;
SELECT lives_ok('SET gate_bridge.enabled = on', 'writer: switches the bridge back on');
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('regress.set', 10)$$,
				'writer: a violating row is stored with the bridge on');
SELECT gate_bridge.decide_pending() \g /dev/null
RESET ROLE;
SELECT is((SELECT count(*) FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.set_cost'),
		  1::bigint, 'with the bridge back on, the violation opened an incident');

REVOKE SET ON PARAMETER gate_bridge.enabled FROM regress_set_writer;
SET ROLE regress_set_writer;
SELECT throws_ok('SET gate_bridge.enabled = off', '42501', NULL,
				 'writer: cannot switch the bridge off once the grant is revoked');
RESET ROLE;

-------------------------------------------------------------------------------
-- Bad values, even from a superuser.
-------------------------------------------------------------------------------
SELECT throws_ok(q, '22023', NULL, 'superuser: ' || q)
  FROM unnest(ARRAY[
	'SET gate_bridge.rate_limit = 0',
	'SET gate_bridge.rate_limit = -1',
	'SET gate_bridge.rate_window = 0',
	$$SET gate_bridge.rate_window = '2 fortnights'$$,
	$$SET gate_bridge.notify_channel = ''$$,
	format('SET gate_bridge.notify_channel = %L', repeat('c', 64))
  ]) AS q;
-- The lifecycle's settings: defaults, units and ranges as the server
-- reports them, all superuser-only.
SELECT results_eq($$
	SELECT name, boot_val, unit, min_val, max_val, vartype, context
	  FROM pg_settings
	 WHERE name IN ('gate_bridge.refire_backoff', 'gate_bridge.backoff_reset',
					'gate_bridge.reopen_window', 'gate_bridge.flap_threshold',
					'gate_bridge.flap_window')
	 ORDER BY name COLLATE "C"$$,
	$$ VALUES ('gate_bridge.backoff_reset', '86400', 's', '1', '31622400', 'integer', 'superuser'),
			  ('gate_bridge.flap_threshold', '4', NULL, '0', '64', 'integer', 'superuser'),
			  ('gate_bridge.flap_window', '3600', 's', '1', '604800', 'integer', 'superuser'),
			  ('gate_bridge.refire_backoff', '', NULL, NULL, NULL, 'string', 'superuser'),
			  ('gate_bridge.reopen_window', '0', 's', '0', '31622400', 'integer', 'superuser') $$,
	'refire_backoff (default off), backoff_reset (24 h), reopen_window (0 = off, up to 366 days), flap_threshold (4, 0..64), flap_window (1 h, up to 7 days)');
SELECT is_empty($$SELECT name FROM pg_settings
				   WHERE name LIKE 'gate\_bridge.%' AND context <> 'superuser'$$,
				'every gate_bridge setting is superuser-only');
SELECT is(ARRAY[current_setting('gate_bridge.refire_backoff'), current_setting('gate_bridge.backoff_reset'),
				current_setting('gate_bridge.reopen_window'), current_setting('gate_bridge.flap_threshold'),
				current_setting('gate_bridge.flap_window')],
		  ARRAY['', '1d', '0', '4', '1h'],
		  'the lifecycle settings show their defaults with units');
SELECT throws_ok(q, '22023', NULL, 'superuser: ' || q)
  FROM unnest(ARRAY[
	$$SET gate_bridge.refire_backoff = 'soon'$$,
	$$SET gate_bridge.refire_backoff = '1h, later'$$,
	$$SET gate_bridge.refire_backoff = '0'$$,
	$$SET gate_bridge.refire_backoff = '-1h'$$,
	$$SET gate_bridge.refire_backoff = '367 days'$$,
	format('SET gate_bridge.refire_backoff = %L', array_to_string(array_fill('1h'::text, ARRAY[17]), ', ')),
	'SET gate_bridge.backoff_reset = 0',
	$$SET gate_bridge.backoff_reset = '367d'$$,
	'SET gate_bridge.reopen_window = -1',
	$$SET gate_bridge.reopen_window = '367d'$$,
	'SET gate_bridge.flap_threshold = -1',
	'SET gate_bridge.flap_threshold = 65',
	'SET gate_bridge.flap_window = 0',
	$$SET gate_bridge.flap_window = '8d'$$
  ]) AS q;
SELECT lives_ok(q, 'superuser: ' || q)
  FROM unnest(ARRAY[
	$$SET LOCAL gate_bridge.refire_backoff = '1h, 4h, 12h'$$,
	format('SET LOCAL gate_bridge.refire_backoff = %L', array_to_string(array_fill('1h'::text, ARRAY[16]), ', ')),
	$$SET LOCAL gate_bridge.refire_backoff = '30 min,366 days'$$,
	$$SET LOCAL gate_bridge.refire_backoff = ''$$,
	$$SET LOCAL gate_bridge.backoff_reset = '366d'$$,
	$$SET LOCAL gate_bridge.reopen_window = '10min'$$,
	'SET LOCAL gate_bridge.flap_threshold = 0',
	'SET LOCAL gate_bridge.flap_threshold = 64',
	$$SET LOCAL gate_bridge.flap_window = '7d'$$
  ]) AS q;
SELECT is(ARRAY[current_setting('gate_bridge.refire_backoff'), current_setting('gate_bridge.backoff_reset'),
				current_setting('gate_bridge.reopen_window'), current_setting('gate_bridge.flap_threshold'),
				current_setting('gate_bridge.flap_window')],
		  ARRAY['', '366d', '10min', '64', '7d'],
		  'superuser: the values set, with their units');

SELECT lives_ok($$SET LOCAL gate_bridge.rate_window = '90min'$$,
				'superuser: the rate window accepts minutes');
SELECT is(current_setting('gate_bridge.rate_window'), '90min',
		  'the rate window is 90 minutes');

SELECT * FROM finish();
ROLLBACK;
