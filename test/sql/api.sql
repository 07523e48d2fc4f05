-- The SQL functions: on_budget_violation, on_invariant_failure,
-- on_planner_regression, on_gate_failure, suggest_playbooks,
-- incident_severity.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

CREATE FUNCTION pg_temp.incident(incident_id bigint)
RETURNS TABLE (id bigint, kind text, key text, agent text, violation_type text,
			   severity text, status text, summary text, playbooks text[],
			   occurrences int)
LANGUAGE sql AS $$
	SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity, i.status,
		   i.summary, i.playbooks, i.occurrences
	  FROM gate_bridge.incidents i WHERE i.id = incident_id
$$;

-------------------------------------------------------------------------------
-- incident_severity
-------------------------------------------------------------------------------
SELECT s, gate_bridge.incident_severity(s)
  FROM unnest(ARRAY['critical', 'error', 'warning', NULL]) AS s;
SELECT gate_bridge.incident_severity('CRITICAL');
SELECT gate_bridge.incident_severity('sev1');
SELECT gate_bridge.incident_severity('');

-------------------------------------------------------------------------------
-- on_budget_violation
-------------------------------------------------------------------------------
SELECT gate_bridge.on_budget_violation(
	'{"agent": "inbox.triage", "budget_type": "quality", "severity": "critical",
	  "actual": 0.62, "threshold": 0.7}',
	'{"agent_pattern": "inbox.*", "budget_type": "quality", "critical": 0.7}',
	'{"eval_run_id": "eval-123", "triggered_by": "cron"}') AS id;
SELECT * FROM pg_temp.incident(1);
SELECT jsonb_pretty(details) FROM gate_bridge.incidents WHERE id = 1;
-- the same key again is folded in: NULL
SELECT gate_bridge.on_budget_violation(
	'{"agent": "inbox.triage", "budget_type": "quality", "severity": "warning",
	  "actual": 0.85, "threshold": 0.9}') AS id;
SELECT * FROM pg_temp.incident(1);
-- defaults: no budget (JSON null in the details), context {}
SELECT gate_bridge.on_budget_violation(
	'{"agent": "inbox.triage", "budget_type": "latency", "severity": "error",
	  "actual": 2500, "threshold": 2000}') AS id;
SELECT * FROM pg_temp.incident(2);
SELECT details FROM gate_bridge.incidents WHERE id = 2;
-- explicit NULLs are the same as the defaults; extra keys are kept
SELECT gate_bridge.on_budget_violation(
	'{"agent": "knowledge.search", "budget_type": "latency", "severity": "warning",
	  "actual": 1200, "threshold": 1000, "window": "7 days"}', NULL, NULL) AS id;
SELECT * FROM pg_temp.incident(3);
SELECT details FROM gate_bridge.incidents WHERE id = 3;
SELECT gate_bridge.on_budget_violation(
	'{"agent": "warehouse.health", "budget_type": "cost", "severity": "error",
	  "actual": 12.5, "threshold": 10}', 'null', 'null') AS id;
SELECT details FROM gate_bridge.incidents WHERE id = 4;
-- named arguments
SELECT gate_bridge.on_budget_violation(
	context => '{"source": "named"}',
	violation => '{"agent": "dbt.models", "budget_type": "success_rate",
				   "severity": "warning", "actual": 0.93, "threshold": 0.95}') AS id;
SELECT * FROM pg_temp.incident(5);
SELECT details FROM gate_bridge.incidents WHERE id = 5;
-- every budget type, including "invariants"
SELECT t, gate_bridge.on_budget_violation(jsonb_build_object(
		'agent', 'api.types', 'budget_type', t, 'severity', 'warning',
		'actual', 1, 'threshold', 0)) AS id
  FROM unnest(ARRAY['quality', 'latency', 'cost', 'success_rate', 'invariants']) AS t;
