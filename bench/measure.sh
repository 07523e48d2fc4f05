#!/usr/bin/env bash
# The benchmark proper.  bench/run.sh runs it inside pg_virtualenv, which
# sets PGHOST, PGPORT, PGUSER and PGPASSWORD; it is not meant to be started
# by hand.  bench/run.sh documents the cases and the environment; this is
# how they are measured.
#
# A case is NAME[@PROFILE].  The profile sets fsync and synchronous_commit
# for the whole cluster (ALTER SYSTEM, reload) while the case runs:
#   (none)   the cluster's own settings (run.sh: fsync=on, synchronous_commit=off)
#   sync     fsync=on,  synchronous_commit=on   (PostgreSQL's defaults)
#   nofsync  fsync=off, synchronous_commit=on   (no disk flush at all: CPU)
#   async    fsync=on,  synchronous_commit=off
#
# Single-row cases (pgbench; database gb_bench, setup.sql's budgets):
#   clean-N, storm-N, storm10-N  the pgbench script (clean.sql, storm.sql,
#     storm10.sql: ten storm rows per transaction) and N clients.  A script
#     inserting more than one row per transaction says so in a
#     "-- rows per transaction: N" line.
#   armed-N, recover-N  clean rows (armed.sql, recover.sql: clean.sql for
#     other agents) of agents whose quality budget has resolve_after
#     (recover-setup.sql, GB_BENCH_RECOVER_AFTER passing rows, run once
#     before the measurements when one of these cases is asked for):
#     armed, no unresolved incident (the pass is not counted; as free as
#     clean rows); recover, every agent with an unresolved quality incident
#     that resolve_after is too large to resolve during the run, so that
#     every row with the trigger on is counted towards its recovery at
#     commit: the cost of auto-resolve
#   snapshot-N  storm.sql with N clients; side "snap" is the trigger on
#     while another role (gb_bench_reader) holds a REPEATABLE READ snapshot
#     open, idle in transaction, for the whole measurement; side "on" the
#     same without it.  Ratio: snap / on.
#
# Sides of the single-row cases (GB_BENCH_SIDES, default "on off"):
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
#
# Statement cases, each in a database of its own (setup.sql and
# setup-cases.sql), sides on and off alternately, before every
# measurement TRUNCATE of the tables the case writes and CHECKPOINT:
#   burst    burst.sql: one INSERT ... SELECT of GB_BENCH_BURST_KEYS
#            violating rows of as many agents without an incident; the
#            statement's time (psql \timing, autocommit: commit included)
#   bulk     bulk.sql: one INSERT ... SELECT of GB_BENCH_BULK_ROWS clean rows
#   history  create / fold / reopen (history-*.sql, one client, trigger on)
#            in a database holding GB_BENCH_HISTORY resolved incidents
#            (history.sql, loaded with fsync off) against one holding none,
#            the two taking turns; the time of the INSERT (pgbench -r
#            statement latency); before every measurement TRUNCATE
#            eval_results, VACUUM (INDEX_CLEANUP ON, ANALYZE) of the
#            incident tables, CHECKPOINT
#   batch    batch.py: concurrent COPY loaders and an operator resolving
#            incidents, GB_BENCH_BATCH_SECS; batches committed and failed,
#            deadlocks, exactness of the counts
set -euo pipefail
cd "$(dirname "$0")"

DEFAULT_CASES="clean-1 clean-8 storm-8 storm-8@sync storm-8@nofsync snapshot-8 \
clean-2@nofsync clean-8@nofsync clean-2@sync clean-8@sync burst bulk history batch"
CASES=${GB_BENCH_CASES:-$DEFAULT_CASES}
ROUNDS=${GB_BENCH_ROUNDS:-16}
PROFILE_ROUNDS=${GB_BENCH_PROFILE_ROUNDS:-${GB_BENCH_ROUNDS:-8}}
SECS=${GB_BENCH_SECS:-5}
JOBS=${GB_BENCH_JOBS:-2}
SIDES=${GB_BENCH_SIDES:-on off}
SNAP_SIDES=${GB_BENCH_SNAPSHOT_SIDES:-on snap}
SNAP_SECS=${GB_BENCH_SNAPSHOT_SECS:-80}
SNAP_ROUNDS=${GB_BENCH_SNAPSHOT_ROUNDS:-1}
BURST_KEYS=${GB_BENCH_BURST_KEYS:-5000}
BURST_ROUNDS=${GB_BENCH_BURST_ROUNDS:-5}
BULK_ROWS=${GB_BENCH_BULK_ROWS:-1000000}
BULK_ROUNDS=${GB_BENCH_BULK_ROUNDS:-5}
HISTORY=${GB_BENCH_HISTORY:-10000000}
HISTORY_KEYS=${GB_BENCH_HISTORY_KEYS:-100000}
HISTORY_EVENTS=${GB_BENCH_HISTORY_EVENTS:-0}
HISTORY_ROUNDS=${GB_BENCH_HISTORY_ROUNDS:-3}
HISTORY_SECS=${GB_BENCH_HISTORY_SECS:-5}
REOPEN_KEYS=${GB_BENCH_HISTORY_REOPEN_KEYS:-1000}
case ${GB_BENCH_HISTORY_VACUUM:-analyze} in
	analyze) HISTORY_VACUUM='(INDEX_CLEANUP ON, ANALYZE)' ;;
	plain) HISTORY_VACUUM= ;;
	*) echo "GB_BENCH_HISTORY_VACUUM must be analyze or plain" >&2; exit 2 ;;
