#!/usr/bin/env bash
# Retention: how to find the rows to delete, measured on one throw-away
# cluster.
#
#   bench/retention.sh
#
# Needs gate_bridge installed (make install).  Loads GB_RET_ROWS eval rows
# (default 1,000,000) over GB_RET_AGENTS agents (default 200), evenly over
# 120 days, in time order with the agents interleaved (as rows arrive in
# production), with the bridge off while loading; VACUUM ANALYZE.  Then
# deletes the rows older than 90 days (a quarter), in batches of 10,000
# that commit one by one, three ways, each on a freshly loaded table:
#
#   agent_index   CALL gate_bridge.purge_eval_results('90 days'): a loose
#                 scan over the existing (agent, created_at) index, each
#                 agent's old rows from it, deleted by ctid
#   id_order      the primary key in id order, created_at filtered, resuming
#                 after the last id deleted
#   created_index an extra index on created_at, its old entries in order,
#                 deleted by ctid
#
# then, after VACUUM, each once more with nothing left to delete, and once
# for the next day's rows (older than 89 days: what a daily job deletes,
# 1/120 of the table).  Last, what the extra index costs
# every insert: WAL bytes and time per single-row INSERT of a clean row,
# through the trigger, without and with it (GB_RET_INSERTS rows each, two
# rounds, taking turns).
#
# Output: a Markdown report on stdout, kept in bench/out/retention.md.
. "$(dirname "$0")/../tools/common.sh"
set -euo pipefail

PGVER=${GB_PGVERSION:-15}
ROWS=${GB_RET_ROWS:-1000000}
AGENTS=${GB_RET_AGENTS:-200}
INSERTS=${GB_RET_INSERTS:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${GB_RET_CLUSTER:-}" ]; then
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }
	mkdir -p "$HERE/out"
	GB_RET_CLUSTER=1 pg_virtualenv -t -v "$PGVER" -c "-p $port" \
		-o shared_buffers=512MB \
		"$HERE/$(basename "$0")" | tee "$HERE/out/retention.md"
	exit "${PIPESTATUS[0]}"
fi

# Inside the cluster: PGHOST, PGPORT, PGUSER, PGPASSWORD are set.
export PGDATABASE=gb_retention_bench
export PGOPTIONS='-c client_min_messages=warning'
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $PGDATABASE" >/dev/null
q -c 'CREATE EXTENSION gate_bridge'

# The two other ways, as procedures that commit after each batch, as the
# extension's does.
q <<'SQL'
CREATE PROCEDURE id_order(cutoff timestamptz, batch int)
LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
	last_id bigint := 0;
BEGIN
	LOOP
		WITH doomed AS (SELECT e.id FROM gate_bridge.eval_results e
						 WHERE e.id > last_id AND e.created_at < cutoff
						 ORDER BY e.id LIMIT batch),
			 gone AS (DELETE FROM gate_bridge.eval_results e
					   WHERE e.id = ANY (ARRAY(SELECT d.id FROM doomed d))
					  RETURNING e.id)
		SELECT count(*), COALESCE(max(id), last_id) INTO n, last_id FROM gone;
		COMMIT;
		EXIT WHEN n < batch;
	END LOOP;
END
$$;
CREATE PROCEDURE created_index(cutoff timestamptz, batch int)
LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	LOOP
		WITH gone AS (DELETE FROM gate_bridge.eval_results e
					   WHERE e.ctid = ANY (ARRAY(SELECT r.ctid FROM gate_bridge.eval_results r
												  WHERE r.created_at < cutoff
												  ORDER BY r.created_at LIMIT batch))
					  RETURNING 1)
		SELECT count(*) INTO n FROM gone;
		COMMIT;
		EXIT WHEN n < batch;
	END LOOP;
END
$$;
SQL

load() {
	q <<SQL
TRUNCATE gate_bridge.eval_results;
DROP INDEX IF EXISTS gate_bridge.eval_results_created_at_bench_idx;
SET gate_bridge.enabled = off;
INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, context, created_at)
SELECT 'agent.' || (g % $AGENTS), 0.5 + (g % 50) / 100.0, g % 2000, (g % 30) / 100.0,
	   '{"suite": "nightly", "commit": "0123abcd"}',
	   now() - interval '120 days' + g * interval '120 days' / $ROWS
  FROM generate_series(1, $ROWS) g;
