-- Privileges: the three deployment roles, with exactly the grants the
-- README documents, can do what they are for and nothing else; PUBLIC gets
-- nothing but the pure helpers and decide_pending(), which acts only on the
-- caller's own transaction.
BEGIN;
SELECT plan(493);

CREATE ROLE regress_priv_writer;
CREATE ROLE regress_priv_operator;
CREATE ROLE regress_priv_reader;
CREATE ROLE regress_priv_nobody;	-- holds only what PUBLIC holds

-- The documented grants.
-- writer (INSERT on every column but the identity id; SELECT on id alone,
-- for INSERT ... RETURNING id):
GRANT USAGE ON SCHEMA gate_bridge TO regress_priv_writer;
GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
			  invariants_failed, planner_version, triggered_by, context, created_at)
	ON gate_bridge.eval_results TO regress_priv_writer;
GRANT SELECT (id) ON gate_bridge.eval_results TO regress_priv_writer;
-- operator:
GRANT USAGE ON SCHEMA gate_bridge TO regress_priv_operator;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats,
	gate_bridge.stream_status
	TO regress_priv_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
	gate_bridge.events_head(), gate_bridge.events_resume_point(bigint)
	TO regress_priv_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),
	gate_bridge.resolve(bigint, text, text) TO regress_priv_operator;
-- ... and the lifecycle: snooze incidents, silence and unsilence, and read
-- the silences
GRANT EXECUTE ON FUNCTION gate_bridge.snooze(bigint, interval, text, text),
	gate_bridge.silence(text, interval, text, text, text),
	gate_bridge.unsilence(bigint) TO regress_priv_operator;
GRANT SELECT ON gate_bridge.silences TO regress_priv_operator;
-- reader:
GRANT USAGE ON SCHEMA gate_bridge TO regress_priv_reader;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats,
	gate_bridge.stream_status
	TO regress_priv_reader;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
	gate_bridge.events_head(), gate_bridge.events_resume_point(bigint)
	TO regress_priv_reader;

