-- Bad input, by SQLSTATE, through every entry point: the eval row (as the
-- writer role), budgets and playbook rules, each SQL function, each JSON
-- argument.  Limits are checked on both sides of the boundary.  At the end,
-- nothing the rejected input touched has changed.
--
--	 23514	a CHECK constraint of eval_results, budgets or playbook_rules
--	 23502	NULL agent in eval_results
--	 22023	bad value in a JSON argument: missing or mistyped key, empty or
--			over-long agent, unknown severity or budget type, incident key
--			over 255 bytes (from the trigger as well)
--	 22003	a JSON number that does not fit a float8
--	 22004	NULL where an argument is required
--	 P0002	ack/resolve of an incident that does not exist
--	 55000	ack/resolve that the incident's status does not allow
BEGIN;
SELECT plan(145);

CREATE ROLE regress_err_writer;
GRANT USAGE ON SCHEMA gate_bridge TO regress_err_writer;
GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
			  invariants_failed, planner_version, triggered_by, context, created_at)
	ON gate_bridge.eval_results TO regress_err_writer;

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('regress.err', 'quality', 0.9, 0.8, 0.5);

-- Three incidents, one in each status, for the lifecycle cases.
SELECT gate_bridge.on_budget_violation(
	'{"agent": "regress.err", "budget_type": "cost", "severity": "warning",
	  "actual": 2, "threshold": 1}') AS open_id \gset
SELECT gate_bridge.on_budget_violation(
	'{"agent": "regress.err", "budget_type": "latency", "severity": "error",
	  "actual": 900, "threshold": 500}') AS acked_id \gset
SELECT gate_bridge.on_budget_violation(
	'{"agent": "regress.err", "budget_type": "success_rate", "severity": "critical",
	  "actual": 0.1, "threshold": 0.5}') AS resolved_id \gset
SELECT gate_bridge.ack(:acked_id) \g /dev/null
SELECT gate_bridge.resolve(:resolved_id) \g /dev/null
SELECT ok(:open_id IS NOT NULL AND :acked_id IS NOT NULL AND :resolved_id IS NOT NULL,
		  'three incidents were opened for the lifecycle cases');

-------------------------------------------------------------------------------
-- Limits, just inside: accepted.
-------------------------------------------------------------------------------
SET ROLE regress_err_writer;
SELECT lives_ok(format($$INSERT INTO gate_bridge.eval_results (agent) VALUES (%L)$$,
					   repeat('é', 64)),
				'eval row: an agent name of 128 bytes is accepted');
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results
					(agent, quality, latency_p95_ms, cost_usd, success_rate)
				  VALUES ('regress.err', 0, 0, 0, 1)$$,
				'eval row: metrics at the edges of their ranges are accepted');
-- INVARIANT_ + regress.err + _ + 233 bytes = 255 bytes
SELECT lives_ok(format($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
						 VALUES ('regress.err', ARRAY[%L])$$, repeat('i', 233)),
				'eval row: an invariant that makes a 255-byte key is accepted');
-- The trigger's violations are decided at commit; decide them now, as the
-- writer, so that their incidents can be looked at in this transaction.
SELECT gate_bridge.decide_pending() \g /dev/null
RESET ROLE;
SELECT is((SELECT octet_length(key) FROM gate_bridge.incidents
			WHERE kind = 'invariant' AND agent = 'regress.err'),
		  255, 'eval row: ... and opens an incident with that key');
SELECT isnt(gate_bridge.on_invariant_failure('{"agent": "regress.err"}',
											 jsonb_build_object('invariant', repeat('j', 233))),
			NULL, 'on_invariant_failure: an invariant that makes a 255-byte key is accepted');
-- PLANNER_ + 247 bytes = 255 bytes
SELECT isnt(gate_bridge.on_planner_regression(repeat('v', 247), '{}', '{}', '{}'),
			NULL, 'on_planner_regression: a version that makes a 255-byte key is accepted');
