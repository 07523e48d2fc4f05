#!/usr/bin/env bash
# gate_bridge benchmark: single-row INSERT throughput into
# gate_bridge.eval_results with the extension's triggers enabled against the
# same table with them disabled, for clean rows (1 and 8 clients) and for an
# alert storm (8 clients, every row violates one key).
#
#   bench/run.sh
#
# Debian 12, as root (or with sudo).  It installs missing Debian packages
# but neither builds nor installs gate_bridge: run tools/test (or
# make install) first.  It starts a throw-away cluster with pg_virtualenv,
# runs bench/measure.sh in it and prints the figures; pgbench's own output
# is kept in bench/out/speed/.  About 9 minutes with the defaults.
#
# Environment (defaults in brackets):
#   GB_BENCH_ROUNDS   rounds per case [16]
#   GB_BENCH_SECS     seconds per side and round [5]
#   GB_BENCH_JOBS     pgbench threads for the 8-client cases [2]
#   GB_BENCH_CASES    [clean-1 clean-8 storm-8]; clean-N / storm-N / storm10-N,
#                     N clients; storm10 inserts ten storm rows per transaction
#   GB_BENCH_SIDES    [on off]; also noopc, noop and update, the
#                     reference triggers of bench/reference.sql
#   GB_BENCH_SETTINGS server settings, name=value, space-separated
#                     [see BENCH_SETTINGS below]
#   GB_BENCH_OUT      where pgbench's output goes [bench/out/speed]
#   GB_BENCH_DROP_CHECKS=incidents[,eval_results]  experiment: drop the
#                     CHECK constraints of these tables (bench/drop-checks.sql)
#
# bench/instructions.sh counts CPU instructions per row for the same rows,
# free of the noise of a shared machine.
set -euo pipefail
. "$(dirname "$0")/../tools/common.sh"

# Every case runs with these.  synchronous_commit = off keeps commits from
# waiting for the disk, so that the figures show the trigger's own cost
# rather than the flush latency of a shared disk; fsync stays on (which
# pg_virtualenv would turn off); no checkpoint or autovacuum starts in the
# middle of a measurement (measure.sh runs CHECKPOINT and VACUUM between
# measurements instead).
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

gb_say "starting a throw-away cluster ($BENCH_SETTINGS)"
exec pg_virtualenv -t -v "$GB_PGVERSION" "${opts[@]}" "$GB_ROOT/bench/measure.sh"
