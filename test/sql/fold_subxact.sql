-- Pending violations under subtransactions.  The trigger's violations are
-- decided at commit; until then they belong to the (sub)transaction that
-- inserted their rows: a savepoint rolled back (or a PL/pgSQL exception
-- block) takes its violations with it, a released one hands them to its
-- parent; ack() and resolve() in between change nothing of that; the table
-- of pending keys (10,000 at the top level) overflowing inside a
-- subtransaction loses nothing.  After every case the audit holds for every
-- key: occurrences (all its incidents) + rate_limited = the violating rows
-- that were committed.
\set VERBOSITY terse
SET client_min_messages = warning;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets RESTART IDENTITY CASCADE;
-- the stream's positions are put back at the end: the tests after this one
-- print payloads, which carry positions
SELECT last_value, is_called FROM gate_bridge.incident_events_position_seq \gset sx_
-- every row below violates its agent's quality budget exactly once
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('sx.*', 'quality', 0.5);

-- n violations of each of the agents, in one statement
CREATE PROCEDURE public.sx_violate(agents text[], n int) LANGUAGE sql AS $$
	INSERT INTO gate_bridge.eval_results (agent, quality)
	SELECT a, 0.1 FROM unnest(agents) a, generate_series(1, n)
$$;
-- n violations of each of the 10,000 other keys sx.o.1 .. sx.o.10000
CREATE PROCEDURE public.sx_others(n int) LANGUAGE sql AS $$
	INSERT INTO gate_bridge.eval_results (agent, quality)
	SELECT 'sx.o.' || g, 0.1 FROM generate_series(1, 10000) g, generate_series(1, n)
$$;
-- in a PL/pgSQL block: ack() or resolve() the agent's incident, 40 more
-- violations of it and of sx.rl, then fail; the block is rolled back
CREATE PROCEDURE public.sx_move_then_fail(move text, agent text) LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		EXECUTE format('SELECT gate_bridge.%I(id, %L) FROM gate_bridge.incidents'
					   ' WHERE agent = %L AND status <> %L', move, 'regress', agent, 'resolved');
		CALL public.sx_violate(ARRAY[agent, 'sx.rl'], 40);
		RAISE EXCEPTION 'after the %', move;
	EXCEPTION WHEN raise_exception THEN
		NULL;
	END;
END
$$;

CREATE VIEW public.sx_audit AS
SELECT agent,
	   COALESCE(r.n, 0) AS rows,
	   COALESCE(i.occurrences, 0) AS occurrences,
	   COALESCE(k.rate_limited, 0) AS rate_limited
  FROM (SELECT agent, count(*) AS n FROM gate_bridge.eval_results GROUP BY agent) r
  FULL JOIN (SELECT agent, sum(occurrences) AS occurrences
			   FROM gate_bridge.incidents GROUP BY agent) i USING (agent)
  FULL JOIN (SELECT agent, rate_limited FROM gate_bridge.incident_keys) k USING (agent);
-- one line per case: the case's incidents, the 10,000 others' occurrences,
-- and the audit: keys, committed violations, the keys that are off
CREATE FUNCTION public.sx_check(agents text[])
RETURNS TABLE (incidents text, others bigint, keys bigint, violations numeric,
			   wrong bigint, first_wrong text)
LANGUAGE sql AS $$
	SELECT (SELECT string_agg(format('%s %s %s', agent, status, occurrences), ', '
							  ORDER BY agent, id)
			  FROM gate_bridge.incidents WHERE agent = ANY (agents)),
		   (SELECT sum(occurrences) FROM gate_bridge.incidents WHERE agent LIKE 'sx.o.%'),
		   count(*), sum(rows),
		   count(*) FILTER (WHERE occurrences + rate_limited <> rows),
		   (SELECT string_agg(format('%s: %s rows, %s + %s', agent, rows, occurrences,
									 rate_limited), '; ' ORDER BY agent)
			  FROM (SELECT * FROM public.sx_audit WHERE occurrences + rate_limited <> rows
					 ORDER BY agent LIMIT 3) w)
	  FROM public.sx_audit
$$;

-- sx.rl is rate limited throughout: three incidents within the window
DO $$
BEGIN
	FOR i IN 1..3 LOOP
		CALL public.sx_violate('{sx.rl}', 1);
		COMMIT;		-- decided at commit
		PERFORM gate_bridge.resolve(id, 'regress') FROM gate_bridge.incidents
		  WHERE agent = 'sx.rl' AND status <> 'resolved';
	END LOOP;
