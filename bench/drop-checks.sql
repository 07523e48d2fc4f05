-- An experiment, not a configuration: drop the CHECK constraints of the
-- gate_bridge tables named in :'tables' (comma-separated, e.g.
-- 'incidents,eval_results'), to measure what their preparation costs:
-- PostgreSQL 15 rebuilds a table's CHECK expressions from their stored node
-- trees for every INSERT or UPDATE statement.  Used by run.sh and
-- instructions.sh when GB_BENCH_DROP_CHECKS is set, on the throw-away
-- cluster only.
SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname)
  FROM pg_constraint c
 WHERE c.contype = 'c'
   AND c.conrelid IN (SELECT ('gate_bridge.' || t)::regclass
						FROM unnest(string_to_array(:'tables', ',')) AS t)
\gexec
