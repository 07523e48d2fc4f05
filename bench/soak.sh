#!/usr/bin/env bash
# Storm soak on a throw-away cluster: 16 writers, an operator acking and
# resolving at random, and a listener, for SECONDS (default 60), then an
# audit of incidents, timeline, notifications and eval rows against the
# clients' own bookkeeping.  bench/soak.pl describes the load and the
# checks; bench/SOAK.md holds the figures.
#
#   bench/soak.sh [SECONDS]             e.g. bench/soak.sh 8 for a short run
#
# Debian 12, as root.  Needs gate_bridge installed (make install) and the
# Debian packages postgresql-15, postgresql-contrib (amcheck) and
# libdbd-pg-perl; it neither builds nor installs anything.  Prints
# "ok"/"not ok" lines and the figures; exits non-zero if any check fails.
#
# Environment (defaults in brackets):
#   GB_SOAK_SECS         duration when no argument is given [60]
#   GB_SOAK_CLIENTS      concurrent writers [16]
#   GB_SOAK_WINDOW       gate_bridge.rate_window in seconds
#                        [10; a quarter of the run, at least 2, under 40 s]
#   GB_SOAK_SEED         seed of the clients' random choices [random]
#   GB_SOAK_OP_PAUSE_MS  operator's pause between moves [10]
#   GB_SOAK_KEEP=1       keep the work directory (notifications, ids) and
#                        copy the server log into it
#   GB_SOAK_SABOTAGE     damage the outcome before the audit, to see it
#                        fail (names in bench/soak.pl)
#   GB_PGVERSION         PostgreSQL major version [15]
. "$(dirname "$0")/../tools/common.sh"
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PGVER=${GB_PGVERSION:-15}

if [ $# -gt 1 ] || { [ $# -eq 1 ] && ! [[ $1 =~ ^[1-9][0-9]*$ ]]; }; then
	echo "usage: $0 [SECONDS]" >&2
	exit 2
fi

libdir=$(/usr/lib/postgresql/"$PGVER"/bin/pg_config --pkglibdir)
sharedir=$(/usr/lib/postgresql/"$PGVER"/bin/pg_config --sharedir)
if [ ! -f "$libdir/gate_bridge.so" ] || [ ! -f "$sharedir/extension/gate_bridge.control" ]; then
	echo "gate_bridge is not installed for PostgreSQL $PGVER (make install)" >&2
	exit 1
fi
if [ ! -f "$sharedir/extension/amcheck.control" ]; then
	echo "amcheck is missing: apt-get install postgresql-contrib" >&2
	exit 1
fi
if ! perl -MDBD::Pg -e 1 2>/dev/null; then
	echo "DBD::Pg is missing: apt-get install libdbd-pg-perl" >&2
	exit 1
fi

# a port no other server on this machine listens on (tools/common.sh)
port=$(gb_free_port) || { echo "no free port for the cluster" >&2; exit 1; }

so_md5() { md5sum <"$libdir/gate_bridge.so" | cut -d' ' -f1; }
build="installed gate_bridge.so md5 $(so_md5)"
if head=$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null); then
	build+="; tree at $head"
	[ -z "$(git -C "$here/.." status --porcelain -- src sql 2>/dev/null)" ] ||
		build+=" (src/ or sql/ modified)"
fi
echo "# $build"
before=$(so_md5)

# soak.pl's exit status comes back through a file: pg_virtualenv prints the
# tail of the server log when its command fails, and the audit has already
# said what went wrong.
rcfile=$(mktemp)
trap 'rm -f "$rcfile"' EXIT
echo 1 >"$rcfile"

# 16 writers, 2 operator connections, the listener and the auditor;
# lock waits over deadlock_timeout are logged (GB_SOAK_KEEP=1 keeps the log).
pg_virtualenv -t -v "$PGVER" -c "-p $port" -o max_connections=60 -o log_lock_waits=on \
	bash -c 'perl "$1" "${@:3}"; echo $? >"$2"' soak "$here/soak.pl" "$rcfile" "$@" ||
	echo "pg_virtualenv failed" >&2
[ "$(so_md5)" = "$before" ] ||
	echo "# WARNING: gate_bridge.so was reinstalled during the run; the figures mix two builds"
exit "$(cat "$rcfile")"
