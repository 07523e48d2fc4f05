-- Folds: a violation that folds into an unresolved incident appends a row
-- to incident_folds, one per committing transaction and incident (and per
-- round of decide_pending()); the view gate_bridge.incidents adds them to
-- the row's occurrences and last_seen_at.  compact_folds() and tick() move
-- them into incident_rows, resolve() for its incident, without changing
-- what the view shows or what gate_bridge.stats counts.  Deleting an
-- incident, through the view or not, and truncating incident_rows remove
-- its folds.  The view refuses writes of the two columns it computes.
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;
TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
-- the stream's positions are put back at the end: the tests after this one
-- print payloads, which carry positions
SELECT last_value, is_called FROM gate_bridge.incident_events_position_seq \gset fo_
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
VALUES ('fo.*', 'quality', 0.5);

-- Each incident as the view shows it, next to its row and its folds.
CREATE FUNCTION pg_temp.folds()
RETURNS TABLE (id bigint, key text, status text, shown int, in_row int, folds bigint,
			   folded bigint, last_seen_ok boolean)
LANGUAGE sql AS $$
	SELECT i.id, i.key, i.status, i.occurrences, r.occurrences,
		   (SELECT count(*) FROM gate_bridge.incident_folds f WHERE f.incident_id = i.id),
		   (SELECT sum(f.occurrences) FROM gate_bridge.incident_folds f WHERE f.incident_id = i.id),
		   i.last_seen_at = GREATEST(r.last_seen_at,
									 (SELECT max(f.last_seen_at) FROM gate_bridge.incident_folds f
									   WHERE f.incident_id = i.id))
	  FROM gate_bridge.incidents i JOIN gate_bridge.incident_rows r ON r.id = i.id
	 ORDER BY i.id
$$;
-- What the view shows, to compare before and after a compaction.
CREATE TEMP TABLE shown (id bigint, occurrences int, last_seen_at timestamptz);
CREATE FUNCTION pg_temp.remember() RETURNS void LANGUAGE sql AS $$
	TRUNCATE shown;
	INSERT INTO shown SELECT id, occurrences, last_seen_at FROM gate_bridge.incidents;
$$;
CREATE FUNCTION pg_temp.unchanged() RETURNS boolean LANGUAGE sql AS $$
	SELECT NOT EXISTS (SELECT id, occurrences, last_seen_at FROM gate_bridge.incidents
					   EXCEPT SELECT * FROM shown)
	   AND NOT EXISTS (SELECT * FROM shown
					   EXCEPT SELECT id, occurrences, last_seen_at FROM gate_bridge.incidents);
$$;

-------------------------------------------------------------------------------
-- One fold per committing transaction
-------------------------------------------------------------------------------
-- creates incident 1: its row says 2, no fold
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1), ('fo.a', 0.2);
SELECT * FROM pg_temp.folds();

-- three transactions of one violation, one of three: four folds
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1), ('fo.a', 0.3);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.4);
-- not decided yet: nothing of this transaction is seen
SELECT * FROM pg_temp.folds();
COMMIT;
SELECT * FROM pg_temp.folds();
SELECT occurrences, count(*) AS folds FROM gate_bridge.incident_folds
 GROUP BY occurrences ORDER BY occurrences;
-- each fold is its transaction's: the key (incident_id, transaction_id, seq)
SELECT count(DISTINCT transaction_id) AS transactions, min(seq) AS min_seq, max(seq) AS max_seq
  FROM gate_bridge.incident_folds;
-- the view's last_seen_at is the newest fold's
SELECT i.last_seen_at = (SELECT max(f.last_seen_at) FROM gate_bridge.incident_folds f)
	   AND i.last_seen_at > r.last_seen_at AS newest_fold_shown
  FROM gate_bridge.incidents i JOIN gate_bridge.incident_rows r USING (id);

-- open_incidents reads the view, and stats counts the folds as deduplicated
SELECT key, occurrences FROM gate_bridge.open_incidents ORDER BY id;
SELECT kind, created, deduplicated, rate_limited FROM gate_bridge.stats ORDER BY kind;

