-- Delivery's privileges: nobody but the owner and the delivery role reads
-- a destination's secret (a webhook's key, a routing key, a GitHub token,
-- Jira credentials); only the delivery role claims and completes
-- deliveries, and stores an issue on an incident only through
-- complete_delivery(); operators redeliver; readers see delivery_status and
-- the destinations without their secrets.  The grants are the README's.
BEGIN;
SELECT plan(88);

CREATE ROLE regress_dlv_worker;
CREATE ROLE regress_dlv_operator;
CREATE ROLE regress_dlv_reader;
CREATE ROLE regress_dlv_nobody;	-- holds only what PUBLIC holds

-- delivery role: the destinations with their secrets, claim and complete
GRANT USAGE ON SCHEMA gate_bridge TO regress_dlv_worker;
GRANT SELECT ON gate_bridge.destinations, gate_bridge.delivery_status TO regress_dlv_worker;
GRANT EXECUTE ON FUNCTION gate_bridge.claim_deliveries(text, integer, interval, text),
	gate_bridge.complete_delivery(bigint, integer, text, interval, bytea),
	gate_bridge.release_deliveries(text) TO regress_dlv_worker;
-- operators: the destinations without secrets, delivery_status, redeliver
GRANT USAGE ON SCHEMA gate_bridge TO regress_dlv_operator;
GRANT SELECT (name, kind, url, min_severity, agent_pattern, events, enabled, created_at, options)
	ON gate_bridge.destinations TO regress_dlv_operator;
GRANT SELECT ON gate_bridge.delivery_status TO regress_dlv_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.redeliver(bigint) TO regress_dlv_operator;
-- readers: the destinations without secrets, delivery_status
GRANT USAGE ON SCHEMA gate_bridge TO regress_dlv_reader;
GRANT SELECT (name, kind, url, min_severity, agent_pattern, events, enabled, created_at, options)
	ON gate_bridge.destinations TO regress_dlv_reader;
GRANT SELECT ON gate_bridge.delivery_status TO regress_dlv_reader;
GRANT SELECT ON gate_bridge.incidents TO regress_dlv_reader;
GRANT USAGE ON SCHEMA gate_bridge TO regress_dlv_nobody;

INSERT INTO gate_bridge.destinations (name, kind, url, secret)
	VALUES ('regress_dlv_hook', 'webhook', 'https://hook.test/', 'regress-secret'),
		   ('regress_dlv_pd', 'pagerduty', 'https://events.pagerduty.test/v2/enqueue', 'regress-rk');
SELECT gate_bridge.on_budget_violation(jsonb_build_object(
	'agent', 'regress.dlv.a', 'budget_type', 'quality', 'severity', 'error',
	'actual', 0.5, 'threshold', 0.7)) IS NOT NULL AS created;

-------------------------------------------------------------------------------
-- The catalogs: PUBLIC holds nothing of delivery
-------------------------------------------------------------------------------
SELECT ok(NOT has_column_privilege('public', 'gate_bridge.destinations', 'secret', 'SELECT'),
		  'PUBLIC cannot read destinations.secret');
SELECT ok(NOT has_table_privilege('public', 'gate_bridge.' || t, p),
		  format('PUBLIC has no %s on %s', p, t))
  FROM unnest(ARRAY['destinations', 'deliveries', 'delivery_status', 'delivery_stats']) t,
	   unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p;
SELECT ok(NOT has_function_privilege('public', f, 'EXECUTE'), format('PUBLIC cannot execute %s', f))
  FROM unnest(ARRAY['gate_bridge.claim_deliveries(text, integer, interval, text)',
					'gate_bridge.complete_delivery(bigint, integer, text, interval, bytea)',
					'gate_bridge.release_deliveries(text)', 'gate_bridge.redeliver(bigint)',
					'gate_bridge.on_delivery_failure(text, jsonb)',
					'gate_bridge.delivery_body(text, jsonb, text, text)',
					'gate_bridge.issue_request(text, text, jsonb, text, jsonb, jsonb, jsonb, boolean, text, timestamptz)',
					'gate_bridge.issue_answer(bytea)', 'gate_bridge.issue_ref(text, text, jsonb)',
					'gate_bridge.issue_list(text, jsonb)', 'gate_bridge.issue_found(text, text, jsonb, text)',
					'gate_bridge.issue_error(text, integer, jsonb)', 'gate_bridge.issue_marker(bigint, text)',
					'gate_bridge.url_encode(text)', 'gate_bridge.markdown_escape(text)',
					'gate_bridge.jira_escape(text)', 'gate_bridge.destinations_guard()',
					'gate_bridge.destinations_renamed()']) f;
