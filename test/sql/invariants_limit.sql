-- gate_bridge.max_invariants_per_row: a row naming more distinct failed
-- invariants than the limit is refused (SQLSTATE 54000) and nothing of its
-- statement is stored; repeats of a name count once.
\set VERBOSITY default
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

SHOW gate_bridge.max_invariants_per_row;

-- n distinct invariant names, inv001 .. inv<n>
CREATE FUNCTION pg_temp.invariants(n int) RETURNS text[]
LANGUAGE sql AS $$
	SELECT COALESCE(array_agg(format('inv%s', lpad(g::text, 3, '0')) ORDER BY g), '{}')
	  FROM generate_series(1, n) AS g
$$;

-- At the limit: accepted, one incident per invariant.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
VALUES ('cap.at', pg_temp.invariants(64));
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cap.at';

-- One more: refused, with the count and the limit.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
VALUES ('cap.over', pg_temp.invariants(65));
\echo :LAST_ERROR_SQLSTATE
-- 500 of them, as one 1 MB row might name
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
VALUES ('cap.over', pg_temp.invariants(500),
		jsonb_build_object('blob', repeat('x', 1024 * 1024)));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS rows_stored FROM gate_bridge.eval_results WHERE agent = 'cap.over';
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cap.over';

-- Repeats count once: 300 entries naming 64 invariants are accepted, 65
-- named twice each are not.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
SELECT 'cap.repeats', array_agg(format('inv%s', lpad((g % 64 + 1)::text, 3, '0')))
  FROM generate_series(1, 300) AS g;
SELECT count(*) AS incidents, max(occurrences) AS occurrences
  FROM gate_bridge.incidents WHERE agent = 'cap.repeats';
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
VALUES ('cap.repeats', pg_temp.invariants(65) || pg_temp.invariants(65));
\echo :LAST_ERROR_SQLSTATE

-- One refused row fails its whole statement: nothing is stored.
SET gate_bridge.max_invariants_per_row = 2;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES
	('cap.batch', '{a}'), ('cap.batch', '{a,b}'), ('cap.batch', '{a,b,c}'), ('cap.batch', '{b}');
\echo :LAST_ERROR_SQLSTATE
COPY gate_bridge.eval_results (agent, invariants_failed) FROM stdin;
cap.batch	{a}
cap.batch	{a,b,c}
\.
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS rows_stored FROM gate_bridge.eval_results WHERE agent = 'cap.batch';
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cap.batch';
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES
	('cap.batch', '{a}'), ('cap.batch', '{a,b}'), ('cap.batch', '{b,b,a,a}');
SELECT key, occurrences FROM gate_bridge.incidents WHERE agent = 'cap.batch' ORDER BY key;

-- The limit holds with the bridge switched off too (what is stored does not
-- depend on gate_bridge.enabled), and in a savepoint the rest survives.
BEGIN;
SET LOCAL gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('cap.off', '{a,b}');
SAVEPOINT s;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('cap.off', '{a,b,c}');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT agent, invariants_failed FROM gate_bridge.eval_results WHERE agent = 'cap.off';

-- A row that brings its own id (a restore, a copy from another database)
-- was checked where it came from: it is stored, and decides nothing.
INSERT INTO gate_bridge.eval_results (id, agent, invariants_failed)
VALUES (1000000, 'cap.restored', '{a,b,c}');
SELECT count(*) AS rows_stored FROM gate_bridge.eval_results WHERE agent = 'cap.restored';
SELECT count(*) AS incidents FROM gate_bridge.incidents WHERE agent = 'cap.restored';
RESET gate_bridge.max_invariants_per_row;

-- The range, and who may change it.
SET gate_bridge.max_invariants_per_row = 0;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.max_invariants_per_row = 10001;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.max_invariants_per_row = 10000;
SHOW gate_bridge.max_invariants_per_row;
RESET gate_bridge.max_invariants_per_row;
CREATE ROLE regress_cap_writer;
SET ROLE regress_cap_writer;
SET gate_bridge.max_invariants_per_row = 1000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_cap_writer;
SHOW gate_bridge.max_invariants_per_row;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
