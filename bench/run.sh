#!/usr/bin/env bash
# gate_bridge benchmark: what the extension's trigger on
# gate_bridge.eval_results costs, measured with the trigger enabled against
# the same table with it disabled, side by side in one run on one
# throw-away cluster: single-row INSERTs of clean rows and of an alert
# storm (one key), with the cluster's settings and with durable or no disk
# flushes, a storm under an old snapshot, a burst of new keys, a bulk load,
# a large incident history, and concurrent batch loaders with an operator.
#
#   bench/run.sh                                  every case: about 28 minutes
#   GB_BENCH_CASES="storm-8@sync burst" bench/run.sh          some of them
#
# Debian 12, as root (or with sudo).  It installs missing Debian packages
# but neither builds nor installs gate_bridge: run tools/test (or
# make install) first.  It starts a throw-away cluster with pg_virtualenv,
# runs bench/measure.sh in it and prints the figures; the clients' own
# output is kept in bench/out/speed/.
#
# Cases (GB_BENCH_CASES, space-separated; default: all of these but
# budgets, in this order), each NAME or NAME@PROFILE:
#   clean-1, clean-8   clean rows (clean.sql: agents with budgets, no
#                      budget crossed), 1 and 8 clients     target >= 0.95
#   storm-8            alert storm (storm.sql: every row violates the one
#                      key BUDGET_bench.storm_quality), 8 clients  >= 0.50
#   storm-8@sync       the storm, fsync=on, synchronous_commit=on  >= 0.70
#   storm-8@nofsync    the storm, fsync=off                        >= 0.75
#   snapshot-8         the storm while another role holds a REPEATABLE
#                      READ snapshot open (idle in transaction) for the
#                      whole measurement, against the same storm without
#                      it, both with the trigger on: snap / on     >= 0.50
#   clean-2@nofsync, clean-8@nofsync, clean-2@sync, clean-8@sync
#                      clean rows, 2 and 8 clients, no flushes and
#                      durable commits                             >= 0.97
#   burst              one INSERT ... SELECT of 5,000 violating rows of
#                      5,000 agents without an incident: 5,000 incidents
#                      created in one statement; its time, commit
#                      included, against the same INSERT with the trigger
#                      off                                         <= 1 s
#   bulk               one INSERT ... SELECT of 1,000,000 clean rows; time
#                      on / time off                               <= 1.10
#   history            create (a new key), fold (into an open incident)
#                      and reopen (the next incident of a key after
#                      resolve), one client, trigger on, in a database
#                      holding 10,000,000 resolved incidents (history.sql:
#                      100,000 keys, 100 each) against one holding none;
#                      time of the INSERT, history / empty         <= 1.20
#   batch              4 COPY loaders (batch.py), 100-row batches over 10
#                      agents in random order, 30 % of the rows violating,
#                      half of the transactions adding a second statement
#                      in reverse key order, an operator resolving open
#                      incidents in a loop: batches committed and failed,
#                      deadlocks (40P01), exactness of the counts, against
#                      the same load with the trigger off     0 deadlocks
#   budgets            bench/budgets.sh, run after the others on its own
#                      cluster, if it is there
# Not in the default list, the cost of auto-resolve (budgets.resolve_after;
# recover-setup.sql gives the agents of both the clean agents' budgets,
# with resolve_after GB_BENCH_RECOVER_AFTER on the quality budgets):
#   armed-N            clean rows (armed.sql) of agents with such budgets
#                      and no unresolved incident: as free as clean rows,
#                      target as clean-N's
#   recover-N          clean rows (recover.sql) of agents with such budgets,
#                      each with an unresolved quality incident that does
#                      not resolve during the run: every row is counted
#                      towards its recovery at commit; on / off measured,
#                      no target
# Also: clean-N, storm-N, storm10-N (ten storm rows per transaction),
# snapshot-N, armed-N and recover-N for any N clients, and burst, bulk, history, batch, with any
# profile.  The ratio of a single-row case is median tps on / median tps
# off (snapshot: snap / on) over its rounds.
#
# Profiles (fsync and synchronous_commit for the whole cluster while the
# case runs, by ALTER SYSTEM and a reload; no profile: the cluster's own
# settings, BENCH_SETTINGS below):
#   sync     fsync=on,  synchronous_commit=on: PostgreSQL's defaults, how
#            users run
#   nofsync  fsync=off, synchronous_commit=on: nothing waits for the disk,
#            the cost is CPU alone
#   async    fsync=on,  synchronous_commit=off: as the cluster's settings
#
# Environment (defaults in brackets):
#   GB_BENCH_CASES    see above
#   GB_BENCH_ROUNDS   rounds per single-row case [16]
#   GB_BENCH_PROFILE_ROUNDS  rounds per single-row case with a profile
#                     [GB_BENCH_ROUNDS if set, else 8]
#   GB_BENCH_SECS     seconds per side and round of a single-row case [5]
#   GB_BENCH_JOBS     pgbench threads for the cases of several clients [2]
#   GB_BENCH_SIDES    sides of the single-row cases [on off]; also noopc,
#                     noop and update, the reference triggers of
#                     bench/reference.sql
#   GB_BENCH_RECOVER_AFTER    resolve_after of the armed and recover agents'
#                     quality budgets [1000000: no incident resolves]
#   GB_BENCH_SNAPSHOT_SECS    seconds per side of a snapshot case [80]
#   GB_BENCH_SNAPSHOT_ROUNDS  rounds of a snapshot case [1]
#   GB_BENCH_SNAPSHOT_SIDES   [on snap]; off may be added
#   GB_BENCH_BURST_KEYS       rows (new keys) of the burst INSERT [5000]
#   GB_BENCH_BURST_ROUNDS     [5]
#   GB_BENCH_BULK_ROWS        rows of the bulk INSERT [1000000]
#   GB_BENCH_BULK_ROUNDS      [5]
#   GB_BENCH_HISTORY          resolved incidents of the history [10000000];
#                             e.g. 1000000 for a quick run
#   GB_BENCH_HISTORY_KEYS     keys they belong to [100000]
#   GB_BENCH_HISTORY_EVENTS   1: their timeline rows too (2.5 per incident;
#                             the load took 2.5 times as long in a trial) [0]
#   GB_BENCH_HISTORY_REOPEN_KEYS  keys the reopen cycles pick from [1000]
#   GB_BENCH_HISTORY_ROUNDS   [3]
#   GB_BENCH_HISTORY_VACUUM   before each measurement: analyze = VACUUM
#                             (INDEX_CLEANUP ON, ANALYZE), plain = VACUUM
#                             (stale statistics; see bench/RESULTS.md) [analyze]
#   GB_BENCH_HISTORY_SECS     seconds per operation, database and round [5]
#   GB_BENCH_BATCH_SECS       seconds per side and round of the batch case [10]
#   GB_BENCH_BATCH_ROUNDS     [2]
#   GB_BENCH_BATCH_LOADERS, GB_BENCH_BATCH_ROWS, GB_BENCH_BATCH_AGENTS,
#   GB_BENCH_BATCH_VIOLATING, GB_BENCH_BATCH_SEED   [4, 100, 10, 0.30, 42]
#   GB_BENCH_BATCH_RATE_LIMIT gate_bridge.rate_limit in the batch database
#                             [1000000: every resolved key can reopen]
#   GB_BENCH_SETTINGS server settings, name=value, space-separated
#                     [see BENCH_SETTINGS below]
#   GB_BENCH_OUT      where the clients' output goes [bench/out/speed]
#   GB_BENCH_DROP_CHECKS=incidents[,eval_results]  experiment: drop the
#                     CHECK constraints of these tables (bench/drop-checks.sql)
#
# Short runs while developing, e.g.:
#   GB_BENCH_CASES="storm-8@sync" GB_BENCH_ROUNDS=3 bench/run.sh
#   GB_BENCH_CASES=snapshot-8 GB_BENCH_SNAPSHOT_SECS=20 bench/run.sh
#   GB_BENCH_CASES=history GB_BENCH_HISTORY=1000000 GB_BENCH_HISTORY_ROUNDS=1 bench/run.sh
#
# bench/measure.sh says how each case is measured.  bench/instructions.sh
# counts CPU instructions per row for the clean and storm rows, free of the
# noise of a shared machine.
set -euo pipefail
. "$(dirname "$0")/../tools/common.sh"

