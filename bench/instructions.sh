#!/usr/bin/env bash
# gate_bridge benchmark, the noise-free half: CPU instructions per
# single-row INSERT into gate_bridge.eval_results, counted by valgrind
# (callgrind) in a single-user backend, for the same rows and sides as
# bench/run.sh.  Instruction counts do not depend on what else the machine
# is doing, so they show small differences that shared machines hide.
#
#   bench/instructions.sh
#
# Debian 12, as root (or with sudo).  Like run.sh it installs missing
# Debian packages (valgrind too) but neither builds nor installs
# gate_bridge: run tools/test (or make install) first.  About 2 minutes.
#
# How: a throw-away cluster (pg_virtualenv) is set up as run.sh does; then
# the server is stopped and "postgres --single" runs a file of
#   EXECUTE ins(...)		-- one single-row INSERT, one transaction
# lines under callgrind, once with N1 and once with N2 rows; the difference
# of the two totals divided by N2 - N1 is the cost of one row, without the
# start-up.  One backend, so no lock waits: for the storm this is the cost
# of the path, not of contention.
#
# Environment: GB_BENCH_N1 [200], GB_BENCH_N2 [1200],
#   GB_BENCH_SPECS [clean:off clean:on clean:noopc clean:noop
#                   storm:off storm:on storm:update]; the kinds armed and
#                   recover (the clean rows of run.sh's armed-N and
#                   recover-N cases: agents whose quality budget has
#                   resolve_after, without and with an unresolved incident)
#                   are there too,
#   GB_BENCH_DROP_CHECKS=incidents[,eval_results] (experiment, as in run.sh),
#   GB_BENCH_KEEP=DIR keeps the callgrind files there, for callgrind_annotate
set -euo pipefail

if [ "${1:-}" != --inside ]; then
	. "$(dirname "$0")/../tools/common.sh"
	gb_install_deps
	if ! command -v valgrind >/dev/null; then
		gb_say "installing valgrind"
		sudo=
		[ "$(id -u)" -eq 0 ] || sudo=sudo
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
	fi
	PG_CONFIG=/usr/lib/postgresql/$GB_PGVERSION/bin/pg_config
	if [ ! -f "$("$PG_CONFIG" --pkglibdir)/gate_bridge.so" ] ||
		[ ! -f "$("$PG_CONFIG" --sharedir)/extension/gate_bridge.control" ]; then
		echo "gate_bridge is not installed for PostgreSQL $GB_PGVERSION; run tools/test or make install first" >&2
		exit 1
	fi
	export GB_BENCH_LIB=$("$PG_CONFIG" --pkglibdir)/gate_bridge.so
	GB_BENCH_BUILD="installed gate_bridge.so: md5 $(md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1)"
	if head=$(git -C "$GB_ROOT" rev-parse --short HEAD 2>/dev/null); then
		GB_BENCH_BUILD+="; tree at commit $head"
	fi
	export GB_BENCH_BUILD
	gb_say "starting a throw-away cluster"
	exec pg_virtualenv -t -v "$GB_PGVERSION" -o autovacuum=off "$GB_ROOT/bench/instructions.sh" --inside
fi

# ---- inside pg_virtualenv -------------------------------------------------
cd "$(dirname "$0")"
N1=${GB_BENCH_N1:-200}
N2=${GB_BENCH_N2:-1200}
SPECS=${GB_BENCH_SPECS:-clean:off clean:on clean:noopc clean:noop storm:off storm:on storm:update}
DB=gb_bench
LIB_MD5=$([ -z "${GB_BENCH_LIB:-}" ] || md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1)
BIN=$(dirname "$PG_CONFIG")
[ -x "$BIN/postgres" ] || BIN=/usr/lib/postgresql/$PGVERSION/bin

q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -At "$@"; }

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DB"
q -c 'CREATE EXTENSION gate_bridge'
q -f setup.sql
q -f reference.sql
if [ -n "${GB_BENCH_DROP_CHECKS:-}" ]; then
	echo "!! experiment: CHECK constraints dropped on gate_bridge.{$GB_BENCH_DROP_CHECKS}"
	q -v tables="$GB_BENCH_DROP_CHECKS" -f drop-checks.sql >/dev/null
fi
# the storm key's incident exists before counting starts
q -c "INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('bench.storm', 0.65)"
[ "$(q -c 'SELECT count(*) FROM gate_bridge.incidents')" = 1 ] ||
	{ echo "the storm incident was not created" >&2; exit 1; }
# the armed and recover agents (run.sh's armed-N and recover-N), and the
# recover agents' incidents, when asked for
case " $SPECS " in *" armed:"* | *" recover:"*)
	q -v resolve_after=1000000 -f recover-setup.sql
	[ "$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE 'bench.recover.%' AND status <> 'resolved'")" = 8 ] ||
		{ echo "the recover agents' incidents were not created" >&2; exit 1; }
esac

