#!/usr/bin/env bash
# Budget matching at scale: what the trigger costs a batch of clean rows
# when there are many budgets, for many distinct agents and for one, against
# the same rows without the trigger; side by side in one run on one
# throw-away cluster.
#
#   bench/budgets.sh
#
# Needs gate_bridge installed (make install); builds nothing.  Budgets:
# GB_BUDGETS_EXACT (default 20,000) exact quality budgets
# "bench.g<g % 100>.a<g>", and 163 globs and catch-alls: "bench.g<k>.*"
# (latency, k = 0..99), "bench.*" (success_rate), "*" (cost, invariants) and
# 60 other teams' globs of three depths (quality), so 7 distinct prefix
# lengths.  Rows: one INSERT ... SELECT of GB_BUDGETS_ROWS (default 100,000)
# clean rows (every metric inside its budgets, no failed invariant), one
# transaction.  Cases:
#   distinct      trigger on, agent "bench.g<g % 100>.a<g>" for row g: every
#                 row a new agent, the first GB_BUDGETS_EXACT with an exact
#                 budget
#   one           trigger on, every row agent "bench.g1.a1" (which has one)
#   off-distinct  the distinct rows with the table's triggers disabled
#                 (ALTER TABLE ... DISABLE TRIGGER USER, as bench/measure.sh)
#   off-one       the one-agent rows with the triggers disabled
# The two row sets differ without the trigger too: distinct names spread
# the inserts over the (agent, created_at) index and are formatted per row.
# The target compares distinct with one; "added" is what the trigger adds
# to each row set (its time minus the same rows' time without it).
# GB_BUDGETS_ROUNDS rounds (default 9), each measuring every case once,
# the order rotating from round to round.  Before every measurement:
# TRUNCATE eval_results, CHECKPOINT.  Each measurement is a new session
# that first loads the budget cache (evaluate_agent('bench.g1.a1'), before
# any row, timed on its own as "cache load") and then runs the INSERT, timed
# on the server with clock_timestamp(); after it, the session reports the
# memory of its budget cache (the cache's context and its per-agent memo)
# and of the whole backend (every memory context), and the script checks
# that every row was stored and no incident was opened.
#
# Output: the figures on stdout, kept in bench/out/budgets.txt.
. "$(dirname "$0")/../tools/common.sh"
set -euo pipefail

PGVER=${GB_PGVERSION:-15}
ROWS=${GB_BUDGETS_ROWS:-100000}
EXACT=${GB_BUDGETS_EXACT:-20000}
ROUNDS=${GB_BUDGETS_ROUNDS:-9}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${GB_BUDGETS_CLUSTER:-}" ]; then
	PG_CONFIG=/usr/lib/postgresql/$PGVER/bin/pg_config
	lib=$("$PG_CONFIG" --pkglibdir)/gate_bridge.so
	if [ ! -f "$lib" ] || [ ! -f "$("$PG_CONFIG" --sharedir)/extension/gate_bridge.control" ]; then
		echo "gate_bridge is not installed for PostgreSQL $PGVER; run tools/test or make install first" >&2
		exit 1
	fi
	if [ -f "$GB_ROOT/gate_bridge.so" ] && ! cmp -s "$GB_ROOT/gate_bridge.so" "$lib"; then
		gb_say "warning: the installed gate_bridge.so differs from the one built in $GB_ROOT"
	fi
	GB_BENCH_BUILD="installed gate_bridge.so: md5 $(md5sum <"$lib" | cut -d' ' -f1)"
	if head=$(git -C "$GB_ROOT" rev-parse --short HEAD 2>/dev/null); then
		GB_BENCH_BUILD+="; tree at commit $head"
		[ -z "$(git -C "$GB_ROOT" status --porcelain -- src sql 2>/dev/null)" ] ||
			GB_BENCH_BUILD+=" (src/ or sql/ modified)"
	fi
	export GB_BENCH_BUILD GB_BENCH_LIB=$lib
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }
	mkdir -p "$HERE/out"
	GB_BUDGETS_CLUSTER=1 pg_virtualenv -t -v "$PGVER" -c "-p $port" \
		-o shared_buffers=256MB -o synchronous_commit=off -o fsync=on \
		-o max_wal_size=8GB -o checkpoint_timeout=1h -o autovacuum=off \
		"$HERE/$(basename "$0")" | tee "$HERE/out/budgets.txt"
	exit "${PIPESTATUS[0]}"
fi

# ---- inside pg_virtualenv -------------------------------------------------
DB=gb_bench
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
lib_md5() { md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1; }
LIB_MD5=$(lib_md5)
started=$(date +%s)

psql -X -q -v ON_ERROR_STOP=1 -d postgres \
	-c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