esac
BATCH_SECS=${GB_BENCH_BATCH_SECS:-10}
BATCH_ROUNDS=${GB_BENCH_BATCH_ROUNDS:-2}
BATCH_RATE_LIMIT=${GB_BENCH_BATCH_RATE_LIMIT:-1000000}
RECOVER_AFTER=${GB_BENCH_RECOVER_AFTER:-1000000}
OUT=${GB_BENCH_OUT:-out/speed}
DB=gb_bench
STORM_KEY=BUDGET_bench.storm_quality
READER=gb_bench_reader
PYTHON=/usr/bin/python3

case " $SIDES " in *" off "*) ;; *) echo "GB_BENCH_SIDES must include off" >&2; exit 2 ;; esac
case " $SNAP_SIDES " in *" on "*) ;; *) echo "GB_BENCH_SNAPSHOT_SIDES must include on" >&2; exit 2 ;; esac
for c in $CASES; do
	[[ $c =~ ^((clean|storm|storm10|snapshot|armed|recover)-[1-9][0-9]*|burst|bulk|history|batch)(@(sync|nofsync|async))?$ ]] ||
		{ echo "unknown case \"$c\" (GB_BENCH_CASES; see bench/run.sh)" >&2; exit 2; }
done
for v in RECOVER_AFTER ROUNDS PROFILE_ROUNDS SECS SNAP_SECS SNAP_ROUNDS BURST_KEYS BURST_ROUNDS BULK_ROWS \
	BULK_ROUNDS HISTORY_KEYS HISTORY_ROUNDS HISTORY_SECS REOPEN_KEYS BATCH_SECS BATCH_ROUNDS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not \"${!v}\"" >&2; exit 2; }
done
[[ $HISTORY =~ ^[0-9]+$ ]] || { echo "GB_BENCH_HISTORY must be a number" >&2; exit 2; }
case " $CASES " in *" history"*)
	[ "$HISTORY" -eq 0 ] || [ "$HISTORY_KEYS" -gt "$REOPEN_KEYS" ] ||
		{ echo "GB_BENCH_HISTORY_KEYS must be greater than GB_BENCH_HISTORY_REOPEN_KEYS" >&2; exit 2; }
	[ "$HISTORY_KEYS" -le 999999 ] || { echo "GB_BENCH_HISTORY_KEYS: at most 999999" >&2; exit 2; }
esac
case " $CASES " in *" batch"*)
	"$PYTHON" -c 'import psycopg' 2>/dev/null ||
		{ echo "the batch case needs python3-psycopg for $PYTHON" >&2; exit 2; }
esac

lib_md5() { [ -z "${GB_BENCH_LIB:-}" ] || md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1; }
LIB_MD5=$(lib_md5)

mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.tsv "$OUT"/summary-* "$OUT"/checks.txt "$OUT"/snapshot.fifo
started=$(date +%s)

q() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -At "$@"; }
qd() { local db=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -d "$db" -At "$@"; }
qp() { psql -X -q -v ON_ERROR_STOP=1 -d postgres -At "$@"; }

# new_db NAME: a fresh database with the extension and the budgets
new_db() {
	qp -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
	qd "$1" -c 'CREATE EXTENSION gate_bridge'
	qd "$1" -f setup.sql
	[ "$1" = "$DB" ] || qd "$1" -f setup-cases.sql
}

new_db "$DB"
q -f reference.sql

if [ -n "${GB_BENCH_DROP_CHECKS:-}" ]; then
	echo "!! experiment: CHECK constraints dropped on gate_bridge.{$GB_BENCH_DROP_CHECKS}"
	q -v tables="$GB_BENCH_DROP_CHECKS" -f drop-checks.sql >/dev/null
fi

# the auto-resolve cases: budgets with resolve_after, and the recover
# agents' unresolved incidents
RECOVER_INCIDENTS=0
case " $CASES " in *" armed-"* | *" recover-"*)
	q -v resolve_after="$RECOVER_AFTER" -f recover-setup.sql
	RECOVER_INCIDENTS=$(q -c "SELECT count(*) FROM gate_bridge.incidents
		WHERE agent LIKE 'bench.recover.%' AND kind = 'budget' AND subject = 'quality' AND status <> 'resolved'")
	[ "$RECOVER_INCIDENTS" = 8 ] ||
		{ echo "recover-setup.sql: $RECOVER_INCIDENTS unresolved incidents of the recover agents, expected 8" >&2; exit 1; }
esac

# the snapshot cases: a role that may read the incidents, and pgstattuple
# to count the dead row versions the snapshot keeps
case " $CASES " in *" snapshot-"*)
	qp -c "CREATE ROLE $READER LOGIN PASSWORD '$READER'"
	q -c "GRANT USAGE ON SCHEMA gate_bridge TO $READER" \
	  -c "GRANT SELECT ON gate_bridge.incidents TO $READER" \
	  -c 'CREATE EXTENSION pgstattuple'
esac

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
q -c "SELECT 'budgets: ' || count(*) || ', with resolve_after: ' || count(resolve_after) FROM gate_bridge.budgets"
echo "pgbench: $(pgbench --version)"
echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), kernel $(uname -r), $(awk '/^MemTotal/ { printf "%.0f GB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cases: $CASES"
echo "single-row cases: sides $SIDES; $ROUNDS rounds (with a profile: $PROFILE_ROUNDS) x ${SECS}s per side;" \
	"pgbench -n -M prepared -c C -j $JOBS -T $SECS (-j 1 with one client)"
case " $CASES " in *" snapshot-"*)
	echo "snapshot cases: sides $SNAP_SIDES; $SNAP_ROUNDS rounds x ${SNAP_SECS}s per side" ;;