# Every case runs with these, but for fsync and synchronous_commit in a
# case with a profile.  synchronous_commit = off keeps commits from waiting
# for the disk, so that the figures show the trigger's own cost rather than
# the flush latency of a shared disk; fsync stays on (which pg_virtualenv
# would turn off); no checkpoint or autovacuum starts in the middle of a
# measurement (measure.sh runs CHECKPOINT and VACUUM between measurements
# instead).
BENCH_SETTINGS=${GB_BENCH_SETTINGS:-shared_buffers=256MB synchronous_commit=off \
fsync=on max_wal_size=8GB checkpoint_timeout=1h autovacuum=off}

gb_install_deps

PG_CONFIG=/usr/lib/postgresql/$GB_PGVERSION/bin/pg_config
libdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
if [ ! -f "$libdir/gate_bridge.so" ] || [ ! -f "$sharedir/extension/gate_bridge.control" ]; then
	echo "gate_bridge is not installed for PostgreSQL $GB_PGVERSION; run tools/test or make install first" >&2
	exit 1
fi
if [ -f "$GB_ROOT/gate_bridge.so" ] && ! cmp -s "$GB_ROOT/gate_bridge.so" "$libdir/gate_bridge.so"; then
	gb_say "warning: the installed gate_bridge.so differs from the one built in $GB_ROOT"
fi

export GB_BENCH_LIB=$libdir/gate_bridge.so
GB_BENCH_BUILD="installed gate_bridge.so: md5 $(md5sum <"$GB_BENCH_LIB" | cut -d' ' -f1)"
if head=$(git -C "$GB_ROOT" rev-parse --short HEAD 2>/dev/null); then
	GB_BENCH_BUILD+="; tree at commit $head"
	[ -z "$(git -C "$GB_ROOT" status --porcelain -- src sql 2>/dev/null)" ] ||
		GB_BENCH_BUILD+=" (src/ or sql/ modified)"
fi
export GB_BENCH_BUILD

opts=()
for s in $BENCH_SETTINGS; do
	opts+=(-o "$s")
done

# budgets runs on a cluster of its own, after the others
cases=() budgets=
for c in ${GB_BENCH_CASES:-}; do
	if [ "$c" = budgets ]; then budgets=1; else cases+=("$c"); fi
done
rc=0
if [ -z "${GB_BENCH_CASES:-}" ] || [ ${#cases[@]} -gt 0 ]; then
	[ -z "${GB_BENCH_CASES:-}" ] || export GB_BENCH_CASES="${cases[*]}"
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }
	gb_say "starting a throw-away cluster ($BENCH_SETTINGS)"
	pg_virtualenv -t -v "$GB_PGVERSION" -c "-p $port" "${opts[@]}" "$GB_ROOT/bench/measure.sh" || rc=$?
fi
if [ -n "$budgets" ]; then
	if [ -x "$GB_ROOT/bench/budgets.sh" ]; then
		gb_say "budgets: bench/budgets.sh"
		"$GB_ROOT/bench/budgets.sh" || rc=$?
	else
		gb_say "budgets: bench/budgets.sh is not there; skipped"
	fi
fi
exit "$rc"