SELECT isnt(gate_bridge.on_budget_violation(jsonb_build_object(
				'agent', repeat('a', 128), 'budget_type', 'success_rate',
				'severity', 'warning', 'actual', 0.5, 'threshold', 0.6)),
			NULL, 'on_budget_violation: an agent name of 128 bytes is accepted');
SELECT is(gate_bridge.incident_severity(NULL), NULL,
		  'incident_severity: NULL in, NULL out (STRICT)');

-- Everything below is rejected and must leave all of this unchanged.
SELECT (SELECT count(*) FROM gate_bridge.eval_results) AS n_eval,
	   (SELECT count(*) FROM gate_bridge.incidents) AS n_incidents,
	   (SELECT sum(occurrences) FROM gate_bridge.incidents) AS n_occurrences,
	   (SELECT string_agg(status, ',' ORDER BY id) FROM gate_bridge.incidents) AS statuses,
	   (SELECT count(*) FROM gate_bridge.incident_events) AS n_events,
	   (SELECT count(*) || '/' || sum(created) || '/' || sum(rate_limited)
		  FROM gate_bridge.incident_keys) AS keys,
	   (SELECT count(*) FROM gate_bridge.budgets) AS n_budgets,
	   (SELECT count(*) FROM gate_bridge.playbook_rules) AS n_rules \gset

-------------------------------------------------------------------------------
-- The eval row, inserted by the writer role.
-------------------------------------------------------------------------------
SET ROLE regress_err_writer;
SELECT throws_ok(format('INSERT INTO gate_bridge.eval_results (agent, %s) VALUES (%L, %s)',
						c.col, 'regress.err', c.val),
				 c.code, NULL, format('eval row: %s = %s', c.col, c.val))
  FROM (VALUES
	('quality', $$'NaN'$$, '23514'),
	('quality', $$'Infinity'$$, '23514'),
	('quality', $$'-Infinity'$$, '23514'),
	('quality', '-0.0001', '23514'),
	('quality', '1.0001', '23514'),
	('latency_p95_ms', $$'NaN'$$, '23514'),
	('latency_p95_ms', $$'Infinity'$$, '23514'),
	('latency_p95_ms', '-1', '23514'),
	('cost_usd', $$'NaN'$$, '23514'),
	('cost_usd', $$'Infinity'$$, '23514'),
	('cost_usd', '-0.01', '23514'),
	('success_rate', $$'NaN'$$, '23514'),
	('success_rate', $$'-Infinity'$$, '23514'),
	('success_rate', '1.5', '23514'),
	('success_rate', '-0.5', '23514'),
	('invariants_failed', $$'{""}'$$, '23514'),
	('invariants_failed', $$'{NULL}'$$, '23514'),
	('invariants_failed', $$'{x,NULL}'$$, '23514'),
	('invariants_failed', $$'{{a},{b}}'$$, '23514'),
	('quality', $$'1e400'$$, '22003')
  ) AS c(col, val, code);

SELECT throws_ok(c.q, c.code, NULL, 'eval row: ' || c.d)
  FROM (VALUES
	($$INSERT INTO gate_bridge.eval_results (agent) VALUES ('')$$,
	 '23514', 'empty agent'),
	(format($$INSERT INTO gate_bridge.eval_results (agent) VALUES (%L)$$, repeat('x', 129)),
	 '23514', 'agent of 129 bytes'),
	(format($$INSERT INTO gate_bridge.eval_results (agent) VALUES (%L)$$, repeat('é', 65)),
	 '23514', 'agent of 65 characters but 130 bytes'),
	($$INSERT INTO gate_bridge.eval_results (agent) VALUES (NULL)$$,
	 '23502', 'NULL agent'),
	($$INSERT INTO gate_bridge.eval_results (quality) VALUES (0.1)$$,
	 '23502', 'no agent'),
	-- INVARIANT_ + regress.err + _ + 234 bytes = 256 bytes
	(format($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
			  VALUES ('regress.err', ARRAY[%L])$$, repeat('i', 234)),
	 '22023', 'an invariant that makes a 256-byte key'),
	(format($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
			  VALUES ('regress.err', ARRAY['ok', %L])$$, repeat('ü', 117)),
	 '22023', 'a second invariant of 117 two-byte characters that makes a 256-byte key'),
	(format($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
			  VALUES ('regress.nobudget', ARRAY[%L])$$, repeat('i', 300)),
	 '22023', 'an over-long invariant, for an agent without budgets'),
	(format($$INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
			  VALUES ('regress.err', 0.1, NULL),
					 ('regress.err', 0.1, ARRAY[%L])$$, repeat('i', 300)),
	 '22023', 'a violating row followed by one with an over-long invariant')
  ) AS c(q, code, d);
