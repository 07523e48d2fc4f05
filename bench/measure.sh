#!/usr/bin/env bash
# The benchmark proper.  bench/run.sh runs it inside pg_virtualenv, which
# sets PGHOST, PGPORT, PGUSER and PGPASSWORD; it is not meant to be started
# by hand.
#
# Cases (GB_BENCH_CASES, default "clean-1 clean-8 storm-8"): the pgbench
# script (clean.sql, storm.sql, or storm10.sql: ten storm rows per
# transaction) and the number of clients.  A script inserting more than one
# row per transaction says so in a "-- rows per transaction: N" line.
#
# Sides (GB_BENCH_SIDES, default "on off"):
#   on      every trigger on eval_results whose function belongs to the
#           extension (gate_bridge_gate, and any other the installed version
#           has), enabled in its installed mode
#   off     every trigger on eval_results disabled
#   noopc, noop, update  the reference triggers of reference.sql: a C
#           trigger that does nothing, a PL/pgSQL one that does nothing,
#           a PL/pgSQL one that runs only the deduplication UPDATE
# Each case measures its sides alternately, GB_BENCH_ROUNDS rounds of
# GB_BENCH_SECS seconds per side, rotating which side goes first.  Before
# every measurement, whichever the side: TRUNCATE eval_results, VACUUM the
# incident tables, CHECKPOINT.
#
# Figures per measurement: pgbench's tps, the rows found in eval_results
# afterwards (they must equal pgbench's processed transactions), and the
# CPU time of the server backends that served pgbench per inserted row
# (read from the postmaster's reaped-children counters in /proc, so it
# leaves out pgbench itself and the background processes).
set -euo pipefail
cd "$(dirname "$0")"

ROUNDS=${GB_BENCH_ROUNDS:-16}
SECS=${GB_BENCH_SECS:-5}
JOBS=${GB_BENCH_JOBS:-2}
CASES=${GB_BENCH_CASES:-clean-1 clean-8 storm-8}
SIDES=${GB_BENCH_SIDES:-on off}
OUT=${GB_BENCH_OUT:-out/speed}
DB=gb_bench
STORM_KEY=BUDGET_bench.storm_quality

case " $SIDES " in *" off "*) ;; *) echo "GB_BENCH_SIDES must include off" >&2; exit 2 ;; esac

lib_md5() { [ -z "${GB_BENCH_LIB:-}" ] || md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1; }
LIB_MD5=$(lib_md5)

mkdir -p "$OUT"
rm -f "$OUT"/clean-*.log "$OUT"/storm-*.log "$OUT"/results.tsv
started=$(date +%s)

q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -At "$@"; }

psql -X -q -v ON_ERROR_STOP=1 -d postgres \
	-c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
q -c 'CREATE EXTENSION gate_bridge'
q -f setup.sql
q -f reference.sql

if [ -n "${GB_BENCH_DROP_CHECKS:-}" ]; then
	echo "!! experiment: CHECK constraints dropped on gate_bridge.{$GB_BENCH_DROP_CHECKS}"
	q -v tables="$GB_BENCH_DROP_CHECKS" -f drop-checks.sql >/dev/null
fi

# the extension's own triggers on eval_results, as name:mode (tgenabled):
# the "on" side, restored as installed
EXT_TRIGGERS=$(q -c "SELECT string_agg(t.tgname || ':' || t.tgenabled::text, ',' ORDER BY t.tgname)
	  FROM pg_trigger t
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = t.tgfoid
					  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'gate_bridge'
	 WHERE t.tgrelid = 'gate_bridge.eval_results'::regclass AND NOT t.tgisinternal")
case ",$EXT_TRIGGERS," in *,gate_bridge_gate:[OA],*) ;; *)
	echo "trigger gate_bridge_gate not found on gate_bridge.eval_results" >&2; exit 1 ;;
esac

PM=$(head -n 1 "$(q -c 'SHOW data_directory')/postmaster.pid")
TICK_US=$((1000000 / $(getconf CLK_TCK)))

echo "== server"
q -c 'SELECT version()'
q -F ' = ' -c "SELECT name, setting || COALESCE(unit, '') FROM pg_settings
	WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'wal_level',
				   'full_page_writes', 'max_wal_size', 'checkpoint_timeout',
				   'autovacuum', 'max_connections', 'wal_buffers', 'wal_sync_method',
				   'jit', 'track_functions')
	   OR name LIKE 'gate\\_bridge.%' ORDER BY name"