-------------------------------------------------------------------------------
-- What each role holds, as the catalogs say (PUBLIC's grants included).
-------------------------------------------------------------------------------
CREATE TEMP TABLE gb_roles (role name) ON COMMIT DROP;
INSERT INTO gb_roles VALUES ('regress_priv_writer'), ('regress_priv_operator'),
	('regress_priv_reader'), ('regress_priv_nobody'), ('public');

-- 5 roles
SELECT schema_privs_are('gate_bridge', r.role,
						CASE WHEN r.role IN ('regress_priv_nobody', 'public')
							 THEN ARRAY[]::name[] ELSE ARRAY['USAGE']::name[] END)
  FROM gb_roles r ORDER BY r.role;

-- 14 relations x 5 roles: no table-level privilege for the writer either,
-- its INSERT is granted column by column (below).  The view incidents is
-- granted; the tables under it, incident_rows, incident_folds and
-- incident_contexts, to no one; silences only to the operator, to read
-- (silence() and unsilence() change them).
SELECT table_privs_are('gate_bridge', t.rel, r.role, COALESCE(e.privs, ARRAY[]::name[]))
  FROM gb_roles r
 CROSS JOIN unnest(ARRAY['eval_results', 'budgets', 'incidents', 'incident_rows',
						 'incident_folds', 'incident_events',
						 'incident_keys', 'playbook_rules', 'open_incidents',
						 'incident_counts', 'stats', 'stream_status',
						 'incident_contexts', 'silences']::name[]) AS t(rel)
  LEFT JOIN (VALUES
	('regress_priv_operator'::name, 'incidents'::name, ARRAY['SELECT']::name[]),
	('regress_priv_operator', 'incident_events', ARRAY['SELECT']),
	('regress_priv_operator', 'open_incidents', ARRAY['SELECT']),
	('regress_priv_operator', 'incident_counts', ARRAY['SELECT']),
	('regress_priv_operator', 'stats', ARRAY['SELECT']),
	('regress_priv_operator', 'stream_status', ARRAY['SELECT']),
	('regress_priv_operator', 'silences', ARRAY['SELECT']),
	('regress_priv_reader', 'incidents', ARRAY['SELECT']),
	('regress_priv_reader', 'incident_events', ARRAY['SELECT']),
	('regress_priv_reader', 'open_incidents', ARRAY['SELECT']),
	('regress_priv_reader', 'incident_counts', ARRAY['SELECT']),
	('regress_priv_reader', 'stats', ARRAY['SELECT']),
	('regress_priv_reader', 'stream_status', ARRAY['SELECT'])
  ) AS e(role, rel, privs) ON e.role = r.role AND e.rel = t.rel
 ORDER BY r.role, t.rel;

-- 12 columns of eval_results: the writer may INSERT into every one but id
-- (an id picked ahead of the identity sequence would make a later insert
-- fail with 23505), may read id alone (what ORMs read back with
-- INSERT ... RETURNING id), and may not update any of them.
SELECT column_privs_are('gate_bridge', 'eval_results', c.col, 'regress_priv_writer',
		CASE WHEN c.col = 'id' THEN ARRAY['SELECT']::name[] ELSE ARRAY['INSERT']::name[] END)
  FROM unnest(ARRAY['id', 'agent', 'eval_run_id', 'quality', 'latency_p95_ms',
					'cost_usd', 'success_rate', 'invariants_failed', 'planner_version',
					'triggered_by', 'context', 'created_at']::name[]) AS c(col);

-- 5 roles: no column of eval_results is granted to anyone else.
SELECT any_column_privs_are('gate_bridge', 'eval_results', r.role,
		CASE WHEN r.role = 'regress_priv_writer'
			 THEN ARRAY['INSERT', 'SELECT']::name[] ELSE ARRAY[]::name[] END)
  FROM gb_roles r ORDER BY r.role;

-- 6 sequences x 5 roles: nobody needs one (the writer's inserts below draw
-- the identity without any sequence privilege).
SELECT sequence_privs_are('gate_bridge', s.seq, r.role, ARRAY[]::name[])
  FROM gb_roles r
 CROSS JOIN unnest(ARRAY['eval_results_id_seq', 'incident_rows_id_seq',
						 'incident_events_id_seq', 'incident_events_position_seq',
						 'incident_contexts_id_seq', 'silences_id_seq']::name[]) AS s(seq)
 ORDER BY r.role, s.seq;

-- 33 functions x 5 roles: EXECUTE on the pure helpers and decide_pending
-- comes from PUBLIC; the operator adds ack and resolve, snooze, silence and
-- unsilence, operator and reader the event stream's functions (tick() is
-- the scheduled job's: Retention);
-- nothing else for anyone (the lifecycle's internals, auto_resolve,
-- release_silenced, silence_for, calling_role and the trigger functions,
-- are for nobody).  The trigger
-- function's EXECUTE is revoked from PUBLIC, and the writer's inserts below
-- fire it all the same.
SELECT function_privs_are('gate_bridge', f.name, f.args, r.role,
		CASE WHEN f.name IN ('pattern_rank', 'incident_severity', 'valid_agent_name',
							 'valid_agent_pattern', 'decide_pending')
				  OR (r.role = 'regress_priv_operator'
					  AND f.name IN ('ack', 'resolve', 'snooze', 'silence', 'unsilence'))
				  OR (r.role IN ('regress_priv_operator', 'regress_priv_reader')
					  AND f.name IN ('events_after', 'events_head', 'events_resume_point'))
			 THEN ARRAY['EXECUTE']::name[] ELSE ARRAY[]::name[] END)
  FROM gb_roles r
 CROSS JOIN (VALUES
	('on_budget_violation'::name, ARRAY['jsonb', 'jsonb', 'jsonb']::name[]),
	('on_invariant_failure',  ARRAY['jsonb', 'jsonb', 'jsonb']),
	('on_planner_regression', ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb']),
	('on_gate_failure',		  ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb']),
	('ack',					  ARRAY['bigint', 'text']),
	('resolve',				  ARRAY['bigint', 'text', 'text']),
	('suggest_playbooks',	  ARRAY['text', 'text']),
	('incident_severity',	  ARRAY['text']),
	('pattern_rank',		  ARRAY['text', 'text']),
	('valid_agent_name',	  ARRAY['text']),
	('valid_agent_pattern',	  ARRAY['text']),
	('budget_problem',		  ARRAY['text', 'double precision', 'double precision', 'double precision']),
	('budgets_guard',		  ARRAY[]::name[]),
	('gate_bridge_on_violation',	  ARRAY[]::name[]),
	('budgets_changed',		  ARRAY[]::name[]),
	('playbook_rules_guard',  ARRAY[]::name[]),
	('events_recorded',		  ARRAY[]::name[]),
	('events_after',		  ARRAY['bigint', 'integer']),
	('events_head',			  ARRAY[]::name[]),
	('events_resume_point',	  ARRAY['bigint']),
	('decide_pending',		  ARRAY[]::name[]),
	('compact_folds',		  ARRAY['bigint']),
	('tick',				  ARRAY[]::name[]),
	('incident_rows_removed', ARRAY[]::name[]),
	('snooze',				  ARRAY['bigint', 'interval', 'text', 'text']),
	('silence',				  ARRAY['text', 'interval', 'text', 'text', 'text']),
	('unsilence',			  ARRAY['bigint']),
	('auto_resolve',		  ARRAY['bigint', 'jsonb', 'timestamp with time zone']),
	('silence_for',			  ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone']),
	('calling_role',		  ARRAY[]::name[]),
	('release_silenced',	  ARRAY[]::name[]),
	('incident_events_held',  ARRAY[]::name[]),
	('incident_rows_changed', ARRAY[]::name[])
  ) AS f(name, args)
 ORDER BY r.role, f.name;

-- Every grant to PUBLIC on anything of ours, straight from the ACLs
-- (relations, columns, sequences, functions, the schema, our settings), so
-- that an object added later without a REVOKE shows up here.
SELECT set_eq($$
	SELECT format('%s %s', o.obj, a.privilege_type)
	  FROM (SELECT c.oid::regclass::text AS obj,
				   COALESCE(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's'
													 ELSE 'r' END::"char", c.relowner)) AS acl
			  FROM pg_class c
			 WHERE c.relnamespace = 'gate_bridge'::regnamespace
			   AND c.relkind IN ('r', 'v', 'S', 'm', 'p', 'f')
			UNION ALL
			SELECT format('%s.%I', a.attrelid::regclass, a.attname), a.attacl
			  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			 WHERE c.relnamespace = 'gate_bridge'::regnamespace AND a.attacl IS NOT NULL
			UNION ALL
			SELECT p.oid::regprocedure::text, COALESCE(p.proacl, acldefault('f', p.proowner))
			  FROM pg_proc p
			 WHERE p.pronamespace = 'gate_bridge'::regnamespace
			UNION ALL
			SELECT 'schema ' || n.nspname, COALESCE(n.nspacl, acldefault('n', n.nspowner))
			  FROM pg_namespace n
			 WHERE n.nspname = 'gate_bridge'
			UNION ALL
			SELECT 'parameter ' || p.parname, p.paracl
			  FROM pg_parameter_acl p
			 WHERE p.parname LIKE 'gate\_bridge.%' AND p.paracl IS NOT NULL) o,
		   aclexplode(o.acl) a
	 WHERE a.grantee = 0
$$, $$ VALUES ('gate_bridge.decide_pending() EXECUTE'),
			  ('gate_bridge.incident_severity(text) EXECUTE'),
			  ('gate_bridge.pattern_rank(text,text) EXECUTE'),
			  ('gate_bridge.valid_agent_name(text) EXECUTE'),
			  ('gate_bridge.valid_agent_pattern(text) EXECUTE') $$,
'PUBLIC holds EXECUTE on pattern_rank, incident_severity, the name rules of the CHECK constraints and decide_pending, and nothing else');

-------------------------------------------------------------------------------
-- The writer: its inserts create incidents, and it can do nothing else.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('regress.priv', 'quality', 0.9, 0.8, 0.5);

SELECT current_setting('search_path') AS search_path_before \gset
SET ROLE regress_priv_writer;

SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, quality)
				  VALUES ('regress.priv', 0.3)$$,
				'writer: a row below the critical quality floor is accepted');
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
				  VALUES ('regress.priv', 0.95, '{regress_inv}')$$,
				'writer: a row with a failed invariant is accepted');
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, quality)
				  VALUES ('regress.priv', 0.7)$$,
				'writer: a repeat violation of the same budget is accepted');