RESET ROLE;

-- The key check does not depend on the bridge being on (what is stored is
-- the same either way).
SELECT throws_ok(format($$SET LOCAL gate_bridge.enabled = off;
						 INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
						 VALUES ('regress.err', ARRAY[%L])$$, repeat('i', 300)),
				 '22023', NULL, 'eval row: an over-long invariant, with the bridge off');
SELECT is(current_setting('gate_bridge.enabled'), 'on', 'the bridge is on again');

-------------------------------------------------------------------------------
-- on_budget_violation(violation, budget, context)
-------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT gate_bridge.on_budget_violation(%s)', c.args), c.code, NULL,
				 'on_budget_violation: ' || c.d)
  FROM (VALUES
	('NULL', '22004', 'NULL violation'),
	($$'null'$$, '22004', 'JSON null violation'),
	($$'[]'$$, '22023', 'violation is an array'),
	($$'"quality"'$$, '22023', 'violation is a string'),
	($$'{"budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'missing "agent"'),
	($$'{"agent": 42, "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', '"agent" is a number'),
	($$'{"agent": "", "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'empty "agent"'),
	(format('%L', jsonb_build_object('agent', repeat('a', 129), 'budget_type', 'quality',
			'severity', 'error', 'actual', 0.1, 'threshold', 0.5)),
	 '22023', '"agent" of 129 bytes'),
	($$'{"agent": "regress.err", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'missing "budget_type"'),
	($$'{"agent": "regress.err", "budget_type": "bogus", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'unknown budget type'),
	($$'{"agent": "regress.err", "budget_type": "Quality", "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'budget type in the wrong case'),
	($$'{"agent": "regress.err", "budget_type": ["quality"], "severity": "error", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', '"budget_type" is an array'),
	($$'{"agent": "regress.err", "budget_type": "quality", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'missing "severity"'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "fatal", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'unknown severity'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "sev1", "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', 'an incident severity where a violation severity belongs'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": true, "actual": 0.1, "threshold": 0.5}'$$,
	 '22023', '"severity" is a boolean'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "threshold": 0.5}'$$,
	 '22023', 'missing "actual"'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": "0.1", "threshold": 0.5}'$$,
	 '22023', '"actual" is a string'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": 0.1}'$$,
	 '22023', 'missing "threshold"'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": null}'$$,
	 '22023', '"threshold" is null'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": 1e400, "threshold": 0.5}'$$,
	 '22003', '"actual" does not fit a float8'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}', '[]'$$,
	 '22023', 'budget is an array'),
	($$'{"agent": "regress.err", "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}', NULL, '1'$$,
	 '22023', 'context is a number')
  ) AS c(args, code, d);

-------------------------------------------------------------------------------
-- on_invariant_failure(eval_result, invariant_result, context)
-------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT gate_bridge.on_invariant_failure(%s)', c.args), c.code, NULL,
				 'on_invariant_failure: ' || c.d)
  FROM (VALUES
	($$NULL, '{"invariant": "x"}'$$, '22004', 'NULL eval_result'),
	($$'{"agent": "regress.err"}', NULL$$, '22004', 'NULL invariant_result'),
	($$'[]', '{"invariant": "x"}'$$, '22023', 'eval_result is an array'),
	($$'{}', '{"invariant": "x"}'$$, '22023', 'eval_result without "agent"'),
	($$'{"agent": ""}', '{"invariant": "x"}'$$, '22023', 'empty "agent"'),
	($$'{"agent": null}', '{"invariant": "x"}'$$, '22023', '"agent" is null'),
	(format('%L, %L', jsonb_build_object('agent', repeat('a', 129)), '{"invariant": "x"}'),
	 '22023', '"agent" of 129 bytes'),
	($$'{"agent": "regress.err"}', '{}'$$, '22023', 'invariant_result without "invariant"'),
	($$'{"agent": "regress.err"}', '{"invariant": ""}'$$, '22023', 'empty "invariant"'),
	($$'{"agent": "regress.err"}', '{"invariant": 7}'$$, '22023', '"invariant" is a number'),
	($$'{"agent": "regress.err"}', '"x"'$$, '22023', 'invariant_result is a string'),
	-- INVARIANT_ + regress.err + _ + 234 bytes = 256 bytes
	(format($$'{"agent": "regress.err"}', %L$$, jsonb_build_object('invariant', repeat('j', 234))),
	 '22023', 'an invariant that makes a 256-byte key'),
	($$'{"agent": "regress.err"}', '{"invariant": "x", "severity": "bogus"}'$$,
	 '22023', 'unknown severity'),
	($$'{"agent": "regress.err"}', '{"invariant": "x", "severity": 2}'$$,
	 '22023', '"severity" is a number'),
	($$'{"agent": "regress.err"}', '{"invariant": "x", "message": 1}'$$,
	 '22023', '"message" is a number'),
	($$'{"agent": "regress.err"}', '{"invariant": "x"}', '[]'$$,
	 '22023', 'context is an array')
  ) AS c(args, code, d);

-- A JSON null where an object is required is a NULL argument (22004), as
-- for on_budget_violation above.
SELECT throws_ok($$SELECT gate_bridge.on_invariant_failure('null', '{"invariant": "x"}')$$,
				 '22004', NULL, 'on_invariant_failure: JSON null eval_result');
SELECT throws_ok($$SELECT gate_bridge.on_invariant_failure('{"agent": "regress.err"}', 'null')$$,
				 '22004', NULL, 'on_invariant_failure: JSON null invariant_result');

-------------------------------------------------------------------------------
-- on_planner_regression(version, metrics, baseline, regression, context)
-------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT gate_bridge.on_planner_regression(%s)', c.args), c.code, NULL,
				 'on_planner_regression: ' || c.d)
  FROM (VALUES
	($$NULL, '{}', '{}', '{}'$$, '22004', 'NULL version'),
	($$'', '{}', '{}', '{}'$$, '22023', 'empty version'),
	-- PLANNER_ + 248 bytes = 256 bytes
	(format($$%L, '{}', '{}', '{}'$$, repeat('v', 248)),
	 '22023', 'a version that makes a 256-byte key'),
	($$'regress-err', '{}', '{}', '{"severity": "bogus"}'$$, '22023', 'unknown severity'),
	($$'regress-err', '{}', '{}', '{"severity": 3}'$$, '22023', '"severity" is a number'),
	($$'regress-err', '{}', '{}', '[]'$$, '22023', 'regression is an array'),
	($$'regress-err', '"x"', '{}', '{}'$$, '22023', 'metrics is a string'),
	($$'regress-err', '{}', '1', '{}'$$, '22023', 'baseline is a number'),
	($$'regress-err', '{}', '{}', '{}', 'true'$$, '22023', 'context is a boolean')
  ) AS c(args, code, d);

-------------------------------------------------------------------------------
-- on_gate_failure(agent, gate_result, violations, budget, context)
-------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT gate_bridge.on_gate_failure(%s)', c.args), c.code, NULL,
				 'on_gate_failure: ' || c.d)
  FROM (VALUES
	($$NULL, '{}', '[]'$$, '22004', 'NULL agent'),
	($$'regress.err', '{}', NULL$$, '22004', 'NULL violations'),
	($$'', '{}', '[]'$$, '22023', 'empty agent'),
	(format($$%L, '{}', '[]'$$, repeat('a', 129)), '22023', 'agent of 129 bytes'),
	($$'regress.err', '{}', '{}'$$, '22023', 'violations is an object'),
	($$'regress.err', '{}', '"quality"'$$, '22023', 'violations is a string'),
	($$'regress.err', '{}', '[1]'$$, '22023', 'an element is a number'),
	($$'regress.err', '{}', '[{"severity": "error", "actual": 0.1, "threshold": 0.5}]'$$,
	 '22023', 'an element without "budget_type"'),
	($$'regress.err', '{}', '[{"budget_type": "bogus", "severity": "error", "actual": 0.1, "threshold": 0.5}]'$$,
	 '22023', 'an element with an unknown budget type'),
	($$'regress.err', '{}', '[{"budget_type": "quality", "severity": "bogus", "actual": 0.1, "threshold": 0.5}]'$$,
	 '22023', 'an element with an unknown severity'),
	($$'regress.err', '{}', '[{"agent": "someone.else", "budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}]'$$,
	 '22023', 'an element naming another agent'),
	($$'regress.err', '{}', '[{"budget_type": "quality", "severity": "error", "actual": 0.1, "threshold": 0.5}, {"budget_type": "cost"}]'$$,
	 '22023', 'a valid element followed by an invalid one'),
	($$'regress.err', '1', '[]'$$, '22023', 'gate_result is a number'),
	($$'regress.err', '{}', '[]', '[]'$$, '22023', 'budget is an array'),
	($$'regress.err', '{}', '[]', NULL, '"x"'$$, '22023', 'context is a string')
  ) AS c(args, code, d);

