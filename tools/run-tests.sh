#!/usr/bin/env bash
# The suites, run inside pg_virtualenv (PGHOST, PGPORT, PGUSER are set).
# Called by tools/test; prints one closing line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/${GB_PGVERSION:-15}/bin/pg_config}

passed=0
failed=0
suite() {
	local name=$1; shift
	echo "== $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "!! $name failed"
	fi
}

regress() {
	make -s installcheck PG_CONFIG="$PG_CONFIG" ISOLATION= && return 0
	[ -f test/regression.diffs ] && cat test/regression.diffs
	return 1
}

isolation() {
	[ -n "$(ls test/specs/*.spec 2>/dev/null)" ] || return 0
	make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS= && return 0
	[ -f test/isolation_out/regression.diffs ] && cat test/isolation_out/regression.diffs
	return 1
}

pgtap() {
	[ -n "$(ls test/pgtap/*.sql 2>/dev/null)" ] || return 0
	psql -X -q -c 'DROP DATABASE IF EXISTS gb_pgtap' -c 'CREATE DATABASE gb_pgtap' postgres &&
	psql -X -q -d gb_pgtap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION gate_bridge' &&
	pg_prove -d gb_pgtap test/pgtap/*.sql
}

tap() {
	[ -n "$(ls test/t/*.pl 2>/dev/null)" ] || return 0
	prove --ext .pl test/t/
}

suite "regression (pg_regress)" regress
suite "isolation (pg_isolation_regress)" isolation
suite "pgTAP (pg_prove)" pgtap
suite "concurrency and notifications (prove)" tap

echo
echo "suites: $passed passed, $failed failed"
[ -n "${GB_COUNTS_FILE:-}" ] && echo "$passed $failed" >"$GB_COUNTS_FILE"
[ "$failed" -eq 0 ]
