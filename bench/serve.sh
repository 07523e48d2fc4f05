#!/usr/bin/env bash
# The latency of `gate-bridge serve`'s event stream, on a throw-away cluster:
# 500 SSE clients (one Python process, asyncio), then 300 failing eval rows,
# each its own transaction and each opening an incident of its own agent,
# at 20 rows/s.  For every (client, event) pair: the time from the row's
# COMMIT returning to the frame's arrival, on one clock (the same process).
# Prints p50 / p99 / max, serve's CPU time (utime + stime) over the run and
# its memory (VmRSS, VmHWM).  Target: p99 under 100 ms.
#
#   bench/serve.sh
#
# Environment (defaults in brackets): GB_BENCH_CLIENTS [500],
# GB_BENCH_ROWS [300], GB_BENCH_RATE rows per second [20], GB_SERVE_BIN
# [./gate-bridge], GB_PYTHON [/usr/bin/python3], GB_BENCH_KEEP=1 keeps the
# work directory (serve's log).
#
# Needs gate_bridge installed (make install), ./gate-bridge built (make) and
# python3-psycopg.  Exits non-zero if any client missed an event.
. "$(dirname "$0")/../tools/common.sh"
. "$(dirname "$0")/../test/serve/cluster.sh"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export GB_SERVE_BIN=${GB_SERVE_BIN:-$here/../gate-bridge}
py=${GB_PYTHON:-/usr/bin/python3}
[ -x "$GB_SERVE_BIN" ] || { echo "bench/serve.sh: $GB_SERVE_BIN is missing (make)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/gb_serve_bench.XXXXXX")
cleanup() {
	local rc=$?
	gbs_cluster_stop immediate
	if [ "${GB_BENCH_KEEP:-}" = 1 ]; then echo "bench/serve.sh: kept $work" >&2; else rm -rf "$work"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gbs_cluster_create "$work"
gbs_cluster_start
gbs_setup_db >/dev/null

ulimit -n 8192 2>/dev/null || true
export GB_BENCH_PGPORT=$GBS_PORT GB_BENCH_WORK=$work
echo "== $(nproc) CPUs; serve $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo ?)" \
	"binary md5 $(md5sum <"$GB_SERVE_BIN" | cut -c1-12)"
"$py" "$here/serve-bench.py"