-------------------------------------------------------------------------------
-- ack and resolve
-------------------------------------------------------------------------------
SELECT throws_ok(c.q, c.code, NULL, c.d)
  FROM (VALUES
	('SELECT gate_bridge.ack(NULL)', '22004', 'ack: NULL id'),
	(format('SELECT gate_bridge.ack(%s, NULL)', :open_id), '22004', 'ack: NULL actor'),
	(format($$SELECT gate_bridge.ack(%s, '')$$, :open_id), '22023', 'ack: empty actor'),
	('SELECT gate_bridge.resolve(NULL)', '22004', 'resolve: NULL id'),
	(format('SELECT gate_bridge.resolve(%s, NULL)', :open_id), '22004', 'resolve: NULL actor'),
	(format($$SELECT gate_bridge.resolve(%s, '')$$, :open_id), '22023', 'resolve: empty actor'),
	('SELECT gate_bridge.ack(-1)', 'P0002', 'ack: unknown id'),
	('SELECT gate_bridge.ack(9223372036854775807)', 'P0002', 'ack: unknown id (largest bigint)'),
	('SELECT gate_bridge.resolve(-1)', 'P0002', 'resolve: unknown id'),
	(format('SELECT gate_bridge.ack(%s)', :acked_id), '55000', 'ack: an acked incident'),
	(format('SELECT gate_bridge.ack(%s)', :resolved_id), '55000', 'ack: a resolved incident'),
	(format('SELECT gate_bridge.resolve(%s)', :resolved_id), '55000', 'resolve: a resolved incident')
  ) AS c(q, code, d);

