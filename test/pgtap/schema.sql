-- The objects of the extension exist with the signatures the SPEC gives,
-- incidents carry the indexes the decision relies on, the triggers are
-- wired as the C code expects, and no function with a body can be steered
-- by the caller's search_path.
BEGIN;
SELECT plan(122);

SELECT has_schema('gate_bridge');

-- Tables and views.
SELECT has_table('gate_bridge', t, format('table gate_bridge.%s exists', t))
  FROM unnest(ARRAY['eval_results', 'budgets', 'incident_rows', 'incident_folds',
					'incident_events', 'incident_keys', 'playbook_rules', 'silences']) AS t;
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
	'resolution_note', 'subject', 'snoozed_until', 'silence_id', 'flapping',
	'external_refs']);
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
	'incident_rows_context_id_idx', 'incident_rows_snoozed_until_idx',
	'incident_rows_silence_id_idx']);
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

-------------------------------------------------------------------------------
-- The lifecycle against alert fatigue (1.2): snoozes, silences, re-fire
-- backoff, reopening, auto-resolve, flapping.
-------------------------------------------------------------------------------

-- The columns appended to the tables, last and in this order (the update
-- from 1.1 appends them, so a fresh install must have them there too), with
-- their types, NOT NULL and defaults.
\set new_columns 'SELECT a.attname::text COLLATE "default", format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) COLLATE "default" FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid = '
SELECT results_eq(:'new_columns' || $$'gate_bridge.incident_rows'::regclass ORDER BY a.attnum DESC LIMIT 5$$,
	$$ VALUES ('external_refs', 'jsonb', true, '''{}''::jsonb'),
			  ('flapping', 'boolean', true, 'false'),
			  ('silence_id', 'bigint', false, NULL),
			  ('snoozed_until', 'timestamp with time zone', false, NULL),
			  ('context_id', 'bigint', false, NULL) $$,
	'incident_rows ends with context_id, snoozed_until, silence_id, flapping (NOT NULL DEFAULT false), and the issue openers'' external_refs (NOT NULL DEFAULT ''{}'')');
SELECT results_eq(:'new_columns' || $$'gate_bridge.incident_events'::regclass ORDER BY a.attnum DESC LIMIT 2$$,
	$$ VALUES ('silenced', 'boolean', true, 'false'),
			  ('position', 'bigint', false, NULL) $$,
	'incident_events ends with position, silenced (NOT NULL DEFAULT false)');
SELECT results_eq(:'new_columns' || $$'gate_bridge.incident_keys'::regclass ORDER BY a.attnum DESC LIMIT 5$$,
	$$ VALUES ('flapping_since', 'timestamp with time zone', false, NULL),
			  ('state_changes', 'timestamp with time zone[]', true, $d$'{}'::timestamp with time zone[]$d$),
			  ('recovery_occurrences', 'bigint', false, NULL),
			  ('recovery_passes', 'bigint', true, '0'),
			  ('refires', 'integer', true, '0') $$,
	'incident_keys ends with refires, recovery_passes, recovery_occurrences, state_changes, flapping_since');
SELECT results_eq(:'new_columns' || $$'gate_bridge.budgets'::regclass ORDER BY a.attnum DESC LIMIT 6$$,
	$$ VALUES ('baseline_k', 'double precision', true, '3'),
			  ('baseline_windows', 'integer', true, '4'),
			  ('method', 'text', true, $d$'mean'::text$d$),
			  ('min_samples', 'integer', true, '1'),
			  ('resolve_quiet', 'interval', false, NULL),
			  ('resolve_after', 'integer', false, NULL) $$,
	'budgets ends with resolve_after, resolve_quiet (NULL: resolved by hand only), min_samples, method, baseline_windows, baseline_k');
SELECT columns_are('gate_bridge', 'incident_keys', ARRAY[
	'kind', 'key', 'created', 'rate_limited', 'last_created_at', 'last_rate_limited_at',
	'agent', 'subject', 'refires', 'recovery_passes', 'recovery_occurrences',
	'state_changes', 'flapping_since']);
SELECT columns_are('gate_bridge', 'budgets', ARRAY[
	'agent_pattern', 'budget_type', 'warning', 'error', 'critical', 'lookback', 'enabled',
	'resolve_after', 'resolve_quiet', 'min_samples', 'method', 'baseline_windows', 'baseline_k']);
SELECT columns_are('gate_bridge', 'incident_events', ARRAY[
	'id', 'incident_id', 'event', 'at', 'actor', 'detail', 'position', 'silenced']);

-- The views: the new columns at the end, after what 1.1 had.
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
			WHERE a.attrelid = 'gate_bridge.open_incidents'::regclass AND a.attnum > 0),
		  ARRAY['id', 'kind', 'key', 'agent', 'violation_type', 'severity', 'status',
				'summary', 'playbooks', 'occurrences', 'first_seen_at', 'last_seen_at',
				'acked_at', 'acked_by', 'details', 'snoozed_until', 'silence_id', 'flapping'],
		  'open_incidents has the columns of 1.1, then snoozed_until, silence_id, flapping');
SELECT is((SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
			 FROM pg_attribute a
			WHERE a.attrelid = v::regclass AND a.attname IN ('snoozed_until', 'silence_id', 'flapping')),
		  ARRAY['timestamp with time zone', 'bigint', 'boolean'],
		  format('%s: snoozed_until timestamptz, silence_id bigint, flapping boolean', v))
  FROM unnest(ARRAY['gate_bridge.incidents', 'gate_bridge.open_incidents']) AS v;

-- Silences.
SELECT columns_are('gate_bridge', 'silences', ARRAY[
	'id', 'agent_pattern', 'kind', 'violation_type', 'key', 'starts_at', 'ends_at',
	'created_by', 'comment', 'created_at']);
SELECT results_eq(
	$$SELECT a.attname::text COLLATE "default", format_type(a.atttypid, a.atttypmod), a.attnotnull,
			 pg_get_expr(d.adbin, d.adrelid) COLLATE "default", a.attidentity::text
		FROM pg_attribute a
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	   WHERE a.attrelid = 'gate_bridge.silences'::regclass AND a.attnum > 0
	   ORDER BY a.attnum$$,
	$$ VALUES ('id', 'bigint', true, NULL, 'd'),
			  ('agent_pattern', 'text', true, $d$'*'::text$d$, ''),
			  ('kind', 'text', false, NULL, ''),
			  ('violation_type', 'text', false, NULL, ''),
			  ('key', 'text', false, NULL, ''),
			  ('starts_at', 'timestamp with time zone', true, 'now()', ''),
			  ('ends_at', 'timestamp with time zone', true, NULL, ''),
			  ('created_by', 'text', true, 'CURRENT_USER', ''),
			  ('comment', 'text', false, NULL, ''),
			  ('created_at', 'timestamp with time zone', true, 'now()', '') $$,
	'silences: types, NOT NULL, defaults, and an identity id (BY DEFAULT, so a restore keeps ids)');
SELECT col_is_pk('gate_bridge', 'silences', 'id', 'silences is keyed by id');
SELECT results_eq(
	$$SELECT conname::text COLLATE "default", pg_get_constraintdef(oid)
		FROM pg_constraint
	   WHERE conrelid IN ('gate_bridge.silences'::regclass, 'gate_bridge.budgets'::regclass)
		 AND contype = 'c' AND conname ~ '^(silences_|budgets_resolve_)'
	   ORDER BY conname COLLATE "C"$$,
	$$ VALUES ('budgets_resolve_after_check', 'CHECK (((resolve_after >= 1) AND (resolve_after <= 1000000)))'),
			  ('budgets_resolve_quiet_check', $d$CHECK (((resolve_quiet > '00:00:00'::interval) AND (resolve_quiet <= '366 days'::interval)))$d$),
			  ('silences_agent_pattern_check', 'CHECK (gate_bridge.valid_agent_pattern(agent_pattern))'),
			  ('silences_ends_at_check', 'CHECK ((ends_at >= starts_at))'),
			  ('silences_kind_check', $d$CHECK ((kind = ANY (ARRAY['budget'::text, 'invariant'::text, 'planner'::text, 'delivery'::text, 'heartbeat'::text])))$d$) $$,
	'the CHECK constraints of silences and of the budgets'' auto-resolve columns');
-- the constraints hold (in a savepoint each: this file rolls back)
SELECT throws_ok(q, '23514', NULL, 'refused: ' || q)
  FROM unnest(ARRAY[
	$$INSERT INTO gate_bridge.silences (agent_pattern, ends_at) VALUES ('regress.*x', now() + interval '1 h')$$,
	$$INSERT INTO gate_bridge.silences (kind, ends_at) VALUES ('incident', now() + interval '1 h')$$,
	$$INSERT INTO gate_bridge.silences (starts_at, ends_at) VALUES (now(), now() - interval '1 s')$$,
	$$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical, resolve_after) VALUES ('regress.schema', 'cost', 1, 0)$$,
	$$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical, resolve_after) VALUES ('regress.schema', 'cost', 1, 1000001)$$,
	$$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical, resolve_quiet) VALUES ('regress.schema', 'cost', 1, '0')$$,
	$$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical, resolve_quiet) VALUES ('regress.schema', 'cost', 1, '367 days')$$
  ]) AS q;
SELECT lives_ok($$INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical, resolve_after, resolve_quiet)
				  VALUES ('regress.schema', 'cost', 1, 1000000, '366 days')$$,
				'budgets: resolve_after 1000000 and resolve_quiet 366 days are the largest allowed');
SELECT is((SELECT count(*) FROM pg_extension e, unnest(e.extconfig) c
			WHERE e.extname = 'gate_bridge'
			  AND c IN ('gate_bridge.silences'::regclass, 'gate_bridge.silences_id_seq'::regclass)),
		  2::bigint, 'silences and its identity sequence are dumped (pg_extension_config_dump)');

-- Indexes of the lifecycle: what tick() scans, partial so that they stay
-- small (most incidents are neither snoozed nor silenced, most keys do not
-- flap).
SELECT indexes_are('gate_bridge', 'silences', ARRAY['silences_pkey', 'silences_ends_at_idx']);
SELECT has_index('gate_bridge', 'silences', 'silences_ends_at_idx', ARRAY['ends_at']);
SELECT indexes_are('gate_bridge', 'incident_keys', ARRAY['incident_keys_pkey',
	'incident_keys_flapping_since_idx']);
SELECT results_eq(
	$$SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
		FROM pg_index i
	   WHERE i.indexrelid IN ('gate_bridge.incident_rows_snoozed_until_idx'::regclass,
							  'gate_bridge.incident_rows_silence_id_idx'::regclass,
							  'gate_bridge.incident_keys_flapping_since_idx'::regclass)
	   ORDER BY i.indexrelid::regclass::text COLLATE "C"$$,
	$$ VALUES ('gate_bridge.incident_keys_flapping_since_idx',
			   'CREATE INDEX incident_keys_flapping_since_idx ON gate_bridge.incident_keys USING btree (flapping_since) WHERE (flapping_since IS NOT NULL)'),
			  ('gate_bridge.incident_rows_silence_id_idx',
			   'CREATE INDEX incident_rows_silence_id_idx ON gate_bridge.incident_rows USING btree (silence_id) WHERE (silence_id IS NOT NULL)'),
			  ('gate_bridge.incident_rows_snoozed_until_idx',
			   'CREATE INDEX incident_rows_snoozed_until_idx ON gate_bridge.incident_rows USING btree (snoozed_until) WHERE (snoozed_until IS NOT NULL)') $$,
	'the partial indexes on snoozed_until, silence_id and flapping_since');

-- Functions of the lifecycle, with their signatures, results, languages and
-- who they run as.
SELECT has_function('gate_bridge', f.name, f.args,
					format('function gate_bridge.%s(%s) exists', f.name,
						   array_to_string(f.args, ', ')))
  FROM (VALUES
	('silence',				  ARRAY['text', 'interval', 'text', 'text', 'text']),
	('unsilence',			  ARRAY['bigint']),
	('snooze',				  ARRAY['bigint', 'interval', 'text', 'text']),
	('auto_resolve',		  ARRAY['bigint', 'jsonb', 'timestamp with time zone']),
	('silence_for',			  ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone']),
	('calling_role',		  ARRAY[]::text[]),
	('release_silenced',	  ARRAY[]::text[]),
	('incident_events_held',  ARRAY[]::text[]),
	('incident_rows_changed', ARRAY[]::text[])
  ) AS f(name, args);
SELECT results_eq(
	$$SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), l.lanname::text COLLATE "default",
			 p.prosecdef, p.provolatile::text
		FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	   WHERE p.oid IN ('gate_bridge.silence(text, interval, text, text, text)'::regprocedure,
					   'gate_bridge.unsilence(bigint)'::regprocedure,
					   'gate_bridge.snooze(bigint, interval, text, text)'::regprocedure,
					   'gate_bridge.tick()'::regprocedure,
					   'gate_bridge.auto_resolve(bigint, jsonb, timestamptz)'::regprocedure,
					   'gate_bridge.silence_for(text, text, text, text, timestamptz)'::regprocedure,
					   'gate_bridge.calling_role()'::regprocedure,
					   'gate_bridge.release_silenced()'::regprocedure,
					   'gate_bridge.incident_events_held()'::regprocedure,
					   'gate_bridge.incident_rows_changed()'::regprocedure)
	   ORDER BY p.oid::regprocedure::text COLLATE "C"$$,
	$$ VALUES
		('gate_bridge.auto_resolve(bigint,jsonb,timestamp with time zone)', 'boolean', 'c', false, 'v'),
		('gate_bridge.calling_role()', 'text', 'sql', false, 's'),
		('gate_bridge.incident_events_held()', 'trigger', 'plpgsql', false, 'v'),
		('gate_bridge.incident_rows_changed()', 'trigger', 'c', false, 'v'),
		('gate_bridge.release_silenced()', 'integer', 'plpgsql', true, 'v'),
		('gate_bridge.silence(text,interval,text,text,text)', 'bigint', 'plpgsql', true, 'v'),
		('gate_bridge.silence_for(text,text,text,text,timestamp with time zone)', 'bigint', 'sql', false, 's'),
		('gate_bridge.snooze(bigint,interval,text,text)', 'timestamp with time zone', 'c', false, 'v'),
		('gate_bridge.tick()', 'integer', 'plpgsql', true, 'v'),
		('gate_bridge.unsilence(bigint)', 'void', 'plpgsql', true, 'v') $$,
	'the lifecycle functions: result, language, SECURITY DEFINER (silence, unsilence, tick, release_silenced only) and volatility');
SELECT is(pg_get_function_arguments(f::regprocedure), a, format('the arguments of %s', f))
  FROM (VALUES
	('gate_bridge.silence(text, interval, text, text, text)',
	 'agent_pattern text, duration interval, comment text, kind text DEFAULT NULL::text, violation_type text DEFAULT NULL::text'),
	('gate_bridge.unsilence(bigint)', 'id bigint'),
	('gate_bridge.snooze(bigint, interval, text, text)',
	 'incident_id bigint, duration interval, actor text DEFAULT CURRENT_USER, note text DEFAULT NULL::text'),
	('gate_bridge.auto_resolve(bigint, jsonb, timestamptz)',
	 'incident_id bigint, evidence jsonb, seen_before timestamp with time zone DEFAULT NULL::timestamp with time zone')
  ) AS t(f, a);
-- No other function of the schema is SECURITY DEFINER (snooze() and
-- auto_resolve() switch to the owner in C, as ack() and resolve() do):
-- the lifecycle adds silence, unsilence and release_silenced to those of
-- 1.2 before it.
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p
				WHERE p.pronamespace = 'gate_bridge'::regnamespace AND p.prosecdef$$,
			  ARRAY['gate_bridge.compact_folds(bigint)', 'gate_bridge.incident_rows_removed()',
					'gate_bridge.run_gates(text,interval,boolean,integer)', 'gate_bridge.tick()',
					'gate_bridge.release_silenced()', 'gate_bridge.silence(text,interval,text,text,text)',
					'gate_bridge.unsilence(bigint)',
					'gate_bridge.claim_deliveries(text,integer,interval,text)',
					'gate_bridge.complete_delivery(bigint,integer,text,interval,bytea)',
					'gate_bridge.release_deliveries(text)', 'gate_bridge.redeliver(bigint)',
					'gate_bridge.compare_planners(text,text,text,interval,integer,double precision,boolean)'],
			  'the SECURITY DEFINER functions are compact_folds, incident_rows_removed, run_gates, tick, silence, unsilence, release_silenced, delivery''s claim_deliveries, complete_delivery, release_deliveries and redeliver, and compare_planners');

-- Triggers of the lifecycle.
SELECT trigger_is('gate_bridge', 'incident_events', 'incident_events_held',
				  'gate_bridge', 'incident_events_held');
SELECT trigger_is('gate_bridge', 'incident_rows', 'incident_rows_changed',
				  'gate_bridge', 'incident_rows_changed');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.incident_events'::regclass
				   AND t.tgname = 'incident_events_held' AND t.tgenabled = 'O'),
			   '^CREATE TRIGGER incident_events_held BEFORE INSERT ON gate_bridge\.incident_events FOR EACH ROW ',
			   'incident_events_held marks each event BEFORE INSERT, FOR EACH ROW');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.incident_rows'::regclass
				   AND t.tgname = 'incident_rows_changed' AND t.tgenabled = 'A'),
			   '^CREATE TRIGGER incident_rows_changed AFTER INSERT OR DELETE OR UPDATE OF status OR TRUNCATE ON gate_bridge\.incident_rows FOR EACH STATEMENT ',
			   'incident_rows_changed fires on every change of incidents and of their status, once per statement, also under replication');

-- Issue openers: the destinations' options and the deliveries' request are
-- the tables' last columns; destinations_guard checks every row, also
-- restored and replicated ones; a rename moves the incidents' issues.
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
			WHERE a.attrelid = 'gate_bridge.destinations'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
		  ARRAY['name', 'kind', 'url', 'secret', 'min_severity', 'agent_pattern', 'events', 'enabled',
				'created_at', 'options'],
		  'destinations: options comes last');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
			WHERE a.attrelid = 'gate_bridge.deliveries'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
		  ARRAY['id', 'destination', 'event_id', 'incident_id', 'event', 'status', 'attempts',
				'next_attempt_at', 'lease_until', 'claimed_by', 'last_status', 'last_error',
				'created_at', 'delivered_at', 'request', 'unconfirmed'],
		  'deliveries: request and unconfirmed come last');
SELECT trigger_is('gate_bridge', 'destinations', 'destinations_guard',
				  'gate_bridge', 'destinations_guard');
SELECT matches((SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
				 WHERE t.tgrelid = 'gate_bridge.destinations'::regclass
				   AND t.tgname = 'destinations_guard' AND t.tgenabled = 'A'),
			   '^CREATE TRIGGER destinations_guard BEFORE INSERT OR UPDATE OF kind, url, secret, events, options ON gate_bridge\.destinations FOR EACH ROW ',
			   'destinations_guard checks each row before it is written, also under replication');
SELECT trigger_is('gate_bridge', 'destinations', 'destinations_renamed',
				  'gate_bridge', 'destinations_renamed');

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