SELECT ok(NOT has_column_privilege('regress_dlv_reader', 'gate_bridge.destinations', 'secret', 'SELECT'),
		  'a reader cannot read destinations.secret');
SELECT ok(NOT has_column_privilege('regress_dlv_operator', 'gate_bridge.destinations', 'secret', 'SELECT'),
		  'an operator cannot read destinations.secret');
SELECT ok(has_column_privilege('regress_dlv_worker', 'gate_bridge.destinations', 'secret', 'SELECT'),
		  'the delivery role reads destinations.secret');
SELECT ok(NOT has_table_privilege('regress_dlv_worker', 'gate_bridge.deliveries', 'UPDATE'),
		  'the delivery role does not update the outbox but through the functions');

-------------------------------------------------------------------------------
-- PUBLIC (a role with USAGE on the schema and nothing else)
-------------------------------------------------------------------------------
SET ROLE regress_dlv_nobody;
SELECT throws_ok($$SELECT secret FROM gate_bridge.destinations$$, '42501', NULL, 'nobody: no secrets');
SELECT throws_ok($$SELECT name FROM gate_bridge.destinations$$, '42501', NULL, 'nobody: no destinations');
SELECT throws_ok($$SELECT * FROM gate_bridge.deliveries$$, '42501', NULL, 'nobody: no outbox');
SELECT throws_ok($$SELECT * FROM gate_bridge.delivery_status$$, '42501', NULL, 'nobody: no delivery_status');
SELECT throws_ok($$SELECT * FROM gate_bridge.claim_deliveries('x')$$, '42501', NULL, 'nobody: no claim');
SELECT throws_ok($$SELECT gate_bridge.complete_delivery(1, 200)$$, '42501', NULL, 'nobody: no complete');
SELECT throws_ok($$SELECT gate_bridge.release_deliveries('x')$$, '42501', NULL, 'nobody: no release');
SELECT throws_ok($$SELECT gate_bridge.redeliver(1)$$, '42501', NULL, 'nobody: no redeliver');
SELECT throws_ok($$SELECT gate_bridge.on_delivery_failure('x', '{}')$$, '42501', NULL,
				 'nobody: cannot open delivery incidents');
RESET ROLE;

-------------------------------------------------------------------------------
-- Readers and operators
-------------------------------------------------------------------------------
SET ROLE regress_dlv_reader;
SELECT throws_ok($$SELECT secret FROM gate_bridge.destinations$$, '42501', NULL, 'reader: no secrets');
SELECT throws_ok($$SELECT * FROM gate_bridge.destinations$$, '42501', NULL, 'reader: not * (the secret)');
SELECT results_eq($$SELECT name, kind FROM gate_bridge.destinations WHERE name LIKE 'regress_dlv%' ORDER BY name$$,
				  $$VALUES ('regress_dlv_hook', 'webhook'), ('regress_dlv_pd', 'pagerduty')$$,
				  'reader: the destinations without secrets');
SELECT results_eq($$SELECT count(*)::int FROM gate_bridge.delivery_status WHERE destination LIKE 'regress_dlv%'$$,
				  ARRAY[2], 'reader: delivery_status');
SELECT throws_ok($$SELECT * FROM gate_bridge.deliveries$$, '42501', NULL, 'reader: not the outbox itself');
SELECT throws_ok($$SELECT * FROM gate_bridge.claim_deliveries('x')$$, '42501', NULL, 'reader: no claim');
SELECT throws_ok($$SELECT gate_bridge.complete_delivery(1, 200)$$, '42501', NULL, 'reader: no complete');
SELECT throws_ok($$SELECT gate_bridge.redeliver(1)$$, '42501', NULL, 'reader: no redeliver');
SELECT throws_ok($$INSERT INTO gate_bridge.destinations (name, kind, url) VALUES ('x', 'webhook', 'https://x.test/')$$,
				 '42501', NULL, 'reader: cannot add destinations');
RESET ROLE;
SET ROLE regress_dlv_operator;
SELECT throws_ok($$SELECT secret FROM gate_bridge.destinations$$, '42501', NULL, 'operator: no secrets');
SELECT throws_ok($$SELECT * FROM gate_bridge.claim_deliveries('x')$$, '42501', NULL, 'operator: no claim');
SELECT throws_ok($$SELECT gate_bridge.complete_delivery(1, 200)$$, '42501', NULL, 'operator: no complete');
SELECT throws_ok($$UPDATE gate_bridge.destinations SET enabled = false$$, '42501', NULL,
				 'operator: cannot change destinations');