q -c "SELECT 'gate_bridge ' || extversion FROM pg_extension WHERE extname = 'gate_bridge'"
[ -z "${GB_BENCH_BUILD:-}" ] || echo "$GB_BENCH_BUILD"
echo "extension triggers on eval_results (side on), name:tgenabled: $EXT_TRIGGERS"
q -c "SELECT 'budgets: ' || count(*) FROM gate_bridge.budgets"
echo "pgbench: $(pgbench --version)"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cases: $CASES; sides: $SIDES"
echo "rounds: $ROUNDS x ${SECS}s per side; pgbench -n -M prepared -c C -j $JOBS -T $SECS (-j 1 with one client)"
echo

# Wait until no backend of ours is left, reaped by the postmaster included.
wait_no_backends() {
	local i procs
	for i in $(seq 1 500); do
		procs=$(ps --ppid "$PM" -o stat=,args=)
		grep -qE "^Z| $DB " <<<"$procs" || return 0
		sleep 0.02
	done
	echo "!! backends still running after 10 s; CPU figures may be off" >&2
}

reaped_ticks() { awk '{ print $16 + $17 }' "/proc/$PM/stat"; }

set_side() {
	local want t how
	case $1 in
		on) want=$EXT_TRIGGERS ;;
		noopc) want=bench_noop_c:O ;;
		noop) want=bench_noop:O ;;
		update) want=bench_update:O ;;
		off) want= ;;
		*) echo "unknown side $1" >&2; exit 2 ;;
	esac
	q -c 'ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER USER'
	for t in ${want//,/ }; do
		case ${t#*:} in
			A) how='ENABLE ALWAYS' ;;
			R) how='ENABLE REPLICA' ;;
			*) how=ENABLE ;;
		esac
		q -c "ALTER TABLE gate_bridge.eval_results $how TRIGGER ${t%:*}"
	done
	# refuse to measure the wrong side
	local got
	got=$(q -c "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
				 WHERE tgrelid = 'gate_bridge.eval_results'::regclass
				   AND NOT tgisinternal AND tgenabled <> 'D'")
	[ "$got" = "$want" ] ||
		{ echo "enabled triggers are \"$got\", expected \"$want\"" >&2; exit 1; }
}

folded_rows=0		# storm rows inserted by the sides that fold into the incident (on, update)
errors=0

# measure CASE SIDE ROUND
measure() {
	local case=$1 side=$2 round=$3
	local script=${case%-*}.sql clients=${case##*-} jobs=$JOBS rc=0 per_txn
	per_txn=$(sed -n 's/^-- rows per transaction: \([0-9]*\)$/\1/p' "$script")
	local log="$OUT/$case-$side-$round.log"
	[ "$clients" -gt 1 ] || jobs=1
	q -c 'TRUNCATE gate_bridge.eval_results' \
	  -c 'VACUUM gate_bridge.incidents, gate_bridge.incident_keys, gate_bridge.incident_events' \
	  -c 'CHECKPOINT'
	set_side "$side"
	wait_no_backends
	local t0 t1
	t0=$(reaped_ticks)
	pgbench -n -M prepared -f "$script" -c "$clients" -j "$jobs" -T "$SECS" \
		--random-seed=42 "$DB" >"$log" 2>&1 || rc=$?
	wait_no_backends
	t1=$(reaped_ticks)
	local load tps processed failed rows cpu
	load=$(cut -d' ' -f1 /proc/loadavg)
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")
	processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")
	rows=$(q -c 'SELECT count(*) FROM gate_bridge.eval_results')
	if [ "$rc" -ne 0 ] || [ -z "$tps" ] || [ "${failed:-1}" -ne 0 ] ||
		grep -qiE 'abort|error' "$log" || [ "$rows" != "$((${processed:-0} * ${per_txn:-1}))" ]; then
		echo "!! $case $side round $round: pgbench exit $rc, failed ${failed:-?}, rows $rows, processed ${processed:-?}; see $log"
		errors=$((errors + 1))
	fi
	case $case:$side in
		storm*:on | storm*:update) folded_rows=$((folded_rows + rows)) ;;
	esac
	cpu=0
	[ "$rows" -gt 0 ] && cpu=$(awk -v t=$((t1 - t0)) -v us="$TICK_US" -v n="$rows" 'BEGIN { printf "%.1f", t * us / n }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$side" "$round" "${tps:-0}" "$rows" "${failed:-?}" "$cpu" >>"$OUT/results.tsv"
	printf '%-8s round %d  %-6s %9.1f tps  %7d rows  %s failed  %6.1f us CPU/row  load %s\n' \
		"$case" "$round" "$side" "${tps:-0}" "$rows" "${failed:-?}" "$cpu" "$load"
}

echo "== measurements"
for case in $CASES; do
	set -- $SIDES
	for round in $(seq 1 "$ROUNDS"); do
		for side in "$@"; do
			measure "$case" "$side" "$round"
		done
		# next round starts with the next side
		set -- "${@:2}" "$1"
	done
done
echo

echo "== checks"
checks_failed=0
check() {
	if [ "$2" = "$3" ]; then
		echo "ok   $1: $2"
	else
		echo "FAIL $1: $2, expected $3"
		checks_failed=$((checks_failed + 1))
	fi
}
check "pgbench runs with an error, a failed transaction or rows != transactions" "$errors" 0
[ -z "${GB_BENCH_LIB:-}" ] ||
	check "md5 of the installed gate_bridge.so, unchanged during the run" "$(lib_md5)" "$LIB_MD5"
case " $CASES " in *" clean-"*)
	check "incidents for the clean agents" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE 'bench.clean.%'")" 0
