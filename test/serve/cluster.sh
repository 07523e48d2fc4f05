# A throw-away PostgreSQL cluster for test/serve/run.sh, test/deliver/run.sh
# and the bench scripts of serve and deliver.
# Sourced, not run (after tools/common.sh, which gives gb_free_port).
#
#   gbs_cluster_create DIR     initdb into DIR/data, socket in DIR/sock, a free
#                              port on 127.0.0.1 (sets GBS_PORT, GBS_PGDATA,
#                              GBS_PGBIN, GBS_SOCK, GBS_PGLOG)
#   gbs_cluster_start / gbs_cluster_stop [MODE]
#   gbs_psql SQL               as the superuser, ON_ERROR_STOP
#   gbs_run_pytest NAME DIR    the whole of a suite's run.sh (below)
#   gbs_run_bench NAME DIR     the whole of bench/NAME.sh (below)
#   gbs_setup_db               the extension, the roles serve_viewer and
#                              serve_oncall with the README's grants, a
#                              quality budget on every agent
#
# As root the server runs as the postgres user.

GBS_PGVERSION=${GB_PGVERSION:-15}
GBS_PGBIN=/usr/lib/postgresql/$GBS_PGVERSION/bin

gbs_as_server_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

gbs_cluster_create() {
	local dir=$1
	GBS_PGDATA=$dir/data
	GBS_SOCK=$dir/sock
	GBS_PGLOG=$dir/postgres.log
	mkdir -p "$GBS_SOCK"
	chmod 0755 "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$dir" "$GBS_SOCK"
	fi
	GBS_PORT=$(gb_free_port) || { echo "no free port for the cluster" >&2; return 1; }
	(cd / && gbs_as_server_user "$GBS_PGBIN/initdb" -D "$GBS_PGDATA" -U postgres \
		--auth=trust -E UTF8 --locale=C.UTF-8 --no-sync) >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; return 1; }
	cat >>"$GBS_PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $GBS_PORT
unix_socket_directories = '$GBS_SOCK'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_line_prefix = '%m [%p] %q%a '
log_min_messages = warning
CONF
	export GBS_PORT GBS_PGDATA GBS_PGBIN GBS_SOCK GBS_PGLOG
}

# A port that was free when it was picked may be taken by the time the
# server binds it (other clusters start on this machine too): one more try
# on another port, and the server's log when that fails as well.
gbs_cluster_start() {
	local try
	for try in 1 2; do
		(cd / && gbs_as_server_user "$GBS_PGBIN/pg_ctl" -D "$GBS_PGDATA" -l "$GBS_PGLOG" \
			-w -t 60 start) >/dev/null && return 0
		[ "$try" = 2 ] && break
		grep -q 'could not bind\|Address already in use' "$GBS_PGLOG" 2>/dev/null || break
		GBS_PORT=$(gb_free_port) || break
		sed -i "s/^port = .*/port = $GBS_PORT/" "$GBS_PGDATA/postgresql.conf"
	done
	echo "the test cluster did not start; its log:" >&2
	tail -20 "$GBS_PGLOG" >&2
	return 1
}

gbs_cluster_stop() {
	[ -n "${GBS_PGDATA:-}" ] && [ -f "$GBS_PGDATA/postmaster.pid" ] || return 0
	(cd / && gbs_as_server_user "$GBS_PGBIN/pg_ctl" -D "$GBS_PGDATA" -w -t 60 \
		-m "${1:-fast}" stop) >/dev/null 2>&1 || true
}

gbs_psql() {
	"$GBS_PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$GBS_PORT" \
		-U postgres -d postgres -c "$1"
}

gbs_setup_db() {
	gbs_psql "
CREATE EXTENSION gate_bridge;
CREATE ROLE serve_viewer LOGIN;
CREATE ROLE serve_oncall LOGIN;
-- readers (dashboards and event consumers), as the README grants them
GRANT USAGE ON SCHEMA gate_bridge TO serve_viewer;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
                gate_bridge.open_incidents, gate_bridge.incident_counts,
                gate_bridge.stats, gate_bridge.stream_status TO serve_viewer;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
                          gate_bridge.events_head(),
                          gate_bridge.events_resume_point(bigint) TO serve_viewer;
GRANT SELECT ON gate_bridge.delivery_status TO serve_viewer;
GRANT SELECT ON gate_bridge.playbooks TO serve_viewer;
-- operators, as the README grants them
GRANT USAGE ON SCHEMA gate_bridge TO serve_oncall;
GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events,
                gate_bridge.open_incidents, gate_bridge.incident_counts,
                gate_bridge.stats, gate_bridge.stream_status TO serve_oncall;
GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer),
                          gate_bridge.events_head(),
                          gate_bridge.events_resume_point(bigint) TO serve_oncall;
GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),
                          gate_bridge.resolve(bigint, text, text),
                          gate_bridge.snooze(bigint, interval, text, text),
                          gate_bridge.silence(text, interval, text, text, text),
                          gate_bridge.unsilence(bigint),
                          gate_bridge.run_playbook(bigint, text, text) TO serve_oncall;
