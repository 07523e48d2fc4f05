-- An eval row's large context is stored once, in incident_contexts, for
-- all the incidents the trigger creates from the row; the view incidents
-- shows their details as if each had its own copy.  Small contexts stay in
-- each incident's details.
\set VERBOSITY terse
SET client_min_messages = warning;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets, gate_bridge.incident_contexts
		 RESTART IDENTITY CASCADE;

-- n bytes that do not compress: hex digits of md5s
CREATE FUNCTION pg_temp.noise(n int) RETURNS text
LANGUAGE sql AS $$
	SELECT substr(string_agg(md5(g::text), '' ORDER BY g), 1, n)
	  FROM generate_series(1, n / 32 + 1) AS g
$$;

-- The sizes of the incident tables (heap, TOAST and indexes), in bytes.
CREATE FUNCTION pg_temp.sizes(OUT rows_size bigint, OUT contexts_size bigint)
LANGUAGE sql AS $$
	SELECT pg_total_relation_size('gate_bridge.incident_rows')
		   + pg_total_relation_size('gate_bridge.incident_events'),
		   pg_total_relation_size('gate_bridge.incident_contexts')
$$;

-- A small context: three incidents, each with its copy; no context row.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
VALUES ('ctx.small', '{a,b,c}', '{"run": "small"}');
SELECT key, context_id, details->'context' AS context
  FROM gate_bridge.incident_rows ORDER BY id;
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;

-- A large context (about 256 kB, as stored too) on one row with eight
-- failed invariants and a budget violation: nine incidents, one context.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('ctx.large', 'quality', 0.5);
SELECT * FROM pg_temp.sizes() \gset before_
INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed, context)
VALUES ('ctx.large', 0.1, '{a,b,c,d,e,f,g,h}',
		jsonb_build_object('run', 'large', 'blob', pg_temp.noise(256 * 1024)));
SELECT * FROM pg_temp.sizes() \gset after_
SELECT pg_column_size(context) AS eval_context_size
  FROM gate_bridge.eval_results WHERE agent = 'ctx.large' \gset
SELECT :eval_context_size > 256 * 1024 AS context_over_256_kb;

SELECT count(*) AS incidents, count(DISTINCT context_id) AS contexts,
	   count(*) FILTER (WHERE context_id IS NULL) AS inline,
	   bool_and(NOT details ? 'context') AS details_without_context,
	   max(pg_column_size(details)) < 1024 AS each_under_1_kb
  FROM gate_bridge.incident_rows WHERE agent = 'ctx.large';
SELECT count(*) AS context_rows,
	   bool_and(pg_column_size(c.context) = :eval_context_size) AS stored_as_the_eval_row,
	   bool_and(c.context = e.context) AS same_context
  FROM gate_bridge.incident_contexts c, gate_bridge.eval_results e
 WHERE e.agent = 'ctx.large';

-- What it costs: the nine incidents (rows, TOAST, indexes, their events)
-- take less than a tenth of the context; the context is stored once (its
-- table grows by the context, and less than twice it).
SELECT :after_rows_size - :before_rows_size < :eval_context_size / 10
		   AS nine_incidents_under_a_tenth_of_the_context,
	   :after_contexts_size - :before_contexts_size >= :eval_context_size
		   AS contexts_grew_by_the_context,
	   :after_contexts_size - :before_contexts_size < 2 * :eval_context_size
		   AS contexts_grew_by_less_than_twice_it;

-- The view shows the details as before: the same keys, in the same
-- order, as a small context's incident, the eval row's context in them,
-- and nothing else changed.
SELECT s.key, (SELECT array_agg(k ORDER BY o) FROM jsonb_each(s.details) WITH ORDINALITY AS x(k, v, o)) AS keys
  FROM gate_bridge.incidents s
 WHERE s.key IN ('INVARIANT_ctx.small_a', 'INVARIANT_ctx.large_a', 'BUDGET_ctx.large_quality')
 ORDER BY s.key;
SELECT count(*) AS incidents,
	   bool_and(i.details->'context' = e.context) AS context_is_the_eval_rows,
	   bool_and(i.details - 'context' = r.details) AS the_rest_as_stored,
	   bool_and(i.details = r.details || jsonb_build_object('context', e.context))
		   AS equal_to_inline_details
  FROM gate_bridge.incidents i
  JOIN gate_bridge.incident_rows r USING (id)
  JOIN gate_bridge.eval_results e ON e.id = (i.details->'eval_result'->>'id')::bigint
 WHERE i.agent = 'ctx.large';
SELECT details->'violation' AS violation, details->'context'->>'run' AS run,
	   length(details->'context'->>'blob') AS blob_length
  FROM gate_bridge.open_incidents WHERE key = 'INVARIANT_ctx.large_h';

-- The notification's data (the created event's detail) has no details.
SELECT count(*) AS created_events,
	   bool_and(NOT detail ? 'details' AND NOT detail ? 'context') AS without_details,
	   max(pg_column_size(detail)) < 512 AS small
  FROM gate_bridge.incident_events ev
  JOIN gate_bridge.incident_rows r ON r.id = ev.incident_id
 WHERE r.agent = 'ctx.large' AND ev.event = 'created';

