#!/usr/bin/env bash
# compare_planners() against the reference implementations: scipy's
# Mann-Whitney U test, statsmodels' two-proportion z-test and Holm
# adjustment, on a throw-away cluster of its own.
#
#   test/stats/run.sh [PYTEST ARGS...]        e.g. test/stats/run.sh -k large -x
#
# Needs gate_bridge installed (make install) and the Debian packages
# python3-scipy (1.10), python3-statsmodels (0.13), python3-numpy,
# python3-pytest and python3-psycopg.  The machine may run as root: the
# cluster then runs as the postgres user.
#
# Environment:
#   GB_PYTHON   the interpreter with those packages [/usr/bin/python3]
# Exits non-zero on any failure.
. "$(dirname "$0")/../../tools/common.sh"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
py=${GB_PYTHON:-/usr/bin/python3}

if [ -z "${GB_STATS_CLUSTER:-}" ]; then
	if ! "$py" -c 'import scipy, statsmodels, numpy, psycopg, pytest' 2>/dev/null; then
		echo "test/stats: $py lacks scipy, statsmodels, numpy, psycopg or pytest" \
			"(apt-get install -y python3-scipy python3-statsmodels python3-psycopg python3-pytest)" >&2
		exit 1
	fi
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "test/stats: no free port for the cluster" >&2; exit 1; }
	GB_STATS_CLUSTER=1 exec pg_virtualenv -t -v "$GB_PGVERSION" -c "-p $port" \
		"$here/$(basename "$0")" "$@"
fi

# Inside the cluster: PGHOST, PGPORT, PGUSER, PGPASSWORD are set.
export PGDATABASE=postgres
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION gate_bridge'
if [ "$(psql -X -q -A -t -c "SELECT to_regprocedure('gate_bridge.compare_planners(text,text,text,interval,integer,double precision,boolean)') IS NULL")" = t ]; then
	echo "test/stats: the installed gate_bridge has no compare_planners() (make install)" >&2
	exit 1
fi

export PYTHONDONTWRITEBYTECODE=1
cd "$GB_ROOT"
paths=("$here")
for a in "$@"; do
	case $a in test/* | /* | ./*) paths=() ;; esac
done
"$py" -m pytest -q -p no:cacheprovider --rootdir="$here" "${paths[@]}" "$@"
