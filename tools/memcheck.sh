#!/usr/bin/env bash
# Run the SQL test suites against a server whose backends run under
# valgrind (memcheck), then against one whose gate_bridge.so is built with
# the undefined behaviour sanitizer, and report the errors found in
# gate_bridge's code.
#
#   tools/memcheck.sh [--tool valgrind|ubsan|both] [--suites regress,isolation,pgtap]
#                     [--keep] [--workdir DIR]
#
# By default both tools run all three SQL suites (pg_regress, isolation,
# pgTAP): about 6 minutes on two cores, most of it under valgrind.
# --keep keeps the scratch directory (it is kept anyway when errors are
# found); its logs/ holds one valgrind log per server process.
#
# Nothing is installed into the server's directories and nothing is built
# in the source tree: the extension is built from a copy of the working tree
# into a scratch directory, next to a private copy of the postgres binary.
# PostgreSQL finds its share/ and lib/ directories relative to its own
# binary, so that copy loads our build of gate_bridge.so and our control
# and SQL files while every other file is the installed one.
#
# valgrind runs the whole server (every process, --track-origins): reads of
# uninitialised memory, invalid reads and writes of malloc'd memory,
# invalid frees, overlapping copies.  The server is a release build without
# valgrind annotations, so single chunks inside palloc's blocks are not
# checked, nor are stack arrays.  The second phase narrows that gap for our
# code: -fsanitize=undefined,bounds-strict checks every index into a
# fixed-size array (stack, global or struct member), object sizes where the
# compiler knows them, shifts, overflows and casts.  (AddressSanitizer would
# be better still, but its runtime cannot be preloaded into Debian's
# postgres: glibc's locale lock deadlocks at startup once libp11-kit, which
# libldap pulls in, is loaded.)
#
# Before the suites, a canary with one deliberate out-of-bounds read
# (tools/memcheck-canary.c) must be reported by each phase's tool, or the
# check is declared broken.
#
# Ends with "memcheck: N errors in gate_bridge frames, M errors elsewhere"
# and exits 1 when N > 0 (2 when the check could not run).  Errors elsewhere
# (with no frame of ours) are listed but do not fail the run; neither do
# suite failures, which are reported for information (tools/test judges
# results; timing under valgrind differs).
set -euo pipefail
# shellcheck source=tools/common.sh
. "$(dirname "$0")/common.sh"

tool=both
suites=regress,isolation,pgtap
keep=0
work=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
	case $1 in
	--tool) tool=${2:?}; shift 2 ;;
	--suites) suites=${2:?}; shift 2 ;;
	--keep) keep=1; shift ;;
	--workdir) work=${2:?}; shift 2 ;;
	-h|--help) usage 0 ;;
	*) echo "memcheck: unknown argument $1" >&2; usage ;;
	esac
done
case $tool in valgrind|ubsan|both) ;; *) usage ;; esac

GB_PACKAGES="$GB_PACKAGES valgrind"
gb_install_deps

PG_CONFIG=/usr/lib/postgresql/$GB_PGVERSION/bin/pg_config
PGBIN=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
PG_ISOLATION_REGRESS=$PGXS_DIR/src/test/isolation/pg_isolation_regress
SUPP=$GB_ROOT/tools/memcheck.supp
PORT=65432

# The postgres binary refuses to run as root.
if [ "$(id -u)" -eq 0 ]; then
	as_server() { runuser -u postgres -- "$@"; }
	server_user=postgres
else
	as_server() { "$@"; }
	server_user=$(id -un)
fi

# A directory given with --workdir is the caller's: it is never removed.
own_work=0
if [ -z "$work" ]; then
	work=$(mktemp -d /tmp/gb-memcheck.XXXXXX)
	own_work=1
else
	mkdir -p "$work"
fi
chmod 755 "$work"
logs=$work/logs
mkdir -p "$logs"
runner_pid=

# Nothing the caller's environment points at may be used by mistake.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE PGOPTIONS
export PGHOST=$work/socket PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres

stop_server() {
	local pid
	[ -n "$runner_pid" ] || return 0
	pid=$(head -1 "$work/data/postmaster.pid" 2>/dev/null || true)
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -INT "$pid" 2>/dev/null || true
		# a fast shutdown under valgrind takes a while
		for _ in $(seq 1 240); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$pid" 2>/dev/null; then
			gb_say "server did not stop; sending SIGQUIT"
			kill -QUIT "$pid" 2>/dev/null || true
			sleep 10
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$runner_pid" 2>/dev/null || true
	runner_pid=
}

result=2
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
	stop_server
	if [ "$keep" -eq 0 ] && [ "$result" -eq 0 ] && [ "$own_work" -eq 1 ]; then
		rm -rf "$work"
	else
		rm -rf "$work/data" "$work/install"
		echo "memcheck: logs kept in $work/logs" >&2
	fi
}
trap finish EXIT
trap 'exit 2' INT TERM

# --- build -----------------------------------------------------------------

# build DIR CFLAGS: gate_bridge.so from a copy of the working tree
build() {
	local dir=$1 cflags=$2
	rm -rf "$dir"
	mkdir -p "$dir"
	cp -a "$GB_ROOT/Makefile" "$GB_ROOT/gate_bridge.control" \
		"$GB_ROOT/src" "$GB_ROOT/sql" "$GB_ROOT/test" "$GB_ROOT/expected" "$dir/"
	rm -f "$dir"/src/*.o "$dir"/src/*.bc "$dir"/*.so
	rm -rf "$dir/test/results" "$dir/test/isolation_out"
	make -C "$dir" -s PG_CONFIG="$PG_CONFIG" COPT="$cflags" gate_bridge.so sql/gate_bridge--$GB_EXTVERSION.sql >/dev/null
}

# build_canary DIR CFLAGS
build_canary() {
	local dir=$1 cflags=$2
	mkdir -p "$dir"
	# shellcheck disable=SC2086
	gcc $cflags -fPIC -shared -I"$("$PG_CONFIG" --includedir-server)" \
		-o "$dir/memcheck_canary.so" "$GB_ROOT/tools/memcheck-canary.c"
}

# A private installation: a copy of the postgres binary, with share/ and
# lib/ beside it where it looks for them, holding links to the installed
# files except for gate_bridge's, which come from the build in $1.
make_install_tree() {
	local build_dir=$1 inst=$work/install
	local bindir libdir sharedir f
	bindir=$("$PG_CONFIG" --bindir)
	libdir=$("$PG_CONFIG" --pkglibdir)
	sharedir=$("$PG_CONFIG" --sharedir)
	rm -rf "$inst"
	# the relative layout of Debian's /usr/lib/postgresql/N/bin,
	# /usr/lib/postgresql/N/lib and /usr/share/postgresql/N
	mkdir -p "$inst/lib/postgresql/$GB_PGVERSION/bin" \
		"$inst/lib/postgresql/$GB_PGVERSION/lib" \
		"$inst/share/postgresql/$GB_PGVERSION/extension"
	cp "$bindir/postgres" "$inst/lib/postgresql/$GB_PGVERSION/bin/"
	for f in "$libdir"/*; do
		ln -s "$f" "$inst/lib/postgresql/$GB_PGVERSION/lib/"
	done
	for f in "$sharedir"/*; do
		[ "$(basename "$f")" = extension ] ||
			ln -s "$f" "$inst/share/postgresql/$GB_PGVERSION/"
	done
	for f in "$sharedir"/extension/*; do
		case $(basename "$f") in
		gate_bridge.control|gate_bridge--*) ;;
		*) ln -s "$f" "$inst/share/postgresql/$GB_PGVERSION/extension/" ;;
		esac
	done
	rm -f "$inst/lib/postgresql/$GB_PGVERSION/lib/gate_bridge.so"
	cp "$build_dir/gate_bridge.so" "$inst/lib/postgresql/$GB_PGVERSION/lib/"
	cp "$build_dir/gate_bridge.control" "$build_dir"/sql/gate_bridge--*.sql \
		"$inst/share/postgresql/$GB_PGVERSION/extension/"
	chmod -R a+rX "$inst"
	POSTGRES=$inst/lib/postgresql/$GB_PGVERSION/bin/postgres
	PKGLIBDIR=$inst/lib/postgresql/$GB_PGVERSION/lib
}

init_cluster() {
	rm -rf "$work/data" "$work/socket"
	mkdir -p "$work/data" "$work/socket"
	chown "$server_user" "$work/data" "$work/socket"
	chmod 700 "$work/data"
	as_server "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust \
		-E UTF8 --locale=C.UTF-8 >"$logs/initdb.log" 2>&1
	cat >>"$work/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work/socket'
port = $PORT
shared_buffers = 16MB
max_connections = 30
max_prepared_transactions = 10
jit = off
autovacuum = off
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
huge_pages = off
log_connections = on
log_line_prefix = '%m [%p] '
lc_messages = 'C'
EOF
}

# start_server LOGNAME COMMAND...: the command is the server's runner
start_server() {
	local name=$1; shift
	as_server "$@" -D "$work/data" >"$logs/$name-server.log" 2>&1 &
	runner_pid=$!
	for _ in $(seq 1 600); do
		if "$PGBIN/pg_isready" -q 2>/dev/null; then
			return 0
		fi
		kill -0 "$runner_pid" 2>/dev/null || break
		sleep 0.5
	done
	echo "memcheck: the server did not start; see $logs/$name-server.log" >&2
	tail -20 "$logs/$name-server.log" >&2
	exit 2
}

# check_backend MARKER: a backend runs under the tool and loads our build
check_backend() {
	local marker=$1 maps
	maps=$("$PGBIN/psql" -X -At -v ON_ERROR_STOP=1 \
		-c "LOAD 'gate_bridge'" \
		-c "SELECT pg_read_file('/proc/self/maps')")
	if ! grep -q "$marker" <<<"$maps"; then
		echo "memcheck: backends do not run under the tool ($marker not mapped)" >&2
		exit 2
	fi
	if ! grep -q "$PKGLIBDIR/gate_bridge.so" <<<"$maps"; then
		echo "memcheck: backends did not load $PKGLIBDIR/gate_bridge.so" >&2
		exit 2
	fi
}

run_canary() {
	local so=$1
	"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 \
		-c "CREATE DATABASE memcheck_canary" >/dev/null
	"$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d memcheck_canary \
		-c "CREATE FUNCTION memcheck_canary() RETURNS boolean AS '$so' LANGUAGE C" \
		-c "SELECT memcheck_canary()" >/dev/null
	"$PGBIN/psql" -X -q -c "DROP DATABASE memcheck_canary" >/dev/null
}

# names DIR EXT: the test names in DIR, from files NAME.EXT
names() {
	local f
	for f in "$1"/*."$2"; do
		[ -e "$f" ] || continue
		f=${f##*/}
		printf '%s\n' "${f%."$2"}"
	done
}