RESET ROLE;

-------------------------------------------------------------------------------
-- The delivery role
-------------------------------------------------------------------------------
CREATE TEMP TABLE claimed ON COMMIT DROP AS
	SELECT * FROM gate_bridge.claim_deliveries('regress_none', 1) LIMIT 0;
GRANT ALL ON claimed TO PUBLIC;
SET ROLE regress_dlv_worker;
SELECT results_eq($$SELECT secret FROM gate_bridge.destinations WHERE name LIKE 'regress_dlv%' ORDER BY name$$,
				  ARRAY['regress-secret', 'regress-rk'], 'worker: reads the secrets');
INSERT INTO claimed
	SELECT * FROM gate_bridge.claim_deliveries('regress_w', 10) c WHERE c.destination LIKE 'regress_dlv%';
SELECT results_eq($$SELECT destination, secret, attempt FROM claimed ORDER BY destination$$,
				  $$VALUES ('regress_dlv_hook', 'regress-secret', 1), ('regress_dlv_pd', 'regress-rk', 1)$$,
				  'worker: claims, with the secrets');
SELECT is((SELECT body ->> 'routing_key' FROM claimed WHERE destination = 'regress_dlv_pd'), 'regress-rk',
		  'worker: the PagerDuty body carries the routing key');
SELECT is(gate_bridge.complete_delivery((SELECT id FROM claimed WHERE destination = 'regress_dlv_hook'), 204),
		  'delivered', 'worker: completes');
SELECT is(gate_bridge.release_deliveries('regress_w'), 1, 'worker: releases its claims');
SELECT results_eq($$SELECT count(*)::int FROM gate_bridge.claim_deliveries('regress_w', 10) c WHERE c.destination = 'regress_dlv_pd'$$,
				  ARRAY[1], 'worker: claims again');
-- a dead delivery opens DELIVERY_regress_dlv_pd, though the worker cannot
-- call on_delivery_failure itself
SELECT is(gate_bridge.complete_delivery((SELECT id FROM claimed WHERE destination = 'regress_dlv_pd'), 400, 'bad request'),
		  'dead', 'worker: a 400 is dead');
SELECT throws_ok($$SELECT gate_bridge.on_delivery_failure('regress_dlv_pd', '{}')$$, '42501', NULL,
				 'worker: cannot open delivery incidents directly');
SELECT throws_ok($$SELECT gate_bridge.redeliver(1)$$, '42501', NULL, 'worker: no redeliver');
SELECT throws_ok($$UPDATE gate_bridge.destinations SET enabled = false$$, '42501', NULL,
				 'worker: cannot change destinations');
RESET ROLE;
SELECT results_eq($$SELECT key, severity, status, agent FROM gate_bridge.incidents WHERE kind = 'delivery'$$,
				  $$VALUES ('DELIVERY_regress_dlv_pd', 'sev2', 'open', 'regress_dlv_pd')$$,
				  'a dead delivery opened DELIVERY_regress_dlv_pd');
SELECT is((SELECT count(*)::int FROM gate_bridge.deliveries d JOIN gate_bridge.incidents i ON i.id = d.incident_id
			WHERE i.kind = 'delivery' AND d.destination = 'regress_dlv_pd'), 0,
		  'no delivery of DELIVERY_regress_dlv_pd to regress_dlv_pd');
SELECT is((SELECT count(*)::int FROM gate_bridge.deliveries d JOIN gate_bridge.incidents i ON i.id = d.incident_id
			WHERE i.kind = 'delivery' AND d.destination = 'regress_dlv_hook'), 1,
		  'DELIVERY_regress_dlv_pd goes to the other destination');

-------------------------------------------------------------------------------
-- Operators redeliver
-------------------------------------------------------------------------------
SET ROLE regress_dlv_operator;
SELECT lives_ok(format('SELECT gate_bridge.redeliver(%s)', (SELECT id FROM claimed WHERE destination = 'regress_dlv_pd')),
				'operator: redelivers a dead delivery');
SELECT results_eq(format('SELECT status, attempts FROM gate_bridge.delivery_status WHERE id = %s',
						 (SELECT id FROM claimed WHERE destination = 'regress_dlv_pd')),
				  $$VALUES ('pending'::text, 0)$$, 'operator: it is pending again');
