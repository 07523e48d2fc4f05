-- The settings: defaults, accepted and refused values, who may change them,
-- and gate_bridge.enabled = off.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

SHOW gate_bridge.enabled;
SHOW gate_bridge.rate_limit;
SHOW gate_bridge.rate_window;
SHOW gate_bridge.notify_channel;
SELECT name, setting, unit, context, vartype, min_val, max_val, boot_val
  FROM pg_settings WHERE name LIKE 'gate_bridge.%' ORDER BY name;

-------------------------------------------------------------------------------
-- Values
-------------------------------------------------------------------------------
SET gate_bridge.rate_window = '90s';
SHOW gate_bridge.rate_window;
SET gate_bridge.rate_window = '2min';
SHOW gate_bridge.rate_window;
SET gate_bridge.rate_window = '6h';
SHOW gate_bridge.rate_window;
SET gate_bridge.rate_window = 7200;
SHOW gate_bridge.rate_window;
SET gate_bridge.rate_window = '1d';
SHOW gate_bridge.rate_window;
SET gate_bridge.rate_window = 0;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_window = '-1h';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_window = '400d';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_window = 'an hour';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_window = '1 fortnight';
\echo :LAST_ERROR_SQLSTATE
SHOW gate_bridge.rate_window;
RESET gate_bridge.rate_window;
SHOW gate_bridge.rate_window;

SET gate_bridge.rate_limit = 1;
SHOW gate_bridge.rate_limit;
SET gate_bridge.rate_limit = 0;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_limit = -3;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_limit = 'three';
\echo :LAST_ERROR_SQLSTATE
RESET gate_bridge.rate_limit;
SHOW gate_bridge.rate_limit;

SET gate_bridge.enabled = maybe;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.enabled = 0;
SHOW gate_bridge.enabled;
RESET gate_bridge.enabled;

SET gate_bridge.notify_channel = 'gate_events';
SHOW gate_bridge.notify_channel;
SET gate_bridge.notify_channel = '';
\echo :LAST_ERROR_SQLSTATE
SELECT set_config('gate_bridge.notify_channel', repeat('c', 64), false);
\echo :LAST_ERROR_SQLSTATE
SELECT set_config('gate_bridge.notify_channel', repeat('c', 63), false) = repeat('c', 63) AS longest_accepted;
RESET gate_bridge.notify_channel;
SHOW gate_bridge.notify_channel;

-- The prefix is reserved: a misspelt setting is an error, not a placeholder.
SET gate_bridge.enable = off;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.ratelimit = 5;
\echo :LAST_ERROR_SQLSTATE

-------------------------------------------------------------------------------
-- Only a superuser, or a role granted it, may change them.
-------------------------------------------------------------------------------
CREATE ROLE regress_gate_app;
SET ROLE regress_gate_app;
SET gate_bridge.enabled = off;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_limit = 1000;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.rate_window = '1s';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.notify_channel = 'elsewhere';
\echo :LAST_ERROR_SQLSTATE
SELECT set_config('gate_bridge.enabled', 'off', true);
\echo :LAST_ERROR_SQLSTATE
SHOW gate_bridge.enabled;
RESET ROLE;
GRANT SET ON PARAMETER gate_bridge.enabled TO regress_gate_app;
SET ROLE regress_gate_app;
SET gate_bridge.enabled = off;
SHOW gate_bridge.enabled;
SET gate_bridge.rate_limit = 1000;
\echo :LAST_ERROR_SQLSTATE
RESET gate_bridge.enabled;
RESET ROLE;
REVOKE SET ON PARAMETER gate_bridge.enabled FROM regress_gate_app;
DROP ROLE regress_gate_app;

-------------------------------------------------------------------------------
-- gate_bridge.enabled = off: eval rows are stored, nothing else happens.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('off.*', 'quality', 0.5), ('off.*', 'cost', 1), ('off.*', 'invariants', 0);
-- an incident open before the bridge is switched off
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('off.open', 5);
SELECT id, key, occurrences FROM gate_bridge.incidents;

SET gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
VALUES ('off.a', 0.1, '{no_pii}'), ('off.b', 0.2, NULL);
-- a violation of the open incident's key is not folded in either
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('off.open', 5);
SELECT gate_bridge.on_budget_violation(
	'{"agent": "off.api", "budget_type": "cost", "severity": "critical",
	  "actual": 5, "threshold": 1}') AS budget_id,
	   gate_bridge.on_invariant_failure('{"agent": "off.api"}', '{"invariant": "x"}')
		   AS invariant_id,
	   gate_bridge.on_planner_regression('v-off', '{}', '{}', '{"severity": "critical"}')
		   AS planner_id,
	   gate_bridge.on_gate_failure('off.api', '{}',
		   '[{"budget_type": "cost", "severity": "error", "actual": 5, "threshold": 1},
			 {"budget_type": "quality", "severity": "error", "actual": 0, "threshold": 1}]')
		   AS gate_ids;
SELECT agent, quality, cost_usd, invariants_failed FROM gate_bridge.eval_results ORDER BY id;
SELECT id, key, occurrences FROM gate_bridge.incidents;
SELECT count(*) AS events FROM gate_bridge.incident_events;
SELECT kind, key, created, rate_limited FROM gate_bridge.incident_keys;
SELECT * FROM gate_bridge.stats ORDER BY kind;
-- bad input is still refused: what is stored does not depend on the setting
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('off.a', 'NaN');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('a', ARRAY[repeat('x', 244)]);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.on_budget_violation('{"agent": "off.api"}');
\echo :LAST_ERROR_SQLSTATE
-- the lifecycle still works
SELECT gate_bridge.ack(1, 'regress_operator');
SELECT status FROM gate_bridge.incidents WHERE id = 1;

-- Switched back on, the next violation is decided as usual.
RESET gate_bridge.enabled;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('off.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('off.open', 5);
SELECT id, key, status, occurrences FROM gate_bridge.incidents ORDER BY id;

-- SET LOCAL lasts for the transaction only.
BEGIN;
SET LOCAL gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('off.local', 0.1);
COMMIT;
SHOW gate_bridge.enabled;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('off.local', 0.1);
SELECT key, occurrences FROM gate_bridge.incidents WHERE agent = 'off.local';

-------------------------------------------------------------------------------
-- gate_bridge.notify_channel does not change what is recorded.
-------------------------------------------------------------------------------
SET gate_bridge.notify_channel = 'regress_gate_channel';
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('off.channel', 0.1);
RESET gate_bridge.notify_channel;
SELECT i.key, ev.event, ev.detail ->> 'key' = i.key AS detail_ok
  FROM gate_bridge.incidents i JOIN gate_bridge.incident_events ev ON ev.incident_id = i.id
 WHERE i.agent = 'off.channel';

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
