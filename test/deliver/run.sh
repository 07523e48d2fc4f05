#!/usr/bin/env bash
# The tests of `gate-bridge deliver` (the outbox sent to webhooks, Slack and
# PagerDuty), on a throw-away cluster of their own, against a local
# receiver (receiver.py) the tests start on 127.0.0.1:0.
#
#   test/deliver/run.sh [PYTEST ARGS...]      e.g. test/deliver/run.sh -k order -x
#
# Needs gate_bridge installed (make install), ./gate-bridge built (make), and
# python3-pytest, python3-psycopg and python3-jsonschema (Debian 12).  The
# machine may run as root: the cluster then runs as the postgres user.
#
# Environment:
#   GB_DELIVER_BIN    the binary to test [./gate-bridge of this tree]
#   GB_PYTHON         the interpreter with those packages [/usr/bin/python3]
#   GB_DELIVER_KEEP=1 keep the work directory (server and worker logs)
# Exits non-zero on any failure.
. "$(dirname "$0")/../../tools/common.sh"
. "$(dirname "$0")/../serve/cluster.sh"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${GB_PYTHON:-/usr/bin/python3}
export GB_DELIVER_BIN=${GB_DELIVER_BIN:-$root/gate-bridge}

if [ ! -x "$GB_DELIVER_BIN" ]; then
	echo "test/deliver: $GB_DELIVER_BIN is missing (make)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gb_deliver_test.XXXXXX")
cleanup() {
	local rc=$? pid
	# workers a dead session left behind (pytest ends them itself)
	if [ -f "$work/deliver.pids" ]; then
		while read -r pid; do
			if grep -qa 'gate-bridge' "/proc/$pid/cmdline" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done <"$work/deliver.pids"
	fi
	gbs_cluster_stop immediate
	if [ "${GB_DELIVER_KEEP:-}" = 1 ]; then
		echo "test/deliver: kept $work" >&2
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

if [ "$(gbs_psql "SELECT to_regprocedure('gate_bridge.claim_deliveries(text,integer,interval,text)') IS NULL")" = t ]; then
	echo "test/deliver: the installed gate_bridge has no claim_deliveries() (make install)" >&2
	exit 1
fi

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
