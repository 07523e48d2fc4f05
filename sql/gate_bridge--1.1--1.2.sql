/* gate_bridge 1.1 -> 1.2 */

\echo Use "ALTER EXTENSION gate_bridge UPDATE TO '1.2'" to load this file. \quit

/*
 * Every object this script creates is new in 1.2 and is created without
 * OR REPLACE or IF NOT EXISTS, except the functions and views of 1.1 that it
 * redefines (they are the extension's own members already).
 */

-------------------------------------------------------------------------------
-- The trigger function's name, as the design card gives it.  The C symbol
-- stays: the library serves every installed version.
-------------------------------------------------------------------------------
ALTER FUNCTION gate_bridge.eval_results_gate() RENAME TO gate_bridge_on_violation;

-------------------------------------------------------------------------------
-- Unambiguous keys.  A key is identified by (kind, agent, subject); the key
-- text (BUDGET_{agent}_{budget_type}, INVARIANT_{agent}_{invariant},
-- PLANNER_{version}) stays for display and payloads.  Agents "billing",
-- "billing_bot" and "billing_bot_no" with invariants "bot_no_pii", "no_pii"
-- and "pii" spell one key text, and 1.1 folded them into one incident.
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.incidents ADD COLUMN subject text;

-- The subject is what the key text names after the agent: the budget type,
-- the invariant, the planner version.  Rows that do not follow the rules
-- (written by the owner by hand) keep their whole key as the subject.
UPDATE gate_bridge.incidents i
   SET subject = CASE
		WHEN i.kind OPERATOR(pg_catalog.=) 'budget'
			 AND i.key OPERATOR(pg_catalog.=) ('BUDGET_' OPERATOR(pg_catalog.||) i.agent
											   OPERATOR(pg_catalog.||) '_'
											   OPERATOR(pg_catalog.||) i.violation_type)
			THEN i.violation_type
		WHEN i.kind OPERATOR(pg_catalog.=) 'invariant'
			 AND pg_catalog.left(i.key, pg_catalog.length('INVARIANT_' OPERATOR(pg_catalog.||) i.agent OPERATOR(pg_catalog.||) '_'))
				 OPERATOR(pg_catalog.=) ('INVARIANT_' OPERATOR(pg_catalog.||) i.agent OPERATOR(pg_catalog.||) '_')
			THEN pg_catalog.substr(i.key, pg_catalog.length('INVARIANT_' OPERATOR(pg_catalog.||) i.agent OPERATOR(pg_catalog.||) '_') OPERATOR(pg_catalog.+) 1)
		WHEN i.kind OPERATOR(pg_catalog.=) 'planner'
			 AND pg_catalog.left(i.key, 8) OPERATOR(pg_catalog.=) 'PLANNER_'
			THEN pg_catalog.substr(i.key, 9)
		ELSE i.key
	   END;
ALTER TABLE gate_bridge.incidents ALTER COLUMN subject SET NOT NULL;

DROP INDEX gate_bridge.incidents_unresolved_key_idx;
DROP INDEX gate_bridge.incidents_kind_key_first_seen_idx;
CREATE UNIQUE INDEX incidents_unresolved_idx
	ON gate_bridge.incidents (kind, agent, subject) WHERE status <> 'resolved';
CREATE INDEX incidents_kind_agent_subject_first_seen_idx
	ON gate_bridge.incidents (kind, agent, subject, first_seen_at);

ALTER TABLE gate_bridge.incident_keys ADD COLUMN agent text, ADD COLUMN subject text;
-- Each key row goes to the identity of the newest incident that spells its
-- text: where 1.1 merged several identities into one row, their counters
-- stay together under one of them (the totals in stats do not change).
UPDATE gate_bridge.incident_keys k
   SET agent = i.agent, subject = i.subject
  FROM (SELECT DISTINCT ON (i2.kind, i2.key) i2.kind, i2.key, i2.agent, i2.subject
		  FROM gate_bridge.incidents i2
		 WHERE i2.agent IS NOT NULL
		 ORDER BY i2.kind, i2.key, i2.first_seen_at DESC, i2.id DESC) i
 WHERE i.kind OPERATOR(pg_catalog.=) k.kind AND i.key OPERATOR(pg_catalog.=) k.key;
-- a key row whose incidents were all deleted by hand decides nothing again
UPDATE gate_bridge.incident_keys k
   SET agent = '', subject = k.key
 WHERE k.agent IS NULL;
ALTER TABLE gate_bridge.incident_keys
	DROP CONSTRAINT incident_keys_pkey,
	ALTER COLUMN agent SET NOT NULL,
	ALTER COLUMN subject SET NOT NULL,
	ADD PRIMARY KEY (kind, agent, subject);

COMMENT ON TABLE gate_bridge.incident_keys IS
	'Per (kind, agent, subject) decision counters; serialises incident creation for a key';

-------------------------------------------------------------------------------
-- open_incidents shows details too (a new last column).
-------------------------------------------------------------------------------
CREATE OR REPLACE VIEW gate_bridge.open_incidents AS
	SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity, i.status,
		   i.summary, i.playbooks, i.occurrences, i.first_seen_at, i.last_seen_at,
		   i.acked_at, i.acked_by, i.details
	  FROM gate_bridge.incidents i
	 WHERE i.status <> 'resolved'
	 ORDER BY i.severity, i.first_seen_at, i.id;

-------------------------------------------------------------------------------
-- One event stream: positions in commit order.  The events of 1.1 keep
-- their ids as positions, so a 1.1 listener's cursor is a position.
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.incident_events ADD COLUMN position bigint;
UPDATE gate_bridge.incident_events SET position = id;
COMMENT ON TABLE gate_bridge.incident_events IS
	'Incident timeline, one row per lifecycle change; consumers read it in commit order with gate_bridge.events_after()';

-------------------------------------------------------------------------------
-- One event stream.  Every event gets a stream position when its
-- transaction commits (src/stream.c): a consumer that stores the last
-- position it processed and asks for what comes after it never misses and
-- never repeats an event, and is held back by no uncommitted transaction.
-------------------------------------------------------------------------------

-- Not owned by incident_events, so that TRUNCATE ... RESTART IDENTITY cannot
-- hand out positions a consumer has already read.
CREATE SEQUENCE gate_bridge.incident_events_position_seq AS bigint;
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.incident_events_position_seq', '');

CREATE UNIQUE INDEX incident_events_position_idx
	ON gate_bridge.incident_events (position);

COMMENT ON COLUMN gate_bridge.incident_events.position IS
	'Stream position, in commit order; set when the event''s transaction commits';

-- At most one row, written by the first transaction that takes positions:
-- for which server start the positions are being handed out (a restart, a
-- failover or a restore begins a new history), and the notifications
-- skipped because PostgreSQL's notification queue was nearly full.
CREATE TABLE gate_bridge.stream_status (
	singleton				boolean PRIMARY KEY DEFAULT true,
	server_started_at		timestamptz,
	notifications_skipped	bigint NOT NULL DEFAULT 0,
	last_skipped_at			timestamptz,
	last_logged_at			timestamptz,
	CONSTRAINT stream_status_one_row CHECK (singleton)
);
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.stream_status', '');

COMMENT ON TABLE gate_bridge.stream_status IS
	'The event stream''s state: the server start its positions belong to, and notifications skipped because the queue was nearly full';

CREATE FUNCTION gate_bridge.events_recorded() RETURNS trigger
AS 'MODULE_PATHNAME', 'gate_bridge_events_recorded'
LANGUAGE C;

-- Events inserted in a transaction are numbered when it commits (rows
-- that bring a position, as a restore does, keep it).
CREATE TRIGGER gate_bridge_events_recorded
	AFTER INSERT ON gate_bridge.incident_events
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.events_recorded();

-- The last position this server holds at or before "after" (0 if none):
-- where a consumer whose position was rewound resumes.
CREATE FUNCTION gate_bridge.events_resume_point(after bigint)
RETURNS bigint
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT COALESCE((SELECT e.position FROM gate_bridge.incident_events e
					  WHERE e.position <= $1
					  ORDER BY e.position DESC LIMIT 1), 0)
$fn$;

-- The newest committed position: where a consumer starting "from now"
-- begins.  Events still in flight get higher positions when they commit.
CREATE FUNCTION gate_bridge.events_head()
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT COALESCE((SELECT e.position FROM gate_bridge.incident_events e
					  WHERE e.position IS NOT NULL
					  ORDER BY e.position DESC LIMIT 1), 0)
$fn$;

/*
 * events_after(after, max_rows): the committed events after stream
 * position "after", in position order, at most max_rows of them.  No event
 * can later appear at or below the last one returned.  One snapshot (the
 * function is STABLE) serves the check and the rows.
 *
 * A position the server does not hold means the history was rewound under
 * the consumer (a failover to a standby that was behind, a crash with
 * asynchronous commit, a restore of an older dump, a TRUNCATE): SQLSTATE
 * SR001, with the resume point in the message's detail; the consumer
 * resumes from events_resume_point(after) and so never skips an event the
 * server holds.  On a standby, a position above the newest it holds has
 * not been replayed yet: nothing is returned until it has (a standby's
 * history is rewound only by following a new primary, whose positions
 * start above all of the old ones, so SR001 comes once they arrive).
 * Callers need SELECT on incident_events.
 */
CREATE FUNCTION gate_bridge.events_after(after bigint DEFAULT 0, max_rows integer DEFAULT 500)
RETURNS SETOF gate_bridge.incident_events
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF events_after.after IS NULL OR events_after.after < 0 THEN
		RAISE EXCEPTION 'after must be a stream position (0 or more), not %',
			COALESCE(events_after.after::text, 'NULL')
			USING ERRCODE = '22023';
	END IF;
	IF events_after.max_rows IS NULL OR events_after.max_rows < 1
	   OR events_after.max_rows > 10000 THEN
		RAISE EXCEPTION 'max_rows must be between 1 and 10000, not %',
			COALESCE(events_after.max_rows::text, 'NULL')
			USING ERRCODE = '22023';
	END IF;
	IF events_after.after > 0
	   AND NOT EXISTS (SELECT FROM gate_bridge.incident_events e
					   WHERE e.position = events_after.after) THEN
		IF pg_catalog.pg_is_in_recovery()
		   AND NOT EXISTS (SELECT FROM gate_bridge.incident_events e
						   WHERE e.position > events_after.after) THEN
			RETURN;
		END IF;
		RAISE EXCEPTION 'the event stream has no position %', events_after.after
			USING ERRCODE = 'SR001',
				  DETAIL = format('The stream was rewound (a failover, a crash with asynchronous commit, a restore or a TRUNCATE); the last position this server holds before it is %s.',
								  gate_bridge.events_resume_point(events_after.after)),
				  HINT = 'Resume from gate_bridge.events_resume_point(position).';
	END IF;
	RETURN QUERY
		SELECT e.* FROM gate_bridge.incident_events e
		 WHERE e.position > events_after.after
		 ORDER BY e.position
		 LIMIT events_after.max_rows;
END
$fn$;

COMMENT ON FUNCTION gate_bridge.events_after(bigint, integer) IS
	'Committed incident events after a stream position, in commit order; SQLSTATE SR001 when the position was rewound';

SELECT pg_catalog.setval('gate_bridge.incident_events_position_seq', pg_catalog.max(e.position))
  FROM gate_bridge.incident_events e
HAVING pg_catalog.max(e.position) IS NOT NULL;
-- the positions above belong to the running server's history
INSERT INTO gate_bridge.stream_status (server_started_at)
SELECT pg_catalog.pg_postmaster_start_time()
 WHERE EXISTS (SELECT FROM gate_bridge.incident_events);
REVOKE ALL ON gate_bridge.incident_events_position_seq, gate_bridge.stream_status FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.events_recorded(), gate_bridge.events_resume_point(bigint),
	gate_bridge.events_head(), gate_bridge.events_after(bigint, integer) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Budgets changed by logical replication reach a subscriber's caches.
-------------------------------------------------------------------------------
-- Logical replication applies rows with row triggers only: this one tells
-- the caches of a subscriber's sessions about replicated budget changes.
-- It fires only in replica mode, so ordinary sessions pay nothing.
CREATE TRIGGER gate_bridge_budgets_replicated
	AFTER INSERT OR UPDATE OR DELETE ON gate_bridge.budgets
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.budgets_changed();
ALTER TABLE gate_bridge.budgets ENABLE REPLICA TRIGGER gate_bridge_budgets_replicated;

-------------------------------------------------------------------------------
-- Rules defined once, in C.  Agent names and patterns: the CHECK constraints
-- call the library's rules.  Each constraint is replaced NOT VALID and then
-- validated against the rows already stored (which the old definition,
-- accepting the same values, has let in).
-------------------------------------------------------------------------------
CREATE FUNCTION gate_bridge.valid_agent_name(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'gate_bridge_valid_agent_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION gate_bridge.valid_agent_pattern(pattern text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'gate_bridge_valid_agent_pattern'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

REVOKE ALL ON FUNCTION gate_bridge.valid_agent_name(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.valid_agent_pattern(text) FROM PUBLIC;
-- the CHECK constraints call them for whoever writes the tables
GRANT EXECUTE ON FUNCTION gate_bridge.valid_agent_name(text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION gate_bridge.valid_agent_pattern(text) TO PUBLIC;

ALTER TABLE gate_bridge.eval_results DROP CONSTRAINT eval_results_agent_check;
ALTER TABLE gate_bridge.eval_results ADD CONSTRAINT eval_results_agent_check
	CHECK (gate_bridge.valid_agent_name(agent)) NOT VALID;
ALTER TABLE gate_bridge.eval_results VALIDATE CONSTRAINT eval_results_agent_check;

ALTER TABLE gate_bridge.budgets DROP CONSTRAINT budgets_agent_pattern_check;
ALTER TABLE gate_bridge.budgets ADD CONSTRAINT budgets_agent_pattern_check
	CHECK (gate_bridge.valid_agent_pattern(agent_pattern)) NOT VALID;
ALTER TABLE gate_bridge.budgets VALIDATE CONSTRAINT budgets_agent_pattern_check;

ALTER TABLE gate_bridge.playbook_rules DROP CONSTRAINT playbook_rules_agent_pattern_check;
ALTER TABLE gate_bridge.playbook_rules ADD CONSTRAINT playbook_rules_agent_pattern_check
	CHECK (gate_bridge.valid_agent_pattern(agent_pattern)) NOT VALID;
ALTER TABLE gate_bridge.playbook_rules VALIDATE CONSTRAINT playbook_rules_agent_pattern_check;

-------------------------------------------------------------------------------
-- Budgets: the type and the thresholds are checked by a C trigger with the
-- rules next to the tiers, which now also refuses inverted tiers and
-- thresholds outside the metric's domain.  The CHECK constraints of 1.0
-- that it covers go.  Stored budgets that break the new rules are kept and
-- keep applying; each is reported.
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.budgets
	DROP CONSTRAINT budgets_budget_type_check,
	DROP CONSTRAINT budgets_threshold_check,
	DROP CONSTRAINT budgets_warning_check,
	DROP CONSTRAINT budgets_error_check,
	DROP CONSTRAINT budgets_critical_check;

CREATE FUNCTION gate_bridge.budgets_guard() RETURNS trigger
AS 'MODULE_PATHNAME', 'gate_bridge_budgets_guard'
LANGUAGE C;
REVOKE ALL ON FUNCTION gate_bridge.budgets_guard() FROM PUBLIC;

CREATE TRIGGER budgets_guard
	BEFORE INSERT OR UPDATE ON gate_bridge.budgets
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.budgets_guard();
ALTER TABLE gate_bridge.budgets ENABLE ALWAYS TRIGGER budgets_guard;

CREATE FUNCTION gate_bridge.budget_problem(budget_type text, warning float8,
										   error float8, critical float8)
RETURNS text
AS 'MODULE_PATHNAME', 'gate_bridge_budget_problem'
LANGUAGE C IMMUTABLE PARALLEL SAFE;
REVOKE ALL ON FUNCTION gate_bridge.budget_problem(text, float8, float8, float8) FROM PUBLIC;

DO $report$
DECLARE
	bad record;
BEGIN
	FOR bad IN
		SELECT b.agent_pattern, b.budget_type,
			   gate_bridge.budget_problem(b.budget_type, b.warning, b.error, b.critical) AS problem
		  FROM gate_bridge.budgets b
		 WHERE gate_bridge.budget_problem(b.budget_type, b.warning, b.error, b.critical) IS NOT NULL
		 ORDER BY b.agent_pattern COLLATE "C", b.budget_type COLLATE "C"
	LOOP
		RAISE WARNING 'budget "%" (%) breaks a rule of gate_bridge 1.2: %',
			bad.agent_pattern, bad.budget_type, bad.problem
			USING HINT = 'It is kept and still applies.  Correct it with UPDATE, or delete it: '
						 'budgets_guard refuses it on INSERT, so a dump of this database would not restore it.';
	END LOOP;
END
$report$;

-------------------------------------------------------------------------------
-- Gates in C, with the trigger's budget cache and tiers; each metric over
-- its own budget's lookback unless one is given.
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION gate_bridge.window_start(lookback interval)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'gate_bridge_window_start'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE OR REPLACE FUNCTION gate_bridge.evaluate_agent(agent text, lookback interval DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'gate_bridge_evaluate_agent'
LANGUAGE C STABLE;

COMMENT ON FUNCTION gate_bridge.evaluate_agent(text, interval) IS
	'Checks an agent''s averages, latency p95 and failed invariants over each budget''s lookback (or the one given) against its budgets';

-- run_gates gains columns (status, insufficient) and an argument
-- (min_samples), so it is created anew.  The privileges granted
-- on it (the README's pg_cron job) are granted again, with grant option
-- where they had it.
ALTER FUNCTION gate_bridge.run_gates(text, interval, boolean) RENAME TO run_gates_1_1;

CREATE FUNCTION gate_bridge.run_gates(
	agent text DEFAULT NULL, lookback interval DEFAULT NULL,
	create_incidents boolean DEFAULT false, min_samples integer DEFAULT NULL)
RETURNS TABLE (agent text, status text, passed boolean, samples bigint,
			   violations jsonb, insufficient jsonb, incident_ids bigint[])
AS 'MODULE_PATHNAME', 'gate_bridge_run_gates'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION gate_bridge.run_gates(text, interval, boolean, integer) FROM PUBLIC;

COMMENT ON FUNCTION gate_bridge.run_gates(text, interval, boolean, integer) IS
	'Evaluates every agent with a budget (or the one named) and, with create_incidents, opens incidents for the violations';

DO $regrant$
DECLARE
	g record;
BEGIN
	FOR g IN
		SELECT a.grantee, a.is_grantable
		  FROM pg_catalog.pg_proc p,
			   pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner)))
				   WITH ORDINALITY AS a (grantor, grantee, privilege_type, is_grantable, n)
		 WHERE p.oid OPERATOR(pg_catalog.=)
			   'gate_bridge.run_gates_1_1(text, interval, boolean)'::pg_catalog.regprocedure
		   AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
		   AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
		 ORDER BY a.n
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION gate_bridge.run_gates(text, interval, boolean, integer) TO %s%s',
								  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
									   ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
								  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
	END LOOP;
END
$regrant$;

DROP FUNCTION gate_bridge.run_gates_1_1(text, interval, boolean);
DROP FUNCTION gate_bridge.run_gates_impl(text, interval, boolean);

-------------------------------------------------------------------------------
-- Deciding now.  The trigger's violations are decided when their transaction
-- commits, in key order; decide_pending() decides those of the current
-- (sub)transaction's rows at once (a test that rolls back, say).  It acts
-- only on the caller's own transaction, so anyone may call it.
-------------------------------------------------------------------------------
CREATE FUNCTION gate_bridge.decide_pending()
RETURNS bigint
AS 'MODULE_PATHNAME', 'gate_bridge_decide_pending'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION gate_bridge.decide_pending() IS
	'Decides now the violations of the rows this (sub)transaction inserted, which are otherwise decided at commit; returns the number of keys decided';
GRANT EXECUTE ON FUNCTION gate_bridge.decide_pending() TO PUBLIC;

-------------------------------------------------------------------------------
-- Playbook suggestions in C, from a per-backend cache of the rules that a
-- trigger on playbook_rules empties (src/playbooks.c): creating an incident
-- no longer runs a query for them.  Same signature and result as 1.1's SQL
-- function.
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION gate_bridge.suggest_playbooks(violation_type text, agent text)
RETURNS text[]
AS 'MODULE_PATHNAME', 'gate_bridge_suggest_playbooks'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;

CREATE FUNCTION gate_bridge.playbook_rules_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'gate_bridge_playbook_rules_changed'
LANGUAGE C;

-- Tells every backend's playbook cache that the rules changed (on commit),
-- also in replica mode; and, for logical replication, which applies rows
-- with row triggers only, a row trigger that fires in replica mode alone.
CREATE TRIGGER playbook_rules_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gate_bridge.playbook_rules
	FOR EACH STATEMENT EXECUTE FUNCTION gate_bridge.playbook_rules_changed();
ALTER TABLE gate_bridge.playbook_rules ENABLE ALWAYS TRIGGER playbook_rules_changed;
CREATE TRIGGER playbook_rules_replicated
	AFTER INSERT OR UPDATE OR DELETE ON gate_bridge.playbook_rules
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.playbook_rules_changed();
ALTER TABLE gate_bridge.playbook_rules ENABLE REPLICA TRIGGER playbook_rules_replicated;
REVOKE ALL ON FUNCTION gate_bridge.playbook_rules_changed() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Retention
-------------------------------------------------------------------------------

/*
 * purge_eval_results(older_than, batch_size, cut_windows): deletes the rows
 * of eval_results created before now() - older_than, batch_size rows per
 * transaction, committing after each batch (src/retention.c), and returns
 * the number of rows deleted in "deleted" (the value passed in is ignored).
 *
 * A procedure, so that it can commit between batches: locks last one
 * batch, each batch's dead rows can be vacuumed at once, and the xmin
 * horizon is never held back for longer than a batch.  For the same reason
 * it is not SECURITY DEFINER and has no SET clause (either would make
 * PostgreSQL run it atomically); it does its work as the extension's owner
 * with search_path pinned, as the trigger does, so EXECUTE on it is all a
 * caller needs.  It refuses to run inside a transaction block (25001).
 *
 * older_than must be positive (22023) and, unless cut_windows, reach at
 * least as far back as the window of every enabled budget (22023), so that
 * no gate loses a row it reads.  batch_size: 1 to 100000 (22023).
 */
CREATE PROCEDURE gate_bridge.purge_eval_results(
	older_than interval, batch_size integer DEFAULT 10000,
	cut_windows boolean DEFAULT false, INOUT deleted bigint DEFAULT NULL)
AS 'MODULE_PATHNAME', 'gate_bridge_purge_eval_results'
LANGUAGE C;
REVOKE ALL ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint) FROM PUBLIC;

COMMENT ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint) IS
	'Deletes eval rows created before now() - older_than, in batches that commit one by one; returns the rows deleted';