esac
echo

# Wait until no backend of ours is left, reaped by the postmaster included
# (the snapshot holder's backend excepted).
wait_no_backends() {
	local i procs
	for i in $(seq 1 500); do
		procs=$(ps --ppid "$PM" -o stat=,args= | grep -v " $READER " || true)
		grep -qE "^Z| $DB " <<<"$procs" || return 0
		sleep 0.02
	done
	echo "!! backends still running after 10 s; CPU figures may be off" >&2
}

reaped_ticks() { awk '{ print $16 + $17 }' "/proc/$PM/stat"; }

# set_side SIDE [DATABASE]
set_side() {
	local want t how db=${2:-$DB}
	case $1 in
		on | snap) want=$EXT_TRIGGERS ;;
		noopc) want=bench_noop_c:O ;;
		noop) want=bench_noop:O ;;
		update) want=bench_update:O ;;
		off) want= ;;
		*) echo "unknown side $1" >&2; exit 2 ;;
	esac
	qd "$db" -c 'ALTER TABLE gate_bridge.eval_results DISABLE TRIGGER USER'
	for t in ${want//,/ }; do
		case ${t#*:} in
			A) how='ENABLE ALWAYS' ;;
			R) how='ENABLE REPLICA' ;;
			*) how=ENABLE ;;
		esac
		qd "$db" -c "ALTER TABLE gate_bridge.eval_results $how TRIGGER ${t%:*}"
	done
	# refuse to measure the wrong side
	local got
	got=$(qd "$db" -c "SELECT string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger
				 WHERE tgrelid = 'gate_bridge.eval_results'::regclass
				   AND NOT tgisinternal AND tgenabled <> 'D'")
	[ "$got" = "$want" ] ||
		{ echo "enabled triggers are \"$got\", expected \"$want\"" >&2; exit 1; }
}

# apply_profile PROFILE: fsync and synchronous_commit for the cluster
profile=none-yet
# the two settings, normalised: from the configuration files (what a reload
# applies) or as a new connection has them
FILE_SETTINGS="SELECT string_agg(CASE WHEN COALESCE(f.setting, s.boot_val) IN ('true', 'yes', '1', 'on') THEN 'on'
	WHEN COALESCE(f.setting, s.boot_val) IN ('false', 'no', '0', 'off') THEN 'off'
	ELSE COALESCE(f.setting, s.boot_val) END, ' ' ORDER BY s.name)
	FROM pg_settings s LEFT JOIN pg_file_settings f ON f.name = s.name AND f.applied
	WHERE s.name IN ('fsync', 'synchronous_commit')"
CURRENT_SETTINGS="SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')"
apply_profile() {
	[ "$1" != "$profile" ] || return 0
	local fs="" sc="" want got i
	case $1 in
		'') ;;
		sync) fs=on sc=on ;;
		nofsync) fs=off sc=on ;;
		async) fs=on sc=off ;;
		*) echo "unknown profile $1" >&2; exit 2 ;;
	esac
	qp -c 'ALTER SYSTEM RESET fsync' -c 'ALTER SYSTEM RESET synchronous_commit'
	[ -z "$fs" ] || qp -c "ALTER SYSTEM SET fsync = $fs" -c "ALTER SYSTEM SET synchronous_commit = $sc"
	want=$(qp -c "$FILE_SETTINGS")
	qp -c 'SELECT pg_reload_conf()' >/dev/null
	# a new connection has them once the postmaster has reloaded
	for i in $(seq 1 100); do
		got=$(qp -c "$CURRENT_SETTINGS")
		[ "$got" != "$want" ] || break
		sleep 0.05
	done
	[ "$got" = "$want" ] ||
		{ echo "profile \"$1\": settings are \"$got\", expected \"$want\"" >&2; exit 1; }
	qp -c CHECKPOINT
	profile=$1
	read -r fs sc <<<"$got"
	echo "-- settings: fsync=$fs synchronous_commit=$sc${1:+ (profile $1)}"
}

