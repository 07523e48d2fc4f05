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

gbs_run_bench serve "$(cd "$(dirname "$0")" && pwd)"