SQL
	q -c 'VACUUM ANALYZE gate_bridge.eval_results'
}

# seconds a statement takes, as psql's \timing measures it (one statement
# of its own)
timed() {
	q -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' |
		awk '{ printf "%.3f", $1 / 1000 }'
}

echo "# Retention: finding the rows to delete"
echo
echo "$ROWS eval rows over $AGENTS agents and 120 days, in time order, agents interleaved;"
echo "the rows older than 90 days deleted in batches of 10,000 that commit one by one."
echo "PostgreSQL $(q -c 'SHOW server_version'), $(nproc) cores."
echo
echo "| way | index on created_at | 90 days: rows deleted | seconds | after VACUUM: nothing left, seconds | the next day: rows deleted | seconds |"
echo "|---|---|---|---|---|---|---|"
for way in agent_index id_order created_index; do
	load
	case $way in
		agent_index)
			purge="CALL gate_bridge.purge_eval_results('%s')"
			index=no ;;
		id_order)
			purge="CALL id_order(now() - interval '%s', 10000)"
			index=no ;;
		created_index)
			q -c 'CREATE INDEX eval_results_created_at_bench_idx ON gate_bridge.eval_results (created_at)'
			q -c 'ANALYZE gate_bridge.eval_results'
			purge="CALL created_index(now() - interval '%s', 10000)"
			index=yes ;;
	esac
	before=$(q -c 'SELECT count(*) FROM gate_bridge.eval_results')
	# shellcheck disable=SC2059
	first=$(timed "$(printf "$purge" '90 days')")
	after=$(q -c 'SELECT count(*) FROM gate_bridge.eval_results')
	left=$(q -c "SELECT count(*) FROM gate_bridge.eval_results WHERE created_at < now() - interval '90 days 1 minute'")
	q -c 'VACUUM gate_bridge.eval_results'
	# shellcheck disable=SC2059
	again=$(timed "$(printf "$purge" '90 days')")
	# shellcheck disable=SC2059
	day=$(timed "$(printf "$purge" '89 days')")
	after_day=$(q -c 'SELECT count(*) FROM gate_bridge.eval_results')
	echo "| $way | $index | $((before - after)) (older left: $left) | $first | $again | $((after - after_day)) | $day |"
done
echo

# What the extra index costs each insert.
q -c 'TRUNCATE gate_bridge.eval_results' -c 'DROP INDEX IF EXISTS gate_bridge.eval_results_created_at_bench_idx'
load >/dev/null
insert_round() {
	q <<SQL
CHECKPOINT;
SELECT pg_current_wal_lsn() AS l0, clock_timestamp() AS t0 \gset
DO \$\$
BEGIN
	FOR i IN 1..$INSERTS LOOP
		INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, context)
		VALUES ('agent.' || (i % $AGENTS), 0.9, 100, 0.01, '{"suite": "nightly", "commit": "0123abcd"}');
	END LOOP;
END
\$\$;
SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), :'l0') / $INSERTS.0) || ' | '
	   || round(extract(epoch FROM clock_timestamp() - :'t0') * 1e6 / $INSERTS, 1);
SQL
}
echo "Single-row INSERTs of clean rows through the trigger, $INSERTS per round, in one DO loop:"
echo
echo "| index on created_at | round | WAL bytes per row | µs per row |"
echo "|---|---|---|---|"
for round in 1 2; do
	q -c 'DROP INDEX IF EXISTS gate_bridge.eval_results_created_at_bench_idx'
	echo "| no | $round | $(insert_round) |"
	q -c 'CREATE INDEX eval_results_created_at_bench_idx ON gate_bridge.eval_results (created_at)'
	echo "| yes | $round | $(insert_round) |"
done
size=$(q -c "SELECT pg_size_pretty(pg_relation_size('gate_bridge.eval_results_created_at_bench_idx'::regclass))")
echo
echo "The index on created_at takes $size for $(q -c 'SELECT count(*) FROM gate_bridge.eval_results') rows."