checks_failed=0
: >"$OUT/checks.txt"
check() {
	if [ "$2" = "$3" ]; then
		echo "ok   $1: $2" >>"$OUT/checks.txt"
	else
		echo "FAIL $1: $2, expected $3" >>"$OUT/checks.txt"
		checks_failed=$((checks_failed + 1))
	fi
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minmax() { sort -g | awk -v f="${1:-%.1f}" 'NR == 1 { lo = $1 } { hi = $1 } END { printf f "-" f "\n", lo, hi }'; }

# the snapshot holder: another role, idle in a REPEATABLE READ transaction
# whose snapshot it took before the measurement starts
SNAP_PID=
start_snapshot() {
	local fifo=$OUT/snapshot.fifo i
	rm -f "$fifo"
	mkfifo "$fifo"
	PGUSER=$READER PGPASSWORD=$READER PGAPPNAME=gb_bench_snapshot \
		psql -X -q -v ON_ERROR_STOP=1 -d "$DB" <"$fifo" >>"$OUT/snapshot.log" 2>&1 &
	SNAP_PID=$!
	exec 9>"$fifo"
	echo 'BEGIN ISOLATION LEVEL REPEATABLE READ;' >&9
	echo 'SELECT 1 FROM gate_bridge.incidents LIMIT 1;' >&9
	for i in $(seq 1 200); do
		[ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gb_bench_snapshot'
				 AND usename = '$READER' AND state = 'idle in transaction' AND backend_xmin IS NOT NULL")" = 1 ] &&
			return 0
		sleep 0.05
	done
	echo "the snapshot holder did not start (see $OUT/snapshot.log)" >&2
	exit 1
}
stop_snapshot() {
	exec 9>&-
	wait "$SNAP_PID" || true
	rm -f "$OUT/snapshot.fifo"
	SNAP_PID=
}

folded_rows=0		# storm rows inserted by the sides that fold into the incident (on, snap, update)
recover_rows=0		# recover rows inserted with the trigger on: each counts towards a recovery
errors=0

# measure CASE SIDE ROUND SECONDS: one pgbench run of a single-row case
measure() {
	local case=$1 side=$2 round=$3 secs=$4
	local base=${case%@*} script clients jobs=$JOBS rc=0 per_txn extra=
	clients=${base##*-}
	script=${base%-*}.sql
	[ "$script" != snapshot.sql ] || script=storm.sql
	per_txn=$(sed -n 's/^-- rows per transaction: \([0-9]*\)$/\1/p' "$script")
	local log="$OUT/$case-$side-$round.log"
	[ "$clients" -gt 1 ] || jobs=1
	q -c 'TRUNCATE gate_bridge.eval_results' \
	  -c 'VACUUM gate_bridge.incident_rows, gate_bridge.incident_keys, gate_bridge.incident_events' \
	  -c 'CHECKPOINT'
	set_side "$side"
	[ "$side" != snap ] || start_snapshot
	wait_no_backends
	local t0 t1
	t0=$(reaped_ticks)
	pgbench -n -M prepared -f "$script" -c "$clients" -j "$jobs" -T "$secs" \
		--random-seed=42 "$DB" >"$log" 2>&1 || rc=$?
	wait_no_backends
	t1=$(reaped_ticks)
	if [[ $base == snapshot-* ]]; then
		extra=$(q -c "SELECT '  dead versions in incidents ' || dead_tuple_count FROM pgstattuple('gate_bridge.incident_rows')")
		[ "$side" != snap ] ||
			extra+=$(q -c "SELECT ', snapshot ' || age(backend_xmin) || ' xids old' FROM pg_stat_activity
							WHERE application_name = 'gb_bench_snapshot'")
	fi
	[ "$side" != snap ] || stop_snapshot
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
	case $base:$side in
		storm*:on | storm*:update | snapshot*:on | snapshot*:snap) folded_rows=$((folded_rows + rows)) ;;
		recover*:on) recover_rows=$((recover_rows + rows)) ;;
	esac
	cpu=0
	[ "$rows" -gt 0 ] && cpu=$(awk -v t=$((t1 - t0)) -v us="$TICK_US" -v n="$rows" 'BEGIN { printf "%.1f", t * us / n }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$side" "$round" "${tps:-0}" "$rows" "${failed:-?}" "$cpu" >>"$OUT/results.tsv"
	printf '%-16s round %d  %-6s %9.1f tps  %7d rows  %s failed  %6.1f us CPU/row  load %s%s\n' \
		"$case" "$round" "$side" "${tps:-0}" "$rows" "${failed:-?}" "$cpu" "$load" "$extra"
}

# single-row cases: sides alternately, the side that goes first rotating
run_rows() {
	local case=$1 rounds=$2 secs=$3 round side
	shift 3
	for round in $(seq 1 "$rounds"); do
		for side in "$@"; do
			measure "$case" "$side" "$round" "$secs"
		done
		# next round starts with the next side
		set -- "${@:2}" "$1"
	done
}

# psql_ms DATABASE FILE VAR=VALUE...: run FILE, print the time of its last
# statement in ms (psql \timing; autocommit, so the commit is included)
psql_ms() {
	local db=$1 f=$2 vars=() v
	shift 2
	for v in "$@"; do vars+=(-v "$v"); done
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" "${vars[@]}" -c '\timing on' -f "$f" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}

# burst: one INSERT creating BURST_KEYS incidents, against the same
# INSERT with the trigger off
run_burst() {
	local case=$1 db=gb_burst round side ms n want
	new_db $db
	set -- on off
	for round in $(seq 1 "$BURST_ROUNDS"); do
		for side in "$@"; do
			qd $db -c 'TRUNCATE gate_bridge.eval_results, gate_bridge.incident_events,
						gate_bridge.incident_rows, gate_bridge.incident_keys' -c 'CHECKPOINT'
			set_side "$side" $db
			ms=$(psql_ms $db burst.sql keys="$BURST_KEYS")
			n=$(qd $db -c 'SELECT count(*) FROM gate_bridge.incidents')
			want=0
			[ "$side" = off ] || want=$BURST_KEYS
			check "$case $side round $round: incidents created" "$n" "$want"
			printf '%s\t%s\t%s\n' "$side" "$round" "$ms" >>"$OUT/burst.tsv"
			printf '%-16s round %d  %-4s %9.1f ms  %5d incidents created  load %s\n' \
				"$case" "$round" "$side" "$ms" "$n" "$(cut -d' ' -f1 /proc/loadavg)"
		done
		set -- "${@:2}" "$1"
	done
	local on off
	on=$(awk -F'\t' '$1 == "on" { print $3 }' "$OUT/burst.tsv" | median)
	off=$(awk -F'\t' '$1 == "off" { print $3 }' "$OUT/burst.tsv" | median)
	{
		echo "burst ($case): one INSERT of $BURST_KEYS violating rows of $BURST_KEYS agents without an incident; median (min-max) of $BURST_ROUNDS rounds"
		awk -v on="$on" -v off="$off" -v r1="$(awk -F'\t' '$1 == "on" { print $3 }' "$OUT/burst.tsv" | minmax)" \
			-v r0="$(awk -F'\t' '$1 == "off" { print $3 }' "$OUT/burst.tsv" | minmax)" 'BEGIN {
			printf "  on  %9.1f ms (%s)   off %7.1f ms (%s)   on/off %.1fx   target on <= 1000 ms %s\n",
				on, r1, off, r0, (off > 0 ? on / off : 0), (on <= 1000 ? "met" : "MISSED") }'
	} >"$OUT/summary-$case_no"
	qp -c "DROP DATABASE $db"
}

# bulk: one INSERT ... SELECT of BULK_ROWS clean rows, on against off
run_bulk() {
	local case=$1 db=gb_bulk round side ms n
	new_db $db
	set -- on off
	for round in $(seq 1 "$BULK_ROUNDS"); do
		for side in "$@"; do
			qd $db -c 'TRUNCATE gate_bridge.eval_results' -c 'CHECKPOINT'
			set_side "$side" $db
			ms=$(psql_ms $db bulk.sql rows="$BULK_ROWS")
			n=$(qd $db -c 'SELECT count(*) FROM gate_bridge.eval_results')
			check "$case $side round $round: rows inserted" "$n" "$BULK_ROWS"
			printf '%s\t%s\t%s\n' "$side" "$round" "$ms" >>"$OUT/bulk.tsv"
			printf '%-16s round %d  %-4s %9.1f ms  %d rows  load %s\n' \
				"$case" "$round" "$side" "$ms" "$n" "$(cut -d' ' -f1 /proc/loadavg)"
		done
		set -- "${@:2}" "$1"
	done
	check "$case: incidents" "$(qd $db -c 'SELECT count(*) FROM gate_bridge.incidents')" 0
	local on off
	on=$(awk -F'\t' '$1 == "on" { print $3 }' "$OUT/bulk.tsv" | median)
	off=$(awk -F'\t' '$1 == "off" { print $3 }' "$OUT/bulk.tsv" | median)
	{
		echo "bulk ($case): one INSERT ... SELECT of $BULK_ROWS clean rows; median (min-max) of $BULK_ROUNDS rounds"
		awk -v on="$on" -v off="$off" -v r1="$(awk -F'\t' '$1 == "on" { print $3 }' "$OUT/bulk.tsv" | minmax)" \
			-v r0="$(awk -F'\t' '$1 == "off" { print $3 }' "$OUT/bulk.tsv" | minmax)" 'BEGIN {
			t = off > 0 ? on / off : 0
			printf "  on  %9.1f ms (%s)   off %9.1f ms (%s)   time on/off %.3fx   target <= 1.10x %s\n",
				on, r1, off, r0, t, (t <= 1.10 ? "met" : "MISSED") }'
	} >"$OUT/summary-$case_no"
	qp -c "DROP DATABASE $db"
}

# history: create / fold / reopen in a database with HISTORY resolved
# incidents against one with none
run_history() {
	local case=$1 empty=gb_hist_empty full=gb_hist_full db per_key total t0 loaders n lo hi i
	new_db $empty
	new_db $full
	for db in $empty $full; do
		qp -c "ALTER DATABASE $db SET gate_bridge.rate_limit = 1000000"
	done
	per_key=$((HISTORY / HISTORY_KEYS))
	total=$((per_key * HISTORY_KEYS))
	if [ "$total" -gt 0 ]; then
		# loaded without disk flushes, then checkpointed; the case's own
		# settings come back before anything is measured
		local was=$profile
		apply_profile nofsync >/dev/null
		t0=$(date +%s)
		loaders=$(nproc)
		[ "$loaders" -le 4 ] || loaders=4
		n=$(((HISTORY_KEYS + loaders - 1) / loaders))
		local pids=()
		for i in $(seq 0 $((loaders - 1))); do
			lo=$((i * n)) hi=$(((i + 1) * n - 1))
			[ "$hi" -lt "$HISTORY_KEYS" ] || hi=$((HISTORY_KEYS - 1))
			[ "$lo" -le "$hi" ] || continue
			psql -X -q -d $full -v first_key=$lo -v last_key=$hi -v per_key=$per_key \
				-v events="$HISTORY_EVENTS" -f history.sql >"$OUT/history-load-$i.log" 2>&1 &
			pids+=($!)
		done
		for i in "${pids[@]}"; do
			wait "$i" || { echo "loading the history failed:" >&2; cat "$OUT"/history-load-*.log >&2; exit 1; }
		done
		qd $full -c "SELECT setval(pg_get_serial_sequence('gate_bridge.incident_rows', 'id'), max(id)) FROM gate_bridge.incidents" >/dev/null
		[ "$HISTORY_EVENTS" != 1 ] ||
			qd $full -c "SELECT setval('gate_bridge.incident_events_position_seq', max(position)) FROM gate_bridge.incident_events" \
				-c "SELECT setval(pg_get_serial_sequence('gate_bridge.incident_events', 'id'), max(id)) FROM gate_bridge.incident_events" >/dev/null
		qd $full -c 'VACUUM (FREEZE, ANALYZE) gate_bridge.incident_rows, gate_bridge.incident_keys, gate_bridge.incident_events'
		echo "-- history: $total resolved incidents over $HISTORY_KEYS keys ($per_key each)$([ "$HISTORY_EVENTS" != 1 ] || echo ", with their events"), loaded and vacuumed in $(($(date +%s) - t0)) s"
		apply_profile "$was" >/dev/null
	fi
	# both: the fold key's incident open, the reopen keys' incidents resolved
	for db in $empty $full; do
		qd "$db" -c "INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('bench.hist.000000', 0.65)" \
			-c "INSERT INTO gate_bridge.eval_results (agent, quality)
				SELECT 'bench.hist.' || lpad(k::text, 6, '0'), 0.65 FROM generate_series(1, $REOPEN_KEYS) AS k" \
			-c "SELECT count(gate_bridge.resolve(id, 'bench.oncall')) FROM gate_bridge.incidents
				 WHERE status <> 'resolved' AND agent <> 'bench.hist.000000'" >/dev/null
		qd "$db" -c 'VACUUM ANALYZE gate_bridge.incident_rows, gate_bridge.incident_keys, gate_bridge.incident_events'
		echo "-- $db: $(qd "$db" -c "SELECT count(*) || ' incidents (' || count(*) FILTER (WHERE status <> 'resolved') || ' unresolved), incidents ' || pg_size_pretty(pg_total_relation_size('gate_bridge.incidents')) || ' with indexes, events ' || pg_size_pretty(pg_total_relation_size('gate_bridge.incident_events')) FROM gate_bridge.incidents")"
	done
	qp -c CHECKPOINT
	local round op log tps ms extra
	set -- $empty $full
	for round in $(seq 1 "$HISTORY_ROUNDS"); do
		for op in create fold reopen; do
			for db in "$@"; do
				# INDEX_CLEANUP ON: a plain VACUUM of the large table skips
				# its indexes (fewer than 2 % of its pages have dead rows),
				# and leaves their statistics as they were.  ANALYZE: with
				# the statistics of a moment when one incident was open,
				# resolve()'s UPDATE ... WHERE id = $1 of the large table
				# scans the whole incidents_unresolved_idx instead of the
				# primary key, and the creates' open incidents pile up in it
				# (bench/RESULTS.md).  GB_BENCH_HISTORY_VACUUM=plain: a
				# plain VACUUM instead, to see that.
				qd "$db" -c 'TRUNCATE gate_bridge.eval_results' \
					-c "VACUUM $HISTORY_VACUUM gate_bridge.incident_rows, gate_bridge.incident_keys, gate_bridge.incident_events" \
					-c 'CHECKPOINT'
				log="$OUT/$case-$op-$db-$round.log"
				pgbench -n -M prepared -r -f "history-$op.sql" -c 1 -j 1 -T "$HISTORY_SECS" \
					-D reopen_keys="$REOPEN_KEYS" --random-seed=42 "$db" >"$log" 2>&1 ||
					echo "!! $case $op $db round $round: pgbench failed; see $log"
				tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")
				ms=$(awk '/^statement latencies/ { s = 1; next } s && /INSERT INTO gate_bridge.eval_results/ { print $1; exit }' "$log")
				extra=
				[ "$op" != reopen ] ||
					extra=$(awk '/^statement latencies/ { s = 1; next } s && /SELECT gate_bridge.resolve/ { printf "  (then resolve %.3f ms)", $1; exit }' "$log")
				grep -q '^number of failed transactions: 0 ' "$log" ||
					{ echo "!! $case $op $db round $round: failed transactions; see $log"; errors=$((errors + 1)); }
				printf '%s\t%s\t%s\t%s\t%s\n' "$op" "$db" "$round" "${ms:-0}" "${tps:-0}" >>"$OUT/history.tsv"
				printf '%-16s round %d  %-6s %-13s %7.3f ms INSERT  %8.1f tps  load %s%s\n' \
					"$case" "$round" "$op" "$db" "${ms:-0}" "${tps:-0}" "$(cut -d' ' -f1 /proc/loadavg)" "$extra"
			done
		done
		set -- "${@:2}" "$1"
	done
	for db in $empty $full; do
		check "$case $db: unresolved incidents of bench.hist.* (the fold key's)" \
			"$(qd "$db" -c "SELECT count(*) FROM gate_bridge.incidents WHERE status <> 'resolved' AND agent LIKE 'bench.hist.%'")" 1
	done
	{
		echo "history ($case): time of the INSERT (pgbench -r, one client, trigger on) with $total resolved incidents against none; median (min-max) of $HISTORY_ROUNDS rounds of ${HISTORY_SECS}s; VACUUM ${HISTORY_VACUUM:+$HISTORY_VACUUM }before each"
		for op in create fold reopen; do
			local e f
			e=$(awk -F'\t' -v o=$op -v d=$empty '$1 == o && $2 == d { print $4 }' "$OUT/history.tsv" | median)
			f=$(awk -F'\t' -v o=$op -v d=$full '$1 == o && $2 == d { print $4 }' "$OUT/history.tsv" | median)
			awk -v op=$op -v e="$e" -v f="$f" \
				-v re="$(awk -F'\t' -v o=$op -v d=$empty '$1 == o && $2 == d { print $4 }' "$OUT/history.tsv" | minmax %.3f)" \
				-v rf="$(awk -F'\t' -v o=$op -v d=$full '$1 == o && $2 == d { print $4 }' "$OUT/history.tsv" | minmax %.3f)" 'BEGIN {
				r = e > 0 ? f / e : 0
				printf "  %-6s empty %7.3f ms (%s)   history %7.3f ms (%s)   history/empty %.3fx   target <= 1.20x %s\n",
					op, e, re, f, rf, r, (r <= 1.20 ? "met" : "MISSED") }'
		done
	} >"$OUT/summary-$case_no"
	qp -c "DROP DATABASE $empty" -c "DROP DATABASE $full"
}

