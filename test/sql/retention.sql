-- Retention: purge_eval_results() deletes the eval rows older than the
-- cutoff, in batches, and nothing newer; refuses bad arguments, a cutoff
-- inside an enabled budget's window and an atomic context; leaves the gates'
-- windows and the incidents alone; reads only the rows it deletes.
\set VERBOSITY default
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- Rows of several ages for three agents (ages far from every cutoff used
-- below, so that the time a statement takes does not matter).  Agent r.b
-- has 40 rows stamped at one instant (ties in created_at); agent r.c has
-- only new rows.  The trigger opens incidents for the old violations.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, lookback)
VALUES ('r.*', 'quality', 0.9, 0.8, 0.5, '7 days');
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT a.agent, CASE WHEN age.d >= 40 THEN 0.3 ELSE 0.95 END,
	   now() - age.d * interval '1 day' - g * interval '1 minute'
  FROM (VALUES ('r.a'), ('r.b')) a(agent),
	   (VALUES (0), (3), (8), (40), (400)) age(d),
	   generate_series(1, 10) g;
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT 'r.b', 0.95, now() - interval '50 days' FROM generate_series(1, 40);
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT 'r.c', 0.95, now() - g * interval '1 hour' FROM generate_series(1, 10) g;
UPDATE gate_bridge.budgets SET enabled = false;

CREATE FUNCTION pg_temp.ages()
RETURNS TABLE (agent text, newer_than_1_day bigint, days_1_to_7 bigint,
			   days_7_to_30 bigint, older_than_30_days bigint)
LANGUAGE sql AS $$
	SELECT e.agent,
		   count(*) FILTER (WHERE e.created_at > now() - interval '1 day'),
		   count(*) FILTER (WHERE e.created_at <= now() - interval '1 day'
							  AND e.created_at > now() - interval '7 days'),
		   count(*) FILTER (WHERE e.created_at <= now() - interval '7 days'
							  AND e.created_at > now() - interval '30 days'),
		   count(*) FILTER (WHERE e.created_at <= now() - interval '30 days')
	  FROM gate_bridge.eval_results e GROUP BY e.agent ORDER BY e.agent
$$;
SELECT * FROM pg_temp.ages();
SELECT count(*) AS incidents, sum(occurrences) AS occurrences FROM gate_bridge.incidents;

