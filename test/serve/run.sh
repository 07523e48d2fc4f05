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

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${GB_PYTHON:-/usr/bin/python3}
export GB_SERVE_BIN=${GB_SERVE_BIN:-$root/gate-bridge}

if [ ! -x "$GB_SERVE_BIN" ]; then
	echo "test/serve: $GB_SERVE_BIN is missing (make)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gb_serve_test.XXXXXX")
cleanup() {
	local rc=$? pid
	# servers a dead session left behind (pytest ends them itself)
	if [ -f "$work/serve.pids" ]; then
		while read -r pid; do
			if grep -qa 'gate-bridge' "/proc/$pid/cmdline" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done <"$work/serve.pids"
	fi
	gbs_cluster_stop immediate
	if [ "${GB_SERVE_KEEP:-}" = 1 ]; then
		echo "test/serve: kept $work" >&2
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gbs_cluster_create "$work"
gbs_cluster_start
gbs_setup_db

export GB_TEST_WORK=$work
export GB_TEST_PGHOST=127.0.0.1
export GB_TEST_PGPORT=$GBS_PORT
export GB_TEST_PGDATA=$GBS_PGDATA
export GB_TEST_PGBIN=$GBS_PGBIN
export GB_TEST_PGLOG=$GBS_PGLOG
export PYTHONDONTWRITEBYTECODE=1

cd "$root"
status=0
paths=("$here")
for a in "$@"; do
	case $a in test/* | /* | ./*) paths=() ;; esac
done
"$py" -m pytest -q -p no:cacheprovider --rootdir="$here" "${paths[@]}" "$@" || status=$?
if [ $status -ne 0 ] && [ -f "$GBS_PGLOG" ]; then
	echo "---- end of the PostgreSQL log" >&2
	tail -n 30 "$GBS_PGLOG" >&2
fi
exit $status
