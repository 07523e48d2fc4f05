-- The objects of the extension exist with the signatures the SPEC gives,
-- incidents carry the indexes the decision relies on, the triggers are
-- wired as the C code expects, and no function with a body can be steered
-- by the caller's search_path.
BEGIN;
SELECT plan(70);

SELECT has_schema('gate_bridge');

-- Tables and views.
SELECT has_table('gate_bridge', t, format('table gate_bridge.%s exists', t))
  FROM unnest(ARRAY['eval_results', 'budgets', 'incident_rows', 'incident_folds',
					'incident_events', 'incident_keys', 'playbook_rules']) AS t;
SELECT has_view('gate_bridge', v, format('view gate_bridge.%s exists', v))
  FROM unnest(ARRAY['incidents', 'open_incidents', 'incident_counts', 'stats']) AS v;

-- The trigger reads these columns by name and type; the SPEC lists them.
SELECT columns_are('gate_bridge', 'eval_results', ARRAY[
	'id', 'agent', 'eval_run_id', 'quality', 'latency_p95_ms', 'cost_usd',
	'success_rate', 'invariants_failed', 'planner_version', 'triggered_by',
	'context', 'created_at']);
SELECT columns_are('gate_bridge', 'incidents', ARRAY[
	'id', 'kind', 'key', 'agent', 'violation_type', 'severity', 'status',
	'summary', 'details', 'playbooks', 'occurrences', 'first_seen_at',
	'last_seen_at', 'acked_at', 'acked_by', 'resolved_at', 'resolved_by',
	'resolution_note', 'subject']);
-- The view gate_bridge.incidents has the columns of its table, in order,
-- but context_id (the view puts the context back into details).
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
			WHERE a.attrelid = 'gate_bridge.incidents'::regclass AND a.attnum > 0),
		  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
			WHERE a.attrelid = 'gate_bridge.incident_rows'::regclass AND a.attnum > 0
			  AND NOT a.attisdropped AND a.attname <> 'context_id'),
		  'the view incidents has the columns of incident_rows but context_id, in the same order');
SELECT columns_are('gate_bridge', 'incident_folds', ARRAY[
	'incident_id', 'occurrences', 'last_seen_at', 'transaction_id', 'seq']);

-- Functions, with their signatures and result types.
SELECT has_function('gate_bridge', f.name, f.args,
					format('function gate_bridge.%s(%s) exists', f.name,
						   array_to_string(f.args, ', ')))
  FROM (VALUES
	('on_budget_violation',	  ARRAY['jsonb', 'jsonb', 'jsonb']),
	('on_invariant_failure',  ARRAY['jsonb', 'jsonb', 'jsonb']),
	('on_planner_regression', ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb']),
	('on_gate_failure',		  ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb']),
	('ack',					  ARRAY['bigint', 'text']),
	('resolve',				  ARRAY['bigint', 'text', 'text']),
	('suggest_playbooks',	  ARRAY['text', 'text']),
	('incident_severity',	  ARRAY['text']),
	('pattern_rank',		  ARRAY['text', 'text']),
	('decide_pending',		  ARRAY[]::text[]),
	('compact_folds',		  ARRAY['bigint']),
	('tick',				  ARRAY[]::text[]),
	('gate_bridge_on_violation',	  ARRAY[]::text[]),
	('budgets_changed',		  ARRAY[]::text[]),
	('playbook_rules_guard',  ARRAY[]::text[])
  ) AS f(name, args);

SELECT function_returns('gate_bridge', f.name, f.args, f.result)
  FROM (VALUES
	('on_budget_violation',	  ARRAY['jsonb', 'jsonb', 'jsonb'], 'bigint'),
	('on_invariant_failure',  ARRAY['jsonb', 'jsonb', 'jsonb'], 'bigint'),
	('on_planner_regression', ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb'], 'bigint'),
	('on_gate_failure',		  ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb'], 'bigint[]'),
	('ack',					  ARRAY['bigint', 'text'], 'void'),
	('resolve',				  ARRAY['bigint', 'text', 'text'], 'void'),
	('suggest_playbooks',	  ARRAY['text', 'text'], 'text[]'),
	('incident_severity',	  ARRAY['text'], 'text'),
	('pattern_rank',		  ARRAY['text', 'text'], 'integer'),
	('decide_pending',		  ARRAY[]::text[], 'bigint'),
	('compact_folds',		  ARRAY['bigint'], 'bigint'),
	('tick',				  ARRAY[]::text[], 'integer'),
	('gate_bridge_on_violation',	  ARRAY[]::text[], 'trigger'),
	('budgets_changed',		  ARRAY[]::text[], 'trigger'),
	('playbook_rules_guard',  ARRAY[]::text[], 'trigger')
  ) AS f(name, args, result);

-- The defaults the SPEC documents: ack/resolve record the calling role.
SELECT is((SELECT pg_get_function_arguments('gate_bridge.ack(bigint,text)'::regprocedure)),
		  'incident_id bigint, actor text DEFAULT CURRENT_USER',
		  'ack() defaults actor to the calling role');
SELECT is((SELECT pg_get_function_arguments('gate_bridge.resolve(bigint,text,text)'::regprocedure)),
		  'incident_id bigint, actor text DEFAULT CURRENT_USER, note text DEFAULT NULL::text',
		  'resolve() defaults actor to the calling role and note to NULL');

-- Indexes on incident_rows: the primary key, the unique partial index that
-- allows one unresolved incident per key (kind, agent, subject) and serves
-- deduplication, the rate-limit window index, and the incidents of a
-- context stored apart.  The folds are found by incident.
SELECT indexes_are('gate_bridge', 'incident_rows', ARRAY[
	'incident_rows_pkey', 'incidents_unresolved_idx', 'incidents_kind_agent_subject_first_seen_idx',
	'incident_rows_context_id_idx']);
SELECT has_index('gate_bridge', 'incident_rows', 'incidents_unresolved_idx',
				 ARRAY['kind', 'agent', 'subject']);
SELECT index_is_unique('gate_bridge', 'incident_rows', 'incidents_unresolved_idx');
SELECT is((SELECT pg_get_expr(i.indpred, i.indrelid)
			 FROM pg_index i
			WHERE i.indexrelid = 'gate_bridge.incidents_unresolved_idx'::regclass),
		  $$(status <> 'resolved'::text)$$,
		  'incidents_unresolved_idx covers exactly the unresolved incidents');
SELECT has_index('gate_bridge', 'incident_rows', 'incidents_kind_agent_subject_first_seen_idx',
				 ARRAY['kind', 'agent', 'subject', 'first_seen_at']);
SELECT indexes_are('gate_bridge', 'incident_folds', ARRAY['incident_folds_key']);
SELECT has_index('gate_bridge', 'incident_folds', 'incident_folds_key',
				 ARRAY['incident_id', 'transaction_id', 'seq']);
SELECT index_is_unique('gate_bridge', 'incident_folds', 'incident_folds_key');
-- a publication of incident_folds takes the deletes of compaction
SELECT is((SELECT i.indisreplident FROM pg_index i
			WHERE i.indexrelid = 'gate_bridge.incident_folds_key'::regclass),
		  true, 'incident_folds_key is the replica identity of incident_folds');
SELECT has_index('gate_bridge', 'eval_results', 'eval_results_agent_created_at_idx',
				 ARRAY['agent', 'created_at']);

-- Triggers.
SELECT trigger_is('gate_bridge', 'eval_results', 'gate_bridge_gate',
				  'gate_bridge', 'gate_bridge_on_violation');
SELECT trigger_is('gate_bridge', 'budgets', 'gate_bridge_budgets_changed',
				  'gate_bridge', 'budgets_changed');
SELECT trigger_is('gate_bridge', 'playbook_rules', 'playbook_rules_guard',
				  'gate_bridge', 'playbook_rules_guard');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.eval_results'::regclass
				   AND t.tgname = 'gate_bridge_gate' AND t.tgenabled = 'O'),
			   '^CREATE TRIGGER gate_bridge_gate AFTER INSERT ON gate_bridge\.eval_results FOR EACH ROW ',
			   'the gate fires AFTER INSERT FOR EACH ROW, and is enabled');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.budgets'::regclass
				   AND t.tgname = 'gate_bridge_budgets_changed' AND t.tgenabled = 'A'),
			   ' AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON gate_bridge\.budgets FOR EACH STATEMENT ',
			   'every kind of change to budgets invalidates the budget caches, also under replication');
