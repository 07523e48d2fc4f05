#!/usr/bin/env bash
# The throughput and latency of `gate-bridge deliver`, on a throw-away
# cluster, to a local receiver (test/deliver/receiver.py, threaded, in the
# measuring process).  For each worker count: a backlog of 10,000 created
# events (10,000 incidents, 500 eval rows per transaction) to one webhook
# destination with a secret (so each request is signed), then the worker is
# started: deliveries per second from its start to the last receipt.  Then,
# with it running, 1,000 eval rows at 100 per second, each its own
# transaction: the time from the COMMIT returning to the request's arrival,
# on one clock (the same process), p50 / p99 / max.
#
#   bench/deliver.sh
#
# Environment (defaults in brackets): GB_BENCH_EVENTS [10000],
# GB_BENCH_WORKERS ["1 4"], GB_BENCH_LATENCY_EVENTS [1000],
# GB_BENCH_LATENCY_RATE rows per second [100], GB_DELIVER_BIN
# [./gate-bridge], GB_PYTHON [/usr/bin/python3], GB_BENCH_KEEP=1 keeps the
# work directory (the workers' logs).
#
# Needs gate_bridge installed (make install), ./gate-bridge built (make) and
# python3-psycopg.
. "$(dirname "$0")/../tools/common.sh"
. "$(dirname "$0")/../test/serve/cluster.sh"
set -euo pipefail

gbs_run_bench deliver "$(cd "$(dirname "$0")" && pwd)"
