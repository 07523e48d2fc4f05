-- Issue openers: github and jira destinations, what their trigger refuses,
-- the requests they make of the trackers (create, find, comment, close,
-- reopen), the issue stored on the incident, the order behind the create,
-- and what an answer lost or refused does.
\i test/sql/include/lifecycle.sql
\set ECHO none
TRUNCATE gate_bridge.destinations, gate_bridge.deliveries RESTART IDENTITY CASCADE;
\i test/sql/include/try.sql
-- the outbox, without times
CREATE FUNCTION pg_temp.outbox()
RETURNS TABLE (id bigint, destination text, incident_id bigint, event text, status text,
			   attempts integer, request text, unconfirmed boolean, last_status integer,
			   last_error text)
LANGUAGE sql AS $$
	SELECT d.id, d.destination, d.incident_id, d.event, d.status, d.attempts, d.request,
		   d.unconfirmed, d.last_status, d.last_error
	  FROM gate_bridge.deliveries d ORDER BY d.id
$$;
-- a claim as a worker sees it, the body without its long texts (kept
-- whole in claims)
CREATE TEMP TABLE claims AS SELECT * FROM gate_bridge.claim_deliveries('none', 1) LIMIT 0;
CREATE FUNCTION pg_temp.claim(worker text DEFAULT 'w1')
RETURNS TABLE (id bigint, destination text, event text, request text, method text, url text,
			   body jsonb)
LANGUAGE sql AS $$
	WITH c AS (SELECT * FROM gate_bridge.claim_deliveries(worker, 100, '30 s', 'https://dash.test')),
		 kept AS (INSERT INTO claims SELECT * FROM c)
	SELECT c.id, c.destination, c.event, c.request, c.method,
		   regexp_replace(regexp_replace(c.url, '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', '(time)'),
						  '%22-\d+m%22', '%22-(minutes)m%22'),
		   c.body #- '{body}' #- '{fields,description}'
	  FROM c ORDER BY c.id
