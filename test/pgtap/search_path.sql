-- search_path attacks: a writer plants functions and operators that shadow
-- the ones gate_bridge's queries use in a schema it owns, and puts that
-- schema ahead of pg_catalog.  Its inserts, the operator's ack/resolve and
-- an administrator's calls of the SQL API made with that search_path must
-- not call any of them, although gate_bridge's work runs as the extension
-- owner.  Each planted object records every call in a table.
--
-- This file must run in a fresh session: gate_bridge prepares its
-- statements once per backend, and the point is that they are prepared
-- under the hostile search_path.  Nothing may call a pgTAP function while
-- that search_path is set (pgTAP's own queries would call the planted
-- operators), so the attacks are plain statements and the checks follow.
BEGIN;
SELECT plan(9);

CREATE ROLE regress_sp_writer;
CREATE ROLE regress_sp_operator;

-- The documented grants, plus CREATE on the database for the attacker.
GRANT USAGE ON SCHEMA gate_bridge TO regress_sp_writer, regress_sp_operator;
GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
			  invariants_failed, planner_version, triggered_by, context, created_at)
	ON gate_bridge.eval_results TO regress_sp_writer;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
	gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats
	TO regress_sp_operator;
GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),
	gate_bridge.resolve(bigint, text, text) TO regress_sp_operator;
DO $$
BEGIN
	EXECUTE format('GRANT CREATE ON DATABASE %I TO regress_sp_writer', current_database());
END
$$;

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('warehouse.regress_sp', 'quality', 0.9, 0.8, 0.5);
-- so that the third violation below is rate limited
SET LOCAL gate_bridge.rate_limit = 1;

-------------------------------------------------------------------------------
-- The writer plants its traps.
-------------------------------------------------------------------------------
SET ROLE regress_sp_writer;

CREATE SCHEMA regress_evil;
GRANT USAGE ON SCHEMA regress_evil TO PUBLIC;
CREATE TABLE regress_evil.calls (
	fn		text NOT NULL,
	caller	name NOT NULL DEFAULT current_user
);
GRANT INSERT ON regress_evil.calls TO PUBLIC;

CREATE FUNCTION regress_evil.now() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('now()');
	RETURN pg_catalog.now();
END
$$;

CREATE FUNCTION regress_evil.suggest_playbooks(text, text) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('suggest_playbooks(text,text)');
	RETURN ARRAY['regress_hijacked'];
END
$$;