-------------------------------------------------------------------------------
-- No hot row.  A violation that folds into an unresolved incident appends
-- a row to incident_folds instead of updating the incident's row; the
-- table becomes incident_rows, and gate_bridge.incidents a view with the
-- same columns that adds the folds in.
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.incidents RENAME TO incident_rows;
ALTER SEQUENCE gate_bridge.incidents_id_seq RENAME TO incident_rows_id_seq;
ALTER TABLE gate_bridge.incident_rows RENAME CONSTRAINT incidents_pkey TO incident_rows_pkey;
COMMENT ON TABLE gate_bridge.incident_rows IS
	'Incidents opened by gate_bridge, without the violations folded in since the row was written; read gate_bridge.incidents';

-------------------------------------------------------------------------------
-- An eval row's context, stored once for the incidents it opens.
-------------------------------------------------------------------------------
/*
 * The context of an eval row that opened incidents, stored once for all of
 * them: an incident that the trigger creates from an eval row whose context
 * takes more than 2 kB as stored keeps its details without the "context"
 * key and points here (incident_rows.context_id); the view
 * gate_bridge.incidents puts the context back.  A context row goes when the
 * last incident that points to it is deleted (incident_rows_removed()).
 */
CREATE TABLE gate_bridge.incident_contexts (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	context			jsonb NOT NULL
);

COMMENT ON TABLE gate_bridge.incident_contexts IS
	'Eval row contexts stored once for the incidents they opened; gate_bridge.incidents shows each in its incidents'' details';

ALTER TABLE gate_bridge.incident_rows
	ADD COLUMN context_id bigint REFERENCES gate_bridge.incident_contexts (id);

-- The lifecycle against alert fatigue (see the end of this script): an
-- acknowledgement that expires, the silence that holds the incident's
-- announcements back, and whether its key is flapping.
ALTER TABLE gate_bridge.incident_rows
	ADD COLUMN snoozed_until timestamptz,
	ADD COLUMN silence_id bigint,
	ADD COLUMN flapping boolean NOT NULL DEFAULT false;

-- The issues opened for an incident by GitHub and Jira destinations (see the
-- issue openers below), by destination name:
-- {"gh": {"kind": "github", "id": "42", "url": "https://github.com/o/r/issues/42"}}
-- (jira: also "key").  Written by complete_delivery().
ALTER TABLE gate_bridge.incident_rows
	ADD COLUMN external_refs jsonb NOT NULL DEFAULT '{}';

-- Whether a context is still used, when incidents are deleted; incidents
-- with their context inline have no entry.
CREATE INDEX incident_rows_context_id_idx
	ON gate_bridge.incident_rows (context_id) WHERE context_id IS NOT NULL;

/*
 * Violations folded into an unresolved incident, one row per committing
 * transaction and incident (one per round of decisions, see
 * decide_pending()): how many, and when the last one was seen.  Only
 * appended to while a key is decided, so that the writers of one key never
 * update one row (each transaction would otherwise wait for the previous
 * one's commit to be flushed, and a long-lived snapshot would keep every
 * version of that row).  gate_bridge.compact_folds() adds them into
 * incident_rows; gate_bridge.tick() and resolve() call it.  No foreign key:
 * checking one would lock the incident's row for every fold; the triggers
 * below remove the folds of deleted incidents.
 */
CREATE TABLE gate_bridge.incident_folds (
	incident_id		bigint NOT NULL,
	occurrences		integer NOT NULL,
	last_seen_at	timestamptz NOT NULL,
	-- the folding transaction (its full id) and a number within it: a key
	-- without a sequence that every writer would share
	transaction_id	bigint NOT NULL,
	seq				integer NOT NULL
);

-- The folds of an incident; and the replica identity, without which a
-- publication of the table could not replicate (nor allow) the deletes of
-- compaction.
CREATE UNIQUE INDEX incident_folds_key
	ON gate_bridge.incident_folds (incident_id, transaction_id, seq);
ALTER TABLE gate_bridge.incident_folds REPLICA IDENTITY USING INDEX incident_folds_key;

COMMENT ON TABLE gate_bridge.incident_folds IS
	'Violations folded into incidents and not yet added to incident_rows; gate_bridge.incidents shows the sum';

-- Incidents as they stand: the row plus its folds.  Same columns, in the
-- same order, as the table gate_bridge.incidents of 1.1.
CREATE VIEW gate_bridge.incidents AS
	SELECT r.id, r.kind, r.key, r.agent, r.violation_type, r.severity, r.status,
		   r.summary,
		   CASE WHEN r.context_id IS NULL THEN r.details
				ELSE r.details OPERATOR(pg_catalog.||)
					 pg_catalog.jsonb_build_object('context',
						 (SELECT c.context FROM gate_bridge.incident_contexts c
						   WHERE c.id OPERATOR(pg_catalog.=) r.context_id))
		   END AS details,
		   r.playbooks,
		   pg_catalog.int4(LEAST(r.occurrences::bigint OPERATOR(pg_catalog.+)
									COALESCE((SELECT pg_catalog.sum(f.occurrences)
												FROM gate_bridge.incident_folds f
											   WHERE f.incident_id OPERATOR(pg_catalog.=) r.id), 0),
								 2147483647)) AS occurrences,
		   r.first_seen_at,
		   GREATEST(r.last_seen_at,
					(SELECT pg_catalog.max(f.last_seen_at)
					   FROM gate_bridge.incident_folds f
					  WHERE f.incident_id OPERATOR(pg_catalog.=) r.id)) AS last_seen_at,
		   r.acked_at, r.acked_by, r.resolved_at, r.resolved_by, r.resolution_note,
		   r.subject, r.snoozed_until, r.silence_id, r.flapping, r.external_refs
	  FROM gate_bridge.incident_rows r;

COMMENT ON VIEW gate_bridge.incidents IS
	'Incidents opened by gate_bridge; change them through gate_bridge.ack() and gate_bridge.resolve()';

/*
 * compact_folds(incident_id): adds the folds of one incident (NULL: of
 * every incident) into incident_rows and removes them; returns the number
 * of folds removed.  It never waits: an incident whose row another
 * transaction holds (a resolve, another compaction) is left for the next
 * call, and folds committed after the statement's snapshot stay.  Whoever
 * holds an incident's row is the only one that removes its folds, so two
 * calls never count a fold twice.
 */
CREATE FUNCTION gate_bridge.compact_folds(incident_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	removed bigint;
	ids bigint[];
BEGIN
	-- the incidents to look at, as an array: a plan for "$1 IS NULL OR
	-- incident_id = $1" could not use the index for one incident
	IF $1 IS NULL THEN
		ids := ARRAY(SELECT DISTINCT f.incident_id FROM gate_bridge.incident_folds f);
	ELSE
		ids := ARRAY[$1];
	END IF;
	WITH held AS (
		SELECT r.id
		  FROM gate_bridge.incident_rows r
		 WHERE r.id = ANY (ids)
		   FOR NO KEY UPDATE OF r SKIP LOCKED
	), gone AS (
		DELETE FROM gate_bridge.incident_folds f
		 WHERE f.incident_id = ANY (ARRAY(SELECT h.id FROM held h))
		RETURNING f.incident_id, f.occurrences, f.last_seen_at
	), sums AS (
		SELECT g.incident_id, sum(g.occurrences) AS n, max(g.last_seen_at) AS last_seen_at,
			   count(*) AS folds
		  FROM gone g
		 GROUP BY g.incident_id
	), added AS (
		UPDATE gate_bridge.incident_rows r
		   SET occurrences = LEAST(r.occurrences::bigint + s.n, 2147483647)::integer,
			   last_seen_at = GREATEST(r.last_seen_at, s.last_seen_at)
		  FROM sums s
		 WHERE r.id = s.incident_id
		RETURNING s.folds
	)
	SELECT COALESCE(sum(a.folds), 0) INTO removed FROM added a;
	RETURN removed;
END
$fn$;

COMMENT ON FUNCTION gate_bridge.compact_folds(bigint) IS
	'Adds the folded violations of an incident (NULL: of all) into its row; never waits; returns the folds removed';

-- The folds and the auto-run bookkeeping of deleted incidents go with them,
-- and so do the contexts that no incident uses any more.
CREATE FUNCTION gate_bridge.incident_rows_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		TRUNCATE gate_bridge.incident_folds;
		-- no TRUNCATE: the statement may be truncating it already
		DELETE FROM gate_bridge.playbook_auto_runs;
		-- incident_rows references it: no TRUNCATE
		DELETE FROM gate_bridge.incident_contexts;
	ELSE
		DELETE FROM gate_bridge.incident_folds f USING removed_rows o
		 WHERE f.incident_id = o.id;
		DELETE FROM gate_bridge.playbook_auto_runs a USING removed_rows o
		 WHERE a.incident_id = o.id;
		/*
		 * Locked first, in id order: of two transactions deleting the last
		 * incidents of one context, the second sees, once the first has
		 * committed, that none is left (at READ COMMITTED each statement
		 * takes a fresh snapshot), and deletes it.
		 */
		PERFORM FROM gate_bridge.incident_contexts c
		 WHERE c.id IN (SELECT o.context_id FROM removed_rows o
						 WHERE o.context_id IS NOT NULL)
		 ORDER BY c.id
		   FOR UPDATE;
		IF FOUND THEN
			DELETE FROM gate_bridge.incident_contexts c
			 WHERE c.id IN (SELECT o.context_id FROM removed_rows o
							 WHERE o.context_id IS NOT NULL)
			   AND NOT EXISTS (SELECT FROM gate_bridge.incident_rows r
								WHERE r.context_id = c.id);
		END IF;
	END IF;
	RETURN NULL;
END
$fn$;

CREATE TRIGGER incident_rows_deleted
	AFTER DELETE ON gate_bridge.incident_rows
	REFERENCING OLD TABLE AS removed_rows
	FOR EACH STATEMENT EXECUTE FUNCTION gate_bridge.incident_rows_removed();
CREATE TRIGGER incident_rows_truncated
	AFTER TRUNCATE ON gate_bridge.incident_rows
	FOR EACH STATEMENT EXECUTE FUNCTION gate_bridge.incident_rows_removed();

/*
 * tick(): the time-driven transitions, for pg_cron every minute and for the
 * long-running clients; returns the number of transitions made.
 *	- snoozes that ran out: back to open (snooze_expired, announced);
 *	- silences that ended: their unresolved incidents announced
 *	  (silence_ended);
 *	- quiet recovery: an unresolved budget or invariant incident whose
 *	  budget has resolve_quiet and that saw no violation for that long is
 *	  resolved (auto_resolved), unless its key is flapping;
 *	- flapping that ended: a full flap_window without a state change
 *	  (flapping_ended, announced);
 *	- heartbeats: HEARTBEAT_{agent} opened for an agent silent for longer
 *	  than its heartbeat's max_silence, resolved when it reports again;
 *	- auto-run: the low-risk playbooks with auto_run, once per incident;
 *	- and the folded violations are compacted, which is no transition.
 * Each transition is taken under the row's lock, with SKIP LOCKED, and
 * checked again there: two ticks at once neither wait for each other nor
 * make a transition twice, and a row that another transaction holds (a
 * resolve, say) is left for the next tick.
 */
CREATE FUNCTION gate_bridge.tick()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	n integer := 0;
	r record;
	ids bigint[];
	flap_window interval;
BEGIN
	-- the library defines the settings: a call into it loads it
	PERFORM gate_bridge.pattern_rank('*', 'tick');
	flap_window := current_setting('gate_bridge.flap_window')::interval;
	-- snoozes that ran out
	FOR r IN
		WITH due AS (
			SELECT i.id, i.snoozed_until
			  FROM gate_bridge.incident_rows i
			 WHERE i.snoozed_until <= clock_timestamp() AND i.status = 'ack'
			   FOR NO KEY UPDATE OF i SKIP LOCKED
		)
		UPDATE gate_bridge.incident_rows i
		   SET status = 'open', acked_at = NULL, acked_by = NULL, snoozed_until = NULL
		  FROM due
		 WHERE i.id = due.id
		RETURNING i.id, due.snoozed_until
	LOOP
		INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)
		VALUES (r.id, 'snooze_expired', clock_timestamp(), 'gate_bridge',
				jsonb_build_object('snoozed_until', r.snoozed_until));
		n := n + 1;
	END LOOP;

	-- silences that ended
	n := n + gate_bridge.release_silenced();

	-- quiet recovery, with the budget that applies to the incident's agent
	FOR r IN
		SELECT i.id, i.last_seen_at, b.resolve_quiet
		  FROM gate_bridge.incidents i
		 CROSS JOIN LATERAL (
			SELECT b.resolve_quiet
			  FROM gate_bridge.budgets b
			 WHERE b.enabled
			   AND b.budget_type = CASE i.kind WHEN 'budget' THEN i.subject ELSE 'invariants' END
			   AND gate_bridge.pattern_rank(b.agent_pattern, i.agent) IS NOT NULL
			 ORDER BY gate_bridge.pattern_rank(b.agent_pattern, i.agent) DESC
			 LIMIT 1) b
		 WHERE i.status <> 'resolved' AND i.kind IN ('budget', 'invariant')
		   AND NOT i.flapping
		   AND b.resolve_quiet IS NOT NULL
		   AND i.last_seen_at <= clock_timestamp() - b.resolve_quiet
		 ORDER BY i.id
	LOOP
		IF gate_bridge.auto_resolve(r.id,
				jsonb_build_object('reason', 'quiet', 'last_seen_at', r.last_seen_at,
								   'resolve_quiet', extract(epoch FROM r.resolve_quiet)::bigint),
				clock_timestamp() - r.resolve_quiet) THEN
			n := n + 1;
		END IF;
	END LOOP;

	-- flapping that ended
	FOR r IN
		SELECT k.kind, k.agent, k.subject, k.flapping_since
		  FROM gate_bridge.incident_keys k
		 WHERE k.flapping_since IS NOT NULL
		   AND GREATEST((SELECT max(t) FROM unnest(k.state_changes) t), k.flapping_since,
						(SELECT max(i.resolved_at) FROM gate_bridge.incident_rows i
						  WHERE i.kind = k.kind AND i.agent = k.agent
							AND i.subject = k.subject))
			   <= clock_timestamp() - flap_window
		   FOR NO KEY UPDATE OF k SKIP LOCKED
	LOOP
		ids := ARRAY(SELECT i.id FROM gate_bridge.incident_rows i
					  WHERE i.kind = r.kind AND i.agent = r.agent AND i.subject = r.subject
						AND i.flapping
					  ORDER BY i.id
						FOR NO KEY UPDATE OF i SKIP LOCKED);
		-- one of them is busy: the next tick ends it
		CONTINUE WHEN cardinality(ids) <
			(SELECT count(*) FROM gate_bridge.incident_rows i
			  WHERE i.kind = r.kind AND i.agent = r.agent AND i.subject = r.subject
				AND i.flapping);
		UPDATE gate_bridge.incident_keys k SET flapping_since = NULL
		 WHERE k.kind = r.kind AND k.agent = r.agent AND k.subject = r.subject;
		UPDATE gate_bridge.incident_rows i SET flapping = false WHERE i.id = ANY (ids);
		INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)
		SELECT max(i.id), 'flapping_ended', clock_timestamp(), 'gate_bridge',
			   jsonb_build_object('flapping_since', r.flapping_since,
								  'flap_window', extract(epoch FROM flap_window)::bigint)
		  FROM gate_bridge.incident_rows i
		 WHERE i.kind = r.kind AND i.agent = r.agent AND i.subject = r.subject
		HAVING max(i.id) IS NOT NULL;
		n := n + 1;
	END LOOP;

	-- agents that stopped reporting, and those that report again
	n := n + gate_bridge.check_heartbeats();

	-- the low-risk playbooks that run by themselves
	n := n + gate_bridge.auto_run_playbooks();

	PERFORM gate_bridge.compact_folds(NULL);
	RETURN n;
