-- Delivery: the outbox of incident events written with the event, the
-- claims of the workers, the retry policy, dead deliveries opening
-- DELIVERY_{destination}, and the request bodies per kind.
\i test/sql/include/lifecycle.sql
\set ECHO none
TRUNCATE gate_bridge.destinations, gate_bridge.deliveries RESTART IDENTITY CASCADE;
\i test/sql/include/try.sql
CREATE FUNCTION pg_temp.outbox()
RETURNS TABLE (id bigint, destination text, incident_id bigint, event text, status text,
			   attempts integer, last_status integer, last_error text)
LANGUAGE sql AS $$
	SELECT d.id, d.destination, d.incident_id, d.event, d.status, d.attempts,
		   d.last_status, d.last_error
	  FROM gate_bridge.deliveries d ORDER BY d.id
$$;
-- the wait before a delivery's next attempt, in seconds
CREATE FUNCTION pg_temp.wait(id bigint) RETURNS float8
LANGUAGE sql AS $$
	SELECT extract(epoch FROM d.next_attempt_at - now())::float8
	  FROM gate_bridge.deliveries d WHERE d.id = $1
$$;
CREATE FUNCTION pg_temp.claim(worker text, max_rows integer DEFAULT 100)
RETURNS TABLE (id bigint, destination text, kind text, event text, incident_id bigint,
			   attempt integer)
LANGUAGE sql AS $$
	SELECT c.id, c.destination, c.kind, c.event, c.incident_id, c.attempt
	  FROM gate_bridge.claim_deliveries(worker, max_rows) c
$$;
\set ECHO all