CREATE FUNCTION regress_evil.pattern_rank(text, text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('pattern_rank(text,text)');
	RETURN 0;
END
$$;

CREATE FUNCTION regress_evil.jsonb_build_object(text, text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('jsonb_build_object(text,text)');
	RETURN '{"regress": "hijacked"}'::jsonb;
END
$$;

CREATE FUNCTION regress_evil.texteq(text, text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('=(text,text)');
	RETURN pg_catalog.texteq($1, $2);
END
$$;
CREATE OPERATOR regress_evil.= (
	LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.texteq);

CREATE FUNCTION regress_evil.textne(text, text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('<>(text,text)');
	RETURN pg_catalog.textne($1, $2);
END
$$;
CREATE OPERATOR regress_evil.<> (
	LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.textne);

CREATE FUNCTION regress_evil.int4pl(integer, integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('+(integer,integer)');
	RETURN pg_catalog.int4pl($1, $2);
END
$$;
CREATE OPERATOR regress_evil.+ (
	LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_evil.int4pl);

CREATE FUNCTION regress_evil.int4lt(integer, integer) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('<(integer,integer)');
	RETURN pg_catalog.int4lt($1, $2);
END
$$;
CREATE OPERATOR regress_evil.< (
	LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_evil.int4lt);

CREATE FUNCTION regress_evil.timestamptz_gt(timestamptz, timestamptz) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('>(timestamptz,timestamptz)');
	RETURN pg_catalog.timestamptz_gt($1, $2);
END
$$;
CREATE OPERATOR regress_evil.> (
	LEFTARG = timestamptz, RIGHTARG = timestamptz,
	FUNCTION = regress_evil.timestamptz_gt);

CREATE FUNCTION regress_evil.int84pl(bigint, integer) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('+(bigint,integer)');
	RETURN pg_catalog.int84pl($1, $2);
END
$$;
CREATE OPERATOR regress_evil.+ (
	LEFTARG = bigint, RIGHTARG = integer, FUNCTION = regress_evil.int84pl);

CREATE FUNCTION regress_evil.int8eq(bigint, bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('=(bigint,bigint)');
	RETURN pg_catalog.int8eq($1, $2);
END
$$;
CREATE OPERATOR regress_evil.= (
	LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.int8eq);

CREATE FUNCTION regress_evil.count_step(bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES ('count(*)');
	RETURN pg_catalog.int8inc($1);
END
$$;
CREATE AGGREGATE regress_evil.count(*) (
	SFUNC = regress_evil.count_step, STYPE = bigint, INITCOND = '0');

-------------------------------------------------------------------------------
-- The attacks.
-------------------------------------------------------------------------------
-- The writer's inserts: a budget and an invariant incident are created
-- (budget cache load, key row, window count, incident, playbooks, timeline),
-- and the repeat is folded in (dedup).  The violations are decided at
-- commit, under the search_path then in force; decide_pending() decides them
-- now, with the writer's.
SET search_path = regress_evil, pg_catalog;
INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
VALUES ('warehouse.regress_sp', 0.1, '{regress_inv}');
INSERT INTO gate_bridge.eval_results (agent, quality)
VALUES ('warehouse.regress_sp', 0.2);
SELECT gate_bridge.decide_pending() \g /dev/null
RESET search_path;
RESET ROLE;

SELECT id AS budget_id FROM gate_bridge.incidents
 WHERE key = 'BUDGET_warehouse.regress_sp_quality' \gset
SELECT id AS invariant_id FROM gate_bridge.incidents
 WHERE key = 'INVARIANT_warehouse.regress_sp_regress_inv' \gset

-- The operator acks and resolves with the writer's schema first in its path.
SET ROLE regress_sp_operator;
SET search_path = regress_evil, pg_catalog;
SELECT gate_bridge.ack(:budget_id) \g /dev/null
SELECT gate_bridge.resolve(:budget_id, 'regress_sp_operator', 'regress note') \g /dev/null
SELECT gate_bridge.resolve(:invariant_id) \g /dev/null
RESET search_path;
RESET ROLE;

-- The writer's next violation of the resolved key is rate limited.
SET ROLE regress_sp_writer;
SET search_path = regress_evil, pg_catalog;
INSERT INTO gate_bridge.eval_results (agent, quality)
VALUES ('warehouse.regress_sp', 0.1);
SELECT gate_bridge.decide_pending() \g /dev/null
RESET search_path;
RESET ROLE;

-- An administrator who put a schema the writer controls on its path calls
-- the SQL API.
SET search_path = regress_evil, pg_catalog;
SELECT gate_bridge.on_budget_violation(
	'{"agent": "warehouse.regress_sp", "budget_type": "cost", "severity": "critical",
	  "actual": 9, "threshold": 1}') \g /dev/null
SELECT gate_bridge.on_invariant_failure(
	'{"agent": "warehouse.regress_sp"}', '{"invariant": "regress_api_inv"}') \g /dev/null
SELECT gate_bridge.on_planner_regression(
	'regress-sp-1', '{}', '{}', '{"severity": "warning"}') \g /dev/null
SELECT gate_bridge.on_gate_failure('warehouse.regress_sp', '{}',
	'[{"budget_type": "latency", "severity": "error", "actual": 900, "threshold": 500}]') \g /dev/null
SELECT gate_bridge.suggest_playbooks('quality', 'warehouse.regress_sp') \g /dev/null
RESET search_path;

-------------------------------------------------------------------------------
-- The checks.
-------------------------------------------------------------------------------
SELECT is_empty('SELECT fn, caller FROM regress_evil.calls',
				'gate_bridge called none of the objects planted in the writer''s schema');

SELECT results_eq($$
	SELECT key, status, occurrences, playbooks
	  FROM gate_bridge.incidents WHERE agent = 'warehouse.regress_sp' ORDER BY key
$$, $$ VALUES
	('BUDGET_warehouse.regress_sp_cost', 'open', 1, '{rerun_eval,adjust_canary_split}'::text[]),
	('BUDGET_warehouse.regress_sp_latency', 'open', 1, '{rerun_eval}'),
	('BUDGET_warehouse.regress_sp_quality', 'resolved', 2, '{rerun_eval,rerun_dbt}'),
	('INVARIANT_warehouse.regress_sp_regress_api_inv', 'open', 1, '{rerun_eval,rerun_dbt}'),
	('INVARIANT_warehouse.regress_sp_regress_inv', 'resolved', 1, '{rerun_eval,rerun_dbt}')
$$, 'the incidents were created, folded and resolved as usual, with the real playbooks');

SELECT ok((SELECT playbooks @> ARRAY['rollback_planner']
				   AND NOT playbooks @> ARRAY['regress_hijacked']
			  FROM gate_bridge.incidents
			 WHERE kind = 'planner' AND key = 'PLANNER_regress-sp-1'),
		  'the planner incident was created with the real playbooks');

SELECT results_eq($$
	SELECT created, rate_limited FROM gate_bridge.incident_keys
	 WHERE kind = 'budget' AND key = 'BUDGET_warehouse.regress_sp_quality'
$$, $$ VALUES (1::bigint, 1::bigint) $$,
'the third violation of the quality budget was rate limited');

SELECT results_eq(format($$
	SELECT event, actor, detail->>'key', detail->>'note' FROM gate_bridge.incident_events
	 WHERE incident_id = %s ORDER BY id
$$, :budget_id), $$ VALUES
	('created', 'regress_sp_writer', 'BUDGET_warehouse.regress_sp_quality', NULL),
	('acked', 'regress_sp_operator', NULL, NULL),
	('resolved', 'regress_sp_operator', NULL, 'regress note')
$$, 'the timeline of the attacked incident is exact');

SELECT is((SELECT count(*) FROM gate_bridge.eval_results
			WHERE agent = 'warehouse.regress_sp'),
		  3::bigint, 'the writer''s rows were stored');

-------------------------------------------------------------------------------
-- The traps work: a query that does not protect itself calls every one.
-------------------------------------------------------------------------------
SET ROLE regress_sp_writer;
SET search_path = regress_evil, pg_catalog;
SELECT now() > now(), 'a'::text = 'b', 'a'::text <> 'b', 1 + 1 < 3,
	   1::bigint + 1 = 2::bigint,
	   suggest_playbooks('quality', 'warehouse.x'), pattern_rank('*', 'x'),
	   jsonb_build_object('note', 'x'::text), (SELECT count(*) FROM (VALUES (1)) v)
	   \g /dev/null
RESET search_path;
RESET ROLE;

SELECT set_eq('SELECT DISTINCT fn FROM regress_evil.calls', ARRAY[
	'now()', '>(timestamptz,timestamptz)', '=(text,text)', '<>(text,text)',
	'+(integer,integer)', '<(integer,integer)', '+(bigint,integer)', '=(bigint,bigint)',
	'count(*)', 'suggest_playbooks(text,text)',
	'pattern_rank(text,text)', 'jsonb_build_object(text,text)'],
	'the planted objects do capture unprotected queries');
SELECT is((SELECT count(*) FROM regress_evil.calls WHERE caller <> 'regress_sp_writer'),
		  0::bigint, 'and only the writer''s own query called them');
SELECT is(current_user, session_user, 'back to the session user');

SELECT * FROM finish();
ROLLBACK;