-- Repeats fold as ever; a second large row of the same agent in another
-- transaction opens nothing new and stores no context.
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
VALUES ('ctx.large', '{a,b}', jsonb_build_object('blob', pg_temp.noise(8192)));
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;
SELECT key, occurrences FROM gate_bridge.incidents
 WHERE key IN ('INVARIANT_ctx.large_a', 'INVARIANT_ctx.large_b') ORDER BY key;

-- Several large rows in one transaction: one context per row, each
-- incident with its own row's; a small row beside them stays inline.
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT 'ctx.multi' || r, '{x,y,z}', jsonb_build_object('row', r, 'blob', pg_temp.noise(4096))
  FROM generate_series(1, 3) AS r;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
VALUES ('ctx.multi4', '{x}', '{"row": 4}');
COMMIT;
SELECT i.agent, count(*) AS incidents, count(DISTINCT r.context_id) AS contexts,
	   count(*) FILTER (WHERE r.context_id IS NULL) AS inline,
	   min(i.details->>'context') IS NOT NULL AS every_one_has_its_context,
	   bool_and((i.details->'context'->>'row')::int = substr(i.agent, 10)::int) AS its_own_rows
  FROM gate_bridge.incidents i JOIN gate_bridge.incident_rows r USING (id)
 WHERE i.agent LIKE 'ctx.multi%'
 GROUP BY i.agent ORDER BY i.agent;
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;

-- The threshold: up to 2048 bytes as stored stays inline, more is apart.
CREATE TEMP TABLE sized AS
	SELECT n, jsonb_build_object('b', pg_temp.noise(n)) AS c
	  FROM generate_series(1950, 2150) AS n;
SELECT max(n) FILTER (WHERE pg_column_size(c) <= 2048) AS n_inline,
	   min(n) FILTER (WHERE pg_column_size(c) > 2048) AS n_apart
  FROM sized \gset
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT 'ctx.edge' || s.n, '{e}', s.c FROM sized s WHERE s.n IN (:n_inline, :n_apart);
SELECT pg_column_size(e.context) AS stored, r.context_id IS NOT NULL AS apart,
	   i.details->'context' = e.context AS shown
  FROM gate_bridge.eval_results e
  JOIN gate_bridge.incident_rows r ON r.agent = e.agent
  JOIN gate_bridge.incidents i ON i.id = r.id
 WHERE e.agent LIKE 'ctx.edge%' ORDER BY 1;

-- A violation reported through a SQL function keeps its context inline,
-- whatever its size.
SELECT gate_bridge.on_invariant_failure('{"agent": "ctx.api"}', '{"invariant": "big"}',
		jsonb_build_object('blob', pg_temp.noise(8192))) > 0 AS created;
SELECT context_id IS NULL AS inline, length(details->'context'->>'blob') AS blob_length
  FROM gate_bridge.incident_rows WHERE agent = 'ctx.api';

-- decide_pending() inside a savepoint that rolls back takes the context
-- with its incidents.
BEGIN;
SAVEPOINT s;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
VALUES ('ctx.rollback', '{r1,r2}', jsonb_build_object('blob', pg_temp.noise(4096)));
SELECT gate_bridge.decide_pending() AS decided;
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;

-- Deleting incidents: a context stays while an incident uses it, and goes
-- with the last one.
DELETE FROM gate_bridge.incident_rows WHERE key = 'INVARIANT_ctx.large_a';
SELECT count(*) AS context_rows,
	   (SELECT count(*) FROM gate_bridge.incident_rows WHERE agent = 'ctx.large') AS large_incidents
  FROM gate_bridge.incident_contexts;
DELETE FROM gate_bridge.incident_rows WHERE agent = 'ctx.large';
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;
DELETE FROM gate_bridge.incident_rows WHERE agent IN ('ctx.multi1', 'ctx.multi4');
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;
-- a context in use cannot be deleted by hand
DELETE FROM gate_bridge.incident_contexts;
\echo :LAST_ERROR_SQLSTATE

-- TRUNCATE of the incidents takes every context with it.
TRUNCATE gate_bridge.incident_rows, gate_bridge.deliveries CASCADE;
SELECT count(*) AS context_rows FROM gate_bridge.incident_contexts;

-- One row at the limit, 64 failed invariants with a 1 MB context: one
-- context row; the incidents' rows take a few kB each; the backend holds
-- no copy of the context once the 64 incidents are created.
SELECT sum(total_bytes) AS held_before FROM pg_backend_memory_contexts \gset
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT 'ctx.max', array_agg('inv' || g ORDER BY g),
	   jsonb_build_object('blob', pg_temp.noise(1024 * 1024))
  FROM generate_series(1, 64) AS g;
SELECT gate_bridge.decide_pending() AS decided;
SELECT sum(total_bytes) - :held_before < 512 * 1024 AS holds_under_512_kb_more
  FROM pg_backend_memory_contexts;
COMMIT;
SELECT count(*) AS incidents, count(DISTINCT context_id) AS contexts,
	   sum(pg_column_size(details)) < 64 * 1024 AS details_under_64_kb
  FROM gate_bridge.incident_rows WHERE agent = 'ctx.max';
SELECT count(*) AS context_rows,
	   pg_total_relation_size('gate_bridge.incident_contexts') < 2 * 1024 * 1024 AS under_2_mb
  FROM gate_bridge.incident_contexts;

TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets RESTART IDENTITY CASCADE;
