#!/usr/bin/env bash
# Large contexts: what one eval row with a 1 MB context and 64 failed
# invariants costs, measured on one throw-away cluster.
#
#   bench/contexts.sh
#
# Needs gate_bridge installed (make install); measures the build that is
# installed, so that the same script gives the figures of an older build
# (one that copies the context into every incident) as well.  Each round
# (GB_CTX_ROUNDS, default 3) inserts, in turn, in single-statement
# transactions (the incidents are created at commit):
#
#   off     the row with gate_bridge.enabled = off: the eval row's own cost
#   on      the row through the trigger: 64 new keys, 64 incidents
#   small   the same with a 100-byte context (inline in any build)
#
# each for an agent of its own (every key new), after a CHECKPOINT.  Per
# case: WAL bytes (pg_current_wal_insert_lsn() before and after), time
# (psql's \timing, commit included), what the incident tables grew by
# (pg_total_relation_size: heap, TOAST, indexes), and, in a transaction
# that decides the row's violations with gate_bridge.decide_pending()
# before it commits, the backend's memory held then (the sum of
# pg_backend_memory_contexts, minus the same before the INSERT), in a
# session that has decided such a row once already.
#
# Output: a Markdown report on stdout, kept in bench/out/contexts.md.
. "$(dirname "$0")/../tools/common.sh"
set -euo pipefail

PGVER=${GB_PGVERSION:-15}
ROUNDS=${GB_CTX_ROUNDS:-3}
INVARIANTS=${GB_CTX_INVARIANTS:-64}
BYTES=${GB_CTX_BYTES:-1048576}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${GB_CTX_CLUSTER:-}" ]; then
	port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }
	mkdir -p "$HERE/out"
	GB_CTX_CLUSTER=1 pg_virtualenv -t -v "$PGVER" -c "-p $port" \
		-o shared_buffers=256MB -o max_wal_size=4GB \
		"$HERE/$(basename "$0")" | tee "$HERE/out/contexts.md"
	exit "${PIPESTATUS[0]}"
fi

# Inside the cluster: PGHOST, PGPORT, PGUSER, PGPASSWORD are set.
export PGDATABASE=gb_contexts_bench
export PGOPTIONS='-c client_min_messages=warning'
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $PGDATABASE" >/dev/null
q -c 'CREATE EXTENSION gate_bridge'
apart=$(q -c "SELECT to_regclass('gate_bridge.incident_contexts') IS NOT NULL")

# the context: BYTES hex digits that do not compress (1 MB as stored too)
q <<SQL
CREATE TABLE blob AS
	SELECT jsonb_build_object('suite', 'bench', 'blob',
							  substr(string_agg(md5(g::text), '' ORDER BY g), 1, $BYTES)) AS context
	  FROM generate_series(1, $BYTES / 32 + 1) AS g;
CREATE FUNCTION incident_bytes() RETURNS bigint LANGUAGE sql AS \$\$
	SELECT pg_total_relation_size('gate_bridge.incident_rows')
		   + pg_total_relation_size('gate_bridge.incident_events')
		   + COALESCE(pg_total_relation_size(to_regclass('gate_bridge.incident_contexts')), 0)
\$\$;
CREATE FUNCTION held() RETURNS bigint LANGUAGE sql AS \$\$
	SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts
\$\$;
SQL
stored=$(q -c 'SELECT pg_column_size(context) FROM blob')

# one case: agent, context expression, gate_bridge.enabled
measure() {
	local agent=$1 ctx=$2 enabled=$3
	q <<SQL
CHECKPOINT;
SET gate_bridge.enabled = $enabled;
SELECT pg_current_wal_insert_lsn() AS l0, incident_bytes() AS s0,
	   (SELECT count(*) FROM gate_bridge.incidents) AS n0 \gset
\timing on
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT '$agent', ARRAY(SELECT 'inv' || g FROM generate_series(1, $INVARIANTS) g), $ctx FROM blob;
\timing off
SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'l0')::bigint || ' ' ||
	   (incident_bytes() - :s0) || ' ' ||
	   ((SELECT count(*) FROM gate_bridge.incidents) - :n0);
SQL
}

# memory held once the row's violations are decided, before commit, in a
# session that has decided a row like it before (its plans and caches made)
memory() {
	local agent=$1 ctx=$2
	q <<SQL
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT '$agent.warm', ARRAY(SELECT 'inv' || g FROM generate_series(1, $INVARIANTS) g), $ctx FROM blob;
SELECT held() AS m0 \gset
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, invariants_failed, context)
SELECT '$agent', ARRAY(SELECT 'inv' || g FROM generate_series(1, $INVARIANTS) g), $ctx FROM blob;
SELECT gate_bridge.decide_pending() \g /dev/null
SELECT held() - :m0;
COMMIT;
SQL
}

row() {
	local case=$1 round=$2 out
	out=$(measure "bench.$case.$round" "$3" "$4")
	# "Time: 123.456 ms" then "wal bytes count"
	local ms wal bytes n
	ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out")
	read -r wal bytes n < <(tail -n 1 <<<"$out")
	printf '| %s | %s | %s | %s | %s | %s |\n' "$case" "$round" "$n" "$wal" "$bytes" "$ms"
}

echo "# One eval row, a context of $stored bytes as stored, $INVARIANTS failed invariants"
echo
echo "PostgreSQL $(q -c 'SHOW server_version'), $(nproc) cores, build with incident_contexts: $apart."
echo
echo "| case | round | incidents | WAL bytes | incident tables grew by (bytes) | ms |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
	row off "$round" context off
	row on "$round" context on
	row small "$round" "'{\"suite\": \"bench\", \"note\": \"$(printf '%080d' 0)\"}'::jsonb" on
done
echo
if [ "$apart" = t ]; then
	echo "incident_contexts: $(q -c 'SELECT count(*) FROM gate_bridge.incident_contexts') rows," \
		"$(q -c "SELECT pg_total_relation_size('gate_bridge.incident_contexts')") bytes;" \
		"incident_rows: $(q -c 'SELECT count(*) FROM gate_bridge.incident_rows') rows," \
		"$(q -c "SELECT pg_total_relation_size('gate_bridge.incident_rows')") bytes."
	echo
fi
echo "Backend memory held after the decisions, before commit (pg_backend_memory_contexts: growth over"
echo "the INSERT, in a session that has decided such a row before):"
echo
echo "| case | round | bytes held |"
echo "|---|---|---|"
for round in 1 2; do
	echo "| on | $round | $(memory "bench.mem.$round" context) |"
done
