-- The extension installs into its fixed schema with every object.
\set VERBOSITY terse
SELECT extname, extversion, extrelocatable, n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'gate_bridge';
SELECT c.relname, c.relkind
  FROM pg_class c
 WHERE c.relnamespace = 'gate_bridge'::regnamespace
 ORDER BY c.relname;
