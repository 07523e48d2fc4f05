-- Playbooks that act: who may run them, who may register them, and that an
-- action runs as the role the owner named, not as the caller.
BEGIN;
SELECT plan(21);

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Nothing for PUBLIC.
SELECT table_privs_are('gate_bridge', 'playbooks', 'public', ARRAY[]::text[],
					   'PUBLIC has no privilege on playbooks');
SELECT table_privs_are('gate_bridge', 'playbook_registry', 'public', ARRAY[]::text[],
					   'PUBLIC has no privilege on playbook_registry');
SELECT table_privs_are('gate_bridge', 'playbook_auto_runs', 'public', ARRAY[]::text[],
					   'PUBLIC has no privilege on playbook_auto_runs');
SELECT function_privs_are('gate_bridge', 'run_playbook', ARRAY['bigint', 'text', 'text'],
						  'public', ARRAY[]::text[]);
SELECT function_privs_are('gate_bridge', 'auto_run_playbooks', ARRAY[]::text[],
						  'public', ARRAY[]::text[]);
SELECT isnt_definer('gate_bridge', 'run_playbook', ARRAY['bigint', 'text', 'text'],
					'run_playbook switches to the owner in C, as ack() does');

-- The README's grants: writers insert eval rows, operators run playbooks.
CREATE ROLE regress_pb_writer;
CREATE ROLE regress_pb_oncall;
CREATE ROLE regress_pb_action;
GRANT USAGE ON SCHEMA gate_bridge TO regress_pb_writer, regress_pb_oncall;
GRANT INSERT (agent, quality) ON gate_bridge.eval_results TO regress_pb_writer;
GRANT SELECT ON gate_bridge.playbooks, gate_bridge.incidents TO regress_pb_oncall;
GRANT EXECUTE ON FUNCTION gate_bridge.run_playbook(bigint, text, text) TO regress_pb_oncall;

-- The action: reports the role it runs as.
CREATE FUNCTION public.regress_pb_whoami(incident jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT current_user || ' ' || session_user || ' ' || (incident->>'key') $$;
REVOKE ALL ON FUNCTION public.regress_pb_whoami(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.regress_pb_whoami(jsonb) TO regress_pb_action;
UPDATE gate_bridge.playbooks SET action = 'public.regress_pb_whoami', action_role = 'regress_pb_action'
 WHERE name = 'rerun_eval';

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('regress.pb', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.pb', 0.1);
SELECT gate_bridge.decide_pending();
SELECT is((SELECT count(*)::int FROM gate_bridge.incidents WHERE agent = 'regress.pb'), 1, 'the incident is open');

SET LOCAL ROLE regress_pb_writer;
SELECT throws_ok($$SELECT gate_bridge.run_playbook(1, 'rerun_eval')$$, '42501', NULL,
				 'a writer may not run a playbook');
SELECT throws_ok($$SELECT * FROM gate_bridge.playbooks$$, '42501', NULL,
				 'a writer may not read the playbooks');
RESET ROLE;

SET LOCAL ROLE regress_pb_oncall;
SELECT is(gate_bridge.run_playbook(1, 'rerun_eval'), 'succeeded', 'an operator runs a playbook');
SELECT throws_ok($$UPDATE gate_bridge.playbooks SET action = NULL WHERE name = 'rerun_eval'$$, '42501', NULL,
				 'an operator may not change a playbook''s action');
SELECT throws_ok($$INSERT INTO gate_bridge.playbooks (name, title) VALUES ('x', 'x')$$, '42501', NULL,
				 'an operator may not register a playbook');
SELECT throws_ok($$SELECT * FROM gate_bridge.playbook_registry$$, '42501', NULL,
				 'an operator does not read the registry''s table');
SELECT throws_ok($$SELECT public.regress_pb_whoami('{}')$$, '42501', NULL,
				 'an operator may not call the action itself');
SELECT throws_ok($$SELECT gate_bridge.auto_run_playbooks()$$, '42501', NULL,
				 'an operator may not call auto_run_playbooks');
RESET ROLE;

SELECT is((SELECT e.detail->>'result' FROM gate_bridge.incident_events e
			WHERE e.event = 'playbook_succeeded' ORDER BY e.id DESC LIMIT 1),
		  'regress_pb_action ' || session_user || ' BUDGET_regress.pb_quality',
		  'the action ran as its action_role, neither as the operator nor as the owner');
SELECT is((SELECT e.actor FROM gate_bridge.incident_events e
			WHERE e.event = 'playbook_started' ORDER BY e.id DESC LIMIT 1),
		  'regress_pb_oncall', 'the timeline names the operator');

-- An action's role loses EXECUTE: the run fails, on the timeline, and
-- nothing else changes.
REVOKE EXECUTE ON FUNCTION public.regress_pb_whoami(jsonb) FROM regress_pb_action;
SELECT is(gate_bridge.run_playbook(1, 'rerun_eval', 'regress_carol'), 'failed',
		  'without EXECUTE the action fails');
SELECT is((SELECT e.detail->>'sqlstate' FROM gate_bridge.incident_events e
			WHERE e.event = 'playbook_failed' ORDER BY e.id DESC LIMIT 1),
		  '42501', 'playbook_failed records the SQLSTATE');
SELECT is((SELECT status FROM gate_bridge.incidents WHERE id = 1), 'open', 'the incident stays open');

-- The owner may register with a role that cannot execute the function:
-- refused.
SELECT throws_ok($$UPDATE gate_bridge.playbooks SET description = 'x' WHERE name = 'rerun_eval'$$,
				 '42501', NULL, 'a playbook whose role may not execute its function is refused');

SELECT * FROM finish();
ROLLBACK;