END
$fn$;

COMMENT ON FUNCTION gate_bridge.tick() IS
	'Time-driven transitions (snooze expiry, silence end, quiet auto-resolve, flapping end, heartbeats, auto-run playbooks) and compaction; safe to call concurrently and often; returns the transitions made';

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.incident_folds', '');

CREATE OR REPLACE VIEW gate_bridge.open_incidents AS
	SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity, i.status,
		   i.summary, i.playbooks, i.occurrences, i.first_seen_at, i.last_seen_at,
		   i.acked_at, i.acked_by, i.details, i.snoozed_until, i.silence_id, i.flapping
	  FROM gate_bridge.incidents i
	 WHERE i.status <> 'resolved'
	 ORDER BY i.severity, i.first_seen_at, i.id;

CREATE OR REPLACE VIEW gate_bridge.incident_counts AS
	SELECT pg_catalog.count(*) FILTER (WHERE i.severity OPERATOR(pg_catalog.=) 'sev1') AS sev1,
		   pg_catalog.count(*) FILTER (WHERE i.severity OPERATOR(pg_catalog.=) 'sev2') AS sev2,
		   pg_catalog.count(*) FILTER (WHERE i.severity OPERATOR(pg_catalog.=) 'sev3') AS sev3,
		   pg_catalog.count(*) FILTER (WHERE i.status OPERATOR(pg_catalog.=) 'open') AS open,
		   pg_catalog.count(*) FILTER (WHERE i.status OPERATOR(pg_catalog.=) 'ack') AS ack
	  FROM gate_bridge.incident_rows i
	 WHERE i.status <> 'resolved';

CREATE OR REPLACE VIEW gate_bridge.stats AS
	SELECT v.kind,
		   COALESCE(k.created, 0)::bigint AS created,
		   COALESCE(d.deduplicated, 0)::bigint AS deduplicated,
		   COALESCE(k.rate_limited, 0)::bigint AS rate_limited
	  FROM (VALUES ('budget'), ('invariant'), ('planner'), ('delivery'), ('heartbeat')) AS v(kind)
	  LEFT JOIN (SELECT ik.kind, pg_catalog.sum(ik.created) AS created,
						pg_catalog.sum(ik.rate_limited) AS rate_limited
				   FROM gate_bridge.incident_keys ik GROUP BY ik.kind) k
			 ON k.kind OPERATOR(pg_catalog.=) v.kind
	  LEFT JOIN (SELECT i.kind,
						pg_catalog.sum(i.occurrences OPERATOR(pg_catalog.-) 1
									   OPERATOR(pg_catalog.+) COALESCE(f.n, 0)) AS deduplicated
				   FROM gate_bridge.incident_rows i
				   LEFT JOIN (SELECT f.incident_id, pg_catalog.sum(f.occurrences) AS n
								FROM gate_bridge.incident_folds f GROUP BY f.incident_id) f
						  ON f.incident_id OPERATOR(pg_catalog.=) i.id
				  GROUP BY i.kind) d
			 ON d.kind OPERATOR(pg_catalog.=) v.kind;

REVOKE ALL ON gate_bridge.incidents, gate_bridge.incident_folds FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.compact_folds(bigint), gate_bridge.incident_rows_removed(),
	gate_bridge.tick() FROM PUBLIC;

/*
 * Whoever could read or change the table gate_bridge.incidents can do the
 * same with the view of that name: its grants, table and column ones, move
 * to the view (incident_rows keeps only what a view cannot take: TRUNCATE,
 * REFERENCES, TRIGGER), so that the updated database is a fresh install
 * with the same grants on the view.  Grants made by an extension script
 * count as the object's initial privileges, which pg_dump leaves out; the
 * view's initial privileges are set back to what a fresh install has, so
 * that a dump keeps these grants (those of incident_rows are recorded as
 * they end up, which is what a fresh install has there).
 */
DO $regrant$
DECLARE
	g record;
	init pg_catalog.aclitem[];
