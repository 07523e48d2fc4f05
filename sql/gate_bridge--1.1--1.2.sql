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