# bv NAME: a figure of batch.py's output in $log
bv() { awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' "$log"; }

# batch: COPY loaders and an operator, on against off
run_batch() {
	local case=$1 db=gb_batch round side log
	new_db $db
	qp -c "ALTER DATABASE $db SET gate_bridge.rate_limit = $BATCH_RATE_LIMIT"
	set -- on off
	for round in $(seq 1 "$BATCH_ROUNDS"); do
		for side in "$@"; do
			qd $db -c 'TRUNCATE gate_bridge.eval_results, gate_bridge.incident_events,
						gate_bridge.incident_rows, gate_bridge.incident_keys' -c 'CHECKPOINT'
			set_side "$side" $db
			log="$OUT/$case-$side-$round.log"
			"$PYTHON" batch.py $db "$BATCH_SECS" "$side" >"$log" 2>&1 ||
				{ echo "!! $case $side round $round: batch.py failed; see $log"; errors=$((errors + 1)); }
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$side" "$round" "$(bv batches_committed)" \
				"$(bv batches_failed)" "$(bv batches_deadlocked)" "$(bv resolves)" "$(bv resolves_failed)" \
				"$(bv resolves_deadlocked)" "$(bv keys_count_wrong)" "$(bv keys_with_two_unresolved)" >>"$OUT/batch.tsv"
			printf '%-16s round %d  %-4s %5d batches committed, %3d failed (%d deadlocks%s); operator %d resolves, %d failed (%d deadlocks)%s; %s s  load %s\n' \
				"$case" "$round" "$side" "$(bv batches_committed)" "$(bv batches_failed)" "$(bv batches_deadlocked)" \
				"$(awk '$1 ~ /^batch_error_/ { printf ", %s %s", substr($1, 13), $2 }' "$log")" \
				"$(bv resolves)" "$(bv resolves_failed)" "$(bv resolves_deadlocked)" \
				"$([ "$side" = off ] || echo "; keys with a wrong count $(bv keys_count_wrong) of $(bv keys)")" \
				"$(bv elapsed_s)" "$(cut -d' ' -f1 /proc/loadavg)"
		done
		set -- "${@:2}" "$1"
	done
	{
		echo "batch ($case): $((${GB_BENCH_BATCH_LOADERS:-4})) COPY loaders, ${GB_BENCH_BATCH_ROWS:-100}-row batches over ${GB_BENCH_BATCH_AGENTS:-10} agents, ${GB_BENCH_BATCH_VIOLATING:-0.30} violating, half with a second statement in reverse key order, an operator resolving; rate_limit $BATCH_RATE_LIMIT; $BATCH_ROUNDS rounds of ${BATCH_SECS}s per side, totals"
		awk -F'\t' '{ c[$1] += $3; f[$1] += $4; d[$1] += $5; r[$1] += $6; rf[$1] += $7; rd[$1] += $8; w[$1] += $9; u[$1] += $10 }
			END {
				for (s = 1; s <= 2; s++) {
					side = s == 1 ? "on" : "off"
					if (!(side in c)) continue
					printf "  %-3s %6d batches committed, %4d failed, %4d deadlocks (40P01); operator %5d resolves, %3d failed, %3d deadlocks", \
						side, c[side], f[side], d[side], r[side], rf[side], rd[side]
					if (side == "on")
						printf "; keys with a wrong count %d, with two unresolved incidents %d   target 0 deadlocks, 0 failed: %s", \
							w[side], u[side], ((d[side] + rd[side] + f[side] + rf[side] == 0) ? "met" : "MISSED")
					printf "\n"
				}
			}' "$OUT/batch.tsv"
		[ ! -s "$OUT/batch.tsv" ] || awk -F'\t' '$1 == "on" && $3 + $4 > 0 { n++; s += $3 / ($3 + $4) } END { if (n) printf "  batches committed / attempted, on: %.3f\n", s / n }' "$OUT/batch.tsv"
	} >"$OUT/summary-$case_no"
	qp -c "DROP DATABASE $db"
}

echo "== measurements"
case_no=0
timings=()
for case in $CASES; do
	case_no=$((case_no + 1))
	prof=
	[[ $case != *@* ]] || prof=${case#*@}
	apply_profile "$prof"
	t0=$(date +%s)
	case ${case%@*} in
		snapshot-*) run_rows "$case" "$SNAP_ROUNDS" "$SNAP_SECS" $SNAP_SIDES ;;
		clean-* | storm-* | storm10-* | armed-* | recover-*)
			if [ -n "$prof" ]; then
				run_rows "$case" "$PROFILE_ROUNDS" "$SECS" $SIDES
			else
				run_rows "$case" "$ROUNDS" "$SECS" $SIDES
			fi ;;
		burst) run_burst "$case" ;;
		bulk) run_bulk "$case" ;;
		history) run_history "$case" ;;
		batch) run_batch "$case" ;;
	esac
	timings+=("$case $(($(date +%s) - t0))s")