SELECT id, key, violation_type, summary, playbooks FROM gate_bridge.incidents
 WHERE agent = 'api.types' ORDER BY id;

-------------------------------------------------------------------------------
-- on_invariant_failure
-------------------------------------------------------------------------------
-- severity given
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "inbox.triage", "eval_run_id": "eval-7"}',
	'{"invariant": "no_pii", "message": "email address in output", "severity": "critical"}',
	'{"triggered_by": "ci"}') AS id;
SELECT * FROM pg_temp.incident(11);
SELECT jsonb_pretty(details) FROM gate_bridge.incidents WHERE id = 11;
-- no severity and no invariants budget: "error"
SELECT gate_bridge.on_invariant_failure('{"agent": "inbox.triage"}',
										'{"invariant": "cites_sources"}') AS id;
SELECT * FROM pg_temp.incident(12);
SELECT details FROM gate_bridge.incidents WHERE id = 12;
-- no severity: the agent's invariants budget applied to the number of
-- failed invariants (invariants_failed, else 1)
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('invbudget.*', 'invariants', 0, 1, 2);
SELECT gate_bridge.on_invariant_failure('{"agent": "invbudget.a"}',
										'{"invariant": "one"}') AS id;
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "invbudget.a", "invariants_failed": ["two", "other"]}',
	'{"invariant": "two"}') AS id;
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "invbudget.a", "invariants_failed": ["three", "b", "c"]}',
	'{"invariant": "three"}') AS id;
-- a severity given wins over the budget
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "invbudget.a", "invariants_failed": ["four", "b", "c"]}',
	'{"invariant": "four", "severity": "warning"}') AS id;
SELECT key, severity FROM gate_bridge.incidents WHERE agent = 'invbudget.a' ORDER BY id;
-- a count that crosses no tier opens nothing
UPDATE gate_bridge.budgets SET warning = 5, error = NULL, critical = NULL;
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "invbudget.a", "invariants_failed": ["five", "b"]}',
	'{"invariant": "five"}') AS id;
SELECT count(*) FROM gate_bridge.incidents WHERE key = 'INVARIANT_invbudget.a_five';
SELECT count(*) FROM gate_bridge.incident_keys WHERE key = 'INVARIANT_invbudget.a_five';
DELETE FROM gate_bridge.budgets;

-------------------------------------------------------------------------------
-- on_planner_regression
-------------------------------------------------------------------------------
SELECT gate_bridge.on_planner_regression('v1.2.3',
	'{"accuracy": 0.74}', '{"accuracy": 0.87}',
	'{"metric": "accuracy", "drop": 0.13}', '{"canary": "10%"}') AS id;
SELECT * FROM pg_temp.incident(17);
SELECT jsonb_pretty(details) FROM gate_bridge.incidents WHERE id = 17;
SELECT gate_bridge.on_planner_regression('v2.0.0', NULL, NULL,
	'{"severity": "critical"}') AS id;
SELECT * FROM pg_temp.incident(18);
SELECT details FROM gate_bridge.incidents WHERE id = 18;
SELECT gate_bridge.on_planner_regression('v2.0.1', '{}', '{}', '{"severity": "warning"}') AS id;
SELECT key, severity FROM gate_bridge.incidents WHERE id = 19;

-------------------------------------------------------------------------------
-- on_gate_failure: one decision per violation, ids at the same positions
-------------------------------------------------------------------------------
SELECT gate_bridge.on_gate_failure('gate.agent',
	'{"passed": false, "samples": 40}',
	'[{"agent": "gate.agent", "budget_type": "quality", "severity": "critical", "actual": 0.5, "threshold": 0.7},
	  {"budget_type": "cost", "severity": "warning", "actual": 1.2, "threshold": 1},
	  {"budget_type": "quality", "severity": "error", "actual": 0.75, "threshold": 0.8}]',
	'{"agent_pattern": "gate.*"}', '{"triggered_by": "cron"}') AS ids;