q -c 'CREATE EXTENSION gate_bridge'
q -v exact="$EXACT" <<'SQL'
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT format('bench.g%s.a%s', g % 100, g), 'quality', 0.80, 0.70, 0.50
  FROM generate_series(1, :exact) AS g;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT format('bench.g%s.*', k), 'latency', 2000, 4000, 8000
  FROM generate_series(0, 99) AS k;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.*', 'success_rate', 0.90, 0.80, 0.60),
	('*', 'cost', 1.0, 2.0, 5.0),
	('*', 'invariants', 0, 2, 5);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT p, 'quality', 0.80, 0.70, 0.50
  FROM generate_series(1, 20) AS k,
	   LATERAL (VALUES (format('team%s.*', k)), (format('team%s.svc.*', k)),
					   (format('team%s.svc.eu.*', k))) AS v(p);
SQL

# the extension's own triggers on eval_results, as name:mode (tgenabled),
# restored as installed for the cases with the trigger on
EXT_TRIGGERS=$(q -c "SELECT string_agg(t.tgname || ':' || t.tgenabled::text, ',' ORDER BY t.tgname)
	  FROM pg_trigger t
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = t.tgfoid
					  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'gate_bridge'
	 WHERE t.tgrelid = 'gate_bridge.eval_results'::regclass AND NOT t.tgisinternal")
case ",$EXT_TRIGGERS," in *,gate_bridge_gate:[OA],*) ;; *)
	echo "trigger gate_bridge_gate not found on gate_bridge.eval_results" >&2; exit 1 ;;
esac

set_triggers() {
	local want=$1 t how got
	q -c 'ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER USER'
	for t in ${want//,/ }; do
		case ${t#*:} in
			A) how='ENABLE ALWAYS' ;;
			R) how='ENABLE REPLICA' ;;
			*) how=ENABLE ;;
		esac
		q -c "ALTER TABLE gate_bridge.eval_results $how TRIGGER ${t%:*}"
	done
	got=$(q -c "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
				 WHERE tgrelid = 'gate_bridge.eval_results'::regclass
				   AND NOT tgisinternal AND tgenabled <> 'D'")
	[ "$got" = "$want" ] ||
		{ echo "enabled triggers are \"$got\", expected \"$want\"" >&2; exit 1; }
}

echo "== server"
q -c 'SELECT version()'
q -F ' = ' -c "SELECT name, setting || COALESCE(unit, '') FROM pg_settings
	WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'max_wal_size',
				   'checkpoint_timeout', 'autovacuum', 'jit')
	   OR name LIKE 'gate\\_bridge.%' ORDER BY name"
q -c "SELECT 'gate_bridge ' || extversion FROM pg_extension WHERE extname = 'gate_bridge'"
echo "$GB_BENCH_BUILD"
q -c "SELECT format('budgets: %s (%s exact, %s globs over %s distinct prefix lengths, %s \"*\")',
				   count(*), count(*) FILTER (WHERE strpos(agent_pattern, '*') = 0),
				   count(*) FILTER (WHERE agent_pattern LIKE '%.*'),
				   count(DISTINCT length(agent_pattern)) FILTER (WHERE agent_pattern LIKE '%.*'),
				   count(*) FILTER (WHERE agent_pattern = '*'))
		FROM gate_bridge.budgets"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rows per INSERT: $ROWS; rounds: $ROUNDS; cases: distinct one off-distinct off-one"
echo

errors=0
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# measure CASE ROUND
measure() {
	local case=$1 round=$2 agent triggers res load ms cache backend rows incidents
	case $case in
		distinct) agent="format('bench.g%s.a%s', g % 100, g)"; triggers=$EXT_TRIGGERS ;;
		one) agent="'bench.g1.a1'"; triggers=$EXT_TRIGGERS ;;
		off-distinct) agent="format('bench.g%s.a%s', g % 100, g)"; triggers= ;;
		off-one) agent="'bench.g1.a1'"; triggers= ;;
	esac
	q -c 'TRUNCATE gate_bridge.eval_results' -c 'CHECKPOINT'
	set_triggers "$triggers"
	res=$(q -v rows="$ROWS" <<SQL
SELECT clock_timestamp() AS t0 \gset
SELECT gate_bridge.evaluate_agent('bench.g1.a1') IS NOT NULL AS warm \gset
SELECT round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, 1) AS load_ms \gset
SELECT clock_timestamp() AS t1 \gset
INSERT INTO gate_bridge.eval_results
	(agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,
	 invariants_failed, triggered_by, context)
SELECT $agent, 'bench-' || g, 0.90 + (g % 100) / 1000.0, 100 + g % 1400,
	   (g % 900) / 1000.0, 0.95 + (g % 50) / 1000.0, '{}', 'bench', '{"suite": "bench"}'
  FROM generate_series(1, :rows) AS g;