-------------------------------------------------------------------------------
-- incident_severity
-------------------------------------------------------------------------------
SELECT throws_ok(format('SELECT gate_bridge.incident_severity(%L)', s), '22023', NULL,
				 format('incident_severity: %L', s))
  FROM unnest(ARRAY['bogus', '', 'CRITICAL', 'sev1', 'critical ']) AS s;

-------------------------------------------------------------------------------
-- budgets and playbook rules, edited by an administrator
-------------------------------------------------------------------------------
SELECT throws_ok(c.q, c.code, NULL, c.d)
  FROM (VALUES
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('regress.err', 'bogus', 1)$$,
	 '23514', 'budgets: unknown budget type'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type) VALUES ('regress.err', 'cost')$$,
	 '23514', 'budgets: no threshold at all'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('regress.err', 'cost', 'NaN')$$,
	 '23514', 'budgets: NaN threshold'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('regress.err', 'cost', 'Infinity')$$,
	 '23514', 'budgets: infinite threshold'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error) VALUES ('regress.err', 'cost', '-Infinity')$$,
	 '23514', 'budgets: minus infinite threshold'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('regress*err', 'cost', 1)$$,
	 '23514', 'budgets: a glob that is not a trailing ".*"'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('regress.*.*', 'cost', 1)$$,
	 '23514', 'budgets: a glob with two stars'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback) VALUES ('regress.err', 'cost', 1, '0')$$,
	 '23514', 'budgets: zero lookback'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback) VALUES ('regress.err', 'cost', 1, '-1 day')$$,
	 '23514', 'budgets: negative lookback'),
	($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning) VALUES ('regress.err', 'quality', 0.5)$$,
	 '23505', 'budgets: a second budget for the same pattern and type'),
	($$INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks) VALUES ('quality', 'regress.*', '{}')$$,
	 '23514', 'playbook_rules: no playbooks'),
	($$INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks) VALUES ('quality', 'regress.*', '{rerun_eval,NULL}')$$,
	 '23514', 'playbook_rules: a NULL playbook'),
	($$DELETE FROM gate_bridge.playbook_rules WHERE violation_type = 'cost' AND agent_pattern = '*'$$,
	 '55000', 'playbook_rules: deleting a built-in rule')
  ) AS c(q, code, d);