-- The folds of removed incidents go with them, whoever deletes or truncates.
SELECT trigger_is('gate_bridge', 'incident_rows', t, 'gate_bridge', 'incident_rows_removed')
  FROM unnest(ARRAY['incident_rows_deleted', 'incident_rows_truncated']) AS t;
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.incident_rows'::regclass
				   AND t.tgname = 'incident_rows_deleted' AND t.tgenabled = 'O'),
			   ' AFTER DELETE ON gate_bridge\.incident_rows REFERENCING OLD TABLE AS removed_rows FOR EACH STATEMENT ',
			   'deleted incidents take their folds with them, once per statement');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.incident_rows'::regclass
				   AND t.tgname = 'incident_rows_truncated' AND t.tgenabled = 'O'),
			   ' AFTER TRUNCATE ON gate_bridge\.incident_rows FOR EACH STATEMENT ',
			   'a truncation of the incidents truncates their folds');

-- No function with a body (SQL, PL/pgSQL) and no SECURITY DEFINER function
-- runs with the caller's search_path.
SELECT is_empty($$
	SELECT p.oid::regprocedure::text
	  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	 WHERE p.pronamespace = 'gate_bridge'::regnamespace
	   AND (l.lanname NOT IN ('c', 'internal') OR p.prosecdef)
	   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c
						WHERE c LIKE 'search\_path=pg\_catalog%')
$$, 'every SQL, PL/pgSQL or SECURITY DEFINER function pins search_path to pg_catalog first');
-- That check must have something to look at.
SELECT cmp_ok((SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
				WHERE p.pronamespace = 'gate_bridge'::regnamespace
				  AND l.lanname IN ('sql', 'plpgsql')), '>=', 2::bigint,
			  'suggest_playbooks and playbook_rules_guard are among the functions checked');

-- Everything in the schema belongs to the extension (so it is dropped,
-- dumped and upgraded with it).
SELECT is_empty($$
	SELECT c.oid::regclass::text FROM pg_class c
	 WHERE c.relnamespace = 'gate_bridge'::regnamespace
	   AND c.relkind IN ('r', 'v', 'S', 'm', 'p', 'f')
	   AND NOT EXISTS (SELECT FROM pg_depend d
						WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
						  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
	UNION ALL
	SELECT p.oid::regprocedure::text FROM pg_proc p
	 WHERE p.pronamespace = 'gate_bridge'::regnamespace
	   AND NOT EXISTS (SELECT FROM pg_depend d
						WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
						  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
$$, 'every relation and function in schema gate_bridge is a member of the extension');

SELECT * FROM finish();
ROLLBACK;