-- decide_pending() in one transaction: a fold per round, numbered
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
SELECT gate_bridge.decide_pending();
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1), ('fo.a', 0.1);
SELECT gate_bridge.decide_pending();
SELECT occurrences, seq FROM gate_bridge.incident_folds
 WHERE transaction_id = (SELECT max(transaction_id) FROM gate_bridge.incident_folds)
 ORDER BY seq;
COMMIT;
SELECT * FROM pg_temp.folds();

-- A fold restored from a dump of another cluster (or replicated from one)
-- carries that cluster's transaction id, which this cluster hands out
-- again: the transaction that gets it folds all the same, after it.
BEGIN;
-- the two violations the restored folds count, stored without a decision
SET LOCAL gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1), ('fo.a', 0.1);
SET LOCAL gate_bridge.enabled = on;
INSERT INTO gate_bridge.incident_folds (incident_id, occurrences, last_seen_at, transaction_id, seq)
SELECT 1, 1, now() - interval '1 day', pg_catalog.txid_current(), s
  FROM generate_series(1, 2) s;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
COMMIT;
SELECT occurrences, seq FROM gate_bridge.incident_folds
 WHERE transaction_id = (SELECT max(transaction_id) FROM gate_bridge.incident_folds)
 ORDER BY seq;
SELECT * FROM pg_temp.folds();

-------------------------------------------------------------------------------
-- compact_folds() moves folds into the row; the view shows the same
-------------------------------------------------------------------------------
-- incident 2 (fo.b) with two folds
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1);
SELECT pg_temp.remember();
SELECT deduplicated AS deduplicated_before FROM gate_bridge.stats WHERE kind = 'budget' \gset
-- one incident: its folds alone
SELECT gate_bridge.compact_folds(1) AS folds_removed;
SELECT * FROM pg_temp.folds();
SELECT pg_temp.unchanged() AS view_unchanged,
	   (SELECT deduplicated FROM gate_bridge.stats WHERE kind = 'budget') = :deduplicated_before
		 AS stats_unchanged;
-- nothing left to compact there; an unknown incident has none
SELECT gate_bridge.compact_folds(1) AS again, gate_bridge.compact_folds(999) AS unknown;
-- NULL: every incident
SELECT gate_bridge.compact_folds() AS folds_removed;
SELECT * FROM pg_temp.folds();
SELECT pg_temp.unchanged() AS view_unchanged,
	   (SELECT deduplicated FROM gate_bridge.stats WHERE kind = 'budget') = :deduplicated_before
		 AS stats_unchanged;
-- a compaction inside a transaction that folded takes its own folds too
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1);
SELECT gate_bridge.decide_pending();
SELECT gate_bridge.compact_folds(2) AS own_fold_removed;
COMMIT;
SELECT * FROM pg_temp.folds();

-------------------------------------------------------------------------------
-- tick() compacts every incident and makes no transition
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1), ('fo.b', 0.2);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
SELECT * FROM pg_temp.folds();
SELECT pg_temp.remember();
SELECT deduplicated AS deduplicated_before FROM gate_bridge.stats WHERE kind = 'budget' \gset
SELECT gate_bridge.tick() AS transitions;
SELECT * FROM pg_temp.folds();
SELECT pg_temp.unchanged() AS view_unchanged,
	   (SELECT deduplicated FROM gate_bridge.stats WHERE kind = 'budget') = :deduplicated_before
		 AS stats_unchanged;
SELECT gate_bridge.tick() AS transitions, count(*) AS folds FROM gate_bridge.incident_folds;

-------------------------------------------------------------------------------
-- resolve() compacts its incident
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.b', 0.1);
SELECT gate_bridge.ack(1, 'regress');
-- an ack leaves the folds where they are
SELECT * FROM pg_temp.folds();
SELECT pg_temp.remember();
SELECT gate_bridge.resolve(1, 'regress', 'compacted');
-- incident 1 took its folds in; incident 2 keeps its own
SELECT * FROM pg_temp.folds();
SELECT NOT EXISTS (SELECT i.id, i.occurrences, i.last_seen_at FROM gate_bridge.incidents i
				   EXCEPT SELECT * FROM shown) AS counts_unchanged;
