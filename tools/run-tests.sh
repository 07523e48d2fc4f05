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

# A suite whose files are missing has failed: it did not run.
# Each argument is a glob (quoted) that must match at least one file.
need() {
	local what=$1 pattern; shift
	for pattern in "$@"; do
		compgen -G "$pattern" >/dev/null && continue
		echo "!! no $what found: nothing matches $pattern"
		return 1
	done
}

regress() {
	need "regression tests" "test/sql/*.sql" "expected/*.out" || return 1
	make -s installcheck PG_CONFIG="$PG_CONFIG" ISOLATION= && return 0
	[ -f test/regression.diffs ] && cat test/regression.diffs
	return 1
}

isolation() {
	need "isolation specs" "test/isolation/specs/*.spec" "test/isolation/expected/*.out" || return 1
	make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS= && return 0
	[ -f test/isolation_out/regression.diffs ] && cat test/isolation_out/regression.diffs
	return 1
}

pgtap() {
	need "pgTAP tests" "test/pgtap/*.sql" || return 1
	psql -X -q -c 'DROP DATABASE IF EXISTS gb_pgtap' -c 'CREATE DATABASE gb_pgtap' postgres &&
	psql -X -q -d gb_pgtap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION gate_bridge' &&
	pg_prove -d gb_pgtap test/pgtap/*.sql
}

tap() {
	need "prove tests" "test/t/*.pl" || return 1
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