done
apply_profile ''
echo

echo "== checks"
check "pgbench runs with an error, a failed transaction or rows != transactions" "$errors" 0
[ -z "${GB_BENCH_LIB:-}" ] ||
	check "md5 of the installed gate_bridge.so, unchanged during the run" "$(lib_md5)" "$LIB_MD5"
case " $CASES " in *" clean-"*)
	check "incidents for the clean agents" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE 'bench.clean.%'")" 0
esac
case " $CASES " in *" armed-"*)
	check "incidents for the armed agents" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE 'bench.armed.%'")" 0
esac
if [ "$RECOVER_INCIDENTS" -gt 0 ]; then
	check "incidents of the recover agents: all, unresolved" \
		"$(q -c "SELECT count(*) || ', ' || count(*) FILTER (WHERE status <> 'resolved') FROM gate_bridge.incidents
				 WHERE agent LIKE 'bench.recover.%'")" "8, 8"
	check "their passing rows counted (incident_keys.recovery_passes) = recover rows inserted with the trigger on" \
		"$(q -c "SELECT COALESCE(sum(recovery_passes), 0) FROM gate_bridge.incident_keys
				 WHERE kind = 'budget' AND agent LIKE 'bench.recover.%' AND subject = 'quality'")" "$recover_rows"
fi
if [ "$folded_rows" -gt 0 ]; then
	check "incidents in all, but the recover agents'" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE agent NOT LIKE 'bench.recover.%'")" 1
	check "incidents for $STORM_KEY" \
		"$(q -c "SELECT count(*) FROM gate_bridge.incidents WHERE kind = 'budget' AND key = '$STORM_KEY'")" 1
	check "its occurrences = storm rows inserted with the trigger on" \
		"$(q -c "SELECT occurrences FROM gate_bridge.incidents WHERE kind = 'budget' AND key = '$STORM_KEY'")" \
		"$folded_rows"
	check "stats for kind budget: created,deduplicated,rate_limited" \
		"$(q -c "SELECT created || ',' || deduplicated || ',' || rate_limited FROM gate_bridge.stats WHERE kind = 'budget'")" \
		"$((1 + RECOVER_INCIDENTS)),$((folded_rows - 1)),0"
