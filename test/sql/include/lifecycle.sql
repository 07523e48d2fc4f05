\set ECHO none
-- Shared by the lifecycle's golden tests: terse errors, a clean slate,
-- and helpers that print incidents and their timeline without times.
-- Not echoed: the expected outputs show only each test's own statements.
\set VERBOSITY terse
\set SHOW_CONTEXT never
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys, gate_bridge.silences
		 RESTART IDENTITY CASCADE;

-- Times are not printed: a value that is a timestamp shows as "(time)".
CREATE FUNCTION pg_temp.masked(d jsonb) RETURNS jsonb
LANGUAGE sql AS $$
	SELECT COALESCE(jsonb_object_agg(e.key,
			CASE WHEN jsonb_typeof(e.value) = 'string'
				  AND e.value #>> '{}' ~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d'
				 THEN '"(time)"'::jsonb ELSE e.value END), '{}')
	  FROM jsonb_each(d) e
$$;
CREATE FUNCTION pg_temp.state()
RETURNS TABLE (id bigint, key text, severity text, status text, occurrences integer,
			   snoozed boolean, silence_id bigint, flapping boolean, resolved_by text,
			   resolution_note text)
LANGUAGE sql AS $$
	SELECT i.id, i.key, i.severity, i.status, i.occurrences,
		   i.snoozed_until IS NOT NULL, i.silence_id, i.flapping,
		   CASE WHEN i.resolved_by = current_user THEN '(current_user)' ELSE i.resolved_by END,
		   i.resolution_note
	  FROM gate_bridge.incidents i ORDER BY i.id
$$;
CREATE FUNCTION pg_temp.timeline()
RETURNS TABLE (id bigint, incident_id bigint, event text, actor text,
			   detail jsonb, silenced boolean)
LANGUAGE sql AS $$
	SELECT ev.id, ev.incident_id, ev.event,
		   CASE WHEN ev.actor = current_user THEN '(current_user)' ELSE ev.actor END,
		   pg_temp.masked(ev.detail - 'created_at'), ev.silenced
	  FROM gate_bridge.incident_events ev ORDER BY ev.id
$$;
CREATE FUNCTION pg_temp.violation(agent text, severity text DEFAULT 'error')
RETURNS bigint LANGUAGE sql AS $$
	SELECT gate_bridge.on_budget_violation(jsonb_build_object(
		'agent', agent, 'budget_type', 'quality', 'severity', severity,
		'actual', 0.5, 'threshold', 0.7))
$$;
\set ECHO all
