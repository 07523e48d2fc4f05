-- Every object the extension installs, as psql describes it.
\set VERBOSITY terse

-- Tables
\d gate_bridge.eval_results
\d gate_bridge.budgets
\d gate_bridge.incident_rows
\d gate_bridge.incident_folds
\d gate_bridge.incident_events
\d gate_bridge.incident_keys
\d gate_bridge.playbook_rules
SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment
  FROM pg_class c
 WHERE c.relnamespace = 'gate_bridge'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname;

-- Indexes, the partial unique one included
SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'gate_bridge'
 ORDER BY indexname;

-- Views; gate_bridge.incidents is the row plus its folds
\d+ gate_bridge.incidents
\d+ gate_bridge.open_incidents
\d+ gate_bridge.incident_counts
\d+ gate_bridge.stats

-- Functions and triggers
\df gate_bridge.*
SELECT p.proname, p.provolatile, p.proisstrict, p.prosecdef, p.proconfig
  FROM pg_proc p WHERE p.pronamespace = 'gate_bridge'::regnamespace
 ORDER BY p.proname;
SELECT tgrelid::regclass AS "table", tgname, pg_get_triggerdef(oid) AS definition
  FROM pg_trigger WHERE NOT tgisinternal
   AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'gate_bridge'::regnamespace)
 ORDER BY 1, 2;

-- What pg_dump keeps: every table with user data and its sequence; of the
-- playbook rules, the ones the user added or changed.
SELECT c.relname, x.cond
  FROM pg_extension e,
	   unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
  JOIN pg_class c ON c.oid = x.cfg
 WHERE e.extname = 'gate_bridge'
 ORDER BY c.relname;

-- The installed playbook rules
SELECT violation_type, agent_pattern, playbooks, enabled, builtin
  FROM gate_bridge.playbook_rules ORDER BY violation_type, agent_pattern;

-- Nothing for PUBLIC but the pure helpers.
SELECT c.relname, c.relacl IS NULL OR NOT EXISTS (
		   SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0) AS nothing_for_public
  FROM pg_class c
 WHERE c.relnamespace = 'gate_bridge'::regnamespace AND c.relkind IN ('r', 'v', 'S')
 ORDER BY c.relname;
SELECT p.oid::regprocedure AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'gate_bridge'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;

-- Every member of the extension
\dx+ gate_bridge