-------------------------------------------------------------------------------
-- Nothing was left behind.  A violation that a rejected row had left pending
-- would only be decided at commit: decide whatever is pending now, so that
-- the checks below would see it.
-------------------------------------------------------------------------------
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT is((SELECT count(*) FROM gate_bridge.eval_results), :n_eval::bigint,
		  'no rejected eval row was stored');
SELECT is((SELECT count(*) FROM gate_bridge.incidents), :n_incidents::bigint,
		  'no incident was opened by rejected input');
SELECT is((SELECT sum(occurrences)::bigint FROM gate_bridge.incidents), :n_occurrences::bigint,
		  'no violation was folded into an incident by rejected input');
SELECT is((SELECT string_agg(status, ',' ORDER BY id) FROM gate_bridge.incidents), :'statuses',
		  'no incident changed status');
SELECT is((SELECT count(*) FROM gate_bridge.incident_events), :n_events::bigint,
		  'no timeline row was written by rejected input');
SELECT is((SELECT count(*) || '/' || sum(created) || '/' || sum(rate_limited)
			 FROM gate_bridge.incident_keys), :'keys',
		  'no decision was counted for rejected input');
SELECT is((SELECT count(*) FROM gate_bridge.budgets), :n_budgets::bigint,
		  'no budget was added');
SELECT is((SELECT count(*) FROM gate_bridge.playbook_rules), :n_rules::bigint,
		  'no playbook rule was added or deleted');

-- And the bridge still works in this session after all those errors.
SET ROLE regress_err_writer;
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, quality)
				  VALUES ('regress.err', 0.1)$$,
				'a violating row is accepted after the errors');
SELECT gate_bridge.decide_pending() \g /dev/null
RESET ROLE;
SELECT is((SELECT severity FROM gate_bridge.incidents
			WHERE key = 'BUDGET_regress.err_quality' AND status = 'open'),
		  'sev1', '... and opens its incident');

SELECT * FROM finish();
ROLLBACK;