SELECT round(extract(epoch FROM clock_timestamp() - :'t1'::timestamptz) * 1000, 1) AS ms \gset
SELECT :load_ms, :ms,
	   (SELECT COALESCE(sum(total_bytes), 0) FROM pg_backend_memory_contexts
		 WHERE name = 'gate_bridge budget cache' OR parent = 'gate_bridge budget cache'),
	   (SELECT sum(total_bytes) FROM pg_backend_memory_contexts),
	   (SELECT count(*) FROM gate_bridge.eval_results),
	   (SELECT count(*) FROM gate_bridge.incidents);
SQL
)
	IFS='|' read -r load ms cache backend rows incidents <<<"$res"
	if [ "$rows" != "$ROWS" ] || [ "$incidents" != 0 ]; then
		echo "!! $case round $round: $rows rows stored (expected $ROWS), $incidents incidents (expected 0)"
		errors=$((errors + 1))
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$round" "$ms" "$load" "$cache" "$backend" >>"$OUT"
	printf '%-12s round %d  %9.1f ms  %7.1f ns/row  cache load %6.1f ms  cache %6.2f MB  backend %6.2f MB  load %s\n' \
		"$case" "$round" "$ms" "$(awk -v ms="$ms" -v n="$ROWS" 'BEGIN { print ms * 1e6 / n }')" \
		"$load" "$(awk -v b="$cache" 'BEGIN { print b / 1048576 }')" \
		"$(awk -v b="$backend" 'BEGIN { print b / 1048576 }')" "$(cut -d' ' -f1 /proc/loadavg)"
}

echo "== measurements"
set -- distinct one off-distinct off-one
for round in $(seq 1 "$ROUNDS"); do
	for case in "$@"; do
		measure "$case" "$round"
	done
	set -- "${@:2}" "$1"
done
set_triggers "$EXT_TRIGGERS"
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
check "measurements with rows missing or an incident opened" "$errors" 0
check "md5 of the installed gate_bridge.so, unchanged during the run" "$(lib_md5)" "$LIB_MD5"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); elapsed $(($(date +%s) - started)) s"
echo

echo "== results: median (min-max) of $ROUNDS rounds, $ROWS rows per INSERT"
awk -F'\t' -v rows="$ROWS" '
function sort(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
}
function median(a, n) { return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function med(c, col,   i, m, a) {
	m = n[c]
	for (i = 1; i <= m; i++) a[i] = v[c, col, i]
	sort(a, m)
	lo = a[1]; hi = a[m]
	return median(a, m)
}
# median over the rounds of case a / case b within the round
function per_round(x, y,   r, m, a) {
	m = 0
	for (r = 1; r <= nr; r++)
		if (((x, r) in byround) && ((y, r) in byround) && byround[y, r] > 0)
			a[++m] = byround[x, r] / byround[y, r]
	sort(a, m)
	return m ? median(a, m) : 0
}
{
	c = $1
	n[c]++
	for (col = 3; col <= 6; col++) v[c, col, n[c]] = $col + 0
	byround[c, $2] = $3 + 0
	if ($2 + 0 > nr) nr = $2 + 0
}
END {
	printf "%-13s %10s %21s %9s %12s %11s %12s\n", "case", "ms", "(min-max)", "ns/row",
		"cache load", "cache MB", "backend MB"
	split("distinct one off-distinct off-one", cs, " ")
	for (i = 1; i <= 4; i++) {
		c = cs[i]
		ms[c] = med(c, 3); l = lo; h = hi
		ld = med(c, 4); cm = med(c, 5); bm = med(c, 6)
		printf "%-13s %10.1f (%8.1f-%9.1f) %9.1f %9.1f ms %11.2f %12.2f\n", c, ms[c], l, h,
			ms[c] * 1e6 / rows, ld, cm / 1048576, bm / 1048576
	}
	print ""
	printf "distinct / one:          %.3f (per round %.3f), target <= 1.5: %s\n",
		ms["distinct"] / ms["one"], per_round("distinct", "one"),
		(ms["distinct"] / ms["one"] <= 1.5) ? "met" : "MISSED"
	printf "distinct / off-distinct: %.3f (per round %.3f)\n",
		ms["distinct"] / ms["off-distinct"], per_round("distinct", "off-distinct")
	printf "one / off-one:           %.3f (per round %.3f)\n",
		ms["one"] / ms["off-one"], per_round("one", "off-one")
	printf "one / off-distinct:      %.3f (per round %.3f)\n",
		ms["one"] / ms["off-distinct"], per_round("one", "off-distinct")
	printf "added by the trigger, medians: distinct %.0f ns/row, one %.0f ns/row\n",
		(ms["distinct"] - ms["off-distinct"]) * 1e6 / rows, (ms["one"] - ms["off-one"]) * 1e6 / rows
}' "$OUT"

[ "$checks_failed" -eq 0 ]