SELECT throws_ok(format('SELECT gate_bridge.redeliver(%s)', (SELECT id FROM claimed WHERE destination = 'regress_dlv_pd')),
				 '55000', NULL, 'operator: not a pending one');
RESET ROLE;

-------------------------------------------------------------------------------
-- Issue openers: the token and the credentials stay with the owner and the
-- delivery role; the issue reaches the incident through complete_delivery()
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern, options)
	VALUES ('regress_dlv_gh', 'github', 'https://api.github.com/repos/acme/ops', 'ghp_regress_token', 'regress.iss.*', '{}'),
		   ('regress_dlv_jira', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'me@acme.test:regress_api_token',
			'regress.iss.*', '{"resolve_transition": "31"}');
SELECT gate_bridge.on_budget_violation(jsonb_build_object(
	'agent', 'regress.iss.a', 'budget_type', 'quality', 'severity', 'error',
	'actual', 0.5, 'threshold', 0.7)) AS iss_id \gset
SET ROLE regress_dlv_reader;
SELECT throws_ok($$SELECT secret FROM gate_bridge.destinations WHERE kind IN ('github', 'jira')$$, '42501', NULL,
				 'reader: no GitHub token, no Jira credentials');
SELECT results_eq($$SELECT name, options FROM gate_bridge.destinations WHERE kind IN ('github', 'jira') ORDER BY name$$,
				  $$VALUES ('regress_dlv_gh', '{}'::jsonb), ('regress_dlv_jira', '{"resolve_transition": "31"}')$$,
				  'reader: the issue destinations and their options, without secrets');
SELECT throws_ok($$UPDATE gate_bridge.incident_rows SET external_refs = '{}'$$, '42501', NULL,
				 'reader: cannot write an incident''s issues');
RESET ROLE;
SET ROLE regress_dlv_operator;
SELECT throws_ok($$SELECT secret FROM gate_bridge.destinations WHERE kind = 'github'$$, '42501', NULL,
				 'operator: no GitHub token');
RESET ROLE;
TRUNCATE claimed;
SET ROLE regress_dlv_worker;
SELECT results_eq($$SELECT secret FROM gate_bridge.destinations WHERE kind IN ('github', 'jira') ORDER BY name$$,
				  ARRAY['ghp_regress_token', 'me@acme.test:regress_api_token'],
				  'worker: reads the token and the credentials');
INSERT INTO claimed
	SELECT * FROM gate_bridge.claim_deliveries('regress_w', 10) c WHERE c.destination IN ('regress_dlv_gh', 'regress_dlv_jira');
SELECT results_eq($$SELECT destination, kind, secret, method, request, url FROM claimed ORDER BY destination$$,
				  $$VALUES ('regress_dlv_gh', 'github', 'ghp_regress_token', 'POST', 'create',
							'https://api.github.com/repos/acme/ops/issues'),
						   ('regress_dlv_jira', 'jira', 'me@acme.test:regress_api_token', 'POST', 'create',
							'https://acme.atlassian.net/rest/api/2/issue')$$,
				  'worker: claims the creates, with the secrets to authenticate them');
SELECT ok(NOT (SELECT bool_or(c.body::text LIKE '%regress_api_token%' OR c.body::text LIKE '%ghp_regress_token%')
				 FROM claimed c),
		  'worker: no request body holds a secret (they go in headers)');
SELECT is(gate_bridge.complete_delivery((SELECT id FROM claimed WHERE destination = 'regress_dlv_gh'), 201, NULL, NULL,
		  convert_to('{"number": 7, "html_url": "https://github.com/acme/ops/issues/7"}', 'UTF8')),
		  'delivered', 'worker: completes a create with the answer');
SELECT throws_ok($$UPDATE gate_bridge.incident_rows SET external_refs = '{}'$$, '42501', NULL,
				 'worker: cannot write an incident''s issues but through complete_delivery()');
SELECT throws_ok($$SELECT gate_bridge.issue_request('github', 'https://api.github.com/repos/a/b', '{}', 'x', '{}')$$,
				 '42501', NULL, 'worker: issue_request() is the claim''s, not the worker''s');
RESET ROLE;
SET ROLE regress_dlv_reader;
SELECT is((SELECT external_refs FROM gate_bridge.incidents WHERE id = :iss_id),
		  '{"regress_dlv_gh": {"id": "7", "url": "https://github.com/acme/ops/issues/7", "kind": "github"}}'::jsonb,
		  'reader: the incident shows the issue opened at regress_dlv_gh');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