SELECT * FROM pg_temp.incident(20);
SELECT * FROM pg_temp.incident(21);
SELECT jsonb_pretty(details) FROM gate_bridge.incidents WHERE id = 21;
-- again: everything is folded in
SELECT gate_bridge.on_gate_failure('gate.agent', NULL,
	'[{"budget_type": "quality", "severity": "critical", "actual": 0.5, "threshold": 0.7},
	  {"budget_type": "cost", "severity": "warning", "actual": 1.2, "threshold": 1}]') AS ids;
SELECT id, key, occurrences FROM gate_bridge.incidents WHERE agent = 'gate.agent' ORDER BY id;
-- no violations: an empty array
SELECT gate_bridge.on_gate_failure('gate.agent', '{"passed": true}', '[]') AS ids;
-- defaults
SELECT gate_bridge.on_gate_failure('gate.other', NULL,
	'[{"budget_type": "latency", "severity": "error", "actual": 3, "threshold": 2}]') AS ids;
SELECT details FROM gate_bridge.incidents WHERE id = 22;

-- Every path above wrote one "created" event per incident, with the
-- current user as its actor.
SELECT count(*) AS incidents,
	   count(*) FILTER (WHERE ev.actor = current_user AND ev.detail ->> 'id' = i.id::text)
		   AS created_events
  FROM gate_bridge.incidents i
  JOIN gate_bridge.incident_events ev ON ev.incident_id = i.id AND ev.event = 'created';
SELECT * FROM gate_bridge.stats ORDER BY kind;

-------------------------------------------------------------------------------
-- suggest_playbooks: the installed rules
-------------------------------------------------------------------------------
SELECT violation_type, agent, gate_bridge.suggest_playbooks(violation_type, agent)
  FROM (VALUES
	('quality',		'warehouse.health'),
	('quality',		'dbt.models'),
	('quality',		'inbox.triage'),
	('quality',		'warehouse'),			-- "warehouse.*" needs the dot
	('quality',		'mywarehouse.x'),
	('latency',		'knowledge.search'),
	('latency',		'elastic.index'),
	('latency',		'warehouse.health'),
	('cost',		'inbox.triage'),
	('cost',		'anything'),
	('success_rate', 'dbt.models'),
	('success_rate', 'warehouse.health'),
	('invariants',	'inbox.triage'),
	('invariants',	'planner.v1'),
	('planner_regression', 'planner.v1.2.3'),
	('quality',		'planner.v1'),
	('cost',		'planner.v1'),
	('unknown_type', 'inbox.triage'),
	('unknown_type', 'planner.v1')
  ) AS t(violation_type, agent);
SELECT gate_bridge.suggest_playbooks(NULL, 'x'), gate_bridge.suggest_playbooks('cost', NULL);

-- The playbooks an incident was given are the suggestion at its creation.
SELECT count(*) AS incidents,
	   count(*) FILTER (WHERE playbooks = gate_bridge.suggest_playbooks(violation_type, agent))
		   AS as_suggested
  FROM gate_bridge.incidents;

-------------------------------------------------------------------------------
-- suggest_playbooks: edited, disabled and user rules (rolled back at the end)
-------------------------------------------------------------------------------
BEGIN;
-- an edited built-in rule stops being built-in
UPDATE gate_bridge.playbook_rules SET playbooks = '{adjust_canary_split,rerun_eval}'
 WHERE violation_type = 'cost' AND agent_pattern = '*';
SELECT violation_type, agent_pattern, playbooks, enabled, builtin
  FROM gate_bridge.playbook_rules WHERE violation_type = 'cost';
SELECT gate_bridge.suggest_playbooks('cost', 'inbox.triage');
-- a disabled rule is ignored
UPDATE gate_bridge.playbook_rules SET enabled = false
 WHERE violation_type = 'latency' AND agent_pattern = 'knowledge.*';