-- a context large enough to be stored apart, in incident_contexts, which
-- the writer cannot read or write
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
				  VALUES ('regress.ctx', '{big}', jsonb_build_object('blob',
						  (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 256) g)))$$,
				'writer: a row with a large context is accepted');
-- The trigger's violations are decided at commit; the writer decides them
-- now (decide_pending() is PUBLIC's), so that they can be looked at below.
-- The decisions run as the extension owner too.
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT is(current_user, 'regress_priv_writer',
		  'writer: the trigger''s and the decisions'' switch to the extension owner does not outlive them');
SELECT is(current_setting('search_path'), :'search_path_before',
		  'writer: the trigger''s and the decisions'' pinned search_path does not outlive them');

SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv.orm')
				  RETURNING id$$,
				'writer: INSERT ... RETURNING id works, as ORMs send it');
SELECT throws_ok($$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv.orm')
				   RETURNING id, created_at$$, '42501', NULL,
				 'writer: RETURNING any other column needs SELECT on it, which the writer lacks');
SELECT throws_ok($$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv.orm')
				   RETURNING *$$, '42501', NULL,
				 'writer: nor RETURNING *');
SELECT throws_ok($$INSERT INTO gate_bridge.eval_results (id, agent, quality)
				   VALUES (1000000, 'regress.priv', 0.1)$$, '42501', NULL,
				 'writer: cannot choose the id of an eval row');
SELECT throws_ok($$INSERT INTO gate_bridge.eval_results (id, agent, quality)
				   VALUES (DEFAULT, 'regress.priv', 0.1)$$, '42501', NULL,
				 'writer: cannot name id in an INSERT at all, not even as DEFAULT');
SELECT throws_ok('SELECT * FROM gate_bridge.eval_results', '42501', NULL,
				 'writer: cannot read eval_results');
SELECT throws_ok('SELECT agent FROM gate_bridge.eval_results', '42501', NULL,
				 'writer: cannot read any column of eval_results but id');
SELECT throws_ok('SELECT id FROM gate_bridge.eval_results WHERE quality < 0.5', '42501', NULL,
				 'writer: cannot filter on a column it may not read');
SELECT throws_ok(format(c, 'gate_bridge.eval_results'), '42501', NULL,
				 'writer: ' || format(c, 'gate_bridge.eval_results'))
  FROM unnest(ARRAY['UPDATE %s SET quality = 1 WHERE id = 1',
					'DELETE FROM %s WHERE id = 1',
					'TRUNCATE %s']) AS c;