GRANT SELECT ON gate_bridge.playbooks TO serve_oncall;
GRANT SELECT ON gate_bridge.silences TO serve_oncall;
GRANT SELECT ON gate_bridge.delivery_status TO serve_oncall;
GRANT EXECUTE ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint)
      TO serve_oncall;
-- quality: 0.85 opens a sev3, 0.7 a sev2, 0.3 a sev1
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('*', 'quality', 0.9, 0.8, 0.5);
"
}

# gbs_run_pytest NAME DIR [PYTEST ARGS...]: the whole of a suite's run.sh
# (test/serve, test/deliver).  NAME names the binary's variable
# GB_<NAME>_BIN (default: ./gate-bridge of this tree), the work directory
# and GB_<NAME>_KEEP=1 (keep it); the tests write the pids of what they
# start to WORK/NAME.pids, so that the cleanup ends what a dead session
# left behind.  A function gbs_suite_check, when defined, runs once the
# database is set up.  Returns pytest's status.
gbs_run_pytest() {
	local name=$1 here=$2
	shift 2
	local upper binvar root py status=0 paths a
	upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
	binvar=GB_${upper}_BIN
	root=$(cd "$here/../.." && pwd)
	py=${GB_PYTHON:-/usr/bin/python3}
	export "$binvar=${!binvar:-$root/gate-bridge}"
	if [ ! -x "${!binvar}" ]; then
		echo "test/$name: ${!binvar} is missing (make)" >&2
		return 1
	fi
	GBS_SUITE=$name
	GBS_LABEL=test/$name
	GBS_KEEPVAR=GB_${upper}_KEEP
	GBS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/gb_${name}_test.XXXXXX")
	trap gbs_suite_cleanup EXIT
	trap 'exit 130' INT TERM

	gbs_cluster_create "$GBS_WORK"
	gbs_cluster_start
	gbs_setup_db
	if declare -F gbs_suite_check >/dev/null; then
		gbs_suite_check || return 1
	fi

	export GB_TEST_WORK=$GBS_WORK
	export GB_TEST_PGHOST=127.0.0.1
	export GB_TEST_PGPORT=$GBS_PORT
	export GB_TEST_PGDATA=$GBS_PGDATA
	export GB_TEST_PGBIN=$GBS_PGBIN
	export GB_TEST_PGLOG=$GBS_PGLOG
	export PYTHONDONTWRITEBYTECODE=1

	cd "$root"
	paths=("$here")
	for a in "$@"; do
		case $a in test/* | /* | ./*) paths=() ;; esac
	done
	"$py" -m pytest -q -p no:cacheprovider --rootdir="$here" "${paths[@]}" "$@" || status=$?
	if [ $status -ne 0 ] && [ -f "$GBS_PGLOG" ]; then
		echo "---- end of the PostgreSQL log" >&2
		tail -n 30 "$GBS_PGLOG" >&2
	fi
	return $status
}

gbs_suite_cleanup() {
	local rc=$? pid keep
	keep=${!GBS_KEEPVAR:-}
	if [ -f "$GBS_WORK/$GBS_SUITE.pids" ]; then
		while read -r pid; do
			if grep -qa 'gate-bridge' "/proc/$pid/cmdline" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done <"$GBS_WORK/$GBS_SUITE.pids"
	fi
	gbs_cluster_stop immediate
	if [ "$keep" = 1 ]; then
		echo "$GBS_LABEL: kept $GBS_WORK" >&2
	else
		rm -rf "$GBS_WORK"
	fi
	exit $rc
}

# gbs_run_bench NAME DIR: the whole of bench/NAME.sh (serve, deliver): the
# binary (GB_<NAME>_BIN, default ./gate-bridge), a cluster in a work
# directory (GB_BENCH_KEEP=1 keeps it), then DIR/NAME-bench.py with
# GB_BENCH_PGPORT and GB_BENCH_WORK, after a line naming the machine, the
# commit and the binary.  Returns the script's status.
gbs_run_bench() {
	local name=$1 here=$2
	local upper binvar py
	upper=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
	binvar=GB_${upper}_BIN
	py=${GB_PYTHON:-/usr/bin/python3}
	export "$binvar=${!binvar:-$here/../gate-bridge}"
	if [ ! -x "${!binvar}" ]; then
		echo "bench/$name.sh: ${!binvar} is missing (make)" >&2
		return 2
	fi
	GBS_SUITE=$name
	GBS_LABEL=bench/$name.sh
	GBS_KEEPVAR=GB_BENCH_KEEP
	GBS_WORK=$(mktemp -d "${TMPDIR:-/tmp}/gb_${name}_bench.XXXXXX")
	trap gbs_suite_cleanup EXIT
	trap 'exit 130' INT TERM

	gbs_cluster_create "$GBS_WORK"
	gbs_cluster_start
	gbs_setup_db >/dev/null

	ulimit -n 8192 2>/dev/null || true
	export GB_BENCH_PGPORT=$GBS_PORT GB_BENCH_WORK=$GBS_WORK PYTHONDONTWRITEBYTECODE=1
	echo "== $(nproc) CPUs; $name $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo ?)" \
		"binary md5 $(md5sum <"${!binvar}" | cut -c1-12)"
	"$py" "$here/$name-bench.py"
}