-------------------------------------------------------------------------------
-- Destinations: what the constraints refuse
-------------------------------------------------------------------------------
SELECT t.cmd, pg_temp.try(format('INSERT INTO gate_bridge.destinations (name, kind, url, secret, min_severity, agent_pattern, events) VALUES (%s)', t.cmd)) AS result
  FROM (VALUES
	($$'has space', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{created}'$$),
	($$'', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{created}'$$),
	($$'-lead', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{created}'$$),
	($$'email', 'email', 'https://x.test/', NULL, 'sev3', '*', '{created}'$$),
	($$'ftp', 'webhook', 'ftp://x.test/', NULL, 'sev3', '*', '{created}'$$),
	($$'nohost', 'webhook', 'https://', NULL, 'sev3', '*', '{created}'$$),
	($$'pd', 'pagerduty', 'https://events.pagerduty.com/v2/enqueue', NULL, 'sev3', '*', '{created}'$$),
	($$'emptysecret', 'webhook', 'https://x.test/', '', 'sev3', '*', '{created}'$$),
	($$'sev', 'webhook', 'https://x.test/', NULL, 'sev4', '*', '{created}'$$),
	($$'pattern', 'webhook', 'https://x.test/', NULL, 'sev3', 'a*', '{created}'$$),
	($$'noevents', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{}'$$),
	($$'badevent', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{created,exploded}'$$),
	($$'nullevent', 'webhook', 'https://x.test/', NULL, 'sev3', '*', '{created,NULL}'$$),
	($$'ok.name-1', 'webhook', 'http://x.test:8080/hook?a=1', NULL, 'sev3', '*', '{created}'$$)
  ) AS t(cmd);
SELECT pg_temp.try($$INSERT INTO gate_bridge.destinations (name, kind, url) VALUES ('ok.name-1', 'slack', 'https://x.test/')$$);
DELETE FROM gate_bridge.destinations;

-- hook: everything; slack_ops: sev2 and worse of billing.*; pd: also
-- acknowledgements; off: disabled
INSERT INTO gate_bridge.destinations (name, kind, url, secret) VALUES ('hook', 'webhook', 'https://hook.test/in', 's3cret');
INSERT INTO gate_bridge.destinations (name, kind, url, min_severity, agent_pattern)
	VALUES ('slack_ops', 'slack', 'https://hooks.slack.test/T/B/X', 'sev2', 'billing.*');
INSERT INTO gate_bridge.destinations (name, kind, url, secret, events)
	VALUES ('pd', 'pagerduty', 'https://events.pagerduty.test/v2/enqueue', 'ROUTINGKEY',
			'{created,escalated,reopened,acked,snoozed,snooze_expired,silence_ended,resolved,auto_resolved}');
INSERT INTO gate_bridge.destinations (name, kind, url, enabled) VALUES ('off', 'webhook', 'https://off.test/', false);
SELECT name, kind, url, secret IS NOT NULL AS has_secret, min_severity, agent_pattern, events, enabled
  FROM gate_bridge.destinations ORDER BY name;

-------------------------------------------------------------------------------
-- The outbox: matching events only
-------------------------------------------------------------------------------
SELECT pg_temp.violation('billing.a', 'warning') AS id;	-- sev3: not slack_ops
SELECT pg_temp.violation('billing.b', 'error') AS id;	-- sev2: all three
SELECT pg_temp.violation('other.c', 'critical') AS id;	-- sev1, not billing.*
SELECT gate_bridge.ack(1, 'regress_alice');				-- acked: pd only
-- a rolled-back event has no delivery
BEGIN;
SELECT pg_temp.violation('billing.rb', 'critical') IS NOT NULL AS created;
SELECT count(*) AS in_transaction FROM gate_bridge.deliveries WHERE incident_id = 4;
ROLLBACK;
SELECT * FROM pg_temp.outbox();
SELECT id, destination, kind, incident_id, event, status, attempts FROM gate_bridge.delivery_status ORDER BY id;

-------------------------------------------------------------------------------
-- Held under a silence: released when it ends, skipped on a resolution
-------------------------------------------------------------------------------
SELECT gate_bridge.silence('quiet.*', '1 hour', 'deploy') AS silence_id;
SELECT pg_temp.violation('quiet.a') AS id;
SELECT gate_bridge.silence('hush.*', '1 hour', 'deploy') AS silence_id;
SELECT pg_temp.violation('hush.a') AS id;
SELECT * FROM pg_temp.outbox() WHERE incident_id IN (5, 6);
SELECT gate_bridge.unsilence(1);
SELECT gate_bridge.resolve(6, 'regress_alice');
SELECT * FROM pg_temp.outbox() WHERE incident_id IN (5, 6);

-- Held under a snooze: an escalation waits for the end of the snooze
SELECT pg_temp.violation('snz.a') AS id;
SELECT gate_bridge.snooze(7, '1 hour', 'regress_alice') IS NOT NULL AS snoozed;
SELECT pg_temp.violation('snz.a', 'critical') IS NULL AS folded;
SELECT * FROM pg_temp.outbox() WHERE incident_id = 7;
UPDATE gate_bridge.incident_rows SET snoozed_until = clock_timestamp() WHERE id = 7;
SELECT gate_bridge.tick() > 0 AS ticked;
SELECT * FROM pg_temp.outbox() WHERE incident_id = 7;

-------------------------------------------------------------------------------
-- Claims: in id order, one at a time per incident and destination
-------------------------------------------------------------------------------
SELECT * FROM pg_temp.claim('w1');
-- the others wait for these
SELECT * FROM pg_temp.claim('w2');
SELECT gate_bridge.complete_delivery(c.id, 200) FROM gate_bridge.deliveries c WHERE c.status = 'sending' ORDER BY c.id;
SELECT * FROM pg_temp.claim('w2');
SELECT gate_bridge.complete_delivery(c.id, 204) FROM gate_bridge.deliveries c WHERE c.status = 'sending' ORDER BY c.id;
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(c.id, 202) FROM gate_bridge.deliveries c WHERE c.status = 'sending' ORDER BY c.id;
SELECT * FROM pg_temp.claim('w1');
SELECT status, count(*), count(delivered_at) AS with_delivered_at FROM gate_bridge.deliveries GROUP BY status ORDER BY status;
-- max_rows
SELECT gate_bridge.redeliver(d.id) FROM gate_bridge.deliveries d WHERE d.incident_id = 3;
SELECT * FROM pg_temp.claim('w1', 1);
SELECT gate_bridge.release_deliveries('w1') AS released;
SELECT * FROM pg_temp.outbox() WHERE incident_id = 3;
SELECT gate_bridge.release_deliveries('w1') AS released;
-- an expired lease is claimable again
SELECT * FROM pg_temp.claim('w1', 1);
SELECT * FROM pg_temp.claim('w2', 1);	-- the other delivery of incident 3 is to another destination
UPDATE gate_bridge.deliveries SET lease_until = now() - interval '1 second' WHERE claimed_by = 'w1';
SELECT * FROM pg_temp.claim('w3');
SELECT id, status, attempts, claimed_by FROM gate_bridge.deliveries WHERE incident_id = 3 ORDER BY id;
SELECT gate_bridge.complete_delivery(d.id, 200) FROM gate_bridge.deliveries d WHERE d.status = 'sending' ORDER BY d.id;
-- bad arguments
SELECT pg_temp.try(t.cmd) FROM (VALUES
	($$SELECT gate_bridge.claim_deliveries('w', 0)$$),
	($$SELECT gate_bridge.claim_deliveries('w', 1001)$$),
	($$SELECT gate_bridge.claim_deliveries('w', 10, '0 s')$$),
	($$SELECT gate_bridge.claim_deliveries('w', 10, '61 min')$$),
	($$SELECT gate_bridge.claim_deliveries('', 10)$$),
	($$SELECT gate_bridge.complete_delivery(1, 200)$$),
	($$SELECT gate_bridge.complete_delivery(999999, 200)$$),
	($$SELECT gate_bridge.redeliver(999999)$$)) AS t(cmd);

-------------------------------------------------------------------------------
-- Retries: full jitter, Retry-After, 4xx dead at once, max attempts
-------------------------------------------------------------------------------
UPDATE gate_bridge.destinations SET enabled = (name IN ('hook', 'pd'));
UPDATE gate_bridge.destinations SET agent_pattern = 'nobody' WHERE name = 'pd';
SET gate_bridge.delivery_max_attempts = 5;
SELECT pg_temp.violation('retry.a') AS id;
SELECT max(id) AS rid FROM gate_bridge.deliveries \gset
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 503, 'service unavailable');
SELECT w >= 0 AND w <= 10 AS within_10s FROM pg_temp.wait(:rid) w;
UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE id = :rid;
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, NULL, 'timeout');
SELECT w >= 0 AND w <= 20 AS within_20s FROM pg_temp.wait(:rid) w;
UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE id = :rid;
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 429, 'slow down', '5 min');
SELECT round(w) AS retry_after FROM pg_temp.wait(:rid) w;
UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE id = :rid;
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 0, repeat('x', 2000));
SELECT w >= 0 AND w <= 80 AS within_80s FROM pg_temp.wait(:rid) w;
SELECT length(last_error) FROM gate_bridge.deliveries WHERE id = :rid;
-- the waits are drawn: a hundred retries after a fourth attempt spread
-- over 0 to 80 s
CREATE TEMP TABLE waits AS SELECT 0::float8 AS w LIMIT 0;
DO $$
BEGIN
	FOR n IN 1 .. 100 LOOP
		UPDATE gate_bridge.deliveries SET status = 'sending', attempts = 4 WHERE id = (SELECT max(id) FROM gate_bridge.deliveries);
		PERFORM gate_bridge.complete_delivery((SELECT max(id) FROM gate_bridge.deliveries), 503);
		INSERT INTO waits SELECT extract(epoch FROM d.next_attempt_at - now()) FROM gate_bridge.deliveries d WHERE d.id = (SELECT max(id) FROM gate_bridge.deliveries);
	END LOOP;
END
$$;
SELECT min(w) >= 0 AS min_ok, max(w) <= 80 AS max_ok, count(DISTINCT round(w / 8)) >= 5 AS spread FROM waits;
UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE id = :rid;
UPDATE gate_bridge.destinations SET agent_pattern = '*' WHERE name = 'pd';
-- the fifth attempt fails: dead, and DELIVERY_hook is opened (delivered to
-- pd, not to hook)
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 502, 'bad gateway');
SELECT * FROM pg_temp.state() WHERE key LIKE 'DELIVERY%';
SELECT kind, agent, subject, violation_type, summary,
	   details #- '{delivery,last_error}' AS details
  FROM gate_bridge.incidents WHERE kind = 'delivery';