-- 7 tables x 5 commands, and the view incidents x 4 (a view has no
-- TRUNCATE)
SELECT throws_ok(format(c.cmd, t.rel, t.col), '42501', NULL,
				 format('writer: %s', format(c.cmd, t.rel, t.col)))
  FROM (VALUES (1, 'incident_rows', 'status'), (2, 'incident_folds', 'occurrences'),
			   (3, 'incident_events', 'event'),
			   (4, 'incident_keys', 'created'), (5, 'budgets', 'enabled'),
			   (6, 'playbook_rules', 'enabled'), (7, 'incidents', 'status'),
			   (8, 'silences', 'ends_at')) AS t(tn, rel, col)
 CROSS JOIN unnest(ARRAY['SELECT * FROM gate_bridge.%s',
						 'INSERT INTO gate_bridge.%s DEFAULT VALUES',
						 'UPDATE gate_bridge.%s SET %2$I = %2$I',
						 'DELETE FROM gate_bridge.%s',
						 'TRUNCATE gate_bridge.%s']) WITH ORDINALITY AS c(cmd, cn)
 WHERE NOT (t.rel = 'incidents' AND c.cmd LIKE 'TRUNCATE%')
 ORDER BY t.tn, c.cn;

SELECT throws_ok(format('SELECT * FROM gate_bridge.%s', v), '42501', NULL,
				 format('writer: cannot read view gate_bridge.%s', v))
  FROM unnest(ARRAY['open_incidents', 'incident_counts', 'stats']) AS v;

SELECT throws_ok(q, '42501', NULL, 'writer: ' || q)
  FROM unnest(ARRAY[
	$$SELECT gate_bridge.on_budget_violation('{"agent": "regress.priv", "budget_type": "quality", "severity": "critical", "actual": 0.1, "threshold": 0.5}')$$,
	$$SELECT gate_bridge.on_invariant_failure('{"agent": "regress.priv"}', '{"invariant": "regress_forged"}')$$,
	$$SELECT gate_bridge.on_planner_regression('regress-forged', '{}', '{}', '{}')$$,
	$$SELECT gate_bridge.on_gate_failure('regress.priv', '{}', '[]')$$,
	$$SELECT gate_bridge.ack(1)$$,
	$$SELECT gate_bridge.resolve(1)$$,
	$$SELECT gate_bridge.compact_folds()$$,
	$$SELECT gate_bridge.tick()$$,
	$$SELECT gate_bridge.suggest_playbooks('quality', 'regress.priv')$$,
	$$SELECT * FROM gate_bridge.events_after(0)$$,
	$$SELECT gate_bridge.snooze(1, '1 hour')$$,
	$$SELECT gate_bridge.silence('*', '1 hour', 'forged maintenance')$$,
	$$SELECT gate_bridge.unsilence(1)$$,
	$$SELECT gate_bridge.auto_resolve(1, '{}')$$,
	$$SELECT gate_bridge.release_silenced()$$,
	$$SELECT gate_bridge.silence_for('budget', 'regress.priv', 'quality', 'BUDGET_regress.priv_quality', now())$$
  ]) AS q;

-- Ways around the trigger.
SELECT throws_ok('ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER gate_bridge_gate',
				 '42501', NULL, 'writer: cannot disable the gate trigger');
SELECT throws_ok('DROP TRIGGER gate_bridge_gate ON gate_bridge.eval_results',
				 '42501', NULL, 'writer: cannot drop the gate trigger');
SELECT throws_ok('SET session_replication_role = replica', '42501', NULL,
				 'writer: cannot switch to replica mode (which skips triggers)');
SELECT throws_ok('CREATE TABLE gate_bridge.regress_planted (x int)', '42501', NULL,
				 'writer: cannot create objects in schema gate_bridge');

-- The pure helpers are open to anyone with USAGE on the schema.
SELECT is(gate_bridge.incident_severity('critical'), 'sev1',
		  'writer: can call incident_severity()');
SELECT is(gate_bridge.pattern_rank('*', 'regress.priv'), 0,
		  'writer: can call pattern_rank()');

RESET ROLE;

-- The writer's rows are stored and its violations became incidents,
-- recorded in the timeline as the writer's doing.
SELECT is((SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'regress.priv'),
		  3::bigint, 'the writer''s three rows are stored');
SELECT is((SELECT count(*) FROM gate_bridge.incident_rows r
			 JOIN gate_bridge.incident_contexts c ON c.id = r.context_id
			WHERE r.agent = 'regress.ctx'),
		  1::bigint, 'the writer''s large context is stored apart, for its incident');
SELECT results_eq($$
	SELECT kind, key, severity, status, occurrences
	  FROM gate_bridge.incidents WHERE agent = 'regress.priv' ORDER BY kind
$$, $$ VALUES ('budget', 'BUDGET_regress.priv_quality', 'sev1', 'open', 2),
			  ('invariant', 'INVARIANT_regress.priv_regress_inv', 'sev2', 'open', 1) $$,
'the writer''s inserts opened a budget and an invariant incident, and the repeat was folded in');
SELECT results_eq($$
	SELECT i.kind, e.event, e.actor
	  FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i ON i.id = e.incident_id
	 WHERE i.agent = 'regress.priv' ORDER BY i.kind, e.id
$$, $$ VALUES ('budget', 'created', 'regress_priv_writer'),
			  ('invariant', 'created', 'regress_priv_writer') $$,
'each incident has one created event whose actor is the writer, not the extension owner');
SELECT results_eq($$
	SELECT kind, created, rate_limited FROM gate_bridge.incident_keys
	 WHERE key LIKE '%regress.priv%' ORDER BY kind
$$, $$ VALUES ('budget', 1::bigint, 0::bigint), ('invariant', 1, 0) $$,
'the decisions taken for the writer were counted');