$$;
-- the text of a claimed request: an issue's body or description, a comment
CREATE FUNCTION pg_temp.text(id bigint) RETURNS text
LANGUAGE sql AS $$
	SELECT COALESCE(c.body ->> 'body', c.body #>> '{fields,description}')
	  FROM claims c WHERE c.id = $1 ORDER BY c.attempt DESC LIMIT 1
$$;
-- the answer a tracker gives, as the worker passes it on
CREATE FUNCTION pg_temp.answer(j text) RETURNS bytea
LANGUAGE sql AS $$ SELECT convert_to(j, 'UTF8') $$;
-- the wait before a delivery's next attempt, in seconds
CREATE FUNCTION pg_temp.wait(id bigint) RETURNS float8
LANGUAGE sql AS $$
	SELECT extract(epoch FROM d.next_attempt_at - now())::float8
	  FROM gate_bridge.deliveries d WHERE d.id = $1
$$;
CREATE FUNCTION pg_temp.due() RETURNS void
LANGUAGE sql AS $$
	UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE status = 'pending'
$$;
\set ECHO all

-------------------------------------------------------------------------------
-- Destinations: what destinations_guard refuses (23514, with a hint)
-------------------------------------------------------------------------------
SELECT t.label, pg_temp.try(format('INSERT INTO gate_bridge.destinations (name, kind, url, secret, options, events) VALUES (%s)', t.cmd)) AS result
  FROM (VALUES
	('github without a token', $$'g1', 'github', 'https://api.github.com/repos/acme/ops', NULL, '{}', DEFAULT$$),
	('github, not a repository', $$'g2', 'github', 'https://api.github.com/acme/ops', 'tok', '{}', DEFAULT$$),
	('github, a trailing slash', $$'g3', 'github', 'https://api.github.com/repos/acme/ops/', 'tok', '{}', DEFAULT$$),
	('github, a query', $$'g4', 'github', 'https://api.github.com/repos/acme/ops?x=1', 'tok', '{}', DEFAULT$$),
	('github over http', $$'g5', 'github', 'http://api.github.com/repos/acme/ops', 'tok', '{}', DEFAULT$$),
	('github, a secret with a newline', $$'g6', 'github', 'https://api.github.com/repos/acme/ops', E'tok\r\nX-Evil: 1', '{}', DEFAULT$$),
	('github, a secret with a space', $$'g7', 'github', 'https://api.github.com/repos/acme/ops', 'Bearer tok', '{}', DEFAULT$$),
	('github, an option', $$'g8', 'github', 'https://api.github.com/repos/acme/ops', 'tok', '{"labels": ["x"]}', DEFAULT$$),
	('jira without credentials', $$'j1', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', NULL, '{"resolve_transition": "31"}', DEFAULT$$),
	('jira, no project', $$'j2', 'jira', 'https://acme.atlassian.net/rest/api/2/issue', 'me@acme.test:tok', '{"resolve_transition": "31"}', DEFAULT$$),
	('jira, a project key in lower case', $$'j3', 'jira', 'https://acme.atlassian.net/rest/api/2/project/ops', 'me@acme.test:tok', '{"resolve_transition": "31"}', DEFAULT$$),
	('jira, API v3', $$'j4', 'jira', 'https://acme.atlassian.net/rest/api/3/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31"}', DEFAULT$$),
	('jira, resolutions without a transition', $$'j5', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{}', DEFAULT$$),
	('jira, a transition that is not an id', $$'j6', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "Done"}', DEFAULT$$),
	('jira, an empty issue type', $$'j7', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": 31, "issue_type": " "}', DEFAULT$$),
	('jira, an unknown option', $$'j8', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31", "priority": "High"}', DEFAULT$$),
	('jira, an unknown deployment', $$'j10', 'jira', 'https://jira.acme.test/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31", "deployment": "server"}', DEFAULT$$),
	('jira, a deployment that is not a string', $$'j11', 'jira', 'https://jira.acme.test/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31", "deployment": ["cloud"]}', DEFAULT$$),
	('options that are not an object', $$'j9', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '[]', DEFAULT$$),
	('a webhook with options', $$'w1', 'webhook', 'https://hook.test/', NULL, '{"resolve_transition": "31"}', DEFAULT$$),
	('an unknown kind', $$'x1', 'gitlab', 'https://gitlab.test/api/v4/projects/1', 'tok', '{}', DEFAULT$$),
	('github, loopback over http', $$'ok-g', 'github', 'http://127.0.0.1:8080/gh/repos/acme/ops', 'tok', '{}', DEFAULT$$),
	('github enterprise', $$'ok-ghe', 'github', 'https://ghe.acme.test/api/v3/repos/acme/ops.site', 'tok', '{}', DEFAULT$$),
	('jira, created only: no transition needed', $$'ok-j1', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{}', '{created,escalated}'$$),
	('jira data center, every option', $$'ok-j2', 'jira', 'https://jira.acme.test/jira/rest/api/2/project/OPS_2', 'PAT0123', '{"resolve_transition": 31, "reopen_transition": "11", "issue_type": "Incident", "deployment": "data_center"}', DEFAULT$$),
	('jira cloud on a domain of its own', $$'ok-j3', 'jira', 'https://jira.acme.com/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31", "deployment": "cloud"}', DEFAULT$$)
  ) AS t(label, cmd);
\set VERBOSITY default
INSERT INTO gate_bridge.destinations (name, kind, url, secret, options)
	VALUES ('j5', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{}');
INSERT INTO gate_bridge.destinations (name, kind, url, secret, options)
	VALUES ('j10', 'jira', 'https://jira.acme.test/rest/api/2/project/OPS', 'me@acme.test:tok',
			'{"resolve_transition": "31", "deployment": "server"}');
INSERT INTO gate_bridge.destinations (name, kind, url, secret, options)
	VALUES ('j8', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', '{"resolve_transition": "31", "priority": "High"}');
\set VERBOSITY terse
-- an update is checked too: taking resolutions needs the transition
SELECT pg_temp.try($$UPDATE gate_bridge.destinations SET events = events || '{resolved}' WHERE name = 'ok-j1'$$);
SELECT pg_temp.try($$UPDATE gate_bridge.destinations SET kind = 'github' WHERE name = 'ok-j1'$$);
-- enabling or disabling is not the trigger's business
SELECT pg_temp.try($$UPDATE gate_bridge.destinations SET enabled = false WHERE name = 'ok-j1'$$);
SELECT name, kind, url, options, events FROM gate_bridge.destinations ORDER BY name;
DELETE FROM gate_bridge.destinations;

-------------------------------------------------------------------------------
-- GitHub: the issue opened on created, a comment on escalation, closed on
-- resolution; the reference stored on the incident
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern)
	VALUES ('gh', 'github', 'https://api.github.com/repos/acme/ops', 'ghp_regress', 'iss.*');
INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern, options)
	VALUES ('jr', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:tok', 'iss.*',
			'{"resolve_transition": "31"}');
SELECT pg_temp.violation('iss.a') AS id \gset
SELECT * FROM pg_temp.claim();
-- what the issue says: the incident's facts (shown as they are), the
-- dashboard's link, the details, and the marker it ends with
SELECT regexp_replace(pg_temp.text(1), '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', '(time)', 'g') AS github_body;
SELECT regexp_replace(pg_temp.text(2), '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', '(time)', 'g') AS jira_description;
-- GitHub answers 201 with the issue; Jira 201 with its id, key and self
SELECT gate_bridge.complete_delivery(1, 201, NULL, NULL, pg_temp.answer(
	'{"id": 1296269, "number": 42, "html_url": "https://github.com/acme/ops/issues/42", "state": "open", "title": "x"}'));
SELECT gate_bridge.complete_delivery(2, 201, NULL, NULL, pg_temp.answer(
	'{"id": "10000", "key": "OPS-24", "self": "https://acme.atlassian.net/rest/api/2/issue/10000"}'));
SELECT id, jsonb_pretty(external_refs) FROM gate_bridge.incidents WHERE id = :id;
SELECT * FROM pg_temp.outbox();
-- an escalation: a comment on each
SELECT pg_temp.violation('iss.a', 'critical') IS NULL AS escalated_in_place;
SELECT * FROM pg_temp.claim();
SELECT d.destination, pg_temp.text(d.id) AS comment FROM gate_bridge.deliveries d
 WHERE d.status = 'sending' ORDER BY d.id;
SELECT gate_bridge.complete_delivery(d.id, 201) FROM gate_bridge.deliveries d WHERE d.status = 'sending' ORDER BY d.id;
-- resolved: closed (GitHub: completed; Jira: the transition)
SELECT gate_bridge.resolve(:id, 'regress_alice');
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, CASE d.destination WHEN 'gh' THEN 200 ELSE 204 END)
  FROM gate_bridge.deliveries d WHERE d.status = 'sending' ORDER BY d.id;
SELECT * FROM pg_temp.outbox();
SELECT destination, event, status, request FROM gate_bridge.delivery_status ORDER BY id;

-------------------------------------------------------------------------------
-- The order: a comment or a close waits for the create, and is made on the
-- issue the create opened
-------------------------------------------------------------------------------
SELECT pg_temp.violation('iss.b') AS id \gset
SELECT pg_temp.violation('iss.b', 'critical') IS NULL AS escalated;
SELECT gate_bridge.resolve(:id, 'regress_alice');
SELECT * FROM pg_temp.claim();
-- the create fails (503): the comment and the close still wait
SELECT gate_bridge.complete_delivery(d.id, 503, 'HTTP 503', NULL, NULL)
  FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.destination = 'jr';
SELECT gate_bridge.complete_delivery(d.id, 201, NULL, NULL, pg_temp.answer(
	'{"number": 43, "html_url": "https://github.com/acme/ops/issues/43"}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.destination = 'gh';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;

-------------------------------------------------------------------------------
-- Idempotence: a create whose answer was lost is looked for before it is
-- sent again, and never opens a second issue
-------------------------------------------------------------------------------
-- jr's create got a 503, which a tracker may give after opening the issue:
-- unconfirmed, retried no sooner than 30 s, as a find
SELECT pg_temp.wait(d.id) > 29 AS waits_30s FROM gate_bridge.deliveries d
 WHERE d.incident_id = :id AND d.destination = 'jr' AND d.event = 'created';
SELECT pg_temp.due();
-- gh comments on its issue meanwhile; jr looks for its issue
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 201) FROM gate_bridge.deliveries d
 WHERE d.status = 'sending' AND d.destination = 'gh';
-- the search finds the issue the first attempt opened (the one that has
-- the marker, the oldest if several have it): stored, delivered; nothing is
-- created
SELECT gate_bridge.complete_delivery(d.id, 200, NULL, NULL, pg_temp.answer(format(
	'{"issues": [{"id": "10009", "key": "OPS-30", "fields": {"description": "someone else''s"}},
				 {"id": "10008", "key": "OPS-29", "fields": {"description": "...\n\n(gate-bridge incident %s, destination jr)"}},
				 {"id": "10007", "key": "OPS-28", "fields": {"description": "...\n\n(gate-bridge incident %s, destination jr)"}},
				 {"id": "10006", "key": "OPS-27", "fields": {"description": "(gate-bridge incident %s0, destination jr)"}}],
	  "isLast": true}', :id, :id, :id)))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT external_refs -> 'jr' AS jr FROM gate_bridge.incidents WHERE id = :id;
-- then the comment and the closes, on the issues found and opened
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 201) FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.event = 'escalated';
SELECT gate_bridge.complete_delivery(d.id, 200) FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.event = 'resolved';
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 204) FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;
SELECT count(*) FILTER (WHERE c.request = 'create') AS creates, count(*) FILTER (WHERE c.request = 'find') AS finds
  FROM claims c WHERE c.incident_id = :id AND c.destination = 'jr';

-- a create that timed out, then a search that finds nothing: created then
SELECT pg_temp.violation('iss.c') AS id \gset
UPDATE gate_bridge.destinations SET enabled = (name = 'gh');
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, NULL, 'Operation timed out after 10001 milliseconds')
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;
SELECT pg_temp.due();
SELECT * FROM pg_temp.claim();
-- GitHub lists pull requests too; a PR with the marker is not the issue
SELECT gate_bridge.complete_delivery(d.id, 200, NULL, NULL, pg_temp.answer(format(
	'[{"number": 50, "html_url": "https://github.com/acme/ops/pull/50", "pull_request": {}, "body": "(gate-bridge incident %s, destination gh)"},
	  {"number": 49, "html_url": "https://github.com/acme/ops/issues/49", "body": null}]', :id)))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 201, NULL, NULL, pg_temp.answer(
	'{"number": 51, "html_url": "https://github.com/acme/ops/issues/51"}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT external_refs FROM gate_bridge.incidents WHERE id = :id;

-- a worker that died mid-request: the lease runs out, and the next attempt
-- is a find
SELECT pg_temp.violation('iss.d') AS id \gset
SELECT * FROM pg_temp.claim();
UPDATE gate_bridge.deliveries SET lease_until = now() - interval '1 s' WHERE status = 'sending';
SELECT * FROM pg_temp.claim('w2');
-- a search whose answer is not a list is retried, still unconfirmed
SELECT gate_bridge.complete_delivery(d.id, 200, NULL, NULL, pg_temp.answer('<html>maintenance</html>'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;
-- answers that are not JSON do not make the completion fail
SELECT gate_bridge.issue_answer(t.b) IS NULL AS unread
  FROM (VALUES ('\xfffe7b7d'::bytea), (convert_to('{"a": "\u0000"}', 'UTF8')),
			   (convert_to(repeat('[', 100000) || repeat(']', 100000), 'UTF8')), (NULL)) AS t(b);
-- a create answered 201 without an issue in it: unconfirmed
SELECT pg_temp.violation('iss.e') AS id \gset
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 201, NULL, NULL, pg_temp.answer('{}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;

-- a redelivered create of an incident that has its issue: skipped
SELECT d.id AS rid FROM gate_bridge.deliveries d JOIN gate_bridge.incidents i ON i.id = d.incident_id
 WHERE i.agent = 'iss.c' AND d.event = 'created' AND d.destination = 'gh' \gset
SELECT gate_bridge.redeliver(:rid);
SELECT * FROM pg_temp.claim();
SELECT * FROM pg_temp.outbox() WHERE id = :rid;

-------------------------------------------------------------------------------
-- Refusals and rate limits
-------------------------------------------------------------------------------
TRUNCATE gate_bridge.deliveries;
UPDATE gate_bridge.destinations SET enabled = true;
SET gate_bridge.delivery_max_attempts = 5;
-- 422 is dead at once, with GitHub's message; Jira's 400 likewise
SELECT pg_temp.violation('iss.f') AS id \gset
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 422, 'HTTP 422: {"message":"Validation Failed"', NULL, pg_temp.answer(
	'{"message": "Validation Failed", "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}],
	  "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue", "status": "422"}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.destination = 'gh';
SELECT gate_bridge.complete_delivery(d.id, 400, 'HTTP 400', NULL, pg_temp.answer(
	'{"errorMessages": [], "errors": {"issuetype": "Specify an issue type", "labels": "Field ''labels'' cannot be set."}}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending' AND d.destination = 'jr';
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id;
SELECT key, details #>> '{delivery,request}' AS request, details #>> '{delivery,last_error}' AS last_error
  FROM gate_bridge.incidents WHERE kind = 'delivery' ORDER BY key;
-- a resolution of an incident that has no issue: nothing to close
SELECT gate_bridge.resolve(:id, 'regress_alice');
SELECT * FROM pg_temp.claim();
SELECT * FROM pg_temp.outbox() WHERE incident_id = :id AND event = 'resolved';
TRUNCATE gate_bridge.deliveries;
-- 429 with Retry-After, 403 with a Retry-After or GitHub's reset (a rate
-- limit: the worker passes the wait), 403 that says it is a secondary rate
-- limit: retried; a plain 403: dead
SELECT pg_temp.violation('iss.g') AS id \gset
UPDATE gate_bridge.destinations SET enabled = (name = 'gh');
SELECT * FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 429, 'HTTP 429', '120 seconds') FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT status, round(pg_temp.wait(id)) AS wait FROM gate_bridge.deliveries WHERE destination = 'gh';
SELECT pg_temp.due();
SELECT count(*) FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 403, 'HTTP 403', '600 seconds', pg_temp.answer(
	'{"message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT status, round(pg_temp.wait(id)) AS wait, last_error FROM gate_bridge.deliveries WHERE destination = 'gh';
SELECT pg_temp.due();
SELECT count(*) FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 403, 'HTTP 403', NULL, pg_temp.answer(
	'{"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT status, pg_temp.wait(id) > 59 AS waits_a_minute, last_error FROM gate_bridge.deliveries WHERE destination = 'gh';
SELECT pg_temp.due();
SELECT count(*) FROM pg_temp.claim();
SELECT gate_bridge.complete_delivery(d.id, 403, 'HTTP 403', NULL, pg_temp.answer(
	'{"message": "Resource not accessible by personal access token"}'))
  FROM gate_bridge.deliveries d WHERE d.status = 'sending';
SELECT status, attempts, last_status, last_error FROM gate_bridge.deliveries WHERE destination = 'gh';
RESET gate_bridge.delivery_max_attempts;

-------------------------------------------------------------------------------
-- Reopened: GitHub reopens the issue; Jira too with reopen_transition, and
-- comments without it
-------------------------------------------------------------------------------
\set gpayload '{"event": {"id": 9, "event": "reopened", "actor": "gate_bridge", "detail": {}}, "incident": {"id": 7, "kind": "budget", "key": "BUDGET_iss.r_quality", "agent": "iss.r", "severity": "sev2", "summary": "Budget violation: iss.r quality"}}'
SELECT r.request, r.method, r.request_url, r.body ->> 'transition' AS transition, r.body - 'body' AS body
  FROM (VALUES ('github', 'https://api.github.com/repos/acme/ops', '{}'::jsonb),
			   ('jira', 'https://jira.acme.test/rest/api/2/project/OPS', '{"resolve_transition": "31", "reopen_transition": "11"}'),
			   ('jira', 'https://jira.acme.test/rest/api/2/project/OPS', '{"resolve_transition": "31"}')) AS t(kind, url, options)
 CROSS JOIN LATERAL gate_bridge.issue_request(t.kind, t.url, t.options, 'dest', :'gpayload', '{}',
											  '{"id": "10001"}', false, NULL) r;
-- Jira Data Center's search is /rest/api/2/search; the JQL is encoded
SELECT r.request, r.method, r.request_url
  FROM gate_bridge.issue_request('jira', 'https://jira.acme.test/jira/rest/api/2/project/OPS', '{}', 'dest',
								 jsonb_set(:'gpayload', '{event,event}', '"created"'), '{}', NULL, true, NULL,
								 now() - interval '5 minutes') r;
-- which search: the deployment option, or without it the site's host
-- (atlassian.net is Cloud, any other Data Center)
SELECT t.url, t.options ->> 'deployment' AS deployment,
	   substring(r.request_url from '/rest/api/2/search[^?]*') AS search
  FROM (VALUES ('https://acme.atlassian.net/rest/api/2/project/OPS', '{}'::jsonb),
			   ('https://jira.acme.com/rest/api/2/project/OPS', '{}'),
			   ('https://jira.acme.com/rest/api/2/project/OPS', '{"deployment": "cloud"}'),
			   ('https://jira.acme.com/rest/api/2/project/OPS', '{"deployment": "data_center"}')) AS t(url, options)
 CROSS JOIN LATERAL gate_bridge.issue_request('jira', t.url, t.options, 'dest',
											  jsonb_set(:'gpayload', '{event,event}', '"created"'), '{}',
											  NULL, true, NULL) r;
SELECT r.note FROM gate_bridge.issue_request('github', 'https://api.github.com/repos/acme/ops', '{}', 'dest',
											 jsonb_set(:'gpayload', '{event,event}', '"resolved"'), '{}') r;
SELECT gate_bridge.url_encode('project = "OPS" AND created >= "-15m" ü&?/');
SELECT pg_temp.try($$SELECT gate_bridge.issue_request('slack', 'https://x.test/', '{}', 'd', '{}')$$);
SELECT pg_temp.try($$SELECT gate_bridge.delivery_body('github', '{}')$$);

-------------------------------------------------------------------------------
-- A renamed destination keeps its issues
-------------------------------------------------------------------------------
UPDATE gate_bridge.destinations SET name = 'github-ops' WHERE name = 'gh';
SELECT count(*) FILTER (WHERE external_refs ? 'gh') AS under_gh,
	   count(*) FILTER (WHERE external_refs ? 'github-ops') AS under_github_ops
  FROM gate_bridge.incidents;
-- and its deliveries follow the name (ON UPDATE CASCADE)
SELECT DISTINCT destination FROM gate_bridge.deliveries ORDER BY 1;