SELECT gate_bridge.suggest_playbooks('latency', 'knowledge.search'),
	   gate_bridge.suggest_playbooks('latency', 'elastic.index');
-- user rules (naming registered playbooks): an exact name beats a glob, a
-- longer glob a shorter one
INSERT INTO gate_bridge.playbooks (name, title) VALUES
	('page_data_oncall', 'Page the data on-call'), ('rerun_health_checks', 'Re-run the health checks'),
	('reduce_max_tokens', 'Reduce max tokens'), ('notify_team', 'Notify the team');
INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks) VALUES
	('quality', 'warehouse.health', '{page_data_oncall}'),
	('quality', 'warehouse.health.*', '{rerun_health_checks}'),
	('cost',	'inbox.*',			'{reduce_max_tokens}');
SELECT a, gate_bridge.suggest_playbooks('quality', a)
  FROM unnest(ARRAY['warehouse.health', 'warehouse.health.sub', 'warehouse.other']) AS a;
SELECT gate_bridge.suggest_playbooks('cost', 'inbox.triage'),
	   gate_bridge.suggest_playbooks('cost', 'outbox.triage');
-- rules for any type are added after the type's own, without repeats
INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks)
VALUES ('*', '*', '{notify_team,rerun_eval}');
SELECT t, a, gate_bridge.suggest_playbooks(t, a)
  FROM (VALUES ('cost', 'inbox.triage'), ('cost', 'other'), ('quality', 'other'),
			   ('invariants', 'planner.v1'), ('planner_regression', 'planner.v1'))
	   AS x(t, a);
-- a built-in rule cannot be deleted; a user rule can
SAVEPOINT s;
DELETE FROM gate_bridge.playbook_rules WHERE violation_type = 'quality' AND agent_pattern = 'dbt.*';
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
DELETE FROM gate_bridge.playbook_rules WHERE agent_pattern = 'warehouse.health.*';
SELECT gate_bridge.suggest_playbooks('quality', 'warehouse.health.sub');
-- incidents created now get the current rules
SELECT gate_bridge.on_budget_violation(
	'{"agent": "inbox.rules", "budget_type": "cost", "severity": "warning",
	  "actual": 2, "threshold": 1}') AS id;
SELECT key, playbooks FROM gate_bridge.incidents WHERE agent = 'inbox.rules';
-- with every rule disabled: rerun_eval
UPDATE gate_bridge.playbook_rules SET enabled = false;
SELECT gate_bridge.suggest_playbooks('cost', 'planner.v1');
ROLLBACK;

-- A user rule with the key of a built-in one replaces it (this is also what
-- restoring a dump does with an edited built-in rule).
BEGIN;
INSERT INTO gate_bridge.playbooks (name, title) VALUES ('quarantine_agent', 'Quarantine the agent');
INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks)
VALUES ('invariants', '*', '{quarantine_agent}');
SELECT violation_type, agent_pattern, playbooks, enabled, builtin
  FROM gate_bridge.playbook_rules WHERE violation_type = 'invariants';
SELECT gate_bridge.suggest_playbooks('invariants', 'inbox.triage');
ROLLBACK;

-- the installed rules are back
SELECT violation_type, agent_pattern, playbooks, enabled, builtin
  FROM gate_bridge.playbook_rules ORDER BY violation_type, agent_pattern;

-------------------------------------------------------------------------------
-- pattern_rank, the helper behind pattern matching
-------------------------------------------------------------------------------
SELECT p, a, gate_bridge.pattern_rank(p, a)
  FROM (VALUES ('*', 'anything'), ('*', ''), ('a.*', 'a.b'), ('a.*', 'a.'),
			   ('a.*', 'a'), ('a.*', 'ab.c'), ('a.b.*', 'a.b.c'), ('a.b', 'a.b'),
			   ('a.b', 'a.bc'), ('a.b', 'A.B'), (NULL, 'a'), ('a.*', NULL)) AS t(p, a);

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