-------------------------------------------------------------------------------
-- Arguments
-------------------------------------------------------------------------------
CALL gate_bridge.purge_eval_results(NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('30 days', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('30 days', cut_windows => NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('0');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('-1 day');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('-1 mon 1 day');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('1000000 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('30 days', 0);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('30 days', -1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('30 days', 100001);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- It commits between batches, so it cannot run in a transaction block, in
-- a query string of several statements or under a function.
BEGIN;
CALL gate_bridge.purge_eval_results('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;
CALL gate_bridge.purge_eval_results('30 days') \; SELECT 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CREATE FUNCTION pg_temp.purge_in_function() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	CALL gate_bridge.purge_eval_results('30 days', deleted => n);
END
$$;
SELECT pg_temp.purge_in_function();
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- nor in a read-only transaction (or on a standby)
SET default_transaction_read_only = on;
CALL gate_bridge.purge_eval_results('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET default_transaction_read_only;
-- (and it is not a function)
SELECT gate_bridge.purge_eval_results('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Nothing was deleted by any of that.
SELECT * FROM pg_temp.ages();

-------------------------------------------------------------------------------
-- Deleting: the rows older than 30 days, and nothing newer.  Batches of 7
-- rows: a batch ends inside an agent, inside its 40 ties, between agents.
-------------------------------------------------------------------------------
CALL gate_bridge.purge_eval_results('30 days', 7);
SELECT * FROM pg_temp.ages();
-- again: nothing left to delete
CALL gate_bridge.purge_eval_results('30 days', 7);
-- the default batch size
CALL gate_bridge.purge_eval_results('5 days');
SELECT * FROM pg_temp.ages();
-- batches of one row
CALL gate_bridge.purge_eval_results('2 days', 1);
SELECT * FROM pg_temp.ages();

-- The incidents opened by the deleted rows stay as they were.
SELECT count(*) AS incidents, sum(occurrences) AS occurrences FROM gate_bridge.incidents;

-- From PL/pgSQL, at the top level (DO): the count comes back in a variable.
DO $$
DECLARE
	n bigint;
BEGIN
	CALL gate_bridge.purge_eval_results('1 hour 30 minutes', 3, deleted => n);
	RAISE NOTICE 'deleted % rows', n;
END
$$;
SELECT * FROM pg_temp.ages();

-------------------------------------------------------------------------------
-- Enabled budgets' windows.  A cutoff inside one is refused (the budget
-- with the longest window is named) unless cut_windows; disabled budgets do
-- not count; older_than equal to the lookback is allowed.
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
SET gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, created_at)
SELECT 'w.' || (g % 4), (g % 10) / 10.0, g % 1000, now() - g * interval '1 hour'
  FROM generate_series(1, 24 * 30) g;
RESET gate_bridge.enabled;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, lookback, enabled) VALUES
	('*',	'latency',	400,	600,	900,	'1 day',	true),
	('w.*',	'quality',	0.9,	0.8,	0.5,	'7 days',	true),
	('w.1',	'quality',	0.9,	0.8,	0.5,	'1 mon',	false),
	('w.2',	'cost',		1,		2,		3,		'2 days',	true);

CREATE TEMP TABLE gates_before AS
SELECT a.agent, gate_bridge.evaluate_agent(a.agent) AS gate
  FROM (VALUES ('w.0'), ('w.1'), ('w.2'), ('w.3')) a(agent);
SELECT agent, gate->'samples' AS samples, gate->'windows'->'quality' AS quality_window,
	   gate->'windows'->'latency' AS latency_window, gate->'passed' AS passed
  FROM gates_before ORDER BY agent;

CALL gate_bridge.purge_eval_results('6 days 23 hours');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
CALL gate_bridge.purge_eval_results('1 day');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) AS rows FROM gate_bridge.eval_results;
-- at the window's edge: allowed, and every gate sees what it saw
CALL gate_bridge.purge_eval_results('7 days', 50);
SELECT count(*) AS rows, min(created_at) > now() - interval '7 days' AS all_within_7_days
  FROM gate_bridge.eval_results;
SELECT b.agent, b.gate = gate_bridge.evaluate_agent(b.agent) AS same_gate
  FROM gates_before b ORDER BY b.agent;
SELECT count(*) AS agents, bool_and(passed) AS all_passed FROM gate_bridge.run_gates();

-- A budget whose window reaches before every row: every cutoff is inside it.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, lookback)
VALUES ('w.3', 'success_rate', 0.5, '1000000 years');
CALL gate_bridge.purge_eval_results('100 years');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
UPDATE gate_bridge.budgets SET enabled = false
 WHERE agent_pattern = 'w.3' AND budget_type = 'success_rate';

-- cut_windows: the owner's choice; the gates then see fewer rows.
CALL gate_bridge.purge_eval_results('3 days', cut_windows => true);
SELECT count(*) AS rows, min(created_at) > now() - interval '3 days' AS all_within_3_days
  FROM gate_bridge.eval_results;
SELECT b.agent, b.gate = gate_bridge.evaluate_agent(b.agent) AS same_gate
  FROM gates_before b ORDER BY b.agent;

-------------------------------------------------------------------------------
-- What it reads: the index entries of the rows it deletes (2,000 of 20,000
-- rows, 50 agents, in 5 batches of at most 500), one probe per agent and at
-- most two entries per batch more, and never the table sequentially.
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
SELECT 'load.' || (g % 50), 0.9,
	   now() - CASE WHEN g % 10 = 0 THEN interval '60 days' ELSE interval '1 day' END
			 - g * interval '1 second'
  FROM generate_series(1, 20000) g;
ANALYZE gate_bridge.eval_results;
CREATE FUNCTION pg_temp.reads(OUT seq_scans bigint, OUT index_entries bigint)
LANGUAGE sql AS $$
	SELECT t.seq_scan, i.idx_tup_read
	  FROM pg_stat_user_tables t, pg_stat_user_indexes i
	 WHERE t.relid = 'gate_bridge.eval_results'::regclass
	   AND i.indexrelid = 'gate_bridge.eval_results_agent_created_at_idx'::regclass
$$;
-- (statistics are flushed when the session goes idle, at once when forced)
SELECT pg_stat_force_next_flush() \gset
SELECT * FROM pg_temp.reads() \gset before_
CALL gate_bridge.purge_eval_results('30 days', 500);
SELECT pg_stat_force_next_flush() \gset
SELECT r.seq_scans - :before_seq_scans AS seq_scans,
	   r.index_entries - :before_index_entries - 2000 BETWEEN 0 AND 50 + 2 * 5
		   AS index_entries_ok
  FROM pg_temp.reads() r;
SELECT count(*) AS rows, min(created_at) > now() - interval '30 days' AS all_within_30_days
  FROM gate_bridge.eval_results;

-------------------------------------------------------------------------------
-- Who may purge: EXECUTE on the procedure is enough (it deletes as the
-- extension's owner); without it, nobody but the owner.
-------------------------------------------------------------------------------
CREATE ROLE regress_retention_operator;
CREATE ROLE regress_retention_writer;
GRANT USAGE ON SCHEMA gate_bridge TO regress_retention_operator, regress_retention_writer;
GRANT EXECUTE ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint)
	TO regress_retention_operator;
GRANT INSERT (agent, quality, created_at) ON gate_bridge.eval_results TO regress_retention_writer;
SET ROLE regress_retention_writer;
INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
VALUES ('load.0', 0.9, now() - interval '40 days');
CALL gate_bridge.purge_eval_results('30 days');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
DELETE FROM gate_bridge.eval_results;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SET ROLE regress_retention_operator;
CALL gate_bridge.purge_eval_results('30 days');
SELECT current_user, current_setting('search_path') = 'pg_catalog, pg_temp' AS path_pinned;
DELETE FROM gate_bridge.eval_results;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP OWNED BY regress_retention_operator, regress_retention_writer;
DROP ROLE regress_retention_operator, regress_retention_writer;

-- Leave the tables empty for the tests that follow.
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
