-- The "created" event: its detail is the data object of the NOTIFY payload,
--	 {"event":"incident_created","data":{"id":..,"kind":..,"key":..,
--	  "severity":..,"summary":..,"status":"open","created_at":"YYYY-MM-DDTHH:MM:SSZ",
--	  "agent":..,"event_id":..,"position":..}}
-- without the event's id and position, which the payload adds at commit.
-- valid JSON for any agent name and always under NOTIFY's 8000 bytes.
-- (No LISTEN here: psql would print the backend's PID.  Names that are not
-- plain ASCII are shown by label, never printed.)
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;

-- The agents under test, by label.
CREATE TEMP TABLE agents (label text PRIMARY KEY, agent text NOT NULL);
INSERT INTO agents VALUES
	('plain',			 'inbox.triage'),
	('double quote',	 'say "hi".agent'),
	('single quote',	 'it''s.agent'),
	('backslash',		 E'back\\slash.agent'),
	('backslash-u',		 E'\\u0000.agent'),
	('tab newline cr',	 E'tab\there\nnew\rline'),
	('control chars',	 E'ctl\x01\x02\x1b\x1f\x7f.agent'),
	('json breakers',	 E'"},{"event":"forged","data":{"x":"\\'),
	('html',			 '</script><!--.agent'),
	('latin-1',			 'größe.agent'),
	('cjk',				 '日本語.エージェント'),
	('emoji',			 '🚨🔥.agent'),
	('line separator',	 'a b c'),
	('128 ascii',		 repeat('a', 128)),
	('128 control',		 repeat(E'\x01', 128)),
	('128 quotes',		 repeat('"', 128)),
	('128 backslashes',	 repeat('\', 128)),
	('128 bytes utf8',	 repeat('€', 42) || 'ab');
SELECT label, octet_length(agent) AS bytes FROM agents ORDER BY label;

-- What the payload is, rebuilt from the incident row and its created event
-- with the server's own JSON string escaping, in the payload's key order.
CREATE FUNCTION pg_temp.payload(i gate_bridge.incidents) RETURNS text
LANGUAGE sql AS $$
	SELECT format('{"event":"incident_created","data":{"id":%s,"kind":%s,"key":%s,"severity":%s,"summary":%s,"status":"open","created_at":%s,"agent":%s,"event_id":%s,"position":%s}}',
				  i.id, to_json(i.kind), to_json(i.key), to_json(i.severity),
				  to_json(i.summary),
				  to_json(to_char(i.first_seen_at AT TIME ZONE 'UTC',
								  'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
				  to_json(i.agent), e.id, e.position)
	  FROM gate_bridge.incident_events e
	 WHERE e.incident_id = i.id AND e.event = 'created'
$$;

-- For each incident: its created event, checked against the incident row.
CREATE FUNCTION pg_temp.check_created(kind_filter text)
RETURNS TABLE (label text, key_bytes int, payload_bytes int, one_event boolean,
			   keys_ok boolean, values_ok boolean, created_at_ok boolean,
			   detail_is_payload_data boolean)
LANGUAGE sql AS $$
	SELECT COALESCE(a.label, i.agent),
		   octet_length(i.key),
		   octet_length(pg_temp.payload(i)),
		   (SELECT count(*) FROM gate_bridge.incident_events e2
			 WHERE e2.incident_id = i.id AND e2.event = 'created') = 1,
		   ARRAY(SELECT jsonb_object_keys(ev.detail) ORDER BY 1)
			 = '{agent,created_at,id,key,kind,severity,status,summary}',
		   jsonb_typeof(ev.detail -> 'id') = 'number'
		   AND (ev.detail ->> 'id')::bigint = i.id
		   AND ev.detail ->> 'kind' = i.kind
		   AND ev.detail ->> 'key' = i.key
		   AND ev.detail ->> 'severity' = i.severity
		   AND ev.detail ->> 'summary' = i.summary
		   AND ev.detail ->> 'status' = 'open'
		   AND ev.detail ->> 'agent' = i.agent,
		   ev.detail ->> 'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$'
		   AND (ev.detail ->> 'created_at')::timestamptz
			   = date_trunc('second', i.first_seen_at),
		   (pg_temp.payload(i)::jsonb -> 'data') - 'event_id' - 'position' = ev.detail
	  FROM gate_bridge.incidents i
	  JOIN gate_bridge.incident_events ev ON ev.incident_id = i.id AND ev.event = 'created'
	  LEFT JOIN agents a ON a.agent = i.agent
	 WHERE i.kind = kind_filter
	 ORDER BY i.id
$$;

-------------------------------------------------------------------------------
-- Budget incidents from the trigger.
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('*', 'quality', 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality, context)
SELECT agent, 0.1, jsonb_build_object('label', label) FROM agents ORDER BY label;
SELECT count(*) AS incidents FROM gate_bridge.incidents;
SELECT * FROM pg_temp.check_created('budget');
-- keys and summaries keep the agent name exactly, byte for byte
SELECT a.label,
	   i.key = 'BUDGET_' || a.agent || '_quality' AS key_ok,
	   i.summary = 'Budget violation: ' || a.agent || ' quality' AS summary_ok,
	   i.agent = a.agent AS agent_ok,
	   i.details #>> '{violation,agent}' = a.agent AS details_ok
  FROM agents a JOIN gate_bridge.incidents i ON i.agent = a.agent
 ORDER BY a.label;
-- the plain case in full (created_at left out)
SELECT pg_temp.payload(i) ~ ('^\{"event":"incident_created","data":\{"id":' || i.id || ',"kind":"budget","key":"BUDGET_inbox\.triage_quality","severity":"sev1","summary":"Budget violation: inbox\.triage quality","status":"open","created_at":"[0-9T:Z-]{20}","agent":"inbox\.triage","event_id":[0-9]+,"position":[0-9]+\}\}$')
		AS plain_payload_ok
  FROM gate_bridge.incidents i WHERE i.agent = 'inbox.triage';
SELECT ev.detail - 'created_at' - 'id' AS detail
  FROM gate_bridge.incident_events ev
  JOIN gate_bridge.incidents i ON i.id = ev.incident_id
 WHERE i.agent = 'inbox.triage';
-- the escaping, shown for two ASCII names
SELECT label, ev.detail ->> 'key' AS key, (ev.detail -> 'key')::text AS key_as_json
  FROM agents a
  JOIN gate_bridge.incidents i ON i.agent = a.agent
  JOIN gate_bridge.incident_events ev ON ev.incident_id = i.id
 WHERE label IN ('double quote', 'json breakers')
 ORDER BY label;

-------------------------------------------------------------------------------
-- Invariant incidents, the names at the length limit of the key.
-------------------------------------------------------------------------------
-- "INVARIANT_" || agent || "_" || invariant is at most 255 bytes
INSERT INTO gate_bridge.eval_results (agent, invariants_failed)
SELECT agent, ARRAY[repeat(E'\x01', 255 - 11 - octet_length(agent)),
					 'inv "quoted" \ ' || E'\n']
  FROM agents WHERE label IN ('128 control', '128 quotes', '128 bytes utf8', 'emoji')
 ORDER BY label;
SELECT * FROM pg_temp.check_created('invariant');

-------------------------------------------------------------------------------
-- Planner incidents: "PLANNER_" || version is at most 255 bytes.
-------------------------------------------------------------------------------
INSERT INTO agents VALUES
	('planner: quotes newline', E'planner.v1.2.3 "rc1"\\\n'),
	('planner: 247 quotes',		'planner.' || repeat('"', 247)),
	('planner: 247 control',	'planner.' || repeat(E'\x1f', 247)),
	('planner: 247 bytes utf8', 'planner.' || repeat('€', 82) || 'a');
SELECT label, gate_bridge.on_planner_regression(substr(agent, 9), '{}', '{}', '{}') IS NOT NULL
		   AS created
  FROM agents WHERE label LIKE 'planner:%' ORDER BY label;
SELECT * FROM pg_temp.check_created('planner');

-------------------------------------------------------------------------------
-- Names given to the SQL functions are escaped alike.
-------------------------------------------------------------------------------
SELECT a.label,
	   gate_bridge.on_invariant_failure(jsonb_build_object('agent', a.agent),
										jsonb_build_object('invariant', 'no "pii"')) IS NOT NULL
		   AS created
  FROM agents a WHERE a.label IN ('json breakers', 'line separator', 'backslash-u')
 ORDER BY a.label;
SELECT a.label, i.key = 'INVARIANT_' || a.agent || '_no "pii"' AS key_ok,
	   (SELECT ev.detail ->> 'key' = i.key FROM gate_bridge.incident_events ev
		 WHERE ev.incident_id = i.id) AS detail_ok
  FROM agents a JOIN gate_bridge.incidents i ON i.agent = a.agent AND i.kind = 'invariant'
 WHERE a.label IN ('json breakers', 'line separator', 'backslash-u')
 ORDER BY a.label;

-- Over all incidents: the largest payload, and none at or over the limit.
SELECT max(octet_length(pg_temp.payload(i))) AS largest_payload,
	   count(*) FILTER (WHERE octet_length(pg_temp.payload(i)) >= 8000) AS too_large
  FROM gate_bridge.incidents i;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