-------------------------------------------------------------------------------
-- The operator: reads incidents, changes them only through ack/resolve.
-------------------------------------------------------------------------------
SELECT id AS budget_id FROM gate_bridge.incidents
 WHERE key = 'BUDGET_regress.priv_quality' \gset
SELECT id AS invariant_id FROM gate_bridge.incidents
 WHERE key = 'INVARIANT_regress.priv_regress_inv' \gset
SELECT open AS counts_open, sev1 AS counts_sev1 FROM gate_bridge.incident_counts \gset
SELECT created AS stats_created FROM gate_bridge.stats WHERE kind = 'budget' \gset

SET ROLE regress_priv_operator;

SELECT is((SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'regress.priv'),
		  2::bigint, 'operator: reads incidents');
SELECT is((SELECT count(*) FROM gate_bridge.incident_events
			WHERE incident_id IN (:budget_id, :invariant_id)),
		  2::bigint, 'operator: reads incident_events');
SELECT is((SELECT count(*) FROM gate_bridge.open_incidents WHERE agent = 'regress.priv'),
		  2::bigint, 'operator: reads open_incidents');
SELECT is((SELECT ARRAY[open, sev1] FROM gate_bridge.incident_counts),
		  ARRAY[:counts_open, :counts_sev1]::bigint[], 'operator: reads incident_counts');
SELECT is((SELECT created FROM gate_bridge.stats WHERE kind = 'budget'),
		  :stats_created::bigint, 'operator: reads stats');

SELECT lives_ok($$SELECT gate_bridge.ack(id) FROM gate_bridge.incidents
				  WHERE key = 'BUDGET_regress.priv_quality'$$,
				'operator: acks an incident');

SELECT throws_ok(q, '42501', NULL, 'operator: ' || q)
  FROM unnest(ARRAY[
	$$UPDATE gate_bridge.incidents SET status = 'resolved', resolved_at = now() WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$DELETE FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$INSERT INTO gate_bridge.incidents (kind, key, violation_type, severity, summary) VALUES ('budget', 'BUDGET_regress_forged', 'quality', 'sev1', 'forged')$$,
	$$TRUNCATE gate_bridge.incident_rows CASCADE$$,
	$$INSERT INTO gate_bridge.incident_events (incident_id, event) SELECT id, 'resolved' FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$UPDATE gate_bridge.incident_events SET actor = 'someone else'$$,
	$$DELETE FROM gate_bridge.incident_events$$,
	$$SELECT * FROM gate_bridge.eval_results$$,
	$$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv')$$,
	$$SELECT * FROM gate_bridge.budgets$$,
	$$UPDATE gate_bridge.budgets SET enabled = false$$,
	$$SELECT * FROM gate_bridge.playbook_rules$$,
	$$SELECT * FROM gate_bridge.incident_keys$$,
	$$SELECT * FROM gate_bridge.incident_contexts$$,
	$$SELECT gate_bridge.on_budget_violation('{"agent": "regress.priv", "budget_type": "cost", "severity": "critical", "actual": 9, "threshold": 1}')$$,
	$$SELECT gate_bridge.on_invariant_failure('{"agent": "regress.priv"}', '{"invariant": "regress_forged"}')$$,
	$$SELECT gate_bridge.on_planner_regression('regress-forged', '{}', '{}', '{}')$$,
	$$SELECT gate_bridge.on_gate_failure('regress.priv', '{}', '[]')$$,
	$$SET gate_bridge.enabled = off$$,
	$$INSERT INTO gate_bridge.silences (ends_at, comment) VALUES (now() + interval '1 day', 'forged')$$,
	$$UPDATE gate_bridge.silences SET ends_at = now()$$,
	$$DELETE FROM gate_bridge.silences$$,
	$$UPDATE gate_bridge.incidents SET snoozed_until = now() + interval '1 day' WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$SELECT gate_bridge.auto_resolve(id, '{}') FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$SELECT gate_bridge.release_silenced()$$,
	$$SELECT gate_bridge.silence_for('budget', 'regress.priv', 'quality', 'BUDGET_regress.priv_quality', now())$$,
	$$SELECT gate_bridge.tick()$$
  ]) AS q;

SELECT lives_ok($$SELECT gate_bridge.resolve(id, 'regress_priv_operator', 'fixed by regress')
				   FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.priv_quality'$$,
				'operator: resolves an acked incident');
SELECT lives_ok($$SELECT gate_bridge.resolve(id) FROM gate_bridge.incidents
				  WHERE key = 'INVARIANT_regress.priv_regress_inv'$$,
				'operator: resolves an open incident directly');

-- An error inside ack/resolve (which run as the extension owner) leaves
-- the operator as it was.
SET search_path = public, pg_catalog;
SELECT throws_ok('SELECT gate_bridge.ack(-1)', 'P0002', NULL,
				 'operator: ack of an unknown incident fails');
SELECT is(current_user, 'regress_priv_operator',
		  'operator: still itself after an error inside ack()');
