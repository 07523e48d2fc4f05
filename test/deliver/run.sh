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

# the delivery functions are there: the installation is this tree's
gbs_suite_check() {
	if [ "$(gbs_psql "SELECT to_regprocedure('gate_bridge.claim_deliveries(text,integer,interval,text)') IS NULL")" = t ]; then
		echo "test/deliver: the installed gate_bridge has no claim_deliveries() (make install)" >&2
		return 1
	fi
}

gbs_run_pytest deliver "$(cd "$(dirname "$0")" && pwd)" "$@"
