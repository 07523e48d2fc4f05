-- Playbooks that act: the registry, the rules that name it, run_playbook()
-- with a function and a destination, and auto-run from tick().
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys,
		 gate_bridge.silences RESTART IDENTITY CASCADE;
DELETE FROM gate_bridge.destinations;
CREATE TEMP TABLE saved_registry AS SELECT * FROM gate_bridge.playbook_registry;

-- The timeline of the playbooks' runs.
CREATE FUNCTION pg_temp.runs(incident bigint)
RETURNS TABLE (event text, actor text, playbook text, auto text, outcome text)
LANGUAGE sql AS $$
	SELECT e.event, e.actor, e.detail->>'playbook', e.detail->>'auto',
		   COALESCE(e.detail->>'result', e.detail->>'sqlstate' || ' ' || (e.detail->>'error'),
					e.detail->>'http_status')
	  FROM gate_bridge.incident_events e
	 WHERE e.incident_id = incident AND e.event LIKE 'playbook%'
	 ORDER BY e.id
$$;

-------------------------------------------------------------------------------
-- The registry: the six built-in playbooks, with runbooks and no action.
-------------------------------------------------------------------------------
SELECT name, title, risk, action, auto_run, builtin, runbook_url
  FROM gate_bridge.playbooks ORDER BY name;
-- rules may name only registered playbooks
INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks)
VALUES ('quality', 'rem.*', '{rerun_eval,page_owner}');
INSERT INTO gate_bridge.playbooks (name, title, description)
VALUES ('page_owner', 'Page the owner', 'Call the agent''s owning team.');
INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks)
VALUES ('quality', 'rem.*', '{rerun_eval,page_owner}');
UPDATE gate_bridge.playbook_rules SET playbooks = '{nope}' WHERE agent_pattern = 'rem.*';
-- a playbook a rule names stays; a built-in one cannot be deleted
DELETE FROM gate_bridge.playbooks WHERE name = 'page_owner';
UPDATE gate_bridge.playbooks SET name = 'page_team' WHERE name = 'page_owner';
DELETE FROM gate_bridge.playbooks WHERE name = 'clear_cache';
-- the columns' rules
INSERT INTO gate_bridge.playbooks (name, title) VALUES ('Bad name!', 'x');
INSERT INTO gate_bridge.playbooks (name, title) VALUES ('empty_title', '');
INSERT INTO gate_bridge.playbooks (name, title, risk) VALUES ('risky', 'x', 'medium');
INSERT INTO gate_bridge.playbooks (name, title, runbook_url) VALUES ('link', 'x', 'javascript:alert(1)');
INSERT INTO gate_bridge.playbooks (name, title, auto_run) VALUES ('auto_no_action', 'x', true);

