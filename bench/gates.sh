#!/usr/bin/env bash
# Gate evaluation over a window, at scale: run_gates() against the plain
# SQL aggregate a user would otherwise write, the baseline method against
# the mean, and compare_planners(), in one run on one throw-away cluster.
#
#   bench/gates.sh
#
# Needs gate_bridge installed (make install).  Loads GB_GATES_ROWS eval rows
# (default 1,000,000) over GB_GATES_AGENTS agents (default 200), one row
# every few seconds over 30 days, in time order with the agents interleaved
# (as rows arrive in production), one row in seven from planner version
# "v2" (the canary) and the others from "v1", with the gate trigger
# disabled while loading; then budgets for every agent (one agent in ten
# fails its quality floor), VACUUM ANALYZE.  A second database, gb_base, is
# a copy of the first whose budgets have method 'baseline' (3 past windows
# of 7 days): the same data, the same agents, the same thresholds.  Its
# queries run through dblink in a session of their own there, timed there,
# in turn with the others.
#
# Each query runs once to warm the cache, then GB_GATES_REPEAT times
# (default 7), each run a statement of its own, the queries taking turns
# (round-robin) so that other load on the machine hits them alike.  The
# figures are server-side times (clock_timestamp() around the query, every
# result row computed and turned into text): median, min and max.  Also
# reported: what each query read of eval_results, from the transaction's
# own statistics, and the plan of the one-agent aggregate.
#
# Output: a Markdown report on stdout, kept in bench/out/gates.md.
. "$(dirname "$0")/../tools/common.sh"
set -euo pipefail

PGVER=${GB_PGVERSION:-15}
ROWS=${GB_GATES_ROWS:-1000000}
AGENTS=${GB_GATES_AGENTS:-200}
REPEAT=${GB_GATES_REPEAT:-7}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${GB_GATES_CLUSTER:-}" ]; then
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }
	mkdir -p "$HERE/out"
	GB_GATES_CLUSTER=1 pg_virtualenv -t -v "$PGVER" -c "-p $port" \
		-o shared_buffers=512MB -o work_mem=16MB \
		"$HERE/$(basename "$0")" | tee "$HERE/out/gates.md"
	exit "${PIPESTATUS[0]}"
fi

export PGDATABASE=postgres
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

started=$(date +%s)
load_before=$(cut -d' ' -f1 /proc/loadavg)
q -c "CREATE EXTENSION gate_bridge"

# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------
load_start=$(date +%s.%N)
q -v rows="$ROWS" -v agents="$AGENTS" <<'SQL'
SELECT setseed(0.42);
ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER gate_bridge_gate;
-- Row g arrives at now() - 30 days + g * (30 days / rows); agent g % agents.
-- Agents whose number is a multiple of 10 have poor quality.
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, created_at, planner_version)
SELECT format('bench.agent%s', lpad(a::text, 3, '0')),
	   'run-' || g,
	   CASE WHEN a % 10 = 0 THEN random() * 0.6 ELSE 0.2 + random() * 0.8 END,
	   50 + random() * 950,
	   random() * 0.1,
	   0.5 + random() * 0.5,
	   CASE WHEN random() < 0.05 THEN ARRAY['no_pii_leak'] END,
	   'bench',
	   now() - interval '30 days' + g * (interval '30 days' / :rows),
	   CASE WHEN g % 7 = 0 THEN 'v2' ELSE 'v1' END
  FROM generate_series(1, :rows) AS g,
	   LATERAL (SELECT g % :agents + 1 AS a) AS x;
ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER gate_bridge_gate;

INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT format('bench.agent%s', lpad(a::text, 3, '0')), t.budget_type, t.warning, t.error, t.critical
  FROM generate_series(1, :agents) AS a,
	   (VALUES ('quality', 0.45, 0.4, 0.35),
			   ('latency', 990, 995, 999),
			   ('cost', 0.08, 0.09, 0.1),
			   ('success_rate', 0.6, 0.55, 0.5),
			   ('invariants', 1000, 2000, 5000)) AS t (budget_type, warning, error, critical);