BEGIN
	SELECT p.initprivs INTO init
	  FROM pg_catalog.pg_init_privs p
	 WHERE p.objoid OPERATOR(pg_catalog.=) 'gate_bridge.incidents'::pg_catalog.regclass
	   AND p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
	   AND p.objsubid OPERATOR(pg_catalog.=) 0;
	FOR g IN
		SELECT a.privilege_type, a.grantee, a.is_grantable, NULL::name AS col
		  FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
		 WHERE c.oid OPERATOR(pg_catalog.=) 'gate_bridge.incident_rows'::pg_catalog.regclass
		   AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
		UNION ALL
		SELECT a.privilege_type, a.grantee, a.is_grantable, t.attname
		  FROM pg_catalog.pg_class c
		  JOIN pg_catalog.pg_attribute t ON t.attrelid OPERATOR(pg_catalog.=) c.oid
		 CROSS JOIN LATERAL pg_catalog.aclexplode(t.attacl) a
		 WHERE c.oid OPERATOR(pg_catalog.=) 'gate_bridge.incident_rows'::pg_catalog.regclass
		   AND t.attnum OPERATOR(pg_catalog.>) 0 AND NOT t.attisdropped
		   AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
	LOOP
		-- a view has no TRUNCATE, REFERENCES or TRIGGER to speak of
		CONTINUE WHEN g.privilege_type NOT IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE');
		EXECUTE pg_catalog.format('GRANT %s%s ON gate_bridge.incidents TO %s%s',
								  g.privilege_type,
								  CASE WHEN g.col IS NULL THEN ''
									   ELSE ' (' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(g.col) OPERATOR(pg_catalog.||) ')' END,
								  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
									   ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
								  CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
		EXECUTE pg_catalog.format('REVOKE %s%s ON gate_bridge.incident_rows FROM %s CASCADE',
								  g.privilege_type,
								  CASE WHEN g.col IS NULL THEN ''
									   ELSE ' (' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(g.col) OPERATOR(pg_catalog.||) ')' END,
								  CASE WHEN g.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
									   ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END);
	END LOOP;
	UPDATE pg_catalog.pg_init_privs p
	   SET initprivs = init
	 WHERE p.objoid OPERATOR(pg_catalog.=) 'gate_bridge.incidents'::pg_catalog.regclass
	   AND p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
	   AND p.objsubid OPERATOR(pg_catalog.=) 0;
	DELETE FROM pg_catalog.pg_init_privs p
	 WHERE p.objoid OPERATOR(pg_catalog.=) 'gate_bridge.incidents'::pg_catalog.regclass
	   AND p.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
	   AND p.objsubid OPERATOR(pg_catalog.>) 0;
END
$regrant$;

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.incident_contexts', '');
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.incident_contexts_id_seq', '');

REVOKE ALL ON gate_bridge.incident_contexts FROM PUBLIC;
REVOKE ALL ON SEQUENCE gate_bridge.incident_contexts_id_seq FROM PUBLIC;

-------------------------------------------------------------------------------
-- The lifecycle's columns of the tables of 1.1.
-------------------------------------------------------------------------------
-- not announced: a silence (or the key's flapping) held it back
ALTER TABLE gate_bridge.incident_events
	ADD COLUMN silenced boolean NOT NULL DEFAULT false;

-- incidents created in the current re-fire chain (refire_backoff); the
-- passing rows counted towards the open incident's recovery
-- (budgets.resolve_after) and its occurrences when they were last counted;
-- the latest state changes (flap_threshold of them, at most 64); since when
-- the key is flapping
ALTER TABLE gate_bridge.incident_keys
	ADD COLUMN refires integer NOT NULL DEFAULT 0,
	ADD COLUMN recovery_passes bigint NOT NULL DEFAULT 0,
	ADD COLUMN recovery_occurrences bigint,
	ADD COLUMN state_changes timestamptz[] NOT NULL DEFAULT '{}',
	ADD COLUMN flapping_since timestamptz;

-- auto-resolve: after this many passing rows in a row, or when no violation
-- came for this long (NULL: only by hand, as in 1.1)
ALTER TABLE gate_bridge.budgets
	ADD COLUMN resolve_after integer,
	ADD COLUMN resolve_quiet interval,
	ADD CONSTRAINT budgets_resolve_after_check
		CHECK (resolve_after OPERATOR(pg_catalog.>=) 1
			   AND resolve_after OPERATOR(pg_catalog.<=) 1000000),
	ADD CONSTRAINT budgets_resolve_quiet_check
		CHECK (resolve_quiet OPERATOR(pg_catalog.>) '0'::interval
			   AND resolve_quiet OPERATOR(pg_catalog.<=) '366 days'::interval);

/*
 * The incidents' rules, enforced by the database whoever writes: the
 * values of kind, key, severity and status, and the lifecycle (open -> ack
 * -> resolved, open -> resolved; ack -> open when a snooze runs out;
 * resolved -> open only as a reopen, which clears the resolution;
 * timestamps that agree with the status; a snooze only on an acknowledged
 * incident).  A trigger on exactly these columns rather than CHECK
 * constraints: PostgreSQL prepares a table's CHECK constraints again for
 * every UPDATE statement, and folding a violation into an incident is an
 * UPDATE of occurrences and last_seen_at only, which never runs this.
 */
CREATE OR REPLACE FUNCTION gate_bridge.incidents_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF NEW.kind NOT IN ('budget', 'invariant', 'planner', 'delivery', 'heartbeat') THEN
		RAISE EXCEPTION 'invalid incident kind "%"', NEW.kind USING ERRCODE = '23514';
	END IF;
	IF NEW.key = '' OR octet_length(NEW.key) > 255 THEN
		RAISE EXCEPTION 'incident key must be 1 to 255 bytes long' USING ERRCODE = '23514';
	END IF;
	IF NEW.severity NOT IN ('sev1', 'sev2', 'sev3') THEN
		RAISE EXCEPTION 'invalid incident severity "%"', NEW.severity USING ERRCODE = '23514';
	END IF;
	IF NEW.status NOT IN ('open', 'ack', 'resolved') THEN
		RAISE EXCEPTION 'invalid incident status "%"', NEW.status USING ERRCODE = '23514';
	END IF;
	IF TG_OP = 'INSERT' AND NEW.occurrences < 1 THEN
		RAISE EXCEPTION 'occurrences must be at least 1' USING ERRCODE = '23514';
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status
	   AND NOT ((OLD.status = 'open' AND NEW.status IN ('ack', 'resolved'))
				OR (OLD.status = 'ack' AND NEW.status = 'resolved')
				-- a snooze that ends, which clears the acknowledgement
				OR (OLD.status = 'ack' AND NEW.status = 'open' AND NEW.acked_at IS NULL)
				-- a reopen, which clears the resolution
				OR (OLD.status = 'resolved' AND NEW.status = 'open'
					AND NEW.resolved_at IS NULL AND NEW.resolved_by IS NULL))
	THEN
		RAISE EXCEPTION 'incident % cannot move from % to %', OLD.id, OLD.status, NEW.status
			USING ERRCODE = '55000',
				  HINT = 'An incident goes open -> ack -> resolved, or open -> resolved; a snooze that runs out puts it back to open, and a reopen puts a resolved one back to open.';
	END IF;
	IF NOT ((NEW.status = 'open' AND NEW.acked_at IS NULL AND NEW.resolved_at IS NULL)
			OR (NEW.status = 'ack' AND NEW.acked_at IS NOT NULL AND NEW.resolved_at IS NULL)
			OR (NEW.status = 'resolved' AND NEW.resolved_at IS NOT NULL))
	THEN
		RAISE EXCEPTION 'incident status % does not agree with acked_at and resolved_at', NEW.status
			USING ERRCODE = '23514';
	END IF;
	IF NEW.snoozed_until IS NOT NULL AND NEW.status <> 'ack' THEN
		RAISE EXCEPTION 'only an acknowledged incident can be snoozed, not one that is %', NEW.status
			USING ERRCODE = '23514';
	END IF;
	RETURN NEW;
END
$fn$;

-- the guard also watches snoozed_until
DROP TRIGGER incidents_guard ON gate_bridge.incident_rows;
CREATE TRIGGER incidents_guard
	BEFORE INSERT OR UPDATE OF kind, key, severity, status, acked_at, resolved_at, snoozed_until
	ON gate_bridge.incident_rows
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.incidents_guard();
ALTER TABLE gate_bridge.incident_rows ENABLE ALWAYS TRIGGER incidents_guard;

-------------------------------------------------------------------------------
-- The lifecycle against alert fatigue: snoozes, silences, re-fire backoff,
-- reopening, auto-resolve, escalation and flapping (src/lifecycle.c,
-- src/incident.c, src/recovery.c).  Time-driven transitions run in tick().
-------------------------------------------------------------------------------

-- Snoozes that run out, and the incidents a silence holds back.
CREATE INDEX incident_rows_snoozed_until_idx
	ON gate_bridge.incident_rows (snoozed_until) WHERE snoozed_until IS NOT NULL;
CREATE INDEX incident_rows_silence_id_idx
	ON gate_bridge.incident_rows (silence_id) WHERE silence_id IS NOT NULL;
-- Keys whose flapping may end.
CREATE INDEX incident_keys_flapping_since_idx
	ON gate_bridge.incident_keys (flapping_since) WHERE flapping_since IS NOT NULL;

/*
 * Silences (maintenance windows).  While one matches a key (NULL matchers
 * match anything), the key's violations are decided, stored, counted and
 * put on the timeline as always, but the incident is marked silenced and
 * its events are not announced; when the silence ends and the incident is
 * still unresolved, it is announced then (silence_ended).  Resolutions are
 * always announced.
 */
CREATE TABLE gate_bridge.silences (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	agent_pattern	text NOT NULL DEFAULT '*',
	kind			text,
	violation_type	text,
	key				text,
	starts_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	ends_at			timestamptz NOT NULL,
	created_by		text NOT NULL DEFAULT CURRENT_USER,
	comment			text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT silences_agent_pattern_check
		CHECK (gate_bridge.valid_agent_pattern(agent_pattern)),
	CONSTRAINT silences_kind_check
		CHECK (kind IN ('budget', 'invariant', 'planner', 'delivery', 'heartbeat')),
	CONSTRAINT silences_ends_at_check
		CHECK (ends_at OPERATOR(pg_catalog.>=) starts_at)
);

CREATE INDEX silences_ends_at_idx ON gate_bridge.silences (ends_at);

COMMENT ON TABLE gate_bridge.silences IS
	'Maintenance windows: matching incidents are recorded but not announced until the silence ends';

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.silences', '');
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.silences_id_seq', '');

-- The silence that holds a key back at a time, or NULL: of those that
-- match, the one that ends last.  The one rule, for the decisions (C) and
-- for tick().
CREATE FUNCTION gate_bridge.silence_for(kind text, agent text, violation_type text,
										key text, at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT s.id
	  FROM gate_bridge.silences s
	 WHERE s.starts_at <= $5 AND s.ends_at > $5
	   AND gate_bridge.pattern_rank(s.agent_pattern, $2) IS NOT NULL
	   AND (s.kind IS NULL OR s.kind = $1)
	   AND (s.violation_type IS NULL OR s.violation_type = $3)
	   AND (s.key IS NULL OR s.key = $4)
	 ORDER BY s.ends_at DESC, s.id
	 LIMIT 1
$fn$;

-- Who called a SECURITY DEFINER function: the role set with SET ROLE, or
-- the session's.
CREATE FUNCTION gate_bridge.calling_role()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
				ELSE current_setting('role') END
$fn$;

/*
 * silence(agent_pattern, duration, comment, kind, violation_type): a
 * silence from now for duration; returns its id.  Bad input is refused
 * with SQLSTATE 22023.
 */
CREATE FUNCTION gate_bridge.silence(agent_pattern text, duration interval, comment text,
									kind text DEFAULT NULL, violation_type text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	new_id bigint;
BEGIN
	IF silence.agent_pattern IS NULL
	   OR NOT gate_bridge.valid_agent_pattern(silence.agent_pattern) THEN
		RAISE EXCEPTION 'invalid agent pattern %', COALESCE(quote_literal(silence.agent_pattern), 'NULL')
			USING ERRCODE = '22023',
				  HINT = 'Use an exact agent name, a prefix glob ending in ".*", or "*".';
	END IF;
	IF silence.duration IS NULL OR silence.duration <= interval '0' THEN
		RAISE EXCEPTION 'a silence needs a positive duration, not %',
			COALESCE(silence.duration::text, 'NULL')
			USING ERRCODE = '22023';
	END IF;
	IF silence.duration > interval '366 days' THEN
		RAISE EXCEPTION 'a silence lasts at most 366 days, not %', silence.duration
			USING ERRCODE = '22023',
				  HINT = 'Disable the budget instead, or silence again when this one ends.';
	END IF;
	IF silence.comment IS NULL OR btrim(silence.comment) = '' THEN
		RAISE EXCEPTION 'a silence needs a comment'
			USING ERRCODE = '22023',
				  HINT = 'Say why, so that whoever is on call knows what is being held back.';
	END IF;
	IF octet_length(silence.comment) > 8192 THEN
		RAISE EXCEPTION 'comment is too long (% bytes, at most 8192)', octet_length(silence.comment)
			USING ERRCODE = '22023';
	END IF;
	IF silence.kind IS NOT NULL AND silence.kind NOT IN ('budget', 'invariant', 'planner', 'delivery', 'heartbeat') THEN
		RAISE EXCEPTION 'invalid incident kind %', quote_literal(silence.kind)
			USING ERRCODE = '22023',
				  HINT = 'Use budget, invariant, planner, delivery, heartbeat, or NULL for any.';
	END IF;
	IF silence.violation_type IS NOT NULL
	   AND silence.violation_type NOT IN ('quality', 'latency', 'cost', 'success_rate',
										  'invariants', 'planner_regression', 'delivery', 'heartbeat') THEN
		RAISE EXCEPTION 'invalid violation type %', quote_literal(silence.violation_type)
			USING ERRCODE = '22023',
				  HINT = 'Use quality, latency, cost, success_rate, invariants, planner_regression, delivery, heartbeat, or NULL for any.';
	END IF;
	INSERT INTO gate_bridge.silences AS s
		(agent_pattern, kind, violation_type, starts_at, ends_at, created_by, comment)
	VALUES (silence.agent_pattern, silence.kind, silence.violation_type,
			now(), now() + silence.duration, gate_bridge.calling_role(), silence.comment)
	RETURNING s.id INTO new_id;
	RETURN new_id;
END
$fn$;

COMMENT ON FUNCTION gate_bridge.silence(text, interval, text, text, text) IS
	'Silences matching incidents from now for a duration (a maintenance window); returns the silence''s id';

/*
 * The incidents whose silence has ended (or was deleted): each goes to
 * another silence that matches it now, or is released; an unresolved one is
 * then announced (silence_ended, which also goes out on notify_channel as
 * incident_created does).  Never waits: an incident another transaction
 * holds is left for the next call.  Returns the incidents announced.
 */
CREATE FUNCTION gate_bridge.release_silenced()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	r record;
	other bigint;
	n integer := 0;
BEGIN
	FOR r IN
		SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity, i.summary,
			   i.status, i.silence_id
		  FROM gate_bridge.incident_rows i
		 WHERE i.silence_id IS NOT NULL
		   AND NOT EXISTS (SELECT FROM gate_bridge.silences s
							WHERE s.id = i.silence_id
							  AND s.starts_at <= clock_timestamp()
							  AND s.ends_at > clock_timestamp())
		   FOR NO KEY UPDATE OF i SKIP LOCKED
	LOOP
		other := NULL;
		IF r.status <> 'resolved' THEN
			other := gate_bridge.silence_for(r.kind, r.agent, r.violation_type, r.key,
											 clock_timestamp());
		END IF;
		UPDATE gate_bridge.incident_rows i SET silence_id = other WHERE i.id = r.id;
		IF other IS NULL AND r.status <> 'resolved' THEN
			INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)
			VALUES (r.id, 'silence_ended', clock_timestamp(), 'gate_bridge',
					jsonb_build_object('silence_id', r.silence_id, 'kind', r.kind,
									   'key', r.key, 'severity', r.severity,
									   'summary', r.summary, 'agent', r.agent));
			n := n + 1;
		END IF;
	END LOOP;
	RETURN n;
END
$fn$;

/*
 * unsilence(id): ends a silence now; the incidents it held back that are
 * still unresolved are announced at once.  An unknown id is P0002, a
 * silence that has already ended 55000.
 */
CREATE FUNCTION gate_bridge.unsilence(id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF unsilence.id IS NULL THEN
		RAISE EXCEPTION 'silence id must not be null' USING ERRCODE = '22004';
	END IF;
	UPDATE gate_bridge.silences s
	   SET ends_at = GREATEST(clock_timestamp(), s.starts_at)
	 WHERE s.id = unsilence.id AND s.ends_at > clock_timestamp();
	IF NOT FOUND THEN
		IF EXISTS (SELECT FROM gate_bridge.silences s WHERE s.id = unsilence.id) THEN
			RAISE EXCEPTION 'silence % has already ended', unsilence.id USING ERRCODE = '55000';
		END IF;
		RAISE EXCEPTION 'silence % does not exist', unsilence.id USING ERRCODE = 'P0002';
	END IF;
	PERFORM gate_bridge.release_silenced();
END
$fn$;

COMMENT ON FUNCTION gate_bridge.unsilence(bigint) IS
	'Ends a silence now and announces the unresolved incidents it held back';

/*
 * An event that is not to be announced is marked so when it is recorded:
 * every event of an incident that a silence holds back, but its
 * resolutions and the end of its silence; and the creation and reopening
 * of an incident whose key is flapping.  A restored or replicated event
 * (one that brings its position) keeps what it says.
 */
CREATE FUNCTION gate_bridge.incident_events_held() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	held boolean;
BEGIN
	IF NEW.position IS NULL AND NOT NEW.silenced
	   AND NEW.event NOT IN ('resolved', 'auto_resolved', 'silence_ended') THEN
		SELECT r.silence_id IS NOT NULL
			   OR (r.flapping AND NEW.event IN ('created', 'reopened'))
		  INTO held
		  FROM gate_bridge.incident_rows r
		 WHERE r.id = NEW.incident_id;
		NEW.silenced := COALESCE(held, false);
	END IF;
	RETURN NEW;
END
$fn$;

CREATE TRIGGER incident_events_held
	BEFORE INSERT ON gate_bridge.incident_events
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.incident_events_held();

/*
 * snooze(incident_id, duration, actor, note): acknowledges an open or
 * acknowledged incident until the current time plus duration (returned,
 * clock_timestamp() rather than the transaction's start); when that
 * passes and it is still unresolved, tick() puts it back to open
 * (snooze_expired, announced).  Resolving ends the snooze.  A duration
 * that is not positive or longer than 30 days is refused (22023).
 */
CREATE FUNCTION gate_bridge.snooze(incident_id bigint, duration interval,
								   actor text DEFAULT CURRENT_USER, note text DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'gate_bridge_snooze'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION gate_bridge.snooze(bigint, interval, text, text) IS
	'Acknowledges an incident for a while: it goes back to open when the snooze runs out';

/*
 * auto_resolve(incident_id, evidence, seen_before): resolves an unresolved
 * incident as gate_bridge (auto_resolved, with the evidence), unless its
 * key is flapping, a violation came at or after seen_before (when given),
 * or another transaction holds the incident or its key: it never waits.
 * Returns whether it resolved.  For tick(); the trigger's recoveries are
 * decided in C.
 */
CREATE FUNCTION gate_bridge.auto_resolve(incident_id bigint, evidence jsonb,
										 seen_before timestamptz DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'gate_bridge_auto_resolve'
LANGUAGE C VOLATILE;

/*
 * Every backend keeps, for the agents whose budgets auto-resolve after
 * passing rows, which of their incidents are unresolved (src/recovery.c):
 * a passing row of an agent without one costs nothing.  Creating,
 * resolving, reopening or deleting incidents tells every backend at commit.
 */
CREATE FUNCTION gate_bridge.incident_rows_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'gate_bridge_incident_rows_changed'
LANGUAGE C;

CREATE TRIGGER incident_rows_changed
	AFTER INSERT OR UPDATE OF status OR DELETE OR TRUNCATE ON gate_bridge.incident_rows
	FOR EACH STATEMENT EXECUTE FUNCTION gate_bridge.incident_rows_changed();
ALTER TABLE gate_bridge.incident_rows ENABLE ALWAYS TRIGGER incident_rows_changed;

REVOKE ALL ON gate_bridge.silences FROM PUBLIC;
REVOKE ALL ON SEQUENCE gate_bridge.silences_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.silence_for(text, text, text, text, timestamptz),
	gate_bridge.calling_role(),
	gate_bridge.silence(text, interval, text, text, text),
	gate_bridge.release_silenced(), gate_bridge.unsilence(bigint),
	gate_bridge.incident_events_held(),
	gate_bridge.snooze(bigint, interval, text, text),
	gate_bridge.auto_resolve(bigint, jsonb, timestamptz),
	gate_bridge.incident_rows_changed() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Delivery: an outbox of the incident events that destinations (webhooks,
-- Slack, PagerDuty) subscribe to, written in the transaction that records
-- the event, and drained by "gate-bridge deliver" through
-- claim_deliveries() and complete_delivery().
-------------------------------------------------------------------------------

/*
 * Where events go.  The name goes into the key of the incident that a dead
 * delivery opens (DELIVERY_{name}).  secret: the PagerDuty routing key
 * (required), the webhook's HMAC key (optional), the GitHub token or the
 * Jira credentials (required); only the owner and the delivery role may
 * read it.  options: what a kind takes besides (Jira's transitions, issue
 * type and deployment); destinations_guard() checks the rules of the issue
 * kinds.
 */
CREATE TABLE gate_bridge.destinations (
	name			text PRIMARY KEY,
	kind			text NOT NULL,
	url				text NOT NULL,
	secret			text,
	min_severity	text NOT NULL DEFAULT 'sev3',
	agent_pattern	text NOT NULL DEFAULT '*',
	events			text[] NOT NULL
		DEFAULT '{created,escalated,reopened,snooze_expired,silence_ended,resolved,auto_resolved}',
	enabled			boolean NOT NULL DEFAULT true,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	options			jsonb NOT NULL DEFAULT '{}',
	CONSTRAINT destinations_name_check
		CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
	CONSTRAINT destinations_kind_check
		CHECK (kind IN ('webhook', 'slack', 'pagerduty', 'github', 'jira')),
	CONSTRAINT destinations_url_check
		CHECK (url OPERATOR(pg_catalog.~) '^https?://[^[:space:]/]+[^[:space:]]*$'
			   AND pg_catalog.octet_length(url) OPERATOR(pg_catalog.<=) 2048),
	CONSTRAINT destinations_secret_check
		CHECK (secret OPERATOR(pg_catalog.<>) ''
			   AND pg_catalog.octet_length(secret) OPERATOR(pg_catalog.<=) 1024),
	CONSTRAINT destinations_pagerduty_routing_key_check
		CHECK (kind OPERATOR(pg_catalog.<>) 'pagerduty' OR secret IS NOT NULL),
	CONSTRAINT destinations_min_severity_check
		CHECK (min_severity IN ('sev1', 'sev2', 'sev3')),
	CONSTRAINT destinations_agent_pattern_check
		CHECK (gate_bridge.valid_agent_pattern(agent_pattern)),
	CONSTRAINT destinations_events_check
		CHECK (pg_catalog.cardinality(events) OPERATOR(pg_catalog.>) 0
			   AND pg_catalog.array_ndims(events) OPERATOR(pg_catalog.=) 1
			   AND events OPERATOR(pg_catalog.<@)
				   '{created,escalated,reopened,acked,snoozed,resolved,auto_resolved,silenced,silence_ended,snooze_expired,flapping,flapping_ended}'::text[])
);

COMMENT ON TABLE gate_bridge.destinations IS
	'Where incident events are delivered (webhook, slack, pagerduty, github, jira), and which ones';

/*
 * The outbox: one row per event and destination.  held: a silence or a
 * snooze holds it back (released when that ends, skipped when the
 * incident is resolved first; a flapping key's re-opening is skipped at
 * once); pending: due at next_attempt_at; sending:
 * claimed by a worker until lease_until; delivered, dead, skipped: done.
 * For a github or jira destination, request is what its latest claim asked
 * of the issue tracker (create, find, comment, close, reopen), and
 * unconfirmed says that an attempt to create the issue may have succeeded
 * without an answer saying so: the next attempt looks for the issue before
 * creating it again.
 */
CREATE TABLE gate_bridge.deliveries (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	destination		text NOT NULL
		REFERENCES gate_bridge.destinations (name) ON UPDATE CASCADE ON DELETE CASCADE,
	event_id		bigint NOT NULL
		REFERENCES gate_bridge.incident_events (id) ON DELETE CASCADE,
	incident_id		bigint NOT NULL,
	event			text NOT NULL,
	status			text NOT NULL DEFAULT 'pending',
	attempts		integer NOT NULL DEFAULT 0,
	next_attempt_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	lease_until		timestamptz,
	claimed_by		text,
	last_status		integer,
	last_error		text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	delivered_at	timestamptz,
	request			text,
	unconfirmed		boolean NOT NULL DEFAULT false,
	UNIQUE (destination, event_id),
	CONSTRAINT deliveries_status_check
		CHECK (status IN ('held', 'pending', 'sending', 'delivered', 'dead', 'skipped')),
	CONSTRAINT deliveries_attempts_check
		CHECK (attempts OPERATOR(pg_catalog.>=) 0),
	CONSTRAINT deliveries_request_check
		CHECK (request IN ('create', 'find', 'comment', 'close', 'reopen'))
);

-- what claim_deliveries() looks for
CREATE INDEX deliveries_due_idx
	ON gate_bridge.deliveries (id) WHERE status IN ('pending', 'sending');
-- an incident's deliveries: their order per destination, releases and skips
CREATE INDEX deliveries_incident_id_idx
	ON gate_bridge.deliveries (incident_id, destination, id)
	WHERE status IN ('held', 'pending', 'sending');
-- removing events
CREATE INDEX deliveries_event_id_idx ON gate_bridge.deliveries (event_id);

COMMENT ON TABLE gate_bridge.deliveries IS
	'Outbox of incident events to destinations, written with the event; drained by gate-bridge deliver';

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.destinations', '');
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.deliveries_id_seq', '');

-- Deliveries without secrets, for dashboards and the CLI.
CREATE VIEW gate_bridge.delivery_status AS
	SELECT d.id, d.destination, t.kind, d.incident_id, d.event_id, d.event, d.status,
		   d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at,
		   d.delivered_at, d.request
	  FROM gate_bridge.deliveries d
	  JOIN gate_bridge.destinations t ON t.name OPERATOR(pg_catalog.=) d.destination;

/*
 * Per destination, how many of its deliveries are in each status, and when
 * the oldest one that is due (pending, next_attempt_at passed) was written:
 * how far behind delivery is.  Every destination has a row, zeros included.
 */
CREATE VIEW gate_bridge.delivery_stats AS
	SELECT t.name AS destination,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'pending') AS pending,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'held') AS held,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'sending') AS sending,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'delivered') AS delivered,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'dead') AS dead,
		   pg_catalog.count(d.id) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'skipped') AS skipped,
		   pg_catalog.min(d.created_at) FILTER (WHERE d.status OPERATOR(pg_catalog.=) 'pending'
			   AND d.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()) AS oldest_pending_at
	  FROM gate_bridge.destinations t
	  LEFT JOIN gate_bridge.deliveries d ON d.destination OPERATOR(pg_catalog.=) t.name
	 GROUP BY t.name;

/*
 * Writes the outbox with the event, in its transaction: one row per
 * enabled destination that subscribes to the event, whose min_severity the
 * incident meets and whose agent_pattern matches its agent; held while a
 * silence holds the event back or the incident is snoozed.  The end of a
 * silence or of a snooze releases the incident's held rows; a resolution
 * skips them (nothing was announced; the resolution itself is delivered).
 * A delivery incident is not delivered to the destination that failed.
 * A restored or replicated event (one that brings its position) writes
 * nothing.
 */
CREATE FUNCTION gate_bridge.deliveries_write() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF NEW.position IS NOT NULL THEN
		RETURN NULL;
	END IF;
	IF NEW.event IN ('silence_ended', 'snooze_expired') THEN
		UPDATE gate_bridge.deliveries d
		   SET status = 'pending', next_attempt_at = now()
		 WHERE d.incident_id = NEW.incident_id AND d.status = 'held';
	ELSIF NEW.event IN ('resolved', 'auto_resolved') THEN
		UPDATE gate_bridge.deliveries d
		   SET status = 'skipped'
		 WHERE d.incident_id = NEW.incident_id AND d.status = 'held';
	END IF;
	INSERT INTO gate_bridge.deliveries (destination, event_id, incident_id, event, status)
	SELECT t.name, NEW.id, NEW.incident_id, NEW.event,
		   CASE WHEN NEW.silenced AND i.silence_id IS NULL
				THEN 'skipped'	-- a flapping key's re-opening: not announced, not deferred
				WHEN NEW.silenced
					 OR (i.status = 'ack' AND i.snoozed_until > now()
						 AND NEW.event NOT IN ('resolved', 'auto_resolved', 'snooze_expired',
											   'acked', 'snoozed'))
				THEN 'held' ELSE 'pending' END
	  FROM gate_bridge.destinations t
	  JOIN gate_bridge.incident_rows i ON i.id = NEW.incident_id
	 WHERE t.enabled
	   AND NEW.event = ANY (t.events)
	   AND i.severity <= t.min_severity
	   AND gate_bridge.pattern_rank(t.agent_pattern, COALESCE(i.agent, '')) IS NOT NULL
	   AND NOT (i.kind = 'delivery' AND i.subject = t.name);
	RETURN NULL;
END
$fn$;

CREATE TRIGGER deliveries_write
	AFTER INSERT ON gate_bridge.incident_events
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.deliveries_write();

/*
 * delivery_body(kind, payload, dashboard_url, routing_key): the request
 * body for a destination of the kind, from a delivery's payload (see
 * claim_deliveries()).  webhook: the payload as is; slack: an incoming
 * webhook message (with the playbook, for a playbook's run); pagerduty: an
 * Events API v2 event (routing_key: the destination's secret).
 */