SELECT * FROM pg_temp.outbox() WHERE id >= :rid;
-- a 4xx is dead at once, and folds into DELIVERY_hook
UPDATE gate_bridge.destinations SET enabled = (name = 'hook');
SELECT pg_temp.violation('retry.b') AS id;
SELECT max(id) AS rid FROM gate_bridge.deliveries \gset
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 404, 'not found');
SELECT * FROM pg_temp.state() WHERE key LIKE 'DELIVERY%';
SELECT * FROM pg_temp.outbox() WHERE id >= :rid - 1;
-- redeliver: due again, attempts reset
SELECT gate_bridge.redeliver(:rid);
SELECT * FROM pg_temp.outbox() WHERE id = :rid;
SELECT pg_temp.try($$SELECT gate_bridge.redeliver($$ || :rid || ')');
SELECT pg_temp.try($$SELECT gate_bridge.complete_delivery($$ || :rid || ', 200)');
-- 408 is retried; 410 is not
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 408, 'request timeout');
UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE id = :rid;
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 410, 'gone');
-- at delivery_max_attempts = 1 a retryable failure is dead at once
SET gate_bridge.delivery_max_attempts = 1;
SELECT gate_bridge.redeliver(:rid);
SELECT * FROM pg_temp.claim('w1');
SELECT gate_bridge.complete_delivery(:rid, 500, 'boom');
SELECT * FROM pg_temp.state() WHERE key LIKE 'DELIVERY%';
RESET gate_bridge.delivery_max_attempts;
SELECT pg_temp.try($$SET gate_bridge.delivery_max_attempts = 0$$);
SELECT pg_temp.try($$SET gate_bridge.delivery_max_attempts = 101$$);