# run_suites PHASE BUILD_DIR: every requested suite against the server
suite_results=
run_suites() {
	local phase=$1 dir=$2 s rc out=$work/out/$1
	local -a tests
	mkdir -p "$out"
	for s in ${suites//,/ }; do
		rc=0
		case $s in
		regress)
			mapfile -t tests < <(names "$dir/test/sql" sql)
			[ ${#tests[@]} -gt 0 ] || continue
			"$PG_REGRESS" --bindir="$PGBIN" --inputdir="$dir/test" \
				--outputdir="$out/regress" --dbname=contrib_regression \
				--load-extension=gate_bridge "${tests[@]}" \
				>"$logs/$phase-regress.out" 2>&1 || rc=$?
			;;
		isolation)
			mapfile -t tests < <(names "$dir/test/isolation/specs" spec)
			[ ${#tests[@]} -gt 0 ] || continue
			mkdir -p "$out/isolation"
			"$PG_ISOLATION_REGRESS" --bindir="$PGBIN" --inputdir="$dir/test/isolation" \
				--outputdir="$out/isolation" --dbname=isolation_regression \
				--load-extension=gate_bridge "${tests[@]}" \
				>"$logs/$phase-isolation.out" 2>&1 || rc=$?
			;;
		pgtap)
			mapfile -t tests < <(names "$dir/test/pgtap" sql)
			[ ${#tests[@]} -gt 0 ] || continue
			{
				"$PGBIN/psql" -X -q -c 'DROP DATABASE IF EXISTS gb_pgtap' \
					-c 'CREATE DATABASE gb_pgtap' &&
				"$PGBIN/psql" -X -q -d gb_pgtap -c 'CREATE EXTENSION pgtap' \
					-c 'CREATE EXTENSION gate_bridge' &&
				pg_prove -d gb_pgtap "$dir"/test/pgtap/*.sql
			} >"$logs/$phase-pgtap.out" 2>&1 || rc=$?
			;;
		*)
			echo "memcheck: unknown suite $s" >&2
			exit 2
			;;
		esac
		if [ "$rc" -eq 0 ]; then
			suite_results+="  $phase $s: passed"$'\n'
		else
			suite_results+="  $phase $s: FAILED (see $logs/$phase-$s.out)"$'\n'
		fi
	done
}

# --- reading the reports ---------------------------------------------------

# classify BUILD_DIR DUMP FILES...: one line per report,
# "class<TAB>signature", class being ours, canary or other.  A valgrind
# report is ours when any frame (or its origin's) is in a file of the
# build; a sanitizer report when its location is.  The signature is the
# report's first line and its first frames, for grouping.  The full text
# of the first report of each signature that is ours goes to DUMP.
classify() {
	local build_dir=$1 dump=$2; shift 2
	: >"$dump"
	awk -v ours="$build_dir/" -v dump="$dump" '
	function flush() {
		if (n == 0)
			return
		cls = "other"
		if (index(text, "memcheck-canary.c") || index(text, "memcheck_canary"))
			cls = "canary"
		else if (ourloc || index(text, ours) || index(text, "gate_bridge.so"))
			cls = "ours"
		printf "%s\t%s\n", cls, sig
		if (cls == "ours" && !(sig in dumped)) {
			dumped[sig] = 1
			printf "[%s]\n%s\n", FILENAME, text >>dump
		}
		n = 0; text = ""; sig = ""; frames = 0; ourloc = 0
	}
	# valgrind, with --error-markers
	/VALGRINDERROR-BEGIN/ { flush(); inblk = 1; n = 0; next }
	/VALGRINDERROR-END/ { flush(); inblk = 0; next }
	# the undefined behaviour sanitizer, in the server log (its options,
	# log_path among them, cannot reach it: see the ubsan phase):
	# "src/file.c:line:col: runtime error: ..."
	/: runtime error: / {
		flush()
		loc = $0; sub(/: runtime error: .*/, "", loc)
		line = $0; sub(/^.*: runtime error: /, "", line)
		text = $0
		ourloc = (loc ~ /^src\// || index(loc, ours) == 1)
		sig = line " (" loc ")"; n = 1; inblk = 0
		flush()
		next
	}
	!inblk { next }
	{
		line = $0
		sub(/^==[0-9]+== ?/, "", line)
		text = text line "\n"
		if (n == 0) { sig = line; n = 1; next }
		n++
		# "at 0x...: fn (file:line)" or "#3 0x... in fn file:line"
		if (frames < 4 && (line ~ /^ *(at|by) 0x/ || line ~ /^ *#[0-9]+ 0x/)) {
			fn = line
			sub(/^ *(at|by) 0x[0-9A-Fa-f]+: /, "", fn)
			sub(/^ *#[0-9]+ 0x[0-9a-f]+ in /, "", fn)
			sub(/ .*/, "", fn)
			# with its file:line when known: "(/path/src/incident.c:132)"
			if (match(line, /\([^ ()]*:[0-9]+\)$/)) {
				where = substr(line, RSTART + 1, RLENGTH - 2)
				sub(/^.*\//, "", where)
				fn = fn "@" where
			}
			sig = sig " < " fn
			frames++
		}
	}
	END { flush() }
	' "$@"
}

# report PHASE BUILD_DIR FILES...: counts, and each distinct error once
ours_total=0
other_total=0
report() {
	local phase=$1 build_dir=$2; shift 2
	local lines ours other canary dump=$logs/$phase-ours.txt
	lines=$(classify "$build_dir" "$dump" "$@" /dev/null)
	ours=$(grep -c '^ours' <<<"$lines" || true)
	other=$(grep -c '^other' <<<"$lines" || true)
	canary=$(grep -c '^canary' <<<"$lines" || true)
	echo "== $phase: $ours errors in gate_bridge frames, $other elsewhere, canary reported $canary time(s)"
	if [ "$canary" -eq 0 ]; then
		echo "memcheck: $phase did not report the canary's deliberate error: the check is not working" >&2
		exit 2
	fi
	if [ "$ours" -gt 0 ]; then
		echo "-- $phase, in gate_bridge frames (count, error < frames):"
		grep '^ours' <<<"$lines" | cut -f2 | sort | uniq -c | sort -rn
		echo "-- $phase, each in full once (also in $dump):"
		cat "$dump"
	fi
	if [ "$other" -gt 0 ]; then
		echo "-- $phase, elsewhere (count, error < frames):"
		grep '^other' <<<"$lines" | cut -f2 | sort | uniq -c | sort -rn | head -20
	fi
	ours_total=$((ours_total + ours))
	other_total=$((other_total + other))
}

# backends the server started, and whether one died
server_figures() {
	local phase=$1 log=$logs/$1-server.log conns crashes
	conns=$(grep -c 'connection authorized' "$log" || true)
	crashes=$(grep -c 'terminated by signal' "$log" || true)
	echo "== $phase: $conns client backends checked, $crashes crashed"
	if [ "$crashes" -gt 0 ]; then
		grep -A2 'terminated by signal' "$log" | head -20
		ours_total=$((ours_total + crashes))
	fi
}

# --- the phases --------------------------------------------------------------

start=$(date +%s)

if [ "$tool" = valgrind ] || [ "$tool" = both ]; then
	phase=valgrind
	gb_say "valgrind: building gate_bridge (-Og -g) in $work/build-valgrind"
	build "$work/build-valgrind" "-Og -g -fno-omit-frame-pointer"
	build_canary "$work/build-valgrind/canary" "-Og -g"
	make_install_tree "$work/build-valgrind"
	init_cluster
	mkdir -p "$logs/valgrind"
	chown "$server_user" "$logs/valgrind"
	gb_say "valgrind: starting the server under valgrind"
	start_server valgrind valgrind --quiet --tool=memcheck \
		--trace-children=no --leak-check=no --track-origins=yes \
		--read-var-info=yes --num-callers=30 --fullpath-after= \
		--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
		--suppressions="$SUPP" --gen-suppressions=all \
		--log-file="$logs/valgrind/%p.log" \
		"$POSTGRES"
	check_backend vgpreload_memcheck
	run_canary "$work/build-valgrind/canary/memcheck_canary.so"
	gb_say "valgrind: running $suites (slow: minutes)"
	run_suites valgrind "$work/build-valgrind"
	stop_server
	server_figures valgrind
	echo "== valgrind: $(find "$logs/valgrind" -name '*.log' | wc -l) processes ran under valgrind"
	report valgrind "$work/build-valgrind" "$logs"/valgrind/*.log
fi

if [ "$tool" = ubsan ] || [ "$tool" = both ]; then
	phase=ubsan
	ubsan_flags="-O2 -g -fno-omit-frame-pointer -fsanitize=undefined,bounds-strict,float-cast-overflow"
	gb_say "ubsan: building gate_bridge (-fsanitize=undefined,bounds-strict) in $work/build-ubsan"
	build "$work/build-ubsan" "$ubsan_flags"
	build_canary "$work/build-ubsan/canary" "$ubsan_flags"
	make_install_tree "$work/build-ubsan"
	init_cluster
	# The runtime comes in with gate_bridge.so, reports and goes on.  It
	# reads UBSAN_OPTIONS from /proc/self/environ when a backend loads us,
	# long after the postmaster overwrote that area with its process title,
	# so no option reaches it: reports go to stderr, the server log, without
	# stack traces.  Their file:line is exact all the same.
	gb_say "ubsan: starting the server"
	start_server ubsan "$POSTGRES"
	check_backend libubsan
	run_canary "$work/build-ubsan/canary/memcheck_canary.so"
	gb_say "ubsan: running $suites"
	run_suites ubsan "$work/build-ubsan"
	stop_server
	server_figures ubsan
	report ubsan "$work/build-ubsan" "$logs/ubsan-server.log"
fi

echo
echo "suites (informative; tools/test judges results):"
printf '%s' "$suite_results"
echo "time: $(( $(date +%s) - start )) s"
echo "memcheck: $ours_total errors in gate_bridge frames, $other_total errors elsewhere"
if [ "$ours_total" -gt 0 ]; then
	result=1
else
	result=0
fi
exit "$result"