SELECT is(current_setting('search_path'), 'public, pg_catalog',
		  'operator: its search_path is back after an error inside ack()');
SELECT throws_ok($$UPDATE gate_bridge.incidents SET resolution_note = 'x'
				   WHERE key = 'BUDGET_regress.priv_quality'$$, '42501', NULL,
				 'operator: still cannot update incidents after an error inside ack()');
RESET search_path;

RESET ROLE;

SELECT results_eq(format($$
	SELECT status, acked_by, acked_at IS NOT NULL, resolved_by, resolution_note
	  FROM gate_bridge.incidents WHERE id = %s
$$, :budget_id), $$ VALUES ('resolved', 'regress_priv_operator', true,
						   'regress_priv_operator', 'fixed by regress') $$,
'the operator''s ack and resolve are recorded on the incident, in the operator''s name');
SELECT results_eq(format($$
	SELECT status, acked_at IS NULL, resolved_by FROM gate_bridge.incidents WHERE id = %s
$$, :invariant_id), $$ VALUES ('resolved', true, 'regress_priv_operator') $$,
'open -> resolved by the operator, with the default actor');
SELECT results_eq(format($$
	SELECT event, actor, detail FROM gate_bridge.incident_events
	 WHERE incident_id = %s AND event <> 'created' ORDER BY id
$$, :budget_id), $$ VALUES ('acked', 'regress_priv_operator', '{"role": "regress_priv_operator"}'::jsonb),
						  ('resolved', 'regress_priv_operator',
						   '{"note": "fixed by regress", "role": "regress_priv_operator"}') $$,
'the timeline has the operator''s ack and resolve and nothing forged');

-------------------------------------------------------------------------------
-- The reader: reads, changes nothing.
-------------------------------------------------------------------------------
SET ROLE regress_priv_reader;

SELECT is((SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'regress.priv'),
		  2::bigint, 'reader: reads incidents');
SELECT is((SELECT count(*) FROM gate_bridge.incident_events
			WHERE incident_id IN (:budget_id, :invariant_id)),
		  5::bigint, 'reader: reads incident_events');
SELECT is((SELECT count(*) FROM gate_bridge.open_incidents WHERE agent = 'regress.priv'),
		  0::bigint, 'reader: reads open_incidents');
SELECT lives_ok('SELECT * FROM gate_bridge.incident_counts', 'reader: reads incident_counts');
SELECT is((SELECT length(details->'context'->>'blob') FROM gate_bridge.incidents
			WHERE agent = 'regress.ctx'),
		  8192, 'reader: reads a context stored apart in the details of its incident');
SELECT is((SELECT created FROM gate_bridge.stats WHERE kind = 'budget'),
		  :stats_created::bigint, 'reader: reads stats');
SELECT lives_ok('SELECT * FROM gate_bridge.events_after(gate_bridge.events_resume_point(gate_bridge.events_head()))',
				'reader: reads the event stream');

SELECT throws_ok(q, '42501', NULL, 'reader: ' || q)
  FROM unnest(ARRAY[
	$$SELECT gate_bridge.ack(id) FROM gate_bridge.incidents WHERE key = 'INVARIANT_regress.priv_regress_inv'$$,
	$$SELECT gate_bridge.resolve(id) FROM gate_bridge.incidents WHERE key = 'INVARIANT_regress.priv_regress_inv'$$,
	$$UPDATE gate_bridge.incidents SET resolution_note = 'x' WHERE key = 'BUDGET_regress.priv_quality'$$,
	$$DELETE FROM gate_bridge.incident_events$$,
	$$SELECT * FROM gate_bridge.eval_results$$,
	$$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv')$$,
	$$SELECT * FROM gate_bridge.budgets$$,
	$$SELECT * FROM gate_bridge.incident_keys$$,
	$$SELECT * FROM gate_bridge.incident_contexts$$,
	$$SELECT gate_bridge.on_planner_regression('regress-forged', '{}', '{}', '{}')$$,
	$$SELECT gate_bridge.snooze(id, '1 hour') FROM gate_bridge.incidents WHERE key = 'INVARIANT_regress.priv_regress_inv'$$,
	$$SELECT gate_bridge.silence('regress.priv', '1 hour', 'reader maintenance')$$,
	$$SELECT gate_bridge.unsilence(1)$$,
	$$SELECT * FROM gate_bridge.silences$$
  ]) AS q;

RESET ROLE;

-------------------------------------------------------------------------------
-- The view gate_bridge.incidents: a reader granted SELECT on it sees the
-- folded violations (the view's owner reads incident_rows and
-- incident_folds), and cannot read those tables itself nor compact them.
-------------------------------------------------------------------------------
SELECT is((SELECT relkind::text FROM pg_class WHERE oid = 'gate_bridge.incidents'::regclass),
		  'v', 'gate_bridge.incidents is a view');
SELECT is((SELECT c.relowner = e.extowner FROM pg_class c, pg_extension e
			WHERE c.oid = 'gate_bridge.incidents'::regclass AND e.extname = 'gate_bridge'),
		  true, 'the view incidents belongs to the extension''s owner');
