#!/usr/bin/env bash
# The tests of `gate-bridge serve` (the HTTP API, Server-Sent Events,
# /metrics, tokens, the dashboard in a headless browser), on a throw-away
# cluster of their own.
#
#   test/serve/run.sh [PYTEST ARGS...]      e.g. test/serve/run.sh -k sse -x
#
# Needs gate_bridge installed (make install), ./gate-bridge built (make), and
# python3-pytest, python3-psycopg, python3-requests, python3-prometheus-client,
# python3-selenium, chromium and chromium-driver (Debian 12).  The machine
# may run as root: the cluster then runs as the postgres user.
#
# Environment:
#   GB_SERVE_BIN    the binary to test [./gate-bridge of this tree]
#   GB_SCREENSHOT   copy the dashboard's screenshot there
#   GB_PYTHON       the interpreter with those packages [/usr/bin/python3]
#   GB_SERVE_KEEP=1 keep the work directory (server logs, screenshot)
# Exits non-zero on any failure.
. "$(dirname "$0")/../../tools/common.sh"
. "$(dirname "$0")/cluster.sh"
set -euo pipefail

gbs_run_pytest serve "$(cd "$(dirname "$0")" && pwd)" "$@"