esac
if [ "$folded_rows" -gt 0 ]; then
	check "incidents in all" "$(q -c 'SELECT count(*) FROM gate_bridge.incidents')" 1
	check "incidents for $STORM_KEY" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE kind = 'budget' AND key = '$STORM_KEY'")" 1
	check "its occurrences = storm rows inserted with the trigger on" \
		"$(q -c "SELECT occurrences FROM gate_bridge.incidents WHERE kind = 'budget' AND key = '$STORM_KEY'")" \
		"$folded_rows"
	check "stats for kind budget: created,deduplicated,rate_limited" \
		"$(q -c "SELECT created || ',' || deduplicated || ',' || rate_limited FROM gate_bridge.stats WHERE kind = 'budget'")" \
		"1,$((folded_rows - 1)),0"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); elapsed $(($(date +%s) - started)) s"
echo

echo "== results: median (min-max) of $ROUNDS rounds of ${SECS}s"
echo "   ratio: median tps / median tps of off (the target's measure); per round: median over"
echo "   the rounds of tps / tps of off in the same round; CPU ratio: median CPU/row of off / median CPU/row"
awk -F'\t' '
function sort(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
}
function median(a, n) { return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{
	if (!($1 in seen)) { seen[$1] = 1; cases[++ncases] = $1 }
	if (!(($1, $2) in sseen)) { sseen[$1, $2] = 1; sides[$1, ++nsides[$1]] = $2 }
	k = $1 SUBSEP $2
	n[k]++
	tps[k, n[k]] = $4 + 0
	cpu[k, n[k]] = $7 + 0
	byround[$1, $2, $3] = $4 + 0
	rounds[$1, $3] = 1
}
END {
	printf "%-8s %-6s %22s %6s %9s %19s %6s  %s\n", "case", "side", "tps", "ratio",
		"per round", "us CPU/row", "CPU", "target"
	for (c = 1; c <= ncases; c++) {
		cs = cases[c]
		for (s = 1; s <= nsides[cs]; s++) {
			k = cs SUBSEP sides[cs, s]
			m = n[k]
			for (i = 1; i <= m; i++) { a[i] = tps[k, i]; b[i] = cpu[k, i] }
			sort(a, m); sort(b, m)
			mt[k] = median(a, m); lo[k] = a[1]; hi[k] = a[m]
			mc[k] = median(b, m); clo[k] = b[1]; chi[k] = b[m]
		}
		off = cs SUBSEP "off"
		for (s = 1; s <= nsides[cs]; s++) {
			side = sides[cs, s]
			k = cs SUBSEP side
			tr = pr = cr = "-"
			verdict = ""
			if (side != "off") {
				tr = sprintf("%.3f", mt[off] > 0 ? mt[k] / mt[off] : 0)
				cr = sprintf("%.3f", mc[k] > 0 ? mc[off] / mc[k] : 0)
				m = 0
				for (r = 1; r <= 1000; r++)
					if ((cs, r) in rounds && byround[cs, "off", r] > 0)
						a[++m] = byround[cs, side, r] / byround[cs, "off", r]
				if (m > 0) { sort(a, m); pr = sprintf("%.3f", median(a, m)) }
				if (side == "on") {
					target = (cs ~ /^storm/) ? 0.5 : 0.95
					verdict = sprintf(">= %.2f %s", target, (tr + 0 >= target) ? "met" : "MISSED")
				}
			}
			printf "%-8s %-6s %6.0f (%6.0f-%6.0f) %6s %9s %6.1f (%4.1f-%5.1f) %6s  %s\n",
				cs, side, mt[k], lo[k], hi[k], tr, pr, mc[k], clo[k], chi[k], cr, verdict
		}
	}
}' "$OUT/results.tsv"

[ "$checks_failed" -eq 0 ]