END
$$;
-- the 10,000 others, each with an open incident: their violations below
-- fill the table of pending counts
CALL public.sx_others(1);
SELECT * FROM public.sx_check('{sx.rl}');

-- 1. The overflow inside a savepoint that is rolled back: 1,000 violations
-- of sx.k1 and of sx.rl, then 10,000 of other keys in the savepoint.
BEGIN;
CALL public.sx_violate('{sx.k1}', 1000);
CALL public.sx_violate('{sx.rl}', 1000);
SAVEPOINT s;
CALL public.sx_others(1);
ROLLBACK TO SAVEPOINT s;
COMMIT;
-- sx.k1: 1000; sx.rl: 1000 more rate limited; the others untouched (1 each)
SELECT rate_limited FROM gate_bridge.incident_keys WHERE agent = 'sx.rl';
SELECT * FROM public.sx_check('{sx.k1}');

-- 2. ROLLBACK TO SAVEPOINT, more violations in the savepoint, RELEASE; then
-- an overflow inside a savepoint that is released.
BEGIN;
CALL public.sx_violate('{sx.k2,sx.rl}', 100);
SAVEPOINT s;
CALL public.sx_violate('{sx.k2,sx.rl}', 50);
CALL public.sx_others(1);
ROLLBACK TO SAVEPOINT s;
CALL public.sx_violate('{sx.k2,sx.rl}', 7);
RELEASE SAVEPOINT s;
CALL public.sx_violate('{sx.k2,sx.rl}', 3);
SAVEPOINT t;
CALL public.sx_others(1);
CALL public.sx_violate('{sx.k2,sx.rl}', 20);
RELEASE SAVEPOINT t;
COMMIT;
-- sx.k2: 100 + 7 + 3 + 20 = 130; the others: 2 each
SELECT * FROM public.sx_check('{sx.k2}');

-- 3. Savepoints three deep, a rollback at each depth; overflows at each
-- depth, ack() at depth 3 and resolve() at depth 1, both rolled back.
BEGIN;
CALL public.sx_violate('{sx.k3,sx.rl}', 1000);
SAVEPOINT a;
CALL public.sx_violate('{sx.k3,sx.rl}', 200);
SAVEPOINT b;
CALL public.sx_violate('{sx.k3,sx.rl}', 30);
SAVEPOINT c;
CALL public.sx_violate('{sx.k3,sx.rl}', 4);
CALL public.sx_others(1);
ROLLBACK TO SAVEPOINT c;
CALL public.sx_violate('{sx.k3,sx.rl}', 5);
RELEASE SAVEPOINT c;
SAVEPOINT c;
CALL public.sx_others(1);
SELECT gate_bridge.ack(id, 'regress') FROM gate_bridge.incidents WHERE agent = 'sx.k3';
ROLLBACK TO SAVEPOINT c;
RELEASE SAVEPOINT b;
SAVEPOINT b;
CALL public.sx_violate('{sx.k3,sx.rl}', 60);
CALL public.sx_others(1);
ROLLBACK TO SAVEPOINT b;
RELEASE SAVEPOINT a;
SAVEPOINT a;
CALL public.sx_violate('{sx.k3,sx.rl}', 8);
CALL public.sx_others(1);
SELECT gate_bridge.resolve(id, 'regress') FROM gate_bridge.incidents WHERE agent = 'sx.k3';
ROLLBACK TO SAVEPOINT a;
CALL public.sx_violate('{sx.k3,sx.rl}', 9);
COMMIT;
-- sx.k3: 1000 + 200 + 30 + 5 + 9 = 1244, still open; the others: still 2
SELECT * FROM public.sx_check('{sx.k3}');

-- 4. ack() in a PL/pgSQL block that fails after the ack, then resolve() in
-- another: each block is rolled back, and the counts that ack and resolve
-- wrote come back; the violations after the resolve open a new incident
-- inside the block, which goes with it; after each block the repeats fold
-- into the first incident again.
BEGIN;
CALL public.sx_violate('{sx.k4,sx.rl}', 1000);
CALL public.sx_move_then_fail('ack', 'sx.k4');
CALL public.sx_violate('{sx.k4,sx.rl}', 5);
CALL public.sx_move_then_fail('resolve', 'sx.k4');
CALL public.sx_violate('{sx.k4,sx.rl}', 7);
COMMIT;
-- sx.k4: 1012, open, one incident
SELECT * FROM public.sx_check('{sx.k4}');

