-- Reference triggers on gate_bridge.eval_results, created disabled; the
-- benchmark enables one at a time as a point of comparison.
--
--   bench_noop_c  a C trigger that does nothing on INSERT: contrib lo's
--                 lo_manage() (it acts on UPDATE and DELETE only); the price
--                 of any AFTER ROW trigger written in C
--   bench_noop    a PL/pgSQL trigger that returns NULL
--   bench_update  a PL/pgSQL trigger that runs only the statement 1.1 ran
--                 for a repeated violation: the UPDATE of the unresolved
--                 incident's row (1.2 appends a fold instead)

CREATE EXTENSION lo;

CREATE FUNCTION public.bench_noop() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
	RETURN NULL;
END
$fn$;

CREATE FUNCTION public.bench_update() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
	UPDATE gate_bridge.incident_rows
	   SET occurrences = CASE WHEN occurrences < 2147483647
							  THEN occurrences + 1 ELSE occurrences END,
		   last_seen_at = GREATEST(last_seen_at, clock_timestamp())
	 WHERE kind = 'budget' AND key = 'BUDGET_' || NEW.agent || '_quality'
	   AND status <> 'resolved';
	RETURN NULL;
END
$fn$;

CREATE TRIGGER bench_noop_c AFTER INSERT ON gate_bridge.eval_results
	FOR EACH ROW EXECUTE FUNCTION public.lo_manage('agent');
CREATE TRIGGER bench_noop AFTER INSERT ON gate_bridge.eval_results
	FOR EACH ROW EXECUTE FUNCTION public.bench_noop();
CREATE TRIGGER bench_update AFTER INSERT ON gate_bridge.eval_results
	FOR EACH ROW EXECUTE FUNCTION public.bench_update();
ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER bench_noop_c;
ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER bench_noop;
ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER bench_update;