echo "== server"
q -c 'SELECT version()'
q -c "SELECT 'gate_bridge ' || extversion FROM pg_extension WHERE extname = 'gate_bridge'"
[ -z "${GB_BENCH_BUILD:-}" ] || echo "$GB_BENCH_BUILD"
EXT_TRIGGERS=$(q -c "SELECT string_agg(t.tgname, ' ' ORDER BY t.tgname)
	  FROM pg_trigger t
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = t.tgfoid
					  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'gate_bridge'
	 WHERE t.tgrelid = 'gate_bridge.eval_results'::regclass AND NOT t.tgisinternal")
echo "extension triggers on eval_results (side on): $EXT_TRIGGERS"
echo "valgrind: $(valgrind --version); rows: $N2 - $N1"
echo

# Copy the database cluster, stopped for the few seconds of the copy (the
# server keeps its port), and run the single-user backends on the copy.
DATADIR=$(q -c 'SHOW data_directory')
CLUSTER=$(pg_lsclusters -h | awk -v p="$PGPORT" '$3 == p { print $1 " " $2; exit }')
[ -n "$CLUSTER" ] || { echo "cannot find the cluster on port $PGPORT" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
chown postgres "$WORK"
runuser -u postgres -- "$BIN/pg_ctl" -D "$DATADIR" -m fast -w stop >/dev/null
cp -a "$DATADIR" "$WORK/data"
# shellcheck disable=SC2086
pg_ctlcluster $CLUSTER start
# the copy runs with the defaults, not the throw-away cluster's settings
: >"$WORK/data/postgresql.conf"
chown postgres "$WORK/data/postgresql.conf"

# rows KIND SIDE N: the statements for the single-user backend
rows() {
	local kind=$1 side=$2 n=$3 t
	echo "TRUNCATE gate_bridge.eval_results"
	echo "VACUUM gate_bridge.incident_rows"
	echo "ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER USER"
	case $side in
		on) for t in $EXT_TRIGGERS; do echo "ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER $t"; done ;;
		noopc) echo "ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER bench_noop_c" ;;
		noop) echo "ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER bench_noop" ;;
		update) echo "ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER bench_update" ;;
		off) ;;
		*) echo "unknown side $side" >&2; exit 2 ;;
	esac
	echo "PREPARE ins(text, text, float8, float8, float8, float8) AS INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate, invariants_failed, triggered_by, context) VALUES (\$1, \$2, \$3, \$4, \$5, \$6, '{}', 'pgbench', '{\"suite\": \"bench\"}')"
	# the value ranges of clean.sql and storm.sql
	awk -v kind="$kind" -v n="$n" 'BEGIN {
		srand(42)
		for (i = 0; i < n; i++) {
			l = 100 + int(rand() * 1401); c = (1 + int(rand() * 900)) / 1000
			if (kind == "clean" || kind == "armed" || kind == "recover")
				printf "EXECUTE ins(%cbench.%s.%d%c, %cbench-1%c, %.3f, %d, %.3f, %.3f)\n",
					39, kind, int(rand() * 8), 39, 39, 39, (850 + int(rand() * 151)) / 1000, l, c,
					(950 + int(rand() * 51)) / 1000
			else
				printf "EXECUTE ins(%cbench.storm%c, %cbench-1%c, 0.65, %d, %.3f, 0.99)\n",
					39, 39, 39, 39, l, c
		}
	}'
}

# count KIND SIDE N: instructions of a single-user backend running the rows
count() {
	local f="$WORK/$1-$2-$3" total
	rows "$1" "$2" "$3" >"$f.sql"
	chmod 644 "$f.sql"
	if ! runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file="$f.out" \
		"$BIN/postgres" --single -D "$WORK/data" -c autovacuum=off "$DB" <"$f.sql" >"$f.log" 2>&1 ||
		grep -q 'ERROR:' "$f.log"; then
		echo "single-user run $1 $2 $3 failed:" >&2
		grep -m 5 'ERROR' "$f.log" >&2 || tail -n 5 "$f.log" >&2
		exit 1
	fi
	total=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$f.out" | head -n 1)
	if [ -n "${GB_BENCH_KEEP:-}" ]; then
		mkdir -p "$GB_BENCH_KEEP"
		cp "$f.out" "$GB_BENCH_KEEP/callgrind.$1-$2-$3.out"
	fi
	[ -n "$total" ] || { echo "no callgrind total in $f.out" >&2; exit 1; }
	echo "$total"
}

echo "== instructions per row"
declare -A per
for spec in $SPECS; do
	kind=${spec%%:*} side=${spec#*:}
	a=$(count "$kind" "$side" "$N1")
	b=$(count "$kind" "$side" "$N2")
	per[$spec]=$(((b - a) / (N2 - N1)))
	printf '%-6s %-7s %9d\n' "$kind" "$side" "${per[$spec]}"
done
echo

if [ -n "${GB_BENCH_LIB:-}" ] && [ "$(md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1)" != "$LIB_MD5" ]; then
	echo "!! gate_bridge.so was reinstalled during the run: the figures mix two builds"
	exit 1
fi

echo "== relative to off (ratio = off / side: the throughput ratio if CPU were all that counted)"
printf '%-6s %-7s %9s %9s %7s\n' case side instr "+instr" ratio
for spec in $SPECS; do
	kind=${spec%%:*} side=${spec#*:}
	off=${per[$kind:off]:-}
	[ -n "$off" ] || continue
	awk -v k="$kind" -v s="$side" -v v="${per[$spec]}" -v o="$off" 'BEGIN {
		printf "%-6s %-7s %9d %+9d %7.3f\n", k, s, v, v - o, o / v }'
done