CREATE FUNCTION gate_bridge.delivery_body(kind text, payload jsonb,
										  dashboard_url text DEFAULT NULL,
										  routing_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	e jsonb := payload -> 'event';
	i jsonb := payload -> 'incident';
	link text;
	title text;
	blocks jsonb;
	playbooks text;
BEGIN
	IF delivery_body.kind = 'webhook' THEN
		RETURN payload;
	END IF;
	IF dashboard_url IS NOT NULL AND dashboard_url <> '' THEN
		link := rtrim(dashboard_url, '/') || '/?incident=' || (i ->> 'id');
	END IF;
	title := format('[%s] %s: %s', upper(i ->> 'severity'), e ->> 'event', i ->> 'summary');
	IF delivery_body.kind = 'slack' THEN
		playbooks := (SELECT string_agg(p, ', ' ORDER BY o)
						FROM jsonb_array_elements_text(COALESCE(i -> 'playbooks', '[]')) WITH ORDINALITY AS x(p, o));
		blocks := jsonb_build_array(
			jsonb_build_object('type', 'section',
				'text', jsonb_build_object('type', 'mrkdwn',
					'text', '*' || gate_bridge.slack_escape(title) || '*')),
			jsonb_build_object('type', 'section',
				'fields', jsonb_build_array(
					jsonb_build_object('type', 'mrkdwn', 'text',
						'*Severity*' || E'\n' || gate_bridge.slack_escape(i ->> 'severity')),
					jsonb_build_object('type', 'mrkdwn', 'text',
						'*Event*' || E'\n' || gate_bridge.slack_escape(e ->> 'event')),
					jsonb_build_object('type', 'mrkdwn', 'text',
						'*Agent*' || E'\n' || gate_bridge.slack_escape(COALESCE(i ->> 'agent', '-'))),
					jsonb_build_object('type', 'mrkdwn', 'text',
						'*Key*' || E'\n' || gate_bridge.slack_escape(i ->> 'key')))));
		IF payload #>> '{playbook,name}' IS NOT NULL THEN
			blocks := blocks || jsonb_build_array(jsonb_build_object('type', 'section',
				'text', jsonb_build_object('type', 'mrkdwn',
					'text', '*Playbook run*' || E'\n' || gate_bridge.slack_escape(
						COALESCE(payload #>> '{playbook,title}' || ' (' || (payload #>> '{playbook,name}') || ')',
								 payload #>> '{playbook,name}')))));
		END IF;
		IF playbooks IS NOT NULL THEN
			blocks := blocks || jsonb_build_array(jsonb_build_object('type', 'section',
				'text', jsonb_build_object('type', 'mrkdwn',
					'text', '*Playbooks*' || E'\n' || gate_bridge.slack_escape(playbooks))));
		END IF;
		IF link IS NOT NULL THEN
			blocks := blocks || jsonb_build_array(jsonb_build_object('type', 'context',
				'elements', jsonb_build_array(jsonb_build_object('type', 'mrkdwn',
					'text', '<' || gate_bridge.slack_escape(link) || '|Incident '
							|| (i ->> 'id') || '>'))));
		END IF;
		RETURN jsonb_build_object('text', title, 'blocks', blocks);
	ELSIF delivery_body.kind = 'pagerduty' THEN
		RETURN jsonb_strip_nulls(jsonb_build_object(
			'routing_key', routing_key,
			'event_action', CASE
				WHEN e ->> 'event' IN ('resolved', 'auto_resolved') THEN 'resolve'
				WHEN e ->> 'event' IN ('acked', 'snoozed') THEN 'acknowledge'
				ELSE 'trigger' END,
			'dedup_key', i ->> 'key',
			'payload', jsonb_build_object(
				'summary', left(title, 1024),
				'severity', CASE i ->> 'severity'
					WHEN 'sev1' THEN 'critical' WHEN 'sev2' THEN 'error' ELSE 'warning' END,
				'source', COALESCE(i ->> 'agent', i ->> 'key'),
				'component', i ->> 'kind',
				'timestamp', e -> 'at',
				'custom_details', jsonb_build_object(
					'incident_id', i -> 'id', 'key', i -> 'key', 'event', e -> 'event',
					'event_id', e -> 'id', 'violation_type', i -> 'violation_type',
					'status', i -> 'status', 'occurrences', i -> 'occurrences',
					'playbooks', i -> 'playbooks', 'detail', e -> 'detail')),
			'links', CASE WHEN link IS NOT NULL THEN
				jsonb_build_array(jsonb_build_object('href', link,
													 'text', 'Incident ' || (i ->> 'id'))) END));
	END IF;
	IF delivery_body.kind IN ('github', 'jira') THEN
		RAISE EXCEPTION 'a % destination''s requests depend on the destination and on the incident''s issue', delivery_body.kind
			USING ERRCODE = '22023',
				  HINT = 'gate_bridge.issue_request() renders them.';
	END IF;
	RAISE EXCEPTION 'invalid destination kind %', COALESCE(quote_literal(delivery_body.kind), 'NULL')
		USING ERRCODE = '22023',
			  HINT = 'Use webhook, slack or pagerduty.';
END
$fn$;

-- Slack's mrkdwn reserves &, < and >.
CREATE FUNCTION gate_bridge.slack_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT replace(replace(replace($1, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')
$fn$;

/*
 * claim_deliveries(worker, max_rows, lease, dashboard_url): up to max_rows
 * deliveries that are due (pending with next_attempt_at passed, or sending
 * with an expired lease), in id order, none of them behind an earlier
 * delivery of its incident to its destination that is still held, pending
 * or sending, nor while another delivery of its incident to its destination
 * is being sent (a redelivered one), nor to a destination that is disabled
 * (its rows wait); each goes to sending, leased to the worker, its attempt
 * counted.  Rows another worker is claiming are skipped, never waited for.
 * Each row is the request to send: its method, its url (the destination's,
 * or for github and jira the API's endpoint for the request) and its body,
 * rendered by delivery_body() or, for github and jira, issue_request();
 * request names what an issue destination's request asks.  A github or
 * jira delivery that has nothing to ask (a resolution of an incident that
 * has no issue there, an issue already opened) is skipped instead, with the
 * reason in last_error, and not returned.
 *
 * A row's payload is {"event", "incident"}: the event, and the incident's
 * summary fields.  For playbook_started (a playbook whose action is the
 * destination) the incident is the whole row of gate_bridge.incidents, as
 * a function action gets it (details included), and "playbook" is the
 * playbook the event names: its name, title, risk and runbook_url.
 */
CREATE FUNCTION gate_bridge.claim_deliveries(worker text, max_rows integer DEFAULT 10,
											 lease interval DEFAULT '30 s',
											 dashboard_url text DEFAULT NULL)
RETURNS TABLE (id bigint, destination text, kind text, url text, secret text,
			   event_id bigint, event text, incident_id bigint, attempt integer,
			   payload jsonb, body jsonb, method text, request text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	ids bigint[];
	r record;
	q record;
BEGIN
	IF worker IS NULL OR worker = '' OR octet_length(worker) > 256 THEN
		RAISE EXCEPTION 'a worker needs a name of 1 to 256 bytes'
			USING ERRCODE = '22023';
	END IF;
	IF max_rows IS NULL OR max_rows < 1 OR max_rows > 1000 THEN
		RAISE EXCEPTION 'max_rows must be between 1 and 1000, not %', COALESCE(max_rows::text, 'NULL')
			USING ERRCODE = '22023';
	END IF;
	IF lease IS NULL OR lease <= interval '0' OR lease > interval '1 hour' THEN
		RAISE EXCEPTION 'a lease must be positive and at most 1 hour, not %', COALESCE(lease::text, 'NULL')
			USING ERRCODE = '22023';
	END IF;
	WITH due AS (
		SELECT d.id, d.status AS was
		  FROM gate_bridge.deliveries d
		 WHERE d.status IN ('pending', 'sending')
		   AND ((d.status = 'pending' AND d.next_attempt_at <= now())
				OR (d.status = 'sending' AND d.lease_until < now()))
		   AND EXISTS (SELECT FROM gate_bridge.destinations t
						WHERE t.name = d.destination AND t.enabled)
		   AND NOT EXISTS (SELECT FROM gate_bridge.deliveries p
							WHERE p.incident_id = d.incident_id
							  AND p.destination = d.destination
							  AND p.id <> d.id
							  AND p.status IN ('held', 'pending', 'sending')
							  AND (p.id < d.id
								   OR (p.status = 'sending' AND p.lease_until >= now())))
		 ORDER BY d.id
		 LIMIT max_rows
		   FOR UPDATE OF d SKIP LOCKED
	), claimed AS (
		-- a create whose lease ran out may have reached the issue tracker
		UPDATE gate_bridge.deliveries d
		   SET status = 'sending', attempts = d.attempts + 1,
			   lease_until = now() + lease, claimed_by = worker,
			   unconfirmed = d.unconfirmed
						   OR (due.was = 'sending' AND d.request IS NOT DISTINCT FROM 'create')
		  FROM due
		 WHERE d.id = due.id
		RETURNING d.id
	)
	SELECT pg_catalog.array_agg(c.id) INTO ids FROM claimed c;

	FOR r IN
		SELECT d.id, d.destination, t.kind, t.url, t.secret, t.options, d.event_id, d.event,
			   d.incident_id, d.attempts, d.created_at,
			   -- a create of this incident here that died without an
			   -- answer may have opened the issue: look before opening it
			   d.unconfirmed
				 OR EXISTS (SELECT FROM gate_bridge.deliveries p
							 WHERE p.incident_id = d.incident_id
							   AND p.destination = d.destination
							   AND p.id <> d.id AND p.status = 'dead' AND p.unconfirmed)
				 AS unconfirmed,
			   i.details, i.external_refs -> d.destination AS ref,
			   jsonb_build_object(
				'event', jsonb_build_object(
					'id', e.id, 'position', e.position, 'event', e.event, 'at', e.at,
					'actor', e.actor, 'detail', e.detail, 'silenced', e.silenced),
				'incident', CASE WHEN d.event = 'playbook_started' THEN to_jsonb(i)
								 ELSE jsonb_build_object(
					'id', i.id, 'kind', i.kind, 'key', i.key, 'agent', i.agent,
					'violation_type', i.violation_type, 'severity', i.severity,
					'status', i.status, 'summary', i.summary, 'occurrences', i.occurrences,
					'first_seen_at', i.first_seen_at, 'last_seen_at', i.last_seen_at,
					'playbooks', i.playbooks, 'acked_by', i.acked_by,
					'resolved_by', i.resolved_by) END)
			   || CASE WHEN d.event = 'playbook_started' THEN jsonb_build_object(
					'playbook', jsonb_build_object(
						'name', e.detail ->> 'playbook', 'title', p.title, 'risk', p.risk,
						'runbook_url', p.runbook_url))
					   ELSE '{}' END AS payload
		  FROM gate_bridge.deliveries d
		  JOIN gate_bridge.destinations t ON t.name = d.destination
		  JOIN gate_bridge.incident_events e ON e.id = d.event_id
		  JOIN gate_bridge.incidents i ON i.id = d.incident_id
		  LEFT JOIN gate_bridge.playbook_registry p
			ON d.event = 'playbook_started' AND p.name = e.detail ->> 'playbook'
		 WHERE d.id = ANY (ids)
		 ORDER BY d.id
	LOOP
		id := r.id;
		destination := r.destination;
		kind := r.kind;
		secret := r.secret;
		event_id := r.event_id;
		event := r.event;
		incident_id := r.incident_id;
		attempt := r.attempts;
		payload := r.payload;
		IF r.kind IN ('github', 'jira') THEN
			SELECT * INTO q
			  FROM gate_bridge.issue_request(r.kind, r.url, r.options, r.destination, r.payload,
											 r.details, r.ref, r.unconfirmed, dashboard_url,
											 r.created_at);
			IF q.request IS NULL THEN
				UPDATE gate_bridge.deliveries d
				   SET status = 'skipped', attempts = d.attempts - 1, lease_until = NULL,
					   request = NULL, last_error = q.note
				 WHERE d.id = r.id;
				CONTINUE;
			END IF;
			UPDATE gate_bridge.deliveries d SET request = q.request WHERE d.id = r.id;
			url := q.request_url;
			method := q.method;
			body := q.body;
			request := q.request;
		ELSE
			url := r.url;
			method := 'POST';
			body := gate_bridge.delivery_body(r.kind, r.payload, dashboard_url,
											  CASE WHEN r.kind = 'pagerduty' THEN r.secret END);
			request := NULL;
		END IF;
		RETURN NEXT;
	END LOOP;
END
$fn$;

COMMENT ON FUNCTION gate_bridge.claim_deliveries(text, integer, interval, text) IS
	'Claims due deliveries for a worker (SKIP LOCKED, in order per incident and destination) and returns what to send';

/*
 * complete_delivery(id, http_status, error, retry_after, response): the
 * outcome of a claimed (sending) delivery; returns its new status.  2xx:
 * delivered.  408, 429, 5xx, a 403 with a retry_after (a rate limit), or no
 * status (NULL or 0: a network error or timeout): pending again after a
 * wait drawn at random up to 10 s * 2^(attempts - 1) (at most 1 h; full
 * jitter), or retry_after if longer, unless the delivery has had
 * gate_bridge.delivery_max_attempts attempts.  Anything else: dead at once.
 * A delivery going dead opens (or folds into) the incident
 * DELIVERY_{destination}.
 *
 * For github and jira, response is the body of the answer (its bytes, as
 * sent; read as UTF-8 JSON when it is that): a create's
 * answer gives the issue, stored on the incident (incident_rows.
 * external_refs, by destination); a find's says whether an earlier attempt
 * opened it (stored; delivered, or for an event other than created pending
 * again at once, to ask what the event asks) or not (pending again at once,
 * to create it); either way the earlier creates that died in doubt are
 * settled.  A create that got no answer, a 5xx, or a 2xx without an issue may
 * have opened it: the delivery is unconfirmed, and its next attempt, at
 * least 30 s later, is a find.  An error's message is taken from the
 * answer; GitHub's 403 that says it is a rate limit is retried, after at
 * least a minute.
 */
CREATE FUNCTION gate_bridge.complete_delivery(id bigint, http_status integer,
											  error text DEFAULT NULL,
											  retry_after interval DEFAULT NULL,
											  response bytea DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	d gate_bridge.deliveries;
	t gate_bridge.destinations;
	max_attempts integer;
	wait_secs float8;
	issue boolean;
	answer jsonb;
	ref jsonb;
	err text := complete_delivery.error;
	not_before interval := complete_delivery.retry_after;
	retryable boolean;
	maybe_opened boolean;
BEGIN
	IF complete_delivery.id IS NULL THEN
		RAISE EXCEPTION 'delivery id must not be null' USING ERRCODE = '22004';
	END IF;
	SELECT * INTO d FROM gate_bridge.deliveries x WHERE x.id = complete_delivery.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'delivery % does not exist', complete_delivery.id USING ERRCODE = 'P0002';
	END IF;
	IF d.status <> 'sending' THEN
		RAISE EXCEPTION 'delivery % is %, not sending', d.id, d.status
			USING ERRCODE = '55000',
				  HINT = 'Only a claimed delivery can be completed.';
	END IF;
	SELECT * INTO t FROM gate_bridge.destinations x WHERE x.name = d.destination;
	issue := t.kind IN ('github', 'jira') AND d.request IS NOT NULL;
	maybe_opened := d.unconfirmed;
	IF issue THEN
		answer := gate_bridge.issue_answer(response);
	END IF;
	IF http_status BETWEEN 200 AND 299 THEN
		IF issue AND d.request = 'create' THEN
			ref := gate_bridge.issue_ref(t.kind, t.url, answer);
		ELSIF issue AND d.request = 'find' THEN
			ref := gate_bridge.issue_found(t.kind, t.url, answer,
										   gate_bridge.issue_marker(d.incident_id, d.destination));
		END IF;
		IF ref IS NOT NULL THEN
			UPDATE gate_bridge.incident_rows i
			   SET external_refs = i.external_refs || jsonb_build_object(d.destination, ref)
			 WHERE i.id = d.incident_id;
		END IF;
		IF issue AND d.request = 'find'
		   AND (ref IS NOT NULL OR gate_bridge.issue_list(t.kind, answer) IS NOT NULL) THEN
			-- the search answered: earlier creates that died in doubt are
			-- settled, found or not
			UPDATE gate_bridge.deliveries x
			   SET unconfirmed = false
			 WHERE x.incident_id = d.incident_id AND x.destination = d.destination
			   AND x.id <> d.id AND x.status = 'dead' AND x.unconfirmed;
		END IF;
		IF issue AND d.request = 'find' AND ref IS NOT NULL AND d.event <> 'created' THEN
			-- found for a later event: now ask what that event asks
			UPDATE gate_bridge.deliveries x
			   SET status = 'pending', lease_until = NULL, next_attempt_at = now(),
				   unconfirmed = false, last_status = http_status,
				   last_error = 'found the issue an earlier attempt opened: ' || (ref ->> 'url')
			 WHERE x.id = d.id;
			RETURN 'pending';
		END IF;
		IF NOT issue OR d.request NOT IN ('create', 'find') OR ref IS NOT NULL THEN
			UPDATE gate_bridge.deliveries x
			   SET status = 'delivered', delivered_at = now(), lease_until = NULL,
				   last_status = http_status, unconfirmed = false,
				   last_error = CASE WHEN d.request = 'find'
									 THEN 'found the issue an earlier attempt opened: ' || (ref ->> 'url')
									 ELSE left(err, 1000) END
			 WHERE x.id = d.id;
			RETURN 'delivered';
		END IF;
		IF d.request = 'find' AND gate_bridge.issue_list(t.kind, answer) IS NOT NULL THEN
			-- no earlier attempt opened it: the next attempt creates it, now
			UPDATE gate_bridge.deliveries x
			   SET status = 'pending', lease_until = NULL, next_attempt_at = now(),
				   unconfirmed = false, last_status = http_status,
				   last_error = 'no issue opened by an earlier attempt was found; '
								|| CASE WHEN d.event IN ('resolved', 'auto_resolved')
										THEN 'nothing to close' ELSE 'creating it' END
			 WHERE x.id = d.id;
			RETURN 'pending';
		END IF;
		-- a create answered without an issue, or a find without a list
		err := format('HTTP %s, but the answer has no %s', http_status,
					  CASE d.request WHEN 'create' THEN 'issue (id and URL)' ELSE 'list of issues' END);
		maybe_opened := d.request = 'create' OR d.unconfirmed;
		retryable := true;
	ELSE
		IF issue THEN
			err := COALESCE(gate_bridge.issue_error(t.kind, http_status, answer), err);
		END IF;
		retryable := http_status IS NULL OR http_status = 0 OR http_status IN (408, 429)
					 OR http_status >= 500
					 OR (http_status = 403 AND retry_after IS NOT NULL);
		-- GitHub's secondary rate limit: a 403 that says so; wait a minute
		IF NOT retryable AND t.kind = 'github' AND http_status = 403
		   AND answer ->> 'message' ILIKE '%rate limit%' THEN
			retryable := true;
			not_before := interval '1 minute';
		END IF;
		IF d.request = 'create' AND (http_status IS NULL OR http_status = 0 OR http_status >= 500) THEN
			maybe_opened := true;
		END IF;
	END IF;
	-- look for the issue only once the tracker's search can see it
	IF issue AND maybe_opened THEN
		not_before := GREATEST(not_before, interval '30 seconds');
	END IF;
	-- the library defines the setting: a call into it loads it
	PERFORM gate_bridge.pattern_rank('*', 'delivery');
	max_attempts := current_setting('gate_bridge.delivery_max_attempts')::integer;
	IF retryable AND d.attempts < max_attempts THEN
		wait_secs := random() * LEAST(3600.0, 10.0 * 2.0 ^ LEAST(GREATEST(d.attempts - 1, 0), 30));
		UPDATE gate_bridge.deliveries x
		   SET status = 'pending', lease_until = NULL,
			   next_attempt_at = now() + GREATEST(not_before, make_interval(secs => wait_secs)),
			   last_status = http_status, last_error = left(err, 1000),
			   unconfirmed = maybe_opened
		 WHERE x.id = d.id;
		RETURN 'pending';
	END IF;
	UPDATE gate_bridge.deliveries x
	   SET status = 'dead', lease_until = NULL,
		   last_status = http_status, last_error = left(err, 1000),
		   unconfirmed = maybe_opened
	 WHERE x.id = d.id;
	PERFORM gate_bridge.on_delivery_failure(d.destination,
		jsonb_build_object('destination', d.destination, 'kind', t.kind,
						   'last_status', http_status, 'last_error', left(err, 1000),
						   'attempts', d.attempts, 'delivery_id', d.id, 'event_id', d.event_id,
						   'incident_id', d.incident_id, 'event', d.event)
		|| CASE WHEN d.request IS NOT NULL THEN jsonb_build_object('request', d.request)
				ELSE '{}' END);
	RETURN 'dead';
END
$fn$;

COMMENT ON FUNCTION gate_bridge.complete_delivery(bigint, integer, text, interval, bytea) IS
	'Records the outcome of a claimed delivery: delivered (for github and jira, the issue stored on the incident), retried later with backoff, or dead (which opens DELIVERY_{destination})';

/*
 * release_deliveries(worker): a worker that stops puts its claimed rows
 * back, due now, without counting their attempt; returns how many.
 */
CREATE FUNCTION gate_bridge.release_deliveries(worker text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	n integer;
BEGIN
	UPDATE gate_bridge.deliveries d
	   SET status = 'pending', attempts = GREATEST(d.attempts - 1, 0),
		   next_attempt_at = now(), lease_until = NULL, claimed_by = NULL
	 WHERE d.status = 'sending' AND d.claimed_by = release_deliveries.worker;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$fn$;

/*
 * redeliver(id): a dead, delivered or skipped delivery is due again now,
 * with its attempts reset.  Unknown: P0002; held, pending or sending: 55000.
 */
CREATE FUNCTION gate_bridge.redeliver(id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	st text;
BEGIN
	IF redeliver.id IS NULL THEN
		RAISE EXCEPTION 'delivery id must not be null' USING ERRCODE = '22004';
	END IF;
	SELECT d.status INTO st FROM gate_bridge.deliveries d WHERE d.id = redeliver.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'delivery % does not exist', redeliver.id USING ERRCODE = 'P0002';
	END IF;
	IF st NOT IN ('dead', 'delivered', 'skipped') THEN
		RAISE EXCEPTION 'delivery % is %', redeliver.id, st
			USING ERRCODE = '55000',
				  HINT = 'Only a dead, delivered or skipped delivery can be delivered again.';
	END IF;
	UPDATE gate_bridge.deliveries d
	   SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL,
		   claimed_by = NULL, delivered_at = NULL
	 WHERE d.id = redeliver.id;
END
$fn$;

/*
 * on_delivery_failure(destination, details): opens, or folds into, the
 * incident DELIVERY_{destination} (kind delivery, sev2) through the
 * decisions every violation takes; complete_delivery() calls it.
 */
CREATE FUNCTION gate_bridge.on_delivery_failure(destination text, details jsonb)
RETURNS bigint
AS 'MODULE_PATHNAME', 'gate_bridge_on_delivery_failure'
LANGUAGE C VOLATILE;

REVOKE ALL ON gate_bridge.destinations, gate_bridge.deliveries,
	gate_bridge.delivery_status, gate_bridge.delivery_stats FROM PUBLIC;
REVOKE ALL ON SEQUENCE gate_bridge.deliveries_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.deliveries_write(),
	gate_bridge.delivery_body(text, jsonb, text, text),
	gate_bridge.slack_escape(text),
	gate_bridge.claim_deliveries(text, integer, interval, text),
	gate_bridge.complete_delivery(bigint, integer, text, interval, bytea),
	gate_bridge.release_deliveries(text),
	gate_bridge.redeliver(bigint),
	gate_bridge.on_delivery_failure(text, jsonb) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Issue openers: destinations of the kinds github and jira open an issue for
-- an incident, comment on it, and close it.  The issue (its id and URL) is
-- stored on the incident, by destination (incident_rows.external_refs).
-------------------------------------------------------------------------------

/*
 * The rules of the issue kinds, with a message that says what is wrong:
 * a github destination's url is the repository's API base
 * (https://api.github.com/repos/OWNER/REPO) and its secret a token; a jira
 * destination's url is the site's REST base and the project
 * (https://SITE/rest/api/2/project/KEY), its secret EMAIL:API_TOKEN (Basic
 * authentication, Jira Cloud) or a personal access token (Bearer, Jira Data
 * Center), and its options the transition that resolves an issue (required
 * when it takes resolutions), the one that reopens it, the issue type and
 * the deployment, "cloud" or "data_center" (which search a lost create's
 * next attempt uses: Cloud has only /search/jql, Data Center only /search;
 * without it, a site on atlassian.net is Cloud and any other Data Center,
 * so a Cloud site on a domain of its own needs it).  A token goes only over
 * https, or over http to a loopback address.  The other kinds take no
 * options.  Also for restored and replicated rows.
 */
CREATE FUNCTION gate_bridge.destinations_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	allowed text[];
	opt text;
	host text;
BEGIN
	IF NEW.options IS NULL OR jsonb_typeof(NEW.options) <> 'object' THEN
		RAISE EXCEPTION 'the options of destination "%" must be a JSON object', NEW.name
			USING ERRCODE = '23514';
	END IF;
	allowed := CASE NEW.kind WHEN 'jira' THEN ARRAY['issue_type', 'resolve_transition', 'reopen_transition',
													'deployment']
							 ELSE ARRAY[]::text[] END;
	FOR opt IN SELECT k FROM jsonb_object_keys(NEW.options) k ORDER BY k LOOP
		IF NOT opt = ANY (allowed) THEN
			RAISE EXCEPTION 'a % destination has no option "%"', NEW.kind, opt
				USING ERRCODE = '23514',
					  HINT = CASE NEW.kind WHEN 'jira' THEN 'A jira destination takes issue_type, resolve_transition, reopen_transition and deployment.'
										   ELSE 'Only jira destinations take options.' END;
		END IF;
	END LOOP;
	IF NEW.kind NOT IN ('github', 'jira') THEN
		RETURN NEW;
	END IF;

	IF NEW.kind = 'github'
	   AND NEW.url !~ '^https?://[^/?#[:space:]]+(/[^?#[:space:]]*)?/repos/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$' THEN
		RAISE EXCEPTION 'the url of github destination "%" is not a repository''s API base', NEW.name
			USING ERRCODE = '23514',
				  HINT = 'Use https://api.github.com/repos/OWNER/REPO (GitHub Enterprise Server: https://HOST/api/v3/repos/OWNER/REPO), without a query or a trailing slash.';
	END IF;
	IF NEW.kind = 'jira'
	   AND NEW.url !~ '^https?://[^/?#[:space:]]+(/[^?#[:space:]]*)?/rest/api/2/project/[A-Z][A-Z0-9_]*$' THEN
		RAISE EXCEPTION 'the url of jira destination "%" is not a site''s REST base and a project', NEW.name
			USING ERRCODE = '23514',
				  HINT = 'Use https://SITE/rest/api/2/project/KEY (e.g. https://example.atlassian.net/rest/api/2/project/OPS), the project''s key in capitals, without a query or a trailing slash.';
	END IF;
	host := lower(substring(NEW.url from '^https?://(?:[^@/]*@)?(\[[^]]*\]|[^:/]+)'));
	IF NEW.url ~* '^http://' AND host NOT IN ('localhost', '[::1]') AND host !~ '^127\.[0-9]+\.[0-9]+\.[0-9]+$' THEN
		RAISE EXCEPTION 'a % destination sends its secret with every request: its url must be https', NEW.kind
			USING ERRCODE = '23514',
				  HINT = 'http is allowed only to a loopback address (localhost, 127.0.0.1, [::1]).';
	END IF;
	IF NEW.secret IS NULL THEN
		RAISE EXCEPTION 'a % destination needs its credentials in secret', NEW.kind
			USING ERRCODE = '23514',
				  HINT = CASE NEW.kind
					WHEN 'github' THEN 'A token that may write the repository''s issues (fine-grained: Issues read and write; classic: the repo scope).'
					ELSE 'EMAIL:API_TOKEN for Jira Cloud (Basic authentication), or a personal access token for Jira Data Center (Bearer).' END;
	END IF;
	IF NEW.secret !~ '^[!-~]+$' THEN
		RAISE EXCEPTION 'the secret of % destination "%" goes into an HTTP header: it must be printable ASCII without spaces', NEW.kind, NEW.name
			USING ERRCODE = '23514';
	END IF;
	IF NEW.kind = 'jira' THEN
		IF NEW.options ? 'issue_type'
		   AND (jsonb_typeof(NEW.options -> 'issue_type') <> 'string'
				OR NEW.options ->> 'issue_type' !~ '[^[:space:]]'
				OR length(NEW.options ->> 'issue_type') > 255) THEN
			RAISE EXCEPTION 'the issue_type of jira destination "%" must be the name of an issue type', NEW.name
				USING ERRCODE = '23514',
					  HINT = 'Like "Bug" (the default), "Task" or "Incident".';
		END IF;
		IF NEW.options ? 'deployment'
		   AND (jsonb_typeof(NEW.options -> 'deployment') <> 'string'
				OR NEW.options ->> 'deployment' NOT IN ('cloud', 'data_center')) THEN
			RAISE EXCEPTION 'the deployment of jira destination "%" must be "cloud" or "data_center"', NEW.name
				USING ERRCODE = '23514',
					  HINT = '"cloud" for Jira Cloud (on atlassian.net or a domain of its own), "data_center" for Jira Data Center or Server; without it, a site on atlassian.net is taken for Cloud and any other for Data Center.';
		END IF;
		FOREACH opt IN ARRAY ARRAY['resolve_transition', 'reopen_transition'] LOOP
			IF NEW.options ? opt
			   AND (jsonb_typeof(NEW.options -> opt) NOT IN ('string', 'number')
					OR NEW.options ->> opt !~ '^[0-9]{1,18}$') THEN
				RAISE EXCEPTION 'the % of jira destination "%" must be a transition''s id', opt, NEW.name
					USING ERRCODE = '23514',
						  HINT = 'A number, like "31": GET /rest/api/2/issue/{issueIdOrKey}/transitions lists an issue''s transitions and their ids.';
			END IF;
		END LOOP;
		IF NEW.events && ARRAY['resolved', 'auto_resolved'] AND NOT NEW.options ? 'resolve_transition' THEN
			RAISE EXCEPTION 'jira destination "%" takes resolutions but has no resolve_transition', NEW.name
				USING ERRCODE = '23514',
					  HINT = 'Give options ''{"resolve_transition": "ID"}'' (GET /rest/api/2/issue/{issueIdOrKey}/transitions lists the ids), or leave resolved and auto_resolved out of events.';
		END IF;
	END IF;
	RETURN NEW;
END
$fn$;

CREATE TRIGGER destinations_guard
	BEFORE INSERT OR UPDATE OF kind, url, secret, events, options ON gate_bridge.destinations
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.destinations_guard();
ALTER TABLE gate_bridge.destinations ENABLE ALWAYS TRIGGER destinations_guard;

/*
 * A destination renamed keeps its issues: the incidents' references move to
 * the new name.
 */
CREATE FUNCTION gate_bridge.destinations_renamed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	UPDATE gate_bridge.incident_rows i
	   SET external_refs = (i.external_refs - OLD.name)
						   || jsonb_build_object(NEW.name, i.external_refs -> OLD.name)
	 WHERE i.external_refs ? OLD.name;
	RETURN NULL;
END
$fn$;

CREATE TRIGGER destinations_renamed
	AFTER UPDATE OF name ON gate_bridge.destinations
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION gate_bridge.destinations_renamed();

-- Percent-encoding of a URL's query value (RFC 3986: all but the unreserved).
CREATE FUNCTION gate_bridge.url_encode(t text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT COALESCE(string_agg(CASE WHEN b.v BETWEEN 48 AND 57 OR b.v BETWEEN 65 AND 90
										  OR b.v BETWEEN 97 AND 122 OR b.v IN (45, 46, 95, 126)
									THEN chr(b.v)
									ELSE '%' || upper(lpad(to_hex(b.v), 2, '0')) END,
							   '' ORDER BY b.n), '')
	  FROM (SELECT n, get_byte(convert_to($1, 'UTF8'), n) AS v
			  FROM generate_series(0, octet_length(convert_to($1, 'UTF8')) - 1) AS n) b
$fn$;

-- Text shown as it is: in GitHub's Markdown (a backslash before the ASCII
-- punctuation that means something) and in Jira's wiki markup; on one line.
CREATE FUNCTION gate_bridge.markdown_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT regexp_replace(regexp_replace($1, '[[:cntrl:]]+', ' ', 'g'),
						  '([][\\`*_{}<>()#+!|~&-])', '\\\1', 'g')
$fn$;

CREATE FUNCTION gate_bridge.jira_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT regexp_replace(regexp_replace($1, '[[:cntrl:]]+', ' ', 'g'),
						  '([][\\*_+^~{}|!#?-])', '\\\1', 'g')
$fn$;

/*
 * The line every issue body ends with: what an attempt that lost its answer
 * looks for (issue_found()).  A destination's name has no ")".
 */
CREATE FUNCTION gate_bridge.issue_marker(incident_id bigint, destination text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT format('(gate-bridge incident %s, destination %s)', $1, $2)
$fn$;

/*
 * issue_request(kind, url, options, destination, payload, details, ref,
 * unconfirmed, dashboard_url, since): what a github or jira destination
 * asks of its tracker for a delivery.  payload is a delivery's (see
 * claim_deliveries()), details the incident's, ref its issue at this
 * destination (NULL: none yet), since when the delivery was written.
 *
 *   no issue yet:   create it; for a resolution, nothing; but find it
 *                   first when an earlier attempt may have opened it
 *                   (unconfirmed), whatever the event
 *   created:        nothing (the issue is open already: a redelivery)
 *   resolved, auto_resolved: close it (jira: resolve_transition)
 *   reopened:       reopen it (jira: reopen_transition; without it, comment)
 *   any other event: a comment
 *
 * request is create, find, comment, close or reopen, or NULL when there is
 * nothing to ask (note says why); method, request_url and body are the
 * HTTP request (body NULL for a GET).
 */
CREATE FUNCTION gate_bridge.issue_request(kind text, url text, options jsonb, destination text,
										  payload jsonb, details jsonb DEFAULT '{}',
										  ref jsonb DEFAULT NULL,
										  unconfirmed boolean DEFAULT false,
										  dashboard_url text DEFAULT NULL,
										  since timestamptz DEFAULT now(),
										  OUT request text, OUT method text,
										  OUT request_url text, OUT body jsonb, OUT note text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	e jsonb := payload -> 'event';
	i jsonb := payload -> 'incident';
	ev text := payload #>> '{event,event}';
	github boolean := issue_request.kind = 'github';
	base text;
	project text;
	link text;
	summary text;
	title text;
	facts text[];
	playbooks text;
	dj text;
	fence text;
	headline text;
	txt text;
	transition text;
	endpoint text;
	jql text;
	first_seen text;
BEGIN
	IF issue_request.kind IS NULL OR issue_request.kind NOT IN ('github', 'jira') THEN
		RAISE EXCEPTION 'invalid issue destination kind %', COALESCE(quote_literal(issue_request.kind), 'NULL')
			USING ERRCODE = '22023',
				  HINT = 'Use github or jira.';
	END IF;
	IF github THEN
		base := url;
	ELSE
		base := substring(url from '^(.*)/rest/api/2/project/[^/]+$');
		project := substring(url from '/rest/api/2/project/([^/]+)$');
	END IF;
	IF base IS NULL OR e IS NULL OR i IS NULL THEN
		RAISE EXCEPTION 'issue_request() needs a % destination''s url and a delivery''s payload', issue_request.kind
			USING ERRCODE = '22023';
	END IF;

	-- what to ask
	IF ref IS NULL THEN
		IF unconfirmed THEN
			request := 'find';
		ELSIF ev IN ('resolved', 'auto_resolved') THEN
			note := 'no issue was opened for this incident here: nothing to close';
			RETURN;
		ELSE
			request := 'create';
		END IF;
	ELSIF ev = 'created' THEN
		note := 'the incident''s issue was opened already: ' || COALESCE(ref ->> 'url', ref ->> 'id');
		RETURN;
	ELSIF ev IN ('resolved', 'auto_resolved') THEN
		transition := options ->> 'resolve_transition';
		request := CASE WHEN github OR transition IS NOT NULL THEN 'close' ELSE 'comment' END;
	ELSIF ev = 'reopened' THEN
		transition := options ->> 'reopen_transition';
		request := CASE WHEN github OR transition IS NOT NULL THEN 'reopen' ELSE 'comment' END;
	ELSE
		request := 'comment';
	END IF;

	IF dashboard_url IS NOT NULL AND dashboard_url <> '' THEN
		link := replace(replace(replace(replace(replace(
					rtrim(dashboard_url, '/') || '/?incident=' || (i ->> 'id'),
					' ', '%20'), '<', '%3C'), '>', '%3E'), '|', '%7C'), ']', '%5D');
	END IF;
	summary := COALESCE(NULLIF(i ->> 'summary', ''), i ->> 'key');

	IF request = 'find' THEN
		method := 'GET';
		IF github THEN
			-- the issues created since the delivery was written, newest first
			request_url := base || '/issues?state=all&sort=created&direction=desc&per_page=50&since='
				|| to_char((since - interval '10 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
		ELSE
			jql := format('project = "%s" AND labels = "gate-bridge" AND created >= "-%sm" ORDER BY created DESC',
						  project, ceil(extract(epoch FROM now() - since) / 60)::bigint + 10);
			-- Jira Cloud's search is /search/jql (it removed /search);
			-- Data Center's is /search.  The option deployment says which
			-- the site is; without it, atlassian.net is Cloud.
			endpoint := CASE
				WHEN options ->> 'deployment' = 'cloud' THEN '/rest/api/2/search/jql'
				WHEN options ->> 'deployment' = 'data_center' THEN '/rest/api/2/search'
				WHEN lower(substring(base from '^https?://([^/:]+)')) LIKE '%.atlassian.net'
				THEN '/rest/api/2/search/jql'
				ELSE '/rest/api/2/search' END;
			request_url := base || endpoint || '?jql=' || gate_bridge.url_encode(jql)
				|| '&fields=description&maxResults=50';
		END IF;
		RETURN;
	END IF;

	IF request = 'create' THEN
		method := 'POST';
		title := regexp_replace(format('[%s] %s', upper(i ->> 'severity'), summary), '[[:cntrl:]]+', ' ', 'g');
		playbooks := (SELECT string_agg(p, ', ' ORDER BY o)
						FROM jsonb_array_elements_text(COALESCE(i -> 'playbooks', '[]')) WITH ORDINALITY AS x(p, o));
		first_seen := to_char((i ->> 'first_seen_at')::timestamptz AT TIME ZONE 'UTC',
							  'YYYY-MM-DD HH24:MI:SS "UTC"');
		dj := jsonb_pretty(COALESCE(details, '{}'));
		IF length(dj) > 20000 THEN
			dj := left(dj, 20000) || E'\n... (cut at 20000 characters)';
		END IF;
		IF github THEN
			facts := ARRAY[
				'- **Severity:** ' || upper(i ->> 'severity'),
				'- **Kind:** ' || gate_bridge.markdown_escape(i ->> 'kind')
					|| COALESCE(' (' || gate_bridge.markdown_escape(i ->> 'violation_type') || ')', ''),
				'- **Agent:** ' || gate_bridge.markdown_escape(COALESCE(i ->> 'agent', '-')),
				'- **Key:** ' || gate_bridge.markdown_escape(i ->> 'key'),
				'- **Occurrences:** ' || (i ->> 'occurrences'),
				'- **First seen:** ' || first_seen,
				'- **Playbooks:** ' || gate_bridge.markdown_escape(playbooks),
				'- **Dashboard:** [incident ' || (i ->> 'id') || '](<' || link || '>)'];
			-- a code fence longer than any run of backticks in the details
			fence := repeat('`', GREATEST(3, (SELECT max(length(m[1])) + 1
												FROM regexp_matches(dj, '(`+)', 'g') AS m)));
			txt := gate_bridge.markdown_escape(summary) || E'\n\n'
				|| array_to_string(facts, E'\n') || E'\n\n'
				|| E'<details><summary>Details</summary>\n\n'
				|| fence || E'json\n' || dj || E'\n' || fence || E'\n\n</details>\n\n'
				|| gate_bridge.issue_marker((i ->> 'id')::bigint, destination);
			request_url := base || '/issues';
			body := jsonb_build_object('title', left(title, 256), 'body', txt,
									   'labels', jsonb_build_array('gate-bridge', i ->> 'severity', i ->> 'kind'));
		ELSE
			facts := ARRAY[
				'* *Severity:* ' || upper(i ->> 'severity'),
				'* *Kind:* ' || gate_bridge.jira_escape(i ->> 'kind')
					|| COALESCE(' (' || gate_bridge.jira_escape(i ->> 'violation_type') || ')', ''),
				'* *Agent:* ' || gate_bridge.jira_escape(COALESCE(i ->> 'agent', '-')),
				'* *Key:* ' || gate_bridge.jira_escape(i ->> 'key'),
				'* *Occurrences:* ' || (i ->> 'occurrences'),
				'* *First seen:* ' || first_seen,
				'* *Playbooks:* ' || gate_bridge.jira_escape(playbooks),
				'* *Dashboard:* [incident ' || (i ->> 'id') || '|' || link || ']'];
			txt := gate_bridge.jira_escape(summary) || E'\n\n'
				|| array_to_string(facts, E'\n') || E'\n\n'
				|| E'{noformat}\n' || replace(dj, '{noformat}', '{ noformat}') || E'\n{noformat}\n\n'
				|| gate_bridge.issue_marker((i ->> 'id')::bigint, destination);
			request_url := base || '/rest/api/2/issue';
			body := jsonb_build_object('fields', jsonb_build_object(
						'project', jsonb_build_object('key', project),
						'summary', left(title, 255),
						'description', txt,
						'issuetype', jsonb_build_object('name', COALESCE(options ->> 'issue_type', 'Bug')),
						'labels', jsonb_build_array('gate-bridge', i ->> 'severity', i ->> 'kind')));
		END IF;
		RETURN;
	END IF;

	-- the issue exists: a comment, a close or a reopen of it
	IF github THEN
		request_url := base || '/issues/' || gate_bridge.url_encode(ref ->> 'id');
	ELSE
		request_url := base || '/rest/api/2/issue/' || gate_bridge.url_encode(ref ->> 'id');
	END IF;
	IF request IN ('close', 'reopen') THEN
		IF github THEN
			method := 'PATCH';
			body := CASE request WHEN 'close' THEN '{"state": "closed", "state_reason": "completed"}'::jsonb
								 ELSE '{"state": "open", "state_reason": "reopened"}'::jsonb END;
		ELSE
			method := 'POST';
			request_url := request_url || '/transitions';
			body := jsonb_build_object('transition', jsonb_build_object('id', transition));
		END IF;
		RETURN;
	END IF;

	headline := CASE ev
		WHEN 'escalated' THEN
			CASE WHEN e #>> '{detail,from}' IS NOT NULL AND e #>> '{detail,to}' IS NOT NULL
				 THEN format('Escalated from %s to %s.', upper(e #>> '{detail,from}'), upper(e #>> '{detail,to}'))
				 ELSE format('Escalated to %s.', upper(i ->> 'severity')) END
		WHEN 'reopened' THEN 'Reopened: the violation is back.'
		WHEN 'acked' THEN format('Acknowledged by %s.', COALESCE(e ->> 'actor', 'someone'))
		WHEN 'snoozed' THEN format('Snoozed by %s%s.', COALESCE(e ->> 'actor', 'someone'),
								   COALESCE(' until ' || COALESCE(e #>> '{detail,until}', e #>> '{detail,snoozed_until}'), ''))
		WHEN 'snooze_expired' THEN 'The snooze ran out: the incident is open again.'
		WHEN 'silenced' THEN 'A silence holds the incident''s announcements back.'
		WHEN 'silence_ended' THEN 'The silence ended; the incident is still unresolved.'
		WHEN 'flapping' THEN 'The key is flapping: its re-openings are not announced.'
		WHEN 'flapping_ended' THEN 'The key has stopped flapping.'
		WHEN 'resolved' THEN format('Resolved by %s.', COALESCE(e ->> 'actor', 'someone'))
		WHEN 'auto_resolved' THEN 'Resolved: the agent recovered.'
		ELSE format('%s by %s.', initcap(replace(ev, '_', ' ')), COALESCE(e ->> 'actor', 'someone')) END;
	method := 'POST';
	IF github THEN
		txt := '**' || gate_bridge.markdown_escape(headline) || E'**\n\n'
			|| '[' || upper(i ->> 'severity') || '] ' || gate_bridge.markdown_escape(summary)
			|| COALESCE(E'\n\n> ' || gate_bridge.markdown_escape(NULLIF(e #>> '{detail,note}', '')), '')
			|| COALESCE(E'\n\n[incident ' || (i ->> 'id') || '](<' || link || '>)', '');
		request_url := request_url || '/comments';
	ELSE
		txt := '*' || gate_bridge.jira_escape(headline) || E'*\n\n'
			|| '[' || upper(i ->> 'severity') || '] ' || gate_bridge.jira_escape(summary)
			|| COALESCE(E'\n\nbq. ' || gate_bridge.jira_escape(NULLIF(e #>> '{detail,note}', '')), '')
			|| COALESCE(E'\n\n[incident ' || (i ->> 'id') || '|' || link || ']', '');
		request_url := request_url || '/comment';
	END IF;
	body := jsonb_build_object('body', txt);
END
$fn$;

COMMENT ON FUNCTION gate_bridge.issue_request(text, text, jsonb, text, jsonb, jsonb, jsonb, boolean, text, timestamptz) IS
	'What a github or jira destination asks of its tracker for a delivery: create, find, comment, close or reopen, and the HTTP request';

-- A tracker's answer as JSON, or NULL when it is not UTF-8 JSON.  Whatever
-- an answer holds (bytes that are not UTF-8, a \u0000, JSON nested too
-- deep to read), it does not make complete_delivery() fail.
CREATE FUNCTION gate_bridge.issue_answer(response bytea)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN convert_from(response, 'UTF8')::jsonb;
EXCEPTION
	WHEN OTHERS THEN
		RETURN NULL;
END
$fn$;

-- The issue an answer describes (a create's, or an element of a search's),
-- as stored in external_refs, or NULL.
CREATE FUNCTION gate_bridge.issue_ref(kind text, url text, answer jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	IF jsonb_typeof(answer) IS DISTINCT FROM 'object' THEN
		RETURN NULL;
	END IF;
	IF kind = 'github' AND answer ->> 'number' ~ '^[0-9]{1,18}$'
	   AND answer ->> 'html_url' ~ '^https?://[^[:space:]]+$' THEN
		RETURN jsonb_build_object('kind', 'github', 'id', answer ->> 'number',
								  'url', answer ->> 'html_url');
	END IF;
	IF kind = 'jira' AND answer ->> 'id' ~ '^[0-9]{1,18}$'
	   AND answer ->> 'key' ~ '^[A-Za-z][A-Za-z0-9_]*-[0-9]+$' THEN
		RETURN jsonb_build_object('kind', 'jira', 'id', answer ->> 'id', 'key', answer ->> 'key',
								  'url', substring(url from '^(.*)/rest/api/2/project/[^/]+$')
										 || '/browse/' || (answer ->> 'key'));
	END IF;
	RETURN NULL;
END
$fn$;

-- The issues of a search's answer (GitHub: the list; Jira: its "issues"),
-- or NULL when the answer is not a search's.
CREATE FUNCTION gate_bridge.issue_list(kind text, answer jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT CASE
		WHEN $1 = 'github' AND jsonb_typeof($2) = 'array' THEN $2
		WHEN $1 = 'jira' AND jsonb_typeof($2) = 'object'
			 AND jsonb_typeof($2 -> 'issues') = 'array' THEN $2 -> 'issues' END
$fn$;

-- The issue of a search's answer whose body (GitHub) or description (Jira)
-- holds the marker, the oldest if several do; NULL if none.  GitHub lists
-- pull requests too: they are not issues.
CREATE FUNCTION gate_bridge.issue_found(kind text, url text, answer jsonb, marker text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
	SELECT gate_bridge.issue_ref($1, $2, x.v)
	  FROM jsonb_array_elements(gate_bridge.issue_list($1, $3)) AS x(v)
	 WHERE jsonb_typeof(x.v) = 'object'
	   AND NOT x.v ? 'pull_request'
	   AND position($4 IN COALESCE(CASE $1 WHEN 'github' THEN x.v ->> 'body'
										ELSE x.v #>> '{fields,description}' END, '')) > 0
	   AND gate_bridge.issue_ref($1, $2, x.v) IS NOT NULL
	 ORDER BY CASE $1 WHEN 'github' THEN x.v ->> 'number' ELSE x.v ->> 'id' END::numeric
	 LIMIT 1
$fn$;

-- The message of a tracker's error answer: GitHub's "message" and
-- "errors", Jira's "errorMessages" and "errors"; NULL without one.
CREATE FUNCTION gate_bridge.issue_error(kind text, http_status integer, answer jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	msg text;
	more text;
BEGIN
	IF jsonb_typeof(answer) IS DISTINCT FROM 'object' THEN
		RETURN NULL;
	END IF;
	IF kind = 'github' THEN
		msg := answer ->> 'message';
		IF jsonb_typeof(answer -> 'errors') = 'array' THEN
			SELECT string_agg(CASE jsonb_typeof(x.v)
								WHEN 'object' THEN COALESCE(x.v ->> 'message',
									concat_ws(' ', x.v ->> 'resource', x.v ->> 'field', x.v ->> 'code'))
								ELSE x.v #>> '{}' END, '; ' ORDER BY x.n)
			  INTO more
			  FROM jsonb_array_elements(answer -> 'errors') WITH ORDINALITY AS x(v, n);
		END IF;
	ELSE
		IF jsonb_typeof(answer -> 'errorMessages') = 'array' THEN
			SELECT string_agg(x.v #>> '{}', '; ' ORDER BY x.n) INTO msg
			  FROM jsonb_array_elements(answer -> 'errorMessages') WITH ORDINALITY AS x(v, n);
		END IF;
		IF jsonb_typeof(answer -> 'errors') = 'object' THEN
			SELECT string_agg(x.k || ': ' || (x.v #>> '{}'), '; ' ORDER BY x.k) INTO more
			  FROM jsonb_each(answer -> 'errors') AS x(k, v);
		END IF;
	END IF;
	msg := concat_ws(': ', NULLIF(msg, ''), NULLIF(more, ''));
	IF msg IS NULL OR msg = '' THEN
		RETURN NULL;
	END IF;
	RETURN format('HTTP %s: %s', http_status, regexp_replace(msg, '[[:cntrl:]]+', ' ', 'g'));
END
$fn$;

REVOKE ALL ON FUNCTION gate_bridge.destinations_guard(),
	gate_bridge.destinations_renamed(),
	gate_bridge.url_encode(text),
	gate_bridge.markdown_escape(text),
	gate_bridge.jira_escape(text),
	gate_bridge.issue_marker(bigint, text),
	gate_bridge.issue_request(text, text, jsonb, text, jsonb, jsonb, jsonb, boolean, text, timestamptz),
	gate_bridge.issue_answer(bytea),
	gate_bridge.issue_ref(text, text, jsonb),
	gate_bridge.issue_list(text, jsonb),
	gate_bridge.issue_found(text, text, jsonb, text),
	gate_bridge.issue_error(text, integer, jsonb) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Budgets for the windowed gates: min_samples, method and the baseline's
-- history and width (appended to the table).
-------------------------------------------------------------------------------
ALTER TABLE gate_bridge.budgets
	ADD COLUMN min_samples integer NOT NULL DEFAULT 1,
	ADD COLUMN method text NOT NULL DEFAULT 'mean',
	ADD COLUMN baseline_windows integer NOT NULL DEFAULT 4,
	ADD COLUMN baseline_k float8 NOT NULL DEFAULT 3,
	ADD CONSTRAINT budgets_min_samples_check
		CHECK (min_samples OPERATOR(pg_catalog.>=) 1
			   AND min_samples OPERATOR(pg_catalog.<=) 1000000),
	ADD CONSTRAINT budgets_baseline_windows_check
		CHECK (baseline_windows OPERATOR(pg_catalog.>=) 2
			   AND baseline_windows OPERATOR(pg_catalog.<=) 100),
	ADD CONSTRAINT budgets_baseline_k_check
		CHECK (baseline_k OPERATOR(pg_catalog.>) 0::float8
			   AND baseline_k OPERATOR(pg_catalog.<=) 100::float8);

-------------------------------------------------------------------------------
-- Gates that tell signal from noise: sample sizes, Wilson bounds, baselines
-- (src/evaluate.c), canary statistics (src/planners.c) and heartbeats
-- (src/heartbeats.c).
-------------------------------------------------------------------------------

/*
 * The windows a baseline was computed from.  A budget with method
 * 'baseline' judges its metric against the agent's own history: the
 * baseline_windows whole windows of the budget's lookback, aligned to
 * multiples of the lookback from 2000-01-01 00:00 UTC, that end at or
 * before the start of the current window.  A window that has ended does not
 * change as time goes on, so run_gates() computes each one once, from the
 * rows of eval_results, and keeps it here; evaluate_agent() reads what is
 * kept and computes what is missing without keeping it.  value is the
 * metric over the window's rows (NULL when it has none), samples their
 * number.  Rows inserted into an ended window later (a backfill), or
 * deleted from it, do not change what is kept: delete the agent's rows here
 * to have them computed again.  When it keeps a window, run_gates()
 * removes that metric's windows older than its baseline reaches.
 */
CREATE TABLE gate_bridge.gate_windows (
	agent			text NOT NULL,
	budget_type		text NOT NULL,
	lookback		interval NOT NULL,
	window_end		timestamptz NOT NULL,
	samples			bigint NOT NULL,
	value			float8,
	computed_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (agent, budget_type, lookback, window_end)
);

COMMENT ON TABLE gate_bridge.gate_windows IS
	'Ended windows of the agents'' metrics, kept for the baseline method of budgets; safe to delete (they are computed again)';

/*
 * Heartbeats: an agent that stops reporting is an incident too.  tick()
 * opens HEARTBEAT_{agent} (kind heartbeat, violation type heartbeat, of the
 * severity given) for every agent that matches an enabled heartbeat (the
 * most specific pattern: exact, then the longest "prefix.*", then "*") and
 * whose latest eval row is older than max_silence, or that has no row at
 * all when the pattern is an exact name; and resolves it when rows arrive
 * again (or the heartbeat is removed or disabled).
 */
CREATE TABLE gate_bridge.heartbeats (
	agent_pattern	text PRIMARY KEY,
	max_silence		interval NOT NULL,
	severity		text NOT NULL DEFAULT 'error',
	enabled			boolean NOT NULL DEFAULT true,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT heartbeats_agent_pattern_check
		CHECK (gate_bridge.valid_agent_pattern(agent_pattern)),
	CONSTRAINT heartbeats_max_silence_check
		CHECK (max_silence OPERATOR(pg_catalog.>) '0'::interval
			   AND max_silence OPERATOR(pg_catalog.<=) '366 days'::interval),
	CONSTRAINT heartbeats_severity_check
		CHECK (severity OPERATOR(pg_catalog.=) ANY (ARRAY['warning', 'error', 'critical']))
);

COMMENT ON TABLE gate_bridge.heartbeats IS
	'Agents that must report: tick() opens HEARTBEAT_{agent} when an agent''s latest eval row is older than max_silence';

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.heartbeats', '');
-- a cache, but dumped like every table: a restore need not compute it again
SELECT pg_catalog.pg_extension_config_dump('gate_bridge.gate_windows', '');

-- tick()'s part: opens and resolves the HEARTBEAT incidents; returns the
-- number opened and resolved.
CREATE FUNCTION gate_bridge.check_heartbeats()
RETURNS integer
AS 'MODULE_PATHNAME', 'gate_bridge_check_heartbeats'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

/*
 * compare_planners(agent, canary, baseline, lookback, min_samples, alpha,
 * create_incident): the canary planner version against the baseline
 * version of one agent, over the agent's rows of the window
 * (created_at > now() - lookback) read through
 * eval_results_agent_created_at_idx.  Per metric: a two-sided Mann-Whitney
 * U test for quality, latency_p95_ms and cost_usd (midranks for ties, the
 * tie-corrected normal approximation with continuity correction;
 * "statistic" is U of the canary sample); a two-sided pooled
 * two-proportion z-test for success_rate (the share of rows with
 * success_rate = 1 when every row is 0 or 1, otherwise the mean rate;
 * "statistic" is z); Holm-adjusted p-values over the metrics tested; the
 * effect (canary mean minus baseline mean).  A metric is "fail" when its
 * adjusted p-value is below alpha and the canary is worse (lower quality or
 * success rate, higher latency or cost), "marginal" when only its
 * unadjusted p-value is, "pass" otherwise, and "insufficient_data" when
 * either sample has fewer than min_samples rows.  The verdict is the worst
 * of the metrics' (insufficient_data only when no metric could be tested).
 * With create_incident, a failing canary opens (or folds into)
 * PLANNER_{canary} (kind planner, agent "planner.{canary}") with the
 * statistics in its details.
 */
CREATE FUNCTION gate_bridge.compare_planners(
	agent text, canary text, baseline text,
	lookback interval DEFAULT '24 hours', min_samples integer DEFAULT 30,
	alpha float8 DEFAULT 0.05, create_incident boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'gate_bridge_compare_planners'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION gate_bridge.compare_planners(text, text, text, interval, integer, float8, boolean) IS
	'Canary against baseline planner versions of an agent: Mann-Whitney U and two-proportion z-tests, Holm-adjusted, with a verdict; optionally opens PLANNER_{canary}';

REVOKE ALL ON gate_bridge.gate_windows, gate_bridge.heartbeats FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.check_heartbeats(),
	gate_bridge.compare_planners(text, text, text, interval, integer, float8, boolean) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Playbooks that act: the registry of the playbooks that rules suggest, each
-- with its runbook and, once the owner attaches one, an action that
-- run_playbook() runs (src/remediation.c); a low-risk one with auto_run
-- runs by itself from tick(), once per incident.
-------------------------------------------------------------------------------

/*
 * The registry.  Its table sorts before playbook_rules, so that pg_dump
 * restores the playbooks before the rules that name them; users read and
 * write it through the view gate_bridge.playbooks.
 *
 * action is NULL (a playbook to follow by hand, with its runbook), the name
 * of a destination (webhook or slack: run_playbook queues the event
 * playbook_started for it in the outbox, and the delivery's outcome becomes
 * playbook_succeeded or playbook_failed), or a function taking the incident
 * as jsonb, named with its schema (schema.function), which run_playbook
 * calls in a subtransaction of its own as action_role, a role the owner
 * names that must hold EXECUTE on it.
 */
CREATE TABLE gate_bridge.playbook_registry (
	name			text PRIMARY KEY,
	title			text NOT NULL,
	description		text NOT NULL DEFAULT '',
	runbook_url		text,
	risk			text NOT NULL DEFAULT 'high',
	action			text,
	action_role		text,
	auto_run		boolean NOT NULL DEFAULT false,
	builtin			boolean NOT NULL DEFAULT false,
	CONSTRAINT playbook_registry_name_check
		CHECK (name OPERATOR(pg_catalog.~) '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
	CONSTRAINT playbook_registry_title_check
		CHECK (title OPERATOR(pg_catalog.<>) ''
			   AND pg_catalog.octet_length(title) OPERATOR(pg_catalog.<=) 200),
	CONSTRAINT playbook_registry_description_check
		CHECK (pg_catalog.octet_length(description) OPERATOR(pg_catalog.<=) 8192),
	CONSTRAINT playbook_registry_runbook_url_check
		CHECK (runbook_url OPERATOR(pg_catalog.~) '^(https?://[^[:space:]/]+[^[:space:]]*|docs/runbooks/[a-z0-9_.-]+[.]md)$'
			   AND pg_catalog.octet_length(runbook_url) OPERATOR(pg_catalog.<=) 2048),
	CONSTRAINT playbook_registry_risk_check
		CHECK (risk OPERATOR(pg_catalog.=) ANY (ARRAY['low', 'high'])),
	CONSTRAINT playbook_registry_auto_run_check
		CHECK (NOT auto_run OR (risk OPERATOR(pg_catalog.=) 'low' AND action IS NOT NULL))
);

COMMENT ON TABLE gate_bridge.playbook_registry IS
	'The playbooks that rules may suggest; read and write them through gate_bridge.playbooks';

CREATE VIEW gate_bridge.playbooks AS
	SELECT p.name, p.title, p.description, p.runbook_url, p.risk, p.action, p.action_role,
		   p.auto_run, p.builtin
	  FROM gate_bridge.playbook_registry p;

COMMENT ON VIEW gate_bridge.playbooks IS
	'Playbooks: title, runbook, risk, the action run_playbook() runs, and whether a low-risk one runs by itself';

/*
 * The registry's rules: a built-in playbook is replaced by one of the same
 * name inserted by the user (a restore of an edited built-in), becomes the
 * user's when edited, and cannot be deleted; a playbook a rule names cannot
 * be deleted or renamed; an action must be a destination (webhook or
 * slack) or a function taking jsonb that action_role may execute, and not
 * both.
 */
CREATE FUNCTION gate_bridge.playbook_registry_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	rule record;
	dest_kind text;
	fn regprocedure;
BEGIN
	-- the INSERT branch below replaces a built-in row by the user's: allowed
	IF TG_OP = 'DELETE' AND pg_trigger_depth() > 1 THEN
		RETURN OLD;
	END IF;
	IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR NEW.name <> OLD.name) THEN
		IF TG_OP = 'DELETE' AND OLD.builtin THEN
			RAISE EXCEPTION 'cannot delete built-in playbook %', OLD.name
				USING ERRCODE = '55000',
					  HINT = 'Set auto_run = false or clear its action instead; it would come back after a dump and restore.';
		END IF;
		SELECT r.violation_type, r.agent_pattern INTO rule
		  FROM gate_bridge.playbook_rules r
		 WHERE OLD.name = ANY (r.playbooks)
		 ORDER BY r.violation_type COLLATE "C", r.agent_pattern COLLATE "C" LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'playbook % is named by playbook rule (%, %)', OLD.name,
				rule.violation_type, rule.agent_pattern
				USING ERRCODE = '23503',
					  HINT = 'Change or delete the rules that name it first.';
		END IF;
	END IF;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	IF TG_OP = 'INSERT' AND NOT NEW.builtin THEN
		DELETE FROM gate_bridge.playbook_registry p WHERE p.name = NEW.name AND p.builtin;
	ELSIF TG_OP = 'UPDATE' AND OLD.builtin AND NEW.builtin THEN
		NEW.builtin := false;
	END IF;
	IF NEW.action IS NULL THEN
		IF NEW.action_role IS NOT NULL THEN
			RAISE EXCEPTION 'playbook % has an action_role but no action', NEW.name
				USING ERRCODE = '22023', HINT = 'action_role is the role a function action runs as.';
		END IF;
		RETURN NEW;
	END IF;
	SELECT t.kind INTO dest_kind FROM gate_bridge.destinations t WHERE t.name = NEW.action;
	IF NEW.action ~ '^[A-Za-z_][A-Za-z0-9_$]*[.][A-Za-z_][A-Za-z0-9_$]*$' THEN
		fn := to_regprocedure(NEW.action || '(jsonb)');
	END IF;
	IF dest_kind IS NOT NULL AND fn IS NOT NULL THEN
		RAISE EXCEPTION 'action % of playbook % is both a destination and a function', NEW.action, NEW.name
			USING ERRCODE = '22023', HINT = 'Give the function with its schema, such as public.my_action.';
	ELSIF dest_kind IS NOT NULL THEN
		IF dest_kind NOT IN ('webhook', 'slack') THEN
			RAISE EXCEPTION 'destination % of kind % cannot be the action of playbook %',
				NEW.action, dest_kind, NEW.name
				USING ERRCODE = '22023', HINT = 'A playbook''s destination is a webhook or a Slack channel.';
		END IF;
		IF NEW.action_role IS NOT NULL THEN
			RAISE EXCEPTION 'playbook % sends to destination %: it takes no action_role', NEW.name, NEW.action
				USING ERRCODE = '22023';
		END IF;
	ELSIF fn IS NOT NULL THEN
		IF NEW.action_role IS NULL OR to_regrole(quote_ident(NEW.action_role)) IS NULL THEN
			RAISE EXCEPTION 'playbook % calls %, so it needs the role to run it as (action_role)', NEW.name, fn
				USING ERRCODE = '22023',
					  HINT = 'Name an existing role with EXECUTE on the function, and only the privileges the action needs.';
		END IF;
		IF NOT has_function_privilege(to_regrole(quote_ident(NEW.action_role)), fn, 'EXECUTE') THEN
			RAISE EXCEPTION 'role % may not execute %, the action of playbook %', NEW.action_role, fn, NEW.name
				USING ERRCODE = '42501';
		END IF;
	ELSE
		RAISE EXCEPTION 'action % of playbook % is neither a destination nor a function taking jsonb',
			NEW.action, NEW.name
			USING ERRCODE = '23503',
				  HINT = 'Name a destination, or a function f(incident jsonb) with its schema, such as public.rerun_eval.';
	END IF;
	RETURN NEW;
END
$fn$;

CREATE TRIGGER playbook_registry_guard
	BEFORE INSERT OR UPDATE OR DELETE ON gate_bridge.playbook_registry
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.playbook_registry_guard();
-- also while restoring or replicating (session_replication_role = replica)
ALTER TABLE gate_bridge.playbook_registry ENABLE ALWAYS TRIGGER playbook_registry_guard;

-- A rule may name only registered playbooks (built-in rules name built-in
-- playbooks).
CREATE FUNCTION gate_bridge.playbook_rules_registered() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	unknown text;
BEGIN
	IF NEW.builtin THEN
		RETURN NEW;
	END IF;
	SELECT u.name INTO unknown
	  FROM unnest(NEW.playbooks) WITH ORDINALITY AS u (name, n)
	 WHERE u.name IS NOT NULL	-- refused by the CHECK constraint
	   AND NOT EXISTS (SELECT FROM gate_bridge.playbook_registry p WHERE p.name = u.name)
	 ORDER BY u.n LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'playbook rule (%, %) names unknown playbook %',
			NEW.violation_type, NEW.agent_pattern, quote_literal(unknown)
			USING ERRCODE = '23503',
				  HINT = 'Register it in gate_bridge.playbooks first.';
	END IF;
	RETURN NEW;
END
$fn$;

CREATE TRIGGER playbook_rules_registered
	BEFORE INSERT OR UPDATE ON gate_bridge.playbook_rules
	FOR EACH ROW EXECUTE FUNCTION gate_bridge.playbook_rules_registered();

INSERT INTO gate_bridge.playbook_registry (name, title, description, runbook_url, risk, builtin) VALUES
	('rerun_eval', 'Re-run the evaluation',
	 'Run the failing evaluation again to tell a flaky result from a real regression.',
	 'docs/runbooks/rerun_eval.md', 'low', true),
	('rerun_dbt', 'Re-run the dbt models',
	 'Rebuild the dbt models the agent reads, then evaluate again.',
	 'docs/runbooks/rerun_dbt.md', 'low', true),
	('clear_cache', 'Clear the retrieval cache',
	 'Drop cached retrieval results that may be stale or poisoned.',
	 'docs/runbooks/clear_cache.md', 'low', true),
	('refresh_synonyms', 'Refresh the search synonyms',
	 'Reload the synonym sets the search index uses.',
	 'docs/runbooks/refresh_synonyms.md', 'low', true),
	('adjust_canary_split', 'Adjust the canary split',
	 'Send less traffic to the canary, or none, while it costs more than its budget.',
	 'docs/runbooks/adjust_canary_split.md', 'high', true),
	('rollback_planner', 'Roll back the planner',
	 'Move traffic back from the planner version that regressed to the previous one.',
	 'docs/runbooks/rollback_planner.md', 'high', true);

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.playbook_registry', 'WHERE NOT builtin');

-- The playbooks that 1.1's rules named and that are not built in are
-- registered, without an action, so that every rule names a registered
-- playbook.  A name the registry cannot hold is reported: its rule keeps
-- applying, and can be changed once it names registered playbooks.
DO $register$
DECLARE
	u record;
BEGIN
	FOR u IN
		SELECT DISTINCT x.name
		  FROM gate_bridge.playbook_rules r, unnest(r.playbooks) AS x (name)
		 WHERE NOT EXISTS (SELECT FROM gate_bridge.playbook_registry p WHERE p.name = x.name)
		 ORDER BY 1
	LOOP
		IF u.name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
			INSERT INTO gate_bridge.playbook_registry (name, title, description)
			VALUES (u.name, u.name, 'Named by a playbook rule before 1.2; registered by the update, without an action.');
		ELSE
			RAISE WARNING 'playbook rules name % , which cannot be registered as a playbook', quote_literal(u.name)
				USING HINT = 'Playbook names are 1 to 63 letters, digits, ".", "_" or "-": rename it in the rules that name it.';
		END IF;
	END LOOP;
END
$register$;

/*
 * Once-per-incident bookkeeping of auto-run, and its rate limit: one row
 * per incident and playbook that ran by itself.
 */
CREATE TABLE gate_bridge.playbook_auto_runs (
	incident_id		bigint NOT NULL,	-- removed with it (incident_rows_removed)
	playbook		text NOT NULL,
	run_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (incident_id, playbook)
);

CREATE INDEX playbook_auto_runs_playbook_idx
	ON gate_bridge.playbook_auto_runs (playbook, run_at);

COMMENT ON TABLE gate_bridge.playbook_auto_runs IS
	'The playbooks that ran by themselves, once per incident; the rate limit counts them';

SELECT pg_catalog.pg_extension_config_dump('gate_bridge.playbook_auto_runs', '');

/*
 * run_playbook(incident_id, playbook, actor): runs the playbook's action for
 * the incident and records playbook_started, then playbook_succeeded or
 * playbook_failed with the outcome (for a destination, when its delivery is
 * delivered or dead).  A failing action never undoes anything else: it runs
 * in a subtransaction.  Returns succeeded, failed or queued.
 */
CREATE FUNCTION gate_bridge.run_playbook(incident_id bigint, playbook text,
										 actor text DEFAULT CURRENT_USER)
RETURNS text
AS 'MODULE_PATHNAME', 'gate_bridge_run_playbook'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- tick()'s part: the low-risk playbooks with auto_run for the incidents not
-- silenced, snoozed, flapping or resolved, once per incident, at most
-- gate_bridge.auto_run_limit per playbook per hour; returns the runs.
CREATE FUNCTION gate_bridge.auto_run_playbooks()
RETURNS integer
AS 'MODULE_PATHNAME', 'gate_bridge_auto_run_playbooks'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- A destination's delivery of playbook_started is the action: its outcome
-- goes on the timeline.
CREATE FUNCTION gate_bridge.playbook_delivery_done() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	started gate_bridge.incident_events;
BEGIN
	SELECT * INTO started FROM gate_bridge.incident_events e WHERE e.id = NEW.event_id;
	INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)
	VALUES (NEW.incident_id,
			CASE NEW.status WHEN 'delivered' THEN 'playbook_succeeded' ELSE 'playbook_failed' END,
			clock_timestamp(), started.actor,
			jsonb_build_object('playbook', started.detail->>'playbook',
							   'destination', NEW.destination, 'delivery_id', NEW.id,
							   'http_status', NEW.last_status, 'error', NEW.last_error,
							   'auto', COALESCE((started.detail->>'auto')::boolean, false)));
	RETURN NULL;
END
$fn$;

CREATE TRIGGER playbook_delivery_done
	AFTER UPDATE OF status ON gate_bridge.deliveries
	FOR EACH ROW
	WHEN (NEW.event = 'playbook_started' AND NEW.status IN ('delivered', 'dead')
		  AND OLD.status IS DISTINCT FROM NEW.status)
	EXECUTE FUNCTION gate_bridge.playbook_delivery_done();

REVOKE ALL ON gate_bridge.playbook_registry, gate_bridge.playbooks,
	gate_bridge.playbook_auto_runs FROM PUBLIC;
REVOKE ALL ON FUNCTION gate_bridge.playbook_registry_guard(),
	gate_bridge.playbook_rules_registered(),
	gate_bridge.run_playbook(bigint, text, text),
	gate_bridge.auto_run_playbooks(),
	gate_bridge.playbook_delivery_done() FROM PUBLIC;
