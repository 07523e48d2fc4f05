-- Silences (maintenance windows): matching incidents are recorded, on the
-- timeline marked silenced and not announced, until the silence ends
-- (silence_ended); resolutions are always announced.
-- Listening here: a notification would print a line (with a PID, which
-- differs from run to run), so none must come while the incidents are
-- silenced; the announced events are checked by their silenced flag.
\i test/sql/include/lifecycle.sql
CREATE FUNCTION pg_temp.silences()
RETURNS TABLE (id bigint, agent_pattern text, kind text, violation_type text,
			   key text, lasts interval, ended boolean, created_by text, comment text)
LANGUAGE sql AS $$
	SELECT s.id, s.agent_pattern, s.kind, s.violation_type, s.key,
		   date_trunc('minute', s.ends_at - s.starts_at + interval '30 seconds'),
		   s.ends_at <= clock_timestamp(),
		   CASE WHEN s.created_by = current_user THEN '(current_user)' ELSE s.created_by END,
		   s.comment
	  FROM gate_bridge.silences s ORDER BY s.id
$$;

LISTEN incident_created;
LISTEN incident_events;

-- A silence of the maintenance agents' budget incidents for an hour.
SELECT gate_bridge.silence('maint.*', '1 hour', 'database upgrade', 'budget');
SELECT gate_bridge.silence(agent_pattern => '*', duration => '2 hours',
						   comment => 'latency work', violation_type => 'latency');
SELECT * FROM pg_temp.silences();

-- Created while silenced: silence_id set, the created event silenced, and
-- no notification.  Other agents are announced as always (not listening
-- for them: their notification would print).
SELECT pg_temp.violation('maint.db') AS id;
SELECT pg_temp.violation('maint.cache', 'warning') AS id;
-- repeats and escalations of a silenced incident are silenced too
SELECT pg_temp.violation('maint.db', 'critical') IS NULL AS folded;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.timeline();
-- acknowledging a silenced incident is not announced either
SELECT gate_bridge.ack(2, 'regress_alice');
SELECT * FROM pg_temp.timeline() WHERE event = 'acked';
UNLISTEN *;

-- the silence does not match: another agent; a planner incident
SELECT pg_temp.violation('other.agent') AS id;
SELECT gate_bridge.on_planner_regression('maint-v1', '{}', '{}', '{}') AS id;
SELECT * FROM pg_temp.state() WHERE id > 2;
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id > 2;

-- A resolution while silenced is announced (not silenced); the incident
-- keeps its silence_id, but nothing is announced when the silence ends.
SELECT gate_bridge.resolve(2, 'regress_alice', 'done during the window');
SELECT * FROM pg_temp.state() WHERE id = 2;
SELECT * FROM pg_temp.timeline() WHERE incident_id = 2;

-- A second, overlapping silence that ends later: unsilencing the first
-- keeps incident 1 silenced, under the second, and announces nothing.
SELECT gate_bridge.silence('maint.db', '3 hours', 'the upgrade overruns');
SELECT gate_bridge.unsilence(1);
SELECT * FROM pg_temp.silences();
SELECT * FROM pg_temp.state() WHERE id <= 2;
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id <= 2;
-- its events are still silenced
SELECT gate_bridge.ack(1, 'regress_bob');
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id = 1;
SELECT gate_bridge.tick();

-- unsilence the second: incident 1 is announced at once (silence_ended,
-- not silenced), and released
SELECT gate_bridge.unsilence(3);
SELECT * FROM pg_temp.state() WHERE id = 1;
SELECT * FROM pg_temp.timeline() WHERE incident_id = 1;
SELECT gate_bridge.tick();
-- its next events are announced
SELECT gate_bridge.resolve(1, 'regress_bob');
SELECT id, incident_id, event, silenced FROM pg_temp.timeline() WHERE incident_id = 1;

-- A silence that runs out (backdated) is ended by tick(), which announces
-- the unresolved incidents it held; a second tick has nothing to do.
SELECT gate_bridge.silence('maint.*', '1 day', 'rollout');
SELECT pg_temp.violation('maint.db') AS id;
SELECT pg_temp.violation('maint.web') AS id;
SELECT gate_bridge.resolve(id, 'regress_alice') FROM gate_bridge.incidents WHERE agent = 'maint.web';
SELECT * FROM pg_temp.state() WHERE silence_id IS NOT NULL;
UPDATE gate_bridge.silences SET starts_at = now() - interval '2 days',
	   ends_at = now() - interval '1 day' WHERE id = 4;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT * FROM pg_temp.state() WHERE id > 4;
SELECT id, incident_id, event, actor, detail - 'summary' AS detail, silenced
  FROM pg_temp.timeline() WHERE incident_id > 4 ORDER BY id;

-- A silence that starts later does not hold an incident now.
INSERT INTO gate_bridge.silences (agent_pattern, starts_at, ends_at, comment)
VALUES ('later.*', now() + interval '1 hour', now() + interval '2 hours', 'tomorrow');
SELECT pg_temp.violation('later.agent') AS id;
SELECT key, silence_id FROM gate_bridge.incidents WHERE agent = 'later.agent';
SELECT event, silenced FROM pg_temp.timeline() t
  JOIN gate_bridge.incidents i ON i.id = t.incident_id WHERE i.agent = 'later.agent';

-------------------------------------------------------------------------------
-- Bad input is refused (22023) and creates nothing.
-------------------------------------------------------------------------------
SELECT gate_bridge.silence('maint*', '1 hour', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('*.maint', '1 hour', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('', '1 hour', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence(NULL, '1 hour', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '0', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '-1 hour', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', NULL, 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '366 days 1 second', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '13 months', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', '');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', '   ');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', repeat('c', 8193));
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', 'x', 'webhook');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', 'x', 'Budget');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', 'x', NULL, 'accuracy');
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.silence('maint.*', '1 hour', 'x', NULL, '');
\echo :LAST_ERROR_SQLSTATE
-- the longest accepted
SELECT gate_bridge.silence('maint.*', '366 days', 'x') IS NOT NULL AS created;
SELECT gate_bridge.unsilence(id) FROM gate_bridge.silences WHERE comment = 'x';
SELECT count(*) AS silences FROM gate_bridge.silences;

-- unsilence: unknown (P0002), already ended (55000), NULL
SELECT gate_bridge.unsilence(99);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.unsilence(1);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.unsilence(4);
\echo :LAST_ERROR_SQLSTATE
SELECT gate_bridge.unsilence(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pg_temp.silences();

-- Who may silence: the roles it is granted to.
CREATE ROLE regress_silence_operator;
GRANT USAGE ON SCHEMA gate_bridge TO regress_silence_operator;
SET ROLE regress_silence_operator;
SELECT gate_bridge.silence('maint.*', '1 hour', 'no grant');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION gate_bridge.silence(text, interval, text, text, text),
	gate_bridge.unsilence(bigint) TO regress_silence_operator;
SET ROLE regress_silence_operator;
SELECT gate_bridge.silence('maint.*', '1 hour', 'granted') AS id \gset
SELECT gate_bridge.unsilence(:id);
RESET ROLE;
SELECT created_by, comment, ends_at <= clock_timestamp() AS ended
  FROM gate_bridge.silences WHERE id = :id;
REVOKE ALL ON FUNCTION gate_bridge.silence(text, interval, text, text, text),
	gate_bridge.unsilence(bigint) FROM regress_silence_operator;
REVOKE USAGE ON SCHEMA gate_bridge FROM regress_silence_operator;
DROP ROLE regress_silence_operator;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