VACUUM ANALYZE gate_bridge.eval_results;
ANALYZE gate_bridge.budgets;
SQL
load_secs=$(awk -v a="$load_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }')

# The copy with baseline budgets (nothing is connected to postgres now).
q -c "CREATE DATABASE gb_base TEMPLATE postgres"
q -d gb_base -c "UPDATE gate_bridge.budgets SET method = 'baseline', baseline_windows = 3"
q -c "CREATE EXTENSION dblink"

# ---------------------------------------------------------------------------
# Timing helper: one run of a query, all rows consumed, server-side clock.
# Each run is a statement (and a transaction) of its own, as a scheduled or
# command-line run_gates would be.
# ---------------------------------------------------------------------------
for db in postgres gb_base; do
q -d "$db" <<'SQL'
CREATE FUNCTION public.gb_once(query text, OUT ms numeric, OUT result_rows bigint)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
BEGIN
	-- every column is computed and turned into text, as for a client
	EXECUTE format('SELECT count(*) FROM (%s) q WHERE length(q::text) > 0', query)
	   INTO result_rows;
	ms := round((extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric, 1);
END
$$;
SQL
done

# time_queries: runs every query of QUERIES once per round, 1 + REPEAT
# rounds (the first is a warm-up), the queries taking turns so that a
# change in the machine's load hits them alike.  Prints one line per query:
# "index|median|min|max|rows".
time_queries() {
	local args=() r i
	for i in "${!QUERIES[@]}"; do
		args+=(-v "q$i=${QUERIES[$i]}")
	done
	for r in $(seq 0 "$REPEAT"); do
		for i in "${!QUERIES[@]}"; do
			if [ "${WHERE[$i]:-}" = base ]; then
				echo "SELECT $r, $i, t.ms, t.result_rows FROM dblink('base', format('SELECT * FROM public.gb_once(%L)', :'q$i')) AS t (ms numeric, result_rows bigint);"
			else
				echo "SELECT $r, $i, ms, result_rows FROM public.gb_once(:'q$i');"
			fi
		done
	done | { echo "SELECT dblink_connect('base', :'base_conn') \\g /dev/null"; cat; } |
		q "${args[@]}" -v base_conn="dbname=gb_base host=${PGHOST:-/var/run/postgresql} port=${PGPORT:-5432} user=${PGUSER:-postgres} password=${PGPASSWORD:-}" |
		awk -F'|' '$1 > 0 { print $2 "|" $3 "|" $4 }' | sort -t'|' -k1,1n -k2,2g |
		awk -F'|' '
			function out() {
				m = (n % 2) ? ms[(n + 1) / 2] : (ms[n / 2] + ms[n / 2 + 1]) / 2
				printf "%d|%.1f|%.1f|%.1f|%d\n", cur, m, ms[1], ms[n], rows
			}
			NR > 1 && $1 != cur { out(); n = 0 }
			{ cur = $1; ms[++n] = $2; rows = $3 }
			END { out() }'
}

one='bench.agent042'
declare -a LABELS QUERIES WHERE
LABELS+=("run_gates(), all agents")
QUERIES+=("SELECT * FROM gate_bridge.run_gates()")
LABELS+=("plain SQL aggregate, all agents (GROUP BY agent, no budget check)")
QUERIES+=("SELECT e.agent, count(*), avg(e.quality), percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_p95_ms), avg(e.cost_usd), avg(e.success_rate), sum(cardinality(e.invariants_failed)) FROM gate_bridge.eval_results e WHERE e.created_at > now() - interval '7 days' GROUP BY e.agent")
LABELS+=("run_gates('$one'), one agent")
QUERIES+=("SELECT * FROM gate_bridge.run_gates('$one')")
LABELS+=("evaluate_agent('$one')")
QUERIES+=("SELECT gate_bridge.evaluate_agent('$one')")
LABELS+=("plain SQL aggregate, one agent (WHERE agent = ..., no budget check)")
QUERIES+=("SELECT count(*), avg(e.quality), percentile_cont(0.95) WITHIN GROUP (ORDER BY e.latency_p95_ms), avg(e.cost_usd), avg(e.success_rate), sum(cardinality(e.invariants_failed)) FROM gate_bridge.eval_results e WHERE e.agent = '$one' AND e.created_at > now() - interval '7 days'")
LABELS+=("run_gates(create_incidents => true), all agents, repeat runs (violations deduplicated)")
QUERIES+=("SELECT * FROM gate_bridge.run_gates(create_incidents => true)")
# the same gates with method baseline, in gb_base (its past windows kept
# by the first run, see "cold" below)
WHERE[${#QUERIES[@]}]=base
LABELS+=("run_gates(), all agents, method baseline")
QUERIES+=("SELECT * FROM gate_bridge.run_gates()")
WHERE[${#QUERIES[@]}]=base
LABELS+=("run_gates('$one'), one agent, method baseline")
QUERIES+=("SELECT * FROM gate_bridge.run_gates('$one')")
LABELS+=("compare_planners(agent, 'v2', 'v1', '7 days'), all agents (one call each)")
QUERIES+=("SELECT gate_bridge.compare_planners(a.agent, 'v2', 'v1', '7 days') FROM (SELECT DISTINCT agent_pattern AS agent FROM gate_bridge.budgets) a")
LABELS+=("compare_planners('$one', 'v2', 'v1', '7 days'), one agent")
QUERIES+=("SELECT gate_bridge.compare_planners('$one', 'v2', 'v1', '7 days')")

# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------
table_mb=$(q -c "SELECT round(pg_table_size('gate_bridge.eval_results') / 1048576.0)")
index_mb=$(q -c "SELECT round(pg_relation_size('gate_bridge.eval_results_agent_created_at_idx') / 1048576.0)")
in_window=$(q -c "SELECT count(*) FROM gate_bridge.eval_results WHERE created_at > now() - interval '7 days'")
one_window=$(q -c "SELECT count(*) FROM gate_bridge.eval_results WHERE agent = '$one' AND created_at > now() - interval '7 days'")
failing=$(q -c "SELECT count(*) FILTER (WHERE NOT passed) || ' of ' || count(*) FROM gate_bridge.run_gates()")

echo "# run_gates benchmark"
echo
echo "- $(q -c "SELECT version()")"
echo "- $(nproc) CPU cores, shared_buffers $(q -c "SHOW shared_buffers"), work_mem $(q -c "SHOW work_mem")"
echo "- eval_results: $ROWS rows, $AGENTS agents, 30 days, table $table_mb MB, (agent, created_at) index $index_mb MB; loaded (trigger off) and vacuumed in $load_secs s"
echo "- 7-day window: $in_window rows in all, $one_window for $one; failing gates: $failing"
echo "- each figure: server-side time of the whole query (every result row computed and turned into text), median of $REPEAT runs after one warm-up (min .. max); each run is a statement of its own, the queries take turns"

# The first baseline run computes every past window and keeps it.
cold_ms=$(q -d gb_base -c "SELECT ms FROM public.gb_once('SELECT * FROM gate_bridge.run_gates()')")
kept=$(q -d gb_base -c "SELECT count(*) FROM gate_bridge.gate_windows")

echo
echo "| query | median ms | min .. max ms | rows |"
echo "|---|---:|---:|---:|"
declare -A MEDIAN
while IFS='|' read -r i med mn mx nrows; do
	MEDIAN[$i]=$med
	echo "| ${LABELS[$i]} | $med | $mn .. $mx | $nrows |"
done < <(time_queries)
echo
echo "- baseline / mean, all agents: $(awk -v b="${MEDIAN[6]}" -v m="${MEDIAN[0]}" 'BEGIN { printf "%.2f", b / m }'); one agent: $(awk -v b="${MEDIAN[7]}" -v m="${MEDIAN[2]}" 'BEGIN { printf "%.2f", b / m }')"
echo "- the first baseline run over all agents, which computed and kept the $kept past windows (200 agents x 5 metrics x 3), took $cold_ms ms"
echo "- compare_planners verdicts over the 200 agents: $(q -c "SELECT string_agg(v || ' ' || n, ', ' ORDER BY v) FROM (SELECT r->>'verdict' AS v, count(*) AS n FROM (SELECT gate_bridge.compare_planners(a.agent, 'v2', 'v1', '7 days') AS r FROM (SELECT DISTINCT agent_pattern AS agent FROM gate_bridge.budgets) a) x GROUP BY 1) y")"

# What run_gates read of eval_results, from this transaction's statistics.
reads_sql="SELECT t.seq_scan, pg_stat_get_xact_tuples_returned('gate_bridge.eval_results_agent_created_at_idx'::regclass), t.idx_tup_fetch FROM pg_stat_xact_user_tables t WHERE t.relid = 'gate_bridge.eval_results'::regclass"
reads() {	# reads QUERY: seq scans, index entries, heap rows read by QUERY
	q -c "BEGIN" -c "CREATE TEMP TABLE gb_r0 ON COMMIT DROP AS $reads_sql" \
		-c "SELECT count(*) FROM ($1) q" \
		-c "SELECT r.seq_scan - r0.seq_scan, r.pg_stat_get_xact_tuples_returned - r0.pg_stat_get_xact_tuples_returned, r.idx_tup_fetch - r0.idx_tup_fetch FROM ($reads_sql) r, gb_r0 r0" \
		-c "COMMIT" | tail -1
}
echo
echo "What each reads of eval_results (this transaction's statistics):"
echo
echo "| query | sequential scans | index entries read | heap rows fetched |"
echo "|---|---:|---:|---:|"
IFS='|' read -r s i h < <(reads "SELECT * FROM gate_bridge.run_gates()")
echo "| run_gates(), all agents | $s | $i | $h |"
IFS='|' read -r s i h < <(reads "SELECT * FROM gate_bridge.run_gates('$one')")
echo "| run_gates('$one') | $s | $i | $h |"
IFS='|' read -r s i h < <(reads "${QUERIES[1]}")
echo "| plain SQL aggregate, all agents | $s | $i | $h |"
echo
echo "Rows in the window: $in_window (all agents), $one_window ($one); rows in the table: $ROWS."
echo
echo "Plan of the one-agent aggregate (the query evaluate_agent runs):"
echo
echo '```'
q -c "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF, SUMMARY OFF) ${QUERIES[4]}"
echo '```'
echo
echo "Total time of this run: $(( $(date +%s) - started )) s; machine load average (1 min): $load_before at the start, $(cut -d' ' -f1 /proc/loadavg) at the end, on $(nproc) cores."