-------------------------------------------------------------------------------
-- Bodies
-------------------------------------------------------------------------------
\set payload '{"event": {"id": 9, "position": 9, "event": "created", "at": "2026-12-02T10:00:00+00:00", "actor": "gate_bridge", "detail": {}, "silenced": false}, "incident": {"id": 42, "kind": "budget", "key": "BUDGET_billing.a_quality", "agent": "billing.a", "violation_type": "quality", "severity": "sev1", "status": "open", "summary": "Budget violation: billing.a quality <&>", "occurrences": 3, "first_seen_at": "2026-12-02T10:00:00+00:00", "last_seen_at": "2026-12-02T10:05:00+00:00", "playbooks": ["rollback", "page_owner"], "acked_by": null, "resolved_by": null}}'
SELECT gate_bridge.delivery_body('webhook', :'payload') = :'payload'::jsonb AS webhook_as_is;
SELECT jsonb_pretty(gate_bridge.delivery_body('slack', :'payload', 'https://dash.test/'));
SELECT jsonb_pretty(gate_bridge.delivery_body('slack', jsonb_set(:'payload', '{incident,playbooks}', '[]')));
SELECT jsonb_pretty(gate_bridge.delivery_body('pagerduty', :'payload', NULL, 'RK'));
SELECT e.event, b ->> 'event_action' AS action, b #>> '{payload,severity}' AS severity
  FROM (VALUES ('created', 'sev1'), ('escalated', 'sev2'), ('reopened', 'sev3'),
			   ('snooze_expired', 'sev3'), ('silence_ended', 'sev3'), ('acked', 'sev3'),
			   ('snoozed', 'sev3'), ('resolved', 'sev3'), ('auto_resolved', 'sev3')) AS e(event, sev)
 CROSS JOIN LATERAL gate_bridge.delivery_body('pagerduty',
		jsonb_set(jsonb_set(:'payload', '{event,event}', to_jsonb(e.event)),
				  '{incident,severity}', to_jsonb(e.sev)), NULL, 'RK') AS b;