-- 5. resolve() in a savepoint that is released: the counts up to then go to
-- the old incident, the repeats after it to the new one, in the savepoint
-- and after it.
BEGIN;
CALL public.sx_violate('{sx.k5}', 10);
SAVEPOINT s;
SELECT gate_bridge.resolve(id, 'regress') FROM gate_bridge.incidents WHERE agent = 'sx.k5';
CALL public.sx_violate('{sx.k5}', 3);
RELEASE SAVEPOINT s;
CALL public.sx_violate('{sx.k5}', 4);
COMMIT;
-- sx.k5: 10 resolved, then 7 open
SELECT * FROM public.sx_check('{sx.k5}');

-- 6. The table full of the top level's pending counts (10,000 keys
-- repeated), then new keys in savepoints, which hand the top level's counts
-- over to make room; an ack there, some rolled back, some released.
BEGIN;
CALL public.sx_others(2);
SAVEPOINT s;
CALL public.sx_violate('{sx.k6,sx.rl}', 50);
SELECT gate_bridge.ack(id, 'regress') FROM gate_bridge.incidents WHERE agent = 'sx.k6';
ROLLBACK TO SAVEPOINT s;
CALL public.sx_violate('{sx.k6,sx.rl}', 30);
SAVEPOINT t;
CALL public.sx_violate('{sx.k6b,sx.rl}', 20);
RELEASE SAVEPOINT t;
RELEASE SAVEPOINT s;
CALL public.sx_violate('{sx.k6,sx.k6b,sx.rl}', 2);
COMMIT;
-- sx.k6: 32, open (the ack was rolled back); sx.k6b: 22; the others: 4 each
SELECT * FROM public.sx_check('{sx.k6,sx.k6b}');

-- 7. Three levels each with 10,000 keys pending, handed over in turn until
-- the records that hold them are full: the third savepoint folds few new
-- keys and decides the others one by one.  Then rollbacks.
BEGIN;
CALL public.sx_others(2);
SAVEPOINT a;
CALL public.sx_others(2);
SAVEPOINT b;
CALL public.sx_others(2);
SAVEPOINT c;
CALL public.sx_others(2);
CALL public.sx_violate('{sx.k7,sx.rl}', 50);
ROLLBACK TO SAVEPOINT c;
CALL public.sx_violate('{sx.k7,sx.rl}', 5);
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
CALL public.sx_violate('{sx.k7,sx.rl}', 3);
COMMIT;
-- sx.k7: 3; the others: 2 more each (the top level's), 6
SELECT * FROM public.sx_check('{sx.k7}');

-- 8. A subtransaction per statement (a loader that catches bad rows): three
-- rows per block and every fifth block failing after its rows, over 13,000
-- keys (the 10,000 others and 3,000 new ones), so that the table overflows
-- inside a block (one that fails); sx.k8 and sx.rl repeat in 13 blocks that
-- fail and 13 that do not.
BEGIN;
CALL public.sx_violate('{sx.k8,sx.rl}', 100);
DO $$
BEGIN
	FOR i IN 1..13000 LOOP
		BEGIN
			CALL public.sx_violate(ARRAY[CASE WHEN i <= 10000 THEN 'sx.o.' ELSE 'sx.p.' END || i], 3);
			IF i % 1000 IN (1, 3) THEN
				CALL public.sx_violate('{sx.k8,sx.rl}', 10);
			END IF;
			IF i % 5 = 3 THEN
				RAISE EXCEPTION 'bad row';
			END IF;
		EXCEPTION WHEN raise_exception THEN
			NULL;
		END;
	END LOOP;
END
$$;
CALL public.sx_violate('{sx.k8,sx.rl}', 100);
COMMIT;
-- sx.k8: 100 + 130 + 100 = 330; 8,000 others 3 more (9), 2,000 not (6);
-- 2,400 new keys with 3 each
SELECT * FROM public.sx_check('{sx.k8}');
SELECT min(occurrences), max(occurrences) FROM gate_bridge.incidents WHERE agent LIKE 'sx.o.%';
SELECT count(*) AS keys, sum(occurrences) AS occurrences, min(occurrences), max(occurrences)
  FROM gate_bridge.incidents WHERE agent LIKE 'sx.p.%';

SELECT rate_limited FROM gate_bridge.incident_keys WHERE agent = 'sx.rl';

DROP FUNCTION public.sx_check;
DROP VIEW public.sx_audit;
DROP PROCEDURE public.sx_move_then_fail, public.sx_others, public.sx_violate;
TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys, gate_bridge.budgets RESTART IDENTITY CASCADE;
SELECT pg_catalog.setval('gate_bridge.incident_events_position_seq',
						 :sx_last_value, :'sx_is_called') IS NOT NULL AS positions_put_back;