-- a violation after the resolution opens a new incident, never a fold of
-- the resolved one
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
SELECT * FROM pg_temp.folds();
SELECT kind, created, deduplicated, rate_limited FROM gate_bridge.stats ORDER BY kind;
-- every violation is counted once
SELECT (SELECT sum(occurrences) FROM gate_bridge.incidents) AS occurrences,
	   (SELECT count(*) FROM gate_bridge.eval_results) AS violations;

-------------------------------------------------------------------------------
-- More than 256 keys in one commit take no key locks: a repeat is then an
-- update of the incident's row, not a fold
-------------------------------------------------------------------------------
INSERT INTO gate_bridge.eval_results (agent, quality)
SELECT 'fo.a', 0.1
UNION ALL
SELECT 'fo.many.' || g, 0.1 FROM generate_series(1, 300) g;
SELECT * FROM pg_temp.folds() WHERE key NOT LIKE 'BUDGET_fo.many.%';
DELETE FROM gate_bridge.incidents WHERE agent LIKE 'fo.many.%';

-------------------------------------------------------------------------------
-- Deleted incidents take their folds with them
-------------------------------------------------------------------------------
-- incident 2 (fo.b) has a fold; incident 3 (fo.a) gets two more, fo.c's
-- new incident one
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.a', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.c', 0.1);
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('fo.c', 0.1);
SELECT incident_id, count(*) AS folds FROM gate_bridge.incident_folds
 GROUP BY incident_id ORDER BY incident_id;
-- through the view
DELETE FROM gate_bridge.incidents WHERE key = 'BUDGET_fo.c_quality';
SELECT incident_id, count(*) AS folds FROM gate_bridge.incident_folds
 GROUP BY incident_id ORDER BY incident_id;
-- several at once, on the table, in a transaction that rolls back
BEGIN;
DELETE FROM gate_bridge.incident_rows WHERE status <> 'resolved';
SELECT count(*) AS folds_left FROM gate_bridge.incident_folds;
ROLLBACK;
SELECT incident_id, count(*) AS folds FROM gate_bridge.incident_folds
 GROUP BY incident_id ORDER BY incident_id;

-------------------------------------------------------------------------------
-- The view refuses writes of the columns it computes; the others pass
-------------------------------------------------------------------------------
UPDATE gate_bridge.incidents SET occurrences = 1 WHERE id = 2;
UPDATE gate_bridge.incidents SET last_seen_at = now() WHERE id = 2;
INSERT INTO gate_bridge.incidents (kind, key, agent, subject, violation_type, severity, summary, occurrences)
VALUES ('budget', 'BUDGET_fo.forged_quality', 'fo.forged', 'quality', 'quality', 'sev1', 'forged', 5);
\set VERBOSITY default
UPDATE gate_bridge.incidents SET occurrences = occurrences + 1 WHERE id = 2;
\set VERBOSITY terse
UPDATE gate_bridge.incidents SET summary = summary || ' (noted)' WHERE id = 2 RETURNING id, summary, occurrences;
-- the lifecycle rules still apply through the view
UPDATE gate_bridge.incidents SET status = 'open' WHERE id = 1;

-------------------------------------------------------------------------------
-- TRUNCATE of incident_rows empties incident_folds
-------------------------------------------------------------------------------
SELECT count(*) > 0 AS has_folds FROM gate_bridge.incident_folds;
TRUNCATE gate_bridge.incident_rows, gate_bridge.deliveries CASCADE;
SELECT count(*) AS folds FROM gate_bridge.incident_folds;
SELECT count(*) AS incidents FROM gate_bridge.incidents;

TRUNCATE gate_bridge.eval_results, gate_bridge.budgets, gate_bridge.incident_rows,
		 gate_bridge.incident_events, gate_bridge.deliveries, gate_bridge.incident_keys RESTART IDENTITY CASCADE;
SELECT pg_catalog.setval('gate_bridge.incident_events_position_seq',
						 :fo_last_value, :'fo_is_called') IS NOT NULL AS positions_put_back;