-------------------------------------------------------------------------------
-- Actions: a function, run as the role the owner names; a destination.
-------------------------------------------------------------------------------
CREATE ROLE regress_remediator;
CREATE FUNCTION public.regress_rerun(incident jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT jsonb_build_object('rerun', incident->>'agent', 'key', incident->>'key', 'as', current_user)
$$;
-- reads what its role may not
CREATE FUNCTION public.regress_peek(incident jsonb) RETURNS bigint
LANGUAGE sql AS $$ SELECT count(*) FROM gate_bridge.incident_rows $$;
CREATE FUNCTION public.regress_fail(incident jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.regress_side_effects VALUES (incident->>'id');
	RAISE EXCEPTION 'cannot rerun %', incident->>'agent' USING ERRCODE = 'P0001';
END $$;
CREATE TABLE public.regress_side_effects (id text);
GRANT INSERT ON public.regress_side_effects TO regress_remediator;
REVOKE ALL ON FUNCTION public.regress_rerun(jsonb), public.regress_peek(jsonb),
	public.regress_fail(jsonb) FROM PUBLIC;

\set VERBOSITY default
-- a function needs its schema, a role, and the role's EXECUTE on it
UPDATE gate_bridge.playbooks SET action = 'regress_rerun' WHERE name = 'rerun_eval';
UPDATE gate_bridge.playbooks SET action = 'public.regress_rerun' WHERE name = 'rerun_eval';
UPDATE gate_bridge.playbooks SET action = 'public.regress_rerun', action_role = 'regress_remediator'
 WHERE name = 'rerun_eval';
\set VERBOSITY terse
GRANT EXECUTE ON FUNCTION public.regress_rerun(jsonb), public.regress_peek(jsonb),
	public.regress_fail(jsonb) TO regress_remediator;
UPDATE gate_bridge.playbooks SET action = 'public.regress_rerun', action_role = 'regress_remediator'
 WHERE name = 'rerun_eval';
SELECT name, action, action_role, builtin FROM gate_bridge.playbooks WHERE name = 'rerun_eval';
INSERT INTO gate_bridge.playbooks (name, title, action, action_role) VALUES
	('peek', 'Peek', 'public.regress_peek', 'regress_remediator'),
	('fail', 'Fail', 'public.regress_fail', 'regress_remediator');
-- a destination: a webhook or Slack, without a role
INSERT INTO gate_bridge.destinations (name, kind, url, secret, events)
VALUES ('rem.hook', 'webhook', 'http://127.0.0.1:9/remediate', NULL, '{resolved}'),
	   ('rem.pd', 'pagerduty', 'https://events.pagerduty.com/v2/enqueue', 'routing-key', '{resolved}');
INSERT INTO gate_bridge.playbooks (name, title, action) VALUES ('call_hook', 'Call the hook', 'rem.hook');
INSERT INTO gate_bridge.playbooks (name, title, action) VALUES ('page_pd', 'Page', 'rem.pd');
INSERT INTO gate_bridge.playbooks (name, title, action, action_role)
VALUES ('hook_role', 'x', 'rem.hook', 'regress_remediator');
INSERT INTO gate_bridge.playbooks (name, title, action) VALUES ('nothing', 'x', 'public.no_such_function');

-------------------------------------------------------------------------------
-- run_playbook: the timeline of each outcome.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('rem.*', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('rem.a', 0.1), ('rem.b', 0.1);
SELECT id, key, playbooks FROM gate_bridge.incidents ORDER BY id;

SELECT gate_bridge.run_playbook(1, 'rerun_eval', 'alice');
SELECT gate_bridge.run_playbook(1, 'peek', 'alice');
SELECT gate_bridge.run_playbook(1, 'fail', 'alice');
SELECT * FROM pg_temp.runs(1);
-- the failed action's work was undone, nothing else: the incident and the
-- eval rows are there
SELECT count(*) AS side_effects FROM public.regress_side_effects;
SELECT (SELECT count(*) FROM gate_bridge.incidents) AS incidents,
	   (SELECT count(*) FROM gate_bridge.eval_results) AS eval_rows;

-- a destination: queued in the outbox; its delivery is the outcome
SELECT gate_bridge.run_playbook(2, 'call_hook', 'bob');
SELECT destination, event, incident_id, status FROM gate_bridge.deliveries ORDER BY id;
CREATE TEMP TABLE playbook_claims AS SELECT * FROM gate_bridge.claim_deliveries('regress_worker', 10);
SELECT c.destination, c.event, c.payload->'event'->>'event' AS payload_event,
	   c.payload->'event'->'detail'->>'playbook' AS payload_playbook, c.payload->'event'->>'actor' AS actor
  FROM playbook_claims c;
-- its payload: the incident's whole row, as a function action gets it
-- (details included), and the playbook
SELECT ARRAY(SELECT jsonb_object_keys(c.payload) ORDER BY 1) AS payload_keys,
	   c.payload->'incident' = (SELECT to_jsonb(i) FROM gate_bridge.incidents i WHERE i.id = 2)
		   AS incident_as_a_function_gets_it,
	   ARRAY(SELECT jsonb_object_keys(c.payload->'incident'->'details') ORDER BY 1) AS details_keys,
	   c.payload->'playbook' AS playbook
  FROM playbook_claims c;
-- the webhook's body is the payload; Slack's names the playbook
SELECT c.body = c.payload AS webhook_body_is_the_payload,
	   jsonb_path_query_array(gate_bridge.delivery_body('slack', c.payload), '$.blocks[*].text.text') AS slack_texts
  FROM playbook_claims c;
SELECT gate_bridge.complete_delivery(d.id, 202) FROM gate_bridge.deliveries d
 WHERE d.event = 'playbook_started';
SELECT * FROM pg_temp.runs(2);
-- one that dies
SELECT gate_bridge.run_playbook(2, 'call_hook', 'bob');
SELECT count(*) FROM gate_bridge.claim_deliveries('regress_worker', 10) c;
SELECT gate_bridge.complete_delivery(d.id, 404, 'not found') FROM gate_bridge.deliveries d
 WHERE d.event = 'playbook_started' AND d.status = 'sending';
SELECT * FROM pg_temp.runs(2);
-- rolled back: nothing queued, nothing on the timeline (the two runs above)
BEGIN;
SELECT gate_bridge.run_playbook(2, 'call_hook', 'bob');
ROLLBACK;
SELECT count(*) FILTER (WHERE event = 'playbook_started') AS started,
	   (SELECT count(*) FROM gate_bridge.deliveries WHERE event = 'playbook_started') AS queued
  FROM gate_bridge.incident_events WHERE incident_id = 2;

-- refusals
SELECT gate_bridge.run_playbook(NULL, 'rerun_eval');
SELECT gate_bridge.run_playbook(1, NULL);
SELECT gate_bridge.run_playbook(1, 'rerun_eval', NULL);
SELECT gate_bridge.run_playbook(1, 'rerun_eval', '');
SELECT gate_bridge.run_playbook(1, 'rerun_eval', repeat('a', 129));
SELECT gate_bridge.run_playbook(999, 'rerun_eval');
SELECT gate_bridge.run_playbook(1, 'no_such_playbook');
SELECT gate_bridge.run_playbook(1, repeat('p', 64));
SELECT gate_bridge.run_playbook(1, 'page_owner');
SELECT gate_bridge.resolve(2, 'bob');
SELECT gate_bridge.run_playbook(2, 'rerun_eval');
BEGIN READ ONLY;
SELECT gate_bridge.run_playbook(1, 'rerun_eval');
ROLLBACK;

-------------------------------------------------------------------------------
-- Auto-run: low risk and auto_run, once per incident, after the creating
-- transaction commits, never while snoozed, silenced or flapping (it runs
-- once that ends), at most gate_bridge.auto_run_limit per playbook per hour.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.playbooks (name, title, risk, action, action_role, auto_run)
VALUES ('risky_auto', 'x', 'high', 'public.regress_rerun', 'regress_remediator', true);
UPDATE gate_bridge.playbooks SET auto_run = true WHERE name = 'rerun_eval';
TRUNCATE gate_bridge.incident_rows, gate_bridge.incident_events, gate_bridge.deliveries,
		 gate_bridge.incident_keys RESTART IDENTITY CASCADE;
-- inside the writer's transaction nothing runs
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('rem.c', 0.1);
SELECT gate_bridge.decide_pending();
SELECT gate_bridge.tick();
ROLLBACK;
SELECT count(*) AS incidents FROM gate_bridge.incidents;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES
	('rem.c', 0.1), ('rem.snoozed', 0.1), ('rem.silenced', 0.1), ('rem.done', 0.1),
	('rem.flapping', 0.1);
CREATE FUNCTION pg_temp.inc(a text) RETURNS bigint LANGUAGE sql AS $$
	SELECT id FROM gate_bridge.incidents WHERE agent = a $$;
SELECT gate_bridge.snooze(pg_temp.inc('rem.snoozed'), '1 hour', 'bob') IS NOT NULL AS snoozed;
SELECT gate_bridge.silence('rem.silenced', '1 hour', 'maintenance') > 0 AS silenced;
-- (it was open before the silence: the silence holds its events back, and
-- auto-run waits for the silence to end)
SELECT gate_bridge.resolve(pg_temp.inc('rem.done'), 'bob');
-- (flapping as the lifecycle marks it: test/sql/flapping.sql)
UPDATE gate_bridge.incident_rows SET flapping = true WHERE agent = 'rem.flapping';
SELECT gate_bridge.tick();
SELECT i.agent, r.event, r.actor, r.playbook, r.auto, r.outcome
  FROM gate_bridge.incidents i, pg_temp.runs(i.id) r ORDER BY i.agent, r.event DESC;
-- once per incident
SELECT gate_bridge.tick();
SELECT i.agent, a.playbook FROM gate_bridge.playbook_auto_runs a
  JOIN gate_bridge.incidents i ON i.id = a.incident_id ORDER BY 1;
-- the limit per playbook and hour: with a limit of 3, two more this hour,
-- and rem.f waits
SET gate_bridge.auto_run_limit = 3;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('rem.d', 0.1), ('rem.e', 0.1), ('rem.f', 0.1);
SELECT gate_bridge.tick();
SELECT i.agent, a.playbook FROM gate_bridge.playbook_auto_runs a
  JOIN gate_bridge.incidents i ON i.id = a.incident_id ORDER BY 1;
-- 0: none at all; after the hour, rem.f
SET gate_bridge.auto_run_limit = 0;
UPDATE gate_bridge.playbook_auto_runs SET run_at = now() - interval '2 hours';
SELECT gate_bridge.tick();
RESET gate_bridge.auto_run_limit;
SELECT gate_bridge.tick();
SELECT i.agent, a.playbook FROM gate_bridge.playbook_auto_runs a
  JOIN gate_bridge.incidents i ON i.id = a.incident_id ORDER BY 1;
-- a snooze that ends: the incident runs it after it is open again
UPDATE gate_bridge.incident_rows SET snoozed_until = now() - interval '1 second'
 WHERE agent = 'rem.snoozed';
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT i.agent, a.playbook FROM gate_bridge.playbook_auto_runs a
  JOIN gate_bridge.incidents i ON i.id = a.incident_id ORDER BY 1;
-- the silence ends: rem.silenced runs it
SELECT gate_bridge.unsilence(max(id)) FROM gate_bridge.silences;
SELECT gate_bridge.tick();
SELECT gate_bridge.tick();
SELECT i.agent, a.playbook FROM gate_bridge.playbook_auto_runs a
  JOIN gate_bridge.incidents i ON i.id = a.incident_id WHERE i.agent = 'rem.silenced';
-- flapping that ends: rem.flapping runs it, on its timeline
SELECT i.agent, count(a.*) AS runs FROM gate_bridge.incidents i
  LEFT JOIN gate_bridge.playbook_auto_runs a ON a.incident_id = i.id
 WHERE i.agent = 'rem.flapping' GROUP BY i.agent;
UPDATE gate_bridge.incident_rows SET flapping = false WHERE agent = 'rem.flapping';
SELECT gate_bridge.tick();
SELECT r.event, r.actor, r.playbook, r.auto, r.outcome
  FROM pg_temp.runs(pg_temp.inc('rem.flapping')) r;

-- clean up what is outside the extension
DELETE FROM gate_bridge.playbook_rules WHERE NOT builtin;
DROP TABLE public.regress_side_effects;
ALTER TABLE gate_bridge.playbook_registry DISABLE TRIGGER playbook_registry_guard;
DELETE FROM gate_bridge.playbook_registry;
INSERT INTO gate_bridge.playbook_registry SELECT * FROM saved_registry;
ALTER TABLE gate_bridge.playbook_registry ENABLE TRIGGER playbook_registry_guard;
DELETE FROM gate_bridge.destinations;
DROP FUNCTION public.regress_rerun(jsonb), public.regress_peek(jsonb), public.regress_fail(jsonb);
DROP ROLE regress_remediator;