SELECT is(has_table_privilege('public', 'gate_bridge.' || t, p), false,
		  format('PUBLIC has no %s on gate_bridge.%s', p, t))
  FROM unnest(ARRAY['incident_rows', 'incident_folds']) AS t,
	   unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p
 ORDER BY t, p;
SELECT is(has_function_privilege('public', f, 'EXECUTE'), false,
		  format('PUBLIC cannot execute %s', f))
  FROM unnest(ARRAY['gate_bridge.compact_folds(bigint)', 'gate_bridge.tick()',
					'gate_bridge.incident_rows_removed()']) AS f;

-- One incident and two folds: three violations, each decided on its own.
-- (the incident's row, and its folds)
\set fold_state 'SELECT r.occurrences, (SELECT count(*) FROM gate_bridge.incident_folds f WHERE f.incident_id = r.id) FROM gate_bridge.incident_rows r WHERE r.agent = ''regress.priv.fold'''
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('regress.priv.fold', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.priv.fold', 0.1);
SELECT gate_bridge.decide_pending() \g /dev/null
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.priv.fold', 0.2);
SELECT gate_bridge.decide_pending() \g /dev/null
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.priv.fold', 0.3);
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT results_eq(:'fold_state', $$ VALUES (1, 2::bigint) $$,
'the repeats are two folds, the incident''s row still says 1');

SET ROLE regress_priv_reader;
SELECT is((SELECT occurrences FROM gate_bridge.incidents WHERE agent = 'regress.priv.fold'),
		  3, 'reader: the view incidents adds the folds into occurrences');
SELECT is((SELECT last_seen_at > first_seen_at FROM gate_bridge.incidents WHERE agent = 'regress.priv.fold'),
		  true, 'reader: and into last_seen_at');
SELECT is((SELECT occurrences FROM gate_bridge.open_incidents WHERE agent = 'regress.priv.fold'),
		  3, 'reader: so does open_incidents');
SELECT throws_ok(q, '42501', NULL, 'reader: ' || q)
  FROM unnest(ARRAY[
	$$SELECT occurrences FROM gate_bridge.incident_rows$$,
	$$SELECT count(*) FROM gate_bridge.incident_folds$$,
	$$SELECT gate_bridge.compact_folds()$$,
	$$SELECT gate_bridge.tick()$$,
	$$UPDATE gate_bridge.incidents SET summary = summary WHERE agent = 'regress.priv.fold'$$
  ]) AS q;
RESET ROLE;

-- The operator resolves it: the resolution adds the folds into the row.
SET ROLE regress_priv_operator;
SELECT lives_ok($$SELECT gate_bridge.resolve(id) FROM gate_bridge.incidents
				  WHERE agent = 'regress.priv.fold'$$,
				'operator: resolves an incident with folds');
SELECT is((SELECT occurrences FROM gate_bridge.incidents WHERE agent = 'regress.priv.fold'),
		  3, 'operator: the resolved incident still counts three');
RESET ROLE;
SELECT results_eq(:'fold_state', $$ VALUES (3, 0::bigint) $$,
'the resolution compacted the folds into the row, as the extension''s owner');

-------------------------------------------------------------------------------
-- The lifecycle: operators can snooze and silence; writers cannot, and
-- their rows still open incidents through the trigger, held back by a
-- silence too.  (The operator's grants of snooze, silence, unsilence and
-- SELECT on silences are above.)
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('regress.priv.life', 'cost', 1), ('regress.priv.quiet', 'cost', 1);

SET ROLE regress_priv_writer;
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('regress.priv.life', 5)$$,
				'writer: a violating row is accepted');
SELECT gate_bridge.decide_pending() \g /dev/null
RESET ROLE;
SELECT id AS life_id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.priv.life_cost' \gset

SET ROLE regress_priv_operator;
SELECT lives_ok(format($$SELECT gate_bridge.snooze(%s, '2 hours', note => 'after the deploy')$$, :life_id),
				'operator: snoozes an open incident');
SELECT results_eq(format($$SELECT status, acked_by,
								  snoozed_until BETWEEN now() + interval '2 hours'
													AND clock_timestamp() + interval '2 hours'
							 FROM gate_bridge.incidents WHERE id = %s$$, :life_id),
				  $$ VALUES ('ack', 'regress_priv_operator', true) $$,
				  'operator: the snoozed incident is acked in its name, for 2 hours from the call');
SELECT gate_bridge.silence('regress.priv.quiet', '1 hour', 'maintenance of regress.priv.quiet',
						   kind => 'budget') AS silence_id \gset
SELECT ok(:silence_id > 0, 'operator: silences an agent, and learns the silence''s id');
SELECT results_eq(format($$SELECT agent_pattern, kind, created_by, comment, ends_at - starts_at
							 FROM gate_bridge.silences WHERE id = %s$$, :silence_id),
				  $$ VALUES ('regress.priv.quiet', 'budget', 'regress_priv_operator',
							 'maintenance of regress.priv.quiet', interval '1 hour') $$,
				  'operator: reads the silence, recorded as its own, for an hour');
RESET ROLE;

-- The writer, under the operator's silence.
SET ROLE regress_priv_writer;
SELECT lives_ok($$INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('regress.priv.quiet', 5)$$,
				'writer: a violating row of a silenced agent is accepted');
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT throws_ok(q, '42501', NULL, 'writer: ' || q)
  FROM unnest(ARRAY[
	format($$SELECT gate_bridge.snooze(%s, '1 hour')$$, :life_id),
	format($$SELECT gate_bridge.unsilence(%s)$$, :silence_id),
	$$SELECT gate_bridge.silence('regress.priv.life', '1 hour', 'the writer''s own maintenance')$$,
	$$SELECT gate_bridge.tick()$$,
	format($$SELECT gate_bridge.auto_resolve(%s, '{}')$$, :life_id),
	$$SELECT gate_bridge.release_silenced()$$,
	$$INSERT INTO gate_bridge.incident_rows (kind, key, agent, violation_type, severity, summary, subject) VALUES ('budget', 'BUDGET_regress.forged_cost', 'regress.forged', 'cost', 'sev1', 'forged', 'cost')$$,
	$$INSERT INTO gate_bridge.incidents (kind, key, agent, violation_type, severity, summary, subject) VALUES ('budget', 'BUDGET_regress.forged_cost', 'regress.forged', 'cost', 'sev1', 'forged', 'cost')$$,
	$$INSERT INTO gate_bridge.silences (agent_pattern, ends_at, comment) VALUES ('*', now() + interval '1 day', 'forged')$$,
	format($$UPDATE gate_bridge.silences SET ends_at = now() WHERE id = %s$$, :silence_id)
  ]) AS q;
RESET ROLE;

SELECT results_eq($$SELECT status, silence_id, snoozed_until IS NULL, flapping
					  FROM gate_bridge.incidents WHERE agent = 'regress.priv.quiet'$$,
				  format($$ VALUES ('open', %s::bigint, true, false) $$, :silence_id),
				  'the writer''s row opened an incident all the same, held by the operator''s silence');
SELECT results_eq(format($$SELECT i.agent, e.event, e.actor, e.silenced
							 FROM gate_bridge.incident_events e
							 JOIN gate_bridge.incidents i ON i.id = e.incident_id
							WHERE i.agent IN ('regress.priv.life', 'regress.priv.quiet')
							ORDER BY e.id$$),
				  $$ VALUES ('regress.priv.life', 'created', 'regress_priv_writer', false),
							('regress.priv.life', 'snoozed', 'regress_priv_operator', false),
							('regress.priv.quiet', 'created', 'regress_priv_writer', true),
							('regress.priv.quiet', 'silenced', 'gate_bridge', true) $$,
				  'the timeline: the writer''s creations (the silenced one marked so, and held by the silence) and the operator''s snooze, nothing forged');
SELECT is((SELECT (e.detail - 'until') || jsonb_build_object('until', (e.detail->>'until')::timestamptz = i.snoozed_until)
			 FROM gate_bridge.incident_events e JOIN gate_bridge.incident_rows i ON i.id = e.incident_id
			WHERE e.incident_id = :life_id AND e.event = 'snoozed'),
		  '{"note": "after the deploy", "role": "regress_priv_operator", "until": true}'::jsonb,
		  'the snoozed event names the operator''s role, its note and the end of the snooze');
SELECT is((SELECT count(*) FROM gate_bridge.silences), 1::bigint,
		  'the operator''s is the only silence');

-- The operator ends the silence: the incident it held is announced.
SET ROLE regress_priv_operator;
SELECT lives_ok(format('SELECT gate_bridge.unsilence(%s)', :silence_id),
				'operator: unsilences');
SELECT throws_ok(format('SELECT gate_bridge.unsilence(%s)', :silence_id), '55000', NULL,
				 'operator: a silence that has ended cannot be ended again');
SELECT throws_ok('SELECT gate_bridge.unsilence(-1)', 'P0002', NULL,
				 'operator: an unknown silence cannot be ended');
SELECT is(current_user, 'regress_priv_operator',
		  'operator: still itself after errors inside unsilence()');
SELECT results_eq($$SELECT e.event, e.actor, e.silenced, i.silence_id IS NULL
					  FROM gate_bridge.incident_events e
					  JOIN gate_bridge.incidents i ON i.id = e.incident_id
					 WHERE i.agent = 'regress.priv.quiet' ORDER BY e.id$$,
				  $$ VALUES ('created', 'regress_priv_writer', true, true),
							('silenced', 'gate_bridge', true, true),
							('silence_ended', 'gate_bridge', false, true) $$,
				  'operator: the released incident is announced (silence_ended) and no longer held');
RESET ROLE;

-------------------------------------------------------------------------------
-- A role with nothing granted (PUBLIC's share only) cannot even reach the
-- schema: the helpers' EXECUTE needs USAGE on the schema too.
-------------------------------------------------------------------------------
SET ROLE regress_priv_nobody;

SELECT throws_ok(q, '42501', NULL, 'nobody: ' || q)
  FROM unnest(ARRAY[
	$$SELECT * FROM gate_bridge.incidents$$,
	$$SELECT * FROM gate_bridge.open_incidents$$,
	$$INSERT INTO gate_bridge.eval_results (agent) VALUES ('regress.priv')$$,
	$$SELECT gate_bridge.incident_severity('critical')$$
  ]) AS q;

RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
