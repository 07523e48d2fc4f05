-- Re-fire backoff: with gate_bridge.refire_backoff = '1h, 4h', a key whose
-- incident was resolved may open its next incident only 1 h after the
-- previous creation, then 4 h (the last step repeats); violations held back
-- count as rate limited.  The times are moved back with UPDATE.
\i test/sql/include/lifecycle.sql

CREATE FUNCTION pg_temp.key()
RETURNS TABLE (key text, created bigint, rate_limited bigint, refires integer)
LANGUAGE sql AS $$
	SELECT k.key, k.created, k.rate_limited, k.refires
	  FROM gate_bridge.incident_keys k ORDER BY k.key
$$;
-- the key's latest creation, some time ago
CREATE FUNCTION pg_temp.created_ago(ago interval) RETURNS void
LANGUAGE sql AS $$
	UPDATE gate_bridge.incident_keys SET last_created_at = now() - ago;
	UPDATE gate_bridge.incident_rows SET first_seen_at = now() - ago, last_seen_at = now() - ago
	 WHERE status = 'resolved';
$$;

SHOW gate_bridge.refire_backoff;
SHOW gate_bridge.backoff_reset;
SET gate_bridge.refire_backoff = '1h, 4h';
SHOW gate_bridge.refire_backoff;
SET gate_bridge.rate_limit = 100;
-- flapping is flapping.sql's: off here
SET gate_bridge.flap_threshold = 0;

-- the first incident of the chain, resolved
SELECT pg_temp.violation('fire.agent') AS id;
SELECT gate_bridge.resolve(1, 'regress_alice');
-- re-fires within the hour are held back (twice), counted as rate limited
SELECT pg_temp.violation('fire.agent') AS id;
SELECT pg_temp.violation('fire.agent') AS id;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.key();
SELECT * FROM gate_bridge.stats ORDER BY kind;

-- an hour after the first creation, the second incident is created
SELECT pg_temp.created_ago('61 minutes');
SELECT pg_temp.violation('fire.agent') AS id;
SELECT gate_bridge.resolve(2, 'regress_alice');
-- the next step is 4 h: 61 minutes is not enough, 3 h 59 min neither
SELECT pg_temp.created_ago('61 minutes');
SELECT pg_temp.violation('fire.agent') AS id;
SELECT pg_temp.created_ago('3 hours 59 minutes');
SELECT pg_temp.violation('fire.agent') AS id;
SELECT * FROM pg_temp.key();
-- 4 h 1 min: created; and the last step repeats
SELECT pg_temp.created_ago('4 hours 1 minute');
SELECT pg_temp.violation('fire.agent') AS id;
SELECT gate_bridge.resolve(3, 'regress_alice');
SELECT pg_temp.created_ago('2 hours');
SELECT pg_temp.violation('fire.agent') AS id;
SELECT * FROM pg_temp.state();
SELECT * FROM pg_temp.key();
SELECT * FROM gate_bridge.stats ORDER BY kind;
SELECT id, incident_id, event, silenced FROM pg_temp.timeline();

-- A key quiet for backoff_reset starts again from the first step.
SELECT pg_temp.created_ago('2 hours');
UPDATE gate_bridge.incident_keys SET last_rate_limited_at = now() - interval '25 hours';
UPDATE gate_bridge.incident_rows SET first_seen_at = now() - interval '26 hours',
	   last_seen_at = now() - interval '25 hours';
SELECT pg_temp.violation('fire.agent') IS NOT NULL AS created;
SELECT * FROM pg_temp.key();
SELECT gate_bridge.resolve(4, 'regress_alice');
SELECT pg_temp.violation('fire.agent') AS id;

-- Off (empty), a resolved key opens its next incident at once.
RESET gate_bridge.refire_backoff;
SELECT pg_temp.violation('fire.agent') IS NOT NULL AS created;
SELECT * FROM pg_temp.key();

-- The backoff is per key: another agent is not held back by this one.
SET gate_bridge.refire_backoff = '1h';
SELECT pg_temp.violation('other.agent') IS NOT NULL AS created;

-------------------------------------------------------------------------------
-- Settings: accepted and refused lists; only a superuser may change them.
-------------------------------------------------------------------------------
SET gate_bridge.refire_backoff = '1h,4h,12h';
SHOW gate_bridge.refire_backoff;
SET gate_bridge.refire_backoff = '30 min, 2 hours, 1 day';
SHOW gate_bridge.refire_backoff;
SET gate_bridge.refire_backoff = '';
SHOW gate_bridge.refire_backoff;
SET gate_bridge.refire_backoff = '366 days';
SHOW gate_bridge.refire_backoff;
SET gate_bridge.refire_backoff = 'soon';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '1h, later';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '0';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '1h, -1h';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '367 days';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '13 months';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.refire_backoff = '1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h,1h';
\echo :LAST_ERROR_SQLSTATE
SHOW gate_bridge.refire_backoff;
SET gate_bridge.backoff_reset = '12h';
SHOW gate_bridge.backoff_reset;
SET gate_bridge.backoff_reset = 0;
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.backoff_reset = '367d';
\echo :LAST_ERROR_SQLSTATE
SHOW gate_bridge.backoff_reset;
RESET gate_bridge.refire_backoff;
RESET gate_bridge.backoff_reset;
RESET gate_bridge.rate_limit;
RESET gate_bridge.flap_threshold;
CREATE ROLE regress_backoff_app;
SET ROLE regress_backoff_app;
SET gate_bridge.refire_backoff = '1h';
\echo :LAST_ERROR_SQLSTATE
SET gate_bridge.backoff_reset = '1h';
\echo :LAST_ERROR_SQLSTATE
SHOW gate_bridge.refire_backoff;
RESET ROLE;
DROP ROLE regress_backoff_app;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;