SELECT length(gate_bridge.delivery_body('pagerduty',
		jsonb_set(:'payload', '{incident,summary}', to_jsonb(repeat('s', 5000))), NULL, 'RK')
		#>> '{payload,summary}') AS summary_length;
SELECT pg_temp.try($$SELECT gate_bridge.delivery_body('email', '{}')$$);
-- claim renders the body for the destination's kind
INSERT INTO gate_bridge.destinations (name, kind, url, secret) VALUES ('pd2', 'pagerduty', 'https://events.pagerduty.test/v2/enqueue', 'RK2');
INSERT INTO gate_bridge.destinations (name, kind, url) VALUES ('slack2', 'slack', 'https://hooks.slack.test/T/B/Y');
UPDATE gate_bridge.destinations SET enabled = (name IN ('hook', 'pd2', 'slack2'));
SELECT pg_temp.violation('body.a', 'critical') AS id;
SELECT c.destination, c.kind, c.secret, c.attempt,
	   c.body = c.payload AS body_is_payload,
	   c.body ->> 'routing_key' AS routing_key, c.body ->> 'event_action' AS action,
	   c.body ->> 'dedup_key' AS dedup_key, c.body ->> 'text' AS text,
	   c.payload #>> '{incident,key}' AS key, c.payload #>> '{event,event}' AS event,
	   c.payload -> 'event' ? 'position' AS has_position
  FROM gate_bridge.claim_deliveries('w1', 10, '30 s', 'https://dash.test') c ORDER BY c.id;
SELECT * FROM pg_temp.outbox() WHERE incident_id = (SELECT max(id) FROM gate_bridge.incident_rows);

-- a destination disabled after its rows were written: they wait for it
UPDATE gate_bridge.deliveries SET status = 'delivered', lease_until = NULL WHERE status = 'sending';
SELECT pg_temp.violation('wait.a') AS id;
UPDATE gate_bridge.destinations SET enabled = false WHERE name = 'hook';
SELECT * FROM pg_temp.claim('w1');
UPDATE gate_bridge.destinations SET enabled = true WHERE name = 'hook';
SELECT * FROM pg_temp.claim('w1');

-- delivery_stats: every destination, its counts by status as the table has them
SELECT s.destination,
	   (s.pending, s.held, s.sending, s.delivered, s.dead, s.skipped) = (
		   SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'held'),
				  count(*) FILTER (WHERE status = 'sending'), count(*) FILTER (WHERE status = 'delivered'),
				  count(*) FILTER (WHERE status = 'dead'), count(*) FILTER (WHERE status = 'skipped')
			 FROM gate_bridge.deliveries d WHERE d.destination = s.destination) AS counts_match,
	   s.oldest_pending_at IS NOT DISTINCT FROM (
		   SELECT min(created_at) FROM gate_bridge.deliveries d
			WHERE d.destination = s.destination AND status = 'pending'
			  AND next_attempt_at <= now()) AS oldest_matches
  FROM gate_bridge.delivery_stats s ORDER BY s.destination;
-- some statuses are there, so the check means something
SELECT sum(s.pending) > 0 AS some_pending, sum(s.delivered) > 0 AS some_delivered,
	   sum(s.dead) > 0 AS some_dead
  FROM gate_bridge.delivery_stats s;
SELECT count(*) = (SELECT count(*) FROM gate_bridge.destinations) AS one_row_per_destination
  FROM gate_bridge.delivery_stats;

-------------------------------------------------------------------------------
-- A flapping key's re-opening is not announced: its deliveries are skipped
-- at once (not held), and the incident's later events are not held up by them
-------------------------------------------------------------------------------
SET gate_bridge.flap_threshold = 2;
SELECT pg_temp.violation('flp.a') AS id \gset
SELECT gate_bridge.resolve(:id, 'regress_alice');
SELECT pg_temp.violation('flp.a') AS flapping_id \gset
SELECT i.flapping FROM gate_bridge.incidents i WHERE i.id = :flapping_id;
SELECT pg_temp.violation('flp.a', 'critical') IS NULL AS escalated_in_place;
SELECT d.destination, d.event, d.status
  FROM gate_bridge.deliveries d WHERE d.incident_id = :flapping_id ORDER BY d.id;
SELECT c.destination, c.event FROM gate_bridge.claim_deliveries('regress-flap', 100) c
 WHERE c.incident_id = :flapping_id ORDER BY c.id;
RESET gate_bridge.flap_threshold;