fi
cat "$OUT/checks.txt"
echo "time per case: ${timings[*]}"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); elapsed $(($(date +%s) - started)) s"
echo

if [ -s "$OUT/results.tsv" ]; then
	echo "== results, single-row cases: median (min-max) of the rounds"
	echo "   ratio: median tps / median tps of off (of on for snapshot cases: the target's measure); per round: median over"
	echo "   the rounds of the same ratio within a round; CPU ratio: median CPU/row of off (on) / median CPU/row"
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
# the target of a case and side, or 0 if there is none
function target(cs, side,   c, prof) {
	c = cs; prof = ""
	if (index(cs, "@")) { c = substr(cs, 1, index(cs, "@") - 1); prof = substr(cs, index(cs, "@") + 1) }
	if (c ~ /^snapshot-/) return side == "snap" ? 0.50 : 0
	if (side != "on") return 0
	if (c ~ /^storm/) return prof == "sync" ? 0.70 : prof == "nofsync" ? 0.75 : 0.50
	if (c ~ /^(clean|armed)/) return (prof == "sync" || prof == "nofsync") ? 0.97 : 0.95
	return 0
}
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
	printf "%-16s %-6s %6s %22s %6s %9s %19s %6s  %s\n", "case", "side", "rounds", "tps", "ratio",
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
		bs = (cs ~ /^snapshot-/) ? "on" : "off"
		ref = cs SUBSEP bs
		for (s = 1; s <= nsides[cs]; s++) {
			side = sides[cs, s]
			k = cs SUBSEP side
			tr = pr = cr = "-"
			verdict = ""
			if (side != bs) {
				tr = sprintf("%.3f", mt[ref] > 0 ? mt[k] / mt[ref] : 0)
				cr = sprintf("%.3f", mc[k] > 0 ? mc[ref] / mc[k] : 0)
				m = 0
				for (r = 1; r <= 1000; r++)
					if ((cs, r) in rounds && byround[cs, bs, r] > 0)
						a[++m] = byround[cs, side, r] / byround[cs, bs, r]
				if (m > 0) { sort(a, m); pr = sprintf("%.3f", median(a, m)) }
				t = target(cs, side)
				if (t > 0)
					verdict = sprintf(">= %.2f %s", t, (tr + 0 >= t) ? "met" : "MISSED")
			}
			printf "%-16s %-6s %6d %6.0f (%6.0f-%6.0f) %6s %9s %6.1f (%4.1f-%5.1f) %6s  %s\n",
				cs, side, n[k], mt[k], lo[k], hi[k], tr, pr, mc[k], clo[k], chi[k], cr, verdict
		}
	}
}' "$OUT/results.tsv"
	echo
fi

for i in $(seq 1 "$case_no"); do
	f=$OUT/summary-$i
	[ -f "$f" ] || continue
	echo "== results, $(head -n 1 "$f")"
	tail -n +2 "$f"
	echo
done

[ "$checks_failed" -eq 0 ]
