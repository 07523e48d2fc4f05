-- Retention privileges: purge_eval_results() is the one way to delete eval
-- rows for anyone but the owner.  With the grants the README documents, the
-- operator may run it; writers, readers, a role with nothing and PUBLIC may
-- not, and nobody but the owner may DELETE from eval_results directly.  It is
-- not SECURITY DEFINER (so that it can commit between batches) and runs its
-- work as the owner with search_path pinned.
BEGIN;
SELECT plan(34);

CREATE ROLE regress_ret_writer;
CREATE ROLE regress_ret_operator;
CREATE ROLE regress_ret_reader;
CREATE ROLE regress_ret_nobody;	-- holds only what PUBLIC holds

-- The documented grants (README, Privileges).
GRANT USAGE ON SCHEMA gate_bridge TO regress_ret_writer;
GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
			  invariants_failed, planner_version, triggered_by, context, created_at)
	ON gate_bridge.eval_results TO regress_ret_writer;
GRANT SELECT (id) ON gate_bridge.eval_results TO regress_ret_writer;
GRANT USAGE ON SCHEMA gate_bridge TO regress_ret_operator;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats,
	gate_bridge.stream_status
	TO regress_ret_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
	gate_bridge.events_head(), gate_bridge.events_resume_point(bigint)
	TO regress_ret_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),
	gate_bridge.resolve(bigint, text, text) TO regress_ret_operator;
GRANT EXECUTE ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint)
	TO regress_ret_operator;
GRANT USAGE ON SCHEMA gate_bridge TO regress_ret_reader;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats,
	gate_bridge.stream_status
	TO regress_ret_reader;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
	gate_bridge.events_head(), gate_bridge.events_resume_point(bigint)
	TO regress_ret_reader;

-------------------------------------------------------------------------------
-- The object.
-------------------------------------------------------------------------------
SELECT is((SELECT p.prokind FROM pg_proc p
			WHERE p.oid = 'gate_bridge.purge_eval_results(interval, integer, boolean, bigint)'::regprocedure),
		  'p'::"char", 'purge_eval_results is a procedure');
SELECT is(pg_get_function_arguments('gate_bridge.purge_eval_results(interval, integer, boolean, bigint)'::regprocedure),
		  'IN older_than interval, IN batch_size integer DEFAULT 10000, IN cut_windows boolean DEFAULT false, INOUT deleted bigint DEFAULT NULL::bigint',
		  'purge_eval_results(older_than, batch_size DEFAULT 10000, cut_windows DEFAULT false, INOUT deleted)');
SELECT function_lang_is('gate_bridge', 'purge_eval_results',
						ARRAY['interval', 'integer', 'boolean', 'bigint'], 'c');
-- a SECURITY DEFINER procedure, or one with a SET clause, could not commit
SELECT isnt_definer('gate_bridge', 'purge_eval_results',
					ARRAY['interval', 'integer', 'boolean', 'bigint']);
SELECT is((SELECT p.proconfig FROM pg_proc p
			WHERE p.oid = 'gate_bridge.purge_eval_results(interval, integer, boolean, bigint)'::regprocedure),
		  NULL, 'purge_eval_results has no SET clause');
SELECT ok(EXISTS (SELECT FROM pg_depend d
				   WHERE d.classid = 'pg_proc'::regclass
					 AND d.objid = 'gate_bridge.purge_eval_results(interval, integer, boolean, bigint)'::regprocedure
					 AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'),
		  'purge_eval_results is a member of the extension');

-------------------------------------------------------------------------------
-- Who holds EXECUTE, and who may delete eval rows (5 roles each).
-------------------------------------------------------------------------------
CREATE TEMP TABLE gb_ret_roles (role name) ON COMMIT DROP;
INSERT INTO gb_ret_roles VALUES ('regress_ret_writer'), ('regress_ret_operator'),
	('regress_ret_reader'), ('regress_ret_nobody'), ('public');

SELECT function_privs_are('gate_bridge', 'purge_eval_results',
						  ARRAY['interval', 'integer', 'boolean', 'bigint'], r.role,
						  CASE WHEN r.role = 'regress_ret_operator'
							   THEN ARRAY['EXECUTE']::name[] ELSE ARRAY[]::name[] END)
  FROM gb_ret_roles r ORDER BY r.role;
SELECT ok(NOT has_table_privilege(r.role, 'gate_bridge.eval_results', 'DELETE')
		  AND NOT has_table_privilege(r.role, 'gate_bridge.eval_results', 'TRUNCATE'),
		  format('%s may neither DELETE from nor TRUNCATE eval_results', r.role))
  FROM gb_ret_roles r ORDER BY r.role;

-------------------------------------------------------------------------------
-- What they get when they try.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
VALUES ('regress.ret', 0.9, now() - interval '400 days');

SET ROLE regress_ret_writer;
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days')$$, '42501', NULL,
				 'writer: cannot purge');
SELECT throws_ok($$DELETE FROM gate_bridge.eval_results$$, '42501', NULL,
				 'writer: cannot delete eval rows');
RESET ROLE;

SET ROLE regress_ret_reader;
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days')$$, '42501', NULL,
				 'reader: cannot purge');
SELECT throws_ok($$DELETE FROM gate_bridge.eval_results$$, '42501', NULL,
				 'reader: cannot delete eval rows');
RESET ROLE;

SET ROLE regress_ret_nobody;
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days')$$, '42501', NULL,
				 'a role with nothing: cannot purge');
RESET ROLE;

-- The operator gets past the privilege check and the argument checks; here,
-- inside pgTAP's transaction, the procedure then refuses to run because it
-- could not commit (test/sql/retention.sql runs it for real).
SET ROLE regress_ret_operator;
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days')$$, '25001',
				 'purge_eval_results() cannot run inside a transaction block',
				 'operator: may purge, but not inside a transaction block');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('0')$$, '22023', NULL,
				 'operator: older_than 0 is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('-7 days')$$, '22023', NULL,
				 'operator: a negative older_than is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results(NULL)$$, '22004', NULL,
				 'operator: a NULL older_than is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days', 0)$$, '22023', NULL,
				 'operator: batch_size 0 is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days', 100001)$$, '22023', NULL,
				 'operator: batch_size over 100000 is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days', NULL)$$, '22004', NULL,
				 'operator: a NULL batch_size is refused');
SELECT throws_ok($$CALL gate_bridge.purge_eval_results('30 days', cut_windows => NULL)$$,
				 '22004', NULL, 'operator: a NULL cut_windows is refused');
SELECT throws_ok($$DELETE FROM gate_bridge.eval_results$$, '42501', NULL,
				 'operator: cannot delete eval rows directly');
SELECT throws_ok($$TRUNCATE gate_bridge.eval_results$$, '42501', NULL,
				 'operator: cannot truncate eval_results');
SELECT throws_ok($$UPDATE gate_bridge.budgets SET lookback = '1 hour'$$, '42501', NULL,
				 'operator: cannot shorten the budgets'' windows to purge more');
SELECT throws_ok($$ALTER PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint) SECURITY DEFINER$$,
				 '42501', NULL, 'operator: cannot alter the procedure');
RESET ROLE;

SELECT is((SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'regress.ret'),
		  1::bigint, 'nothing was deleted');

SELECT * FROM finish();
ROLLBACK;
