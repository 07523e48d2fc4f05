#!/usr/bin/perl
#
# Hostile input through every entry point, one table row per input.
#
# Each row of @cases sends one input through the eval row (INSERT or COPY),
# a SQL function (on_budget_violation, on_invariant_failure,
# on_planner_regression, on_gate_failure, ack, resolve, suggest_playbooks,
# incident_severity, pattern_rank, evaluate_agent, run_gates) or one of
# their JSON arguments: NULLs, NaN and infinities, numbers beyond float8,
# 1 MB strings and JSON, JSON nested 10000 and 100000 levels deep, invalid
# Unicode escapes, invalid UTF-8, control characters, quotes and
# backslashes in names, keys over 255 bytes, unknown enums, wrong JSON
# types, empty arrays and objects, duplicates, 10000 violations in one call.
# Each row states its expected outcome: a clean result (an incident id,
# NULL, a value, some rows, and how many incidents it opens) or an error
# with its SQLSTATE.
#
# After every case:
#	- the outcome is the expected one;
#	- a rejected input left nothing behind (rows, incidents, counters,
#	  timeline, statuses);
#	- a listener on incident_created received exactly one notification per
#	  incident the case created and none otherwise, each payload valid JSON
#	  with the documented keys in order, under 8000 bytes, matching its
#	  incident;
#	- the server is still up: the test's own sessions answer (a backend
#	  crash makes the postmaster reinitialise and end every session, which
#	  pg_postmaster_start_time() alone would not show), a new connection
#	  answers, and the postmaster did not restart.
#
# Two rows hold eval rows with cost_usd = 1e308: each is accepted, and the
# gates must still average them (a float8 sum would overflow).
#
# SQLSTATEs expected (what the code and PostgreSQL raise):
#	23502/23514	NOT NULL / CHECK constraint of eval_results
#	22023		bad or missing JSON key, unknown enum, over-long name or key
#	22004		NULL where an argument is required
#	22003		a number beyond float8 (or bigint)
#	P0002		unknown incident; 55000 wrong lifecycle move
#	22P02/22P05	invalid JSON, invalid or untranslatable Unicode escape
#	22021		invalid UTF-8 bytes; 22007 bad interval; 54001 absurd nesting
#	54000		more failed invariants in one row than max_invariants_per_row
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own database.
#
# test/t/adversarial.pl

use strict;
use warnings;

use FindBin;
use IO::Select;
use JSON::PP;
use Time::HiRes qw(time);
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(create_scratch_database);

my $DBNAME = 'gb_tap_adversarial';
my $CHANNEL = 'incident_created';
my $BARRIER = 'gb_tap_adversarial_barrier';
my $MB = 1024 * 1024;
my @DATA_KEYS = qw(id kind key severity summary status created_at agent event_id position);

my $json = JSON::PP->new->utf8;
my $canonical = JSON::PP->new->canonical;
my $test_started = time;

# $utf8 false: text comes back as bytes, for checking what the server sent
sub connect_db
{
	my ($dbname, $utf8) = @_;

	return GBScratch::connect_db($dbname, pg_enable_utf8 => $utf8 // 1);
}

################################################################ setup

create_scratch_database($DBNAME, "TEMPLATE template0 ENCODING 'UTF8'"
						. " LC_COLLATE 'C' LC_CTYPE 'C'");

my $dbh = connect_db($DBNAME);
$dbh->do('SET client_min_messages = warning');
$dbh->do('CREATE EXTENSION gate_bridge');
# Every agent has a budget of each metric type; invariant failures get
# "error" (no invariants budget).
$dbh->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
		   VALUES ('*', 'quality', 0.9, 0.8, 0.5), ('*', 'success_rate', 0.9, 0.8, 0.5),
				  ('*', 'latency', 100, 200, 300), ('*', 'cost', 1, 2, 3)});

# The listener gets raw bytes, so that the payload's size and its UTF-8 are
# checked as the server sent them.
my $listener = connect_db($DBNAME, 0);
$listener->do("LISTEN $CHANNEL");
$listener->do("LISTEN $BARRIER");

# A session that sends bytes as they are (invalid UTF-8 included).
my $raw = connect_db($DBNAME, 0);

my $postmaster_started = $dbh->selectrow_array('SELECT pg_postmaster_start_time()');
my %session_pid = (main => $dbh->selectrow_array('SELECT pg_backend_pid()'),
				   listener => $listener->selectrow_array('SELECT pg_backend_pid()'),
				   raw => $raw->selectrow_array('SELECT pg_backend_pid()'));
my %session = (main => $dbh, listener => $listener, raw => $raw);

################################################################ inputs

# Names that need escaping everywhere: quotes, backslashes, control
# characters, DEL, non-ASCII, a character outside the BMP, HTML.
my $NASTY = qq{q"u'o\\te\\\\d \t\n\r\x01\x1b\x1f\x7f \x{e9}\x{2713}\x{1F6A8} </script>};
# A name that closes the payload's strings and objects if it is not escaped.
my $BREAKER = q("},{"event":"forged","data":{"id":0,"x":"\\);
my $BIG = 'x' x $MB;
# the longest actor ack and resolve take: 128 bytes, control characters too
my $ASCII_ACTOR = substr(qq{q"u'o\\te\\\\d \t\x01\x1b\x1f\x7f } x 20, 0, 128);
my $BIG_NASTY = ("\x01\"\\\t" x ($MB / 4));

sub deep_array { my ($d) = @_; return ('[' x $d) . (']' x $d) }
sub deep_object { my ($d) = @_; return '{"deep":' . deep_array($d) . '}' }

sub js { return $canonical->encode($_[0]) }

# A budget violation object, as on_budget_violation takes it.
sub viol
{
	my %v = (budget_type => 'cost', severity => 'error', actual => 2, threshold => 1, @_);

	delete $v{agent} unless defined $v{agent};
	return \%v;
}

sub insert_sql
{
	my @cols = @_;

	return 'INSERT INTO gate_bridge.eval_results (' . join(', ', @cols)
		. ') VALUES (' . join(', ', map { "\$$_" } 1 .. @cols) . ')';
}

# One line of COPY text format.
sub copy_line
{
	return join("\t", map {
		my $v = $_;
		if (defined $v)
		{
			$v =~ s/\\/\\\\/g;
			$v =~ s/\t/\\t/g;
			$v =~ s/\n/\\n/g;
			$v =~ s/\r/\\r/g;
		}
		defined $v ? $v : '\N';
	} @_) . "\n";
}

my $OBV1 = 'SELECT gate_bridge.on_budget_violation($1::jsonb)';
my $OBV3 = 'SELECT gate_bridge.on_budget_violation($1::jsonb, $2::jsonb, $3::jsonb)';
my $OIF = 'SELECT gate_bridge.on_invariant_failure($1::jsonb, $2::jsonb, $3::jsonb)';
my $OPR = 'SELECT gate_bridge.on_planner_regression($1, $2::jsonb, $3::jsonb, $4::jsonb, $5::jsonb)';
my $OGF = 'SELECT gate_bridge.on_gate_failure($1, $2::jsonb, $3::jsonb, $4::jsonb, $5::jsonb)';
my $EVAL = 'SELECT gate_bridge.evaluate_agent($1, $2::interval)';
my $GATES = 'SELECT * FROM gate_bridge.run_gates($1, $2::interval, $3::boolean)';

my %fx;							# ids saved by cases, for later cases

sub key_is
{
	my ($key) = @_;

	return sub {
		my ($res, $new) = @_;

		return @$new == 1 && $new->[0]{key} eq $key ? undef
			: 'incident key is ' . (@$new ? "\"$new->[0]{key}\"" : 'missing')
			. ", expected \"$key\"";
	};
}

# What one incident looks like, for checks.
sub incident
{
	my ($id) = @_;

	return $dbh->selectrow_hashref(
		'SELECT id, key, status, occurrences, octet_length(details::text) AS details_bytes,'
		. ' acked_by, resolved_by, resolution_note FROM gate_bridge.incidents WHERE id = $1',
		undef, $id);
}

my @cases = (
	################################################################ fixtures
	{name => 'on_budget_violation: an incident that stays open',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.fixture.open'))],
	 result => 'id', save => 'open'},
	{name => 'on_budget_violation: an incident to ack',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.fixture.acked'))],
	 result => 'id', save => 'acked'},
	{name => 'ack: the incident to ack',
	 sql => 'SELECT gate_bridge.ack($1)', bind => sub { [$fx{acked}] }, result => 'void'},
	{name => 'on_budget_violation: an incident to resolve',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.fixture.resolved'))],
	 result => 'id', save => 'resolved'},
	{name => 'resolve: the incident to resolve',
	 sql => 'SELECT gate_bridge.resolve($1)', bind => sub { [$fx{resolved}] }, result => 'void'},
	{name => 'on_budget_violation: an incident for hostile actors',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.fixture.actors'))],
	 result => 'id', save => 'actors'},

	################################################################ eval row, INSERT
	{name => 'eval row: NULL agent',
	 sql => insert_sql(qw(agent quality)), bind => [undef, 0.1], error => '23502'},
	{name => 'eval row: NULL in every column but agent',
	 sql => insert_sql(qw(agent eval_run_id quality latency_p95_ms cost_usd success_rate
						  invariants_failed planner_version triggered_by context)),
	 bind => ['adv.row.nulls', (undef) x 9], rows => 1, incidents => 0},
	{name => 'eval row: quality NaN',
	 sql => insert_sql(qw(agent quality)), bind => ['adv.row.nan', 'NaN'], error => '23514'},
	{name => 'eval row: quality Infinity',
	 sql => insert_sql(qw(agent quality)), bind => ['adv.row.inf', 'Infinity'], error => '23514'},
	{name => 'eval row: success_rate -Infinity',
	 sql => insert_sql(qw(agent success_rate)), bind => ['adv.row.ninf', '-Infinity'],
	 error => '23514'},
	{name => 'eval row: latency_p95_ms Infinity',
	 sql => insert_sql(qw(agent latency_p95_ms)), bind => ['adv.row.linf', 'Infinity'],
	 error => '23514'},
	{name => 'eval row: cost_usd NaN',
	 sql => insert_sql(qw(agent cost_usd)), bind => ['adv.row.cnan', 'NaN'], error => '23514'},
	{name => 'eval row: cost_usd 1e308 (finite, over the critical tier)',
	 sql => insert_sql(qw(agent cost_usd)), bind => ['adv.row.huge', '1e308'],
	 rows => 1, incidents => 1, check => key_is('BUDGET_adv.row.huge_cost')},
	{name => 'eval row: latency_p95_ms 1e400',
	 sql => insert_sql(qw(agent latency_p95_ms)), bind => ['adv.row.e400', '1e400'],
	 error => '22003'},
	{name => 'eval row: latency_p95_ms -1e400',
	 sql => insert_sql(qw(agent latency_p95_ms)), bind => ['adv.row.me400', '-1e400'],
	 error => '22003'},
	{name => 'eval row: quality 1e-400',
	 sql => insert_sql(qw(agent quality)), bind => ['adv.row.tiny', '1e-400'], error => '22003'},
	{name => 'eval row: agent of 1 MB',
	 sql => insert_sql(qw(agent quality)), bind => [$BIG, 0.1], error => '23514'},
	{name => 'eval row: agent with quotes, backslashes, control characters, non-ASCII',
	 sql => insert_sql(qw(agent quality)), bind => ["adv.row.$NASTY", 0.1],
	 rows => 1, incidents => 1, check => key_is("BUDGET_adv.row.${NASTY}_quality")},
	{name => 'eval row: agent that would break a hand-made payload',
	 sql => insert_sql(qw(agent success_rate)), bind => ["adv.$BREAKER", 0.1],
	 rows => 1, incidents => 1, check => key_is("BUDGET_adv.${BREAKER}_success_rate")},
	{name => 'eval row: agent of 128 double quotes',
	 sql => insert_sql(qw(agent latency_p95_ms)), bind => ['"' x 128, 500],
	 rows => 1, incidents => 1, check => key_is('BUDGET_' . ('"' x 128) . '_latency')},
	{name => 'eval row: agent of 128 backslashes',
	 sql => insert_sql(qw(agent quality)), bind => ['\\' x 128, 0.1],
	 rows => 1, incidents => 1, check => key_is('BUDGET_' . ('\\' x 128) . '_quality')},
	{name => 'eval row: duplicate invariant names',
	 sql => insert_sql(qw(agent invariants_failed)),
	 bind => ['adv.row.dup', ['dup', 'dup', 'dup']],
	 rows => 1, incidents => 1, check => key_is('INVARIANT_adv.row.dup_dup')},
	{name => 'eval row: invariant name with quotes, backslashes, control characters',
	 sql => insert_sql(qw(agent invariants_failed)), bind => ['adv.row.inv', [$NASTY]],
	 rows => 1, incidents => 1, check => key_is("INVARIANT_adv.row.inv_$NASTY")},
	{name => 'eval row: invariant name that makes a 256-byte key',
	 sql => insert_sql(qw(agent invariants_failed)),
	 bind => ['adv.row.k', ['i' x (256 - length('INVARIANT_adv.row.k_'))]], error => '22023'},
	{name => 'eval row: invariant name of 1 MB',
	 sql => insert_sql(qw(agent invariants_failed)), bind => ['adv.row.k', [$BIG]],
	 error => '22023'},
	{name => 'eval row: empty invariants_failed',
	 sql => insert_sql(qw(agent invariants_failed)), bind => ['adv.row.noinv', []],
	 rows => 1, incidents => 0},
	{name => 'eval row: a NULL invariant name',
	 sql => insert_sql(qw(agent invariants_failed)), bind => ['adv.row.nullinv', [undef]],
	 error => '23514'},
	{name => 'eval row: 64 distinct failed invariants (gate_bridge.max_invariants_per_row)',
	 sql => insert_sql(qw(agent invariants_failed)),
	 bind => ['adv.row.many', [map { "inv$_" } 1 .. 64]], rows => 1, incidents => 64},
	{name => 'eval row: 1000 failed invariants naming 64 distinct ones',
	 sql => insert_sql(qw(agent invariants_failed)),
	 bind => ['adv.row.repeats', [map { 'inv' . ($_ % 64) } 1 .. 1000]], rows => 1, incidents => 64},
	{name => 'eval row: 1000 distinct failed invariants',
	 sql => insert_sql(qw(agent invariants_failed)),
	 bind => ['adv.row.toomany', [map { "inv$_" } 1 .. 1000]], error => '54000'},
	{name => 'eval row: context of 1 MB',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.bigctx', 0.1, js({pad => $BIG_NASTY})], rows => 1, incidents => 1,
	 check => sub {
		 my ($res, $new) = @_;
		 my $i = incident($new->[0]{id});
		 return $i->{details_bytes} > $MB ? undef
			 : "details are $i->{details_bytes} bytes, the context was lost";
	 }},
	{name => 'eval row: context nested 10000 levels',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.deep', 0.1, deep_object(10000)], rows => 1, incidents => 1},
	{name => 'eval row: context nested 100000 levels',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.deeper', 0.1, deep_object(100000)], error => '54001'},
	{name => 'eval row: context with a lone surrogate escape',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.sur', 0.1, '{"a": "\ud800"}'], error => '22P02'},
	{name => 'eval row: context with a \u0000 escape',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.nul', 0.1, '{"a": "x\u0000y"}'], error => '22P05'},
	{name => 'eval row: context with a NaN token',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.jnan', 0.1, '{"a": NaN}'], error => '22P02'},
	{name => 'eval row: context that is an array, not an object',
	 sql => insert_sql(qw(agent quality context)),
	 bind => ['adv.row.arrctx', 0.1, '[]'], rows => 1, incidents => 1},
	{name => 'eval row: planner_version and triggered_by of 1 MB',
	 sql => insert_sql(qw(agent quality planner_version triggered_by eval_run_id)),
	 bind => ['adv.row.bigtext', 0.1, $BIG, $BIG_NASTY, $NASTY], rows => 1, incidents => 1},
	{name => 'eval row: agent with invalid UTF-8 bytes',
	 conn => 'raw', sql => insert_sql(qw(agent quality)), bind => ["adv.row.\xff\xfe", 0.1],
	 error => '22021'},

	################################################################ eval row, COPY
	{name => 'COPY: 1000 violating rows of one agent',
	 copy => 'COPY gate_bridge.eval_results (agent, quality) FROM STDIN',
	 data => [map { copy_line('adv.copy.many', 0.1) } 1 .. 1000],
	 incidents => 1,
	 check => sub {
		 my ($res, $new) = @_;
		 my $i = incident($new->[0]{id});
		 my ($rows) = $dbh->selectrow_array(
			 q{SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'adv.copy.many'});
		 return $i->{occurrences} == 1000 && $rows == 1000 ? undef
			 : "$rows rows stored, occurrences $i->{occurrences}; expected 1000 and 1000";
	 }},
	{name => 'COPY: NaN in row 500 of 1000',
	 copy => 'COPY gate_bridge.eval_results (agent, quality) FROM STDIN',
	 data => [map { copy_line('adv.copy.nan', $_ == 500 ? 'NaN' : 0.1) } 1 .. 1000],
	 error => '23514'},
	{name => 'COPY: a number that is not one',
	 copy => 'COPY gate_bridge.eval_results (agent, quality) FROM STDIN',
	 data => [copy_line('adv.copy.bad', '0.1.2')], error => '22P02'},
	{name => 'COPY: agent and invariant with quotes, backslashes, control characters',
	 copy => 'COPY gate_bridge.eval_results (agent, quality, invariants_failed, context) FROM STDIN',
	 data => [copy_line("adv.copy.$NASTY", 0.1, '{}', js({n => $NASTY}))],
	 incidents => 1, check => key_is("BUDGET_adv.copy.${NASTY}_quality")},
	{name => 'COPY: invariant name that makes a key of over 255 bytes',
	 copy => 'COPY gate_bridge.eval_results (agent, invariants_failed) FROM STDIN',
	 data => [copy_line('adv.copy.k', '{' . ('i' x 300) . '}')], error => '22023'},
	{name => 'COPY: invalid JSON in context',
	 copy => 'COPY gate_bridge.eval_results (agent, quality, context) FROM STDIN',
	 data => [copy_line('adv.copy.json', 0.1, '{"a": "\ud800"}')], error => '22P02'},

	################################################################ on_budget_violation
	{name => 'on_budget_violation: NULL violation',
	 sql => $OBV1, bind => [undef], error => '22004'},
	{name => 'on_budget_violation: JSON null violation',
	 sql => $OBV1, bind => ['null'], error => '22004'},
	{name => 'on_budget_violation: an array where the object belongs',
	 sql => $OBV1, bind => [js([viol(agent => 'adv.obv.arr')])], error => '22023'},
	{name => 'on_budget_violation: empty object',
	 sql => $OBV1, bind => ['{}'], error => '22023'},
	{name => 'on_budget_violation: actual is a string',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.obv.str', actual => '2'))], error => '22023'},
	{name => 'on_budget_violation: agent is a number',
	 sql => $OBV1, bind => [js(viol(agent => 42))], error => '22023'},
	{name => 'on_budget_violation: actual 1e400',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.e400", "budget_type": "cost", "severity": "error", "actual": 1e400, "threshold": 1}'],
	 error => '22003'},
	{name => 'on_budget_violation: threshold -1e400',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.me400", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": -1e400}'],
	 error => '22003'},
	{name => 'on_budget_violation: actual 1e100000',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.e1e5", "budget_type": "cost", "severity": "error", "actual": 1e100000, "threshold": 1}'],
	 error => '22003'},
	{name => 'on_budget_violation: actual 1e-400 (underflows to 0)',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.tiny", "budget_type": "cost", "severity": "error", "actual": 1e-400, "threshold": 1}'],
	 result => 'id'},
	{name => 'on_budget_violation: actual -1e308, threshold 1e308',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.e308", "budget_type": "quality", "severity": "critical", "actual": -1e308, "threshold": 1e308}'],
	 result => 'id'},
	{name => 'on_budget_violation: actual NaN',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.nan", "budget_type": "cost", "severity": "error", "actual": NaN, "threshold": 1}'],
	 error => '22P02'},
	{name => 'on_budget_violation: actual Infinity',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.inf", "budget_type": "cost", "severity": "error", "actual": -Infinity, "threshold": 1}'],
	 error => '22P02'},
	{name => 'on_budget_violation: unknown budget_type',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.obv.bt', budget_type => 'speed'))],
	 error => '22023'},
	{name => 'on_budget_violation: unknown severity',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.obv.sev', severity => 'fatal'))],
	 error => '22023'},
	{name => 'on_budget_violation: empty severity',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.obv.sev0', severity => ''))], error => '22023'},
	{name => 'on_budget_violation: agent of 1 MB',
	 sql => $OBV1, bind => [js(viol(agent => $BIG))], error => '22023'},
	{name => 'on_budget_violation: agent with quotes, backslashes, control characters, non-ASCII',
	 sql => $OBV1, bind => [js(viol(agent => "adv.obv.$NASTY"))], result => 'id',
	 check => key_is("BUDGET_adv.obv.${NASTY}_cost")},
	{name => 'on_budget_violation: the same violation again (duplicate)',
	 sql => $OBV1, bind => [js(viol(agent => "adv.obv.$NASTY"))], result => 'null'},
	{name => 'on_budget_violation: agent with a \u0000 escape',
	 sql => $OBV1, bind => ['{"agent": "adv\u0000x", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}'],
	 error => '22P05'},
	{name => 'on_budget_violation: agent with a lone high surrogate escape',
	 sql => $OBV1, bind => ['{"agent": "adv\ud800", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}'],
	 error => '22P02'},
	{name => 'on_budget_violation: agent with surrogates in the wrong order',
	 sql => $OBV1, bind => ['{"agent": "adv\udc00\ud800", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}'],
	 error => '22P02'},
	{name => 'on_budget_violation: agent with an escaped surrogate pair and control escapes',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.\ud83d\udea8\u0001\u001f\"\\\/", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1}'],
	 result => 'id', check => key_is("BUDGET_adv.obv.\x{1F6A8}\x01\x1f\"\\/_cost")},
	{name => 'on_budget_violation: violation of 1 MB',
	 sql => $OBV1, bind => [js(viol(agent => 'adv.obv.big', pad => $BIG_NASTY))], result => 'id'},
	{name => 'on_budget_violation: violation with a member nested 10000 levels',
	 sql => $OBV1,
	 bind => ['{"agent": "adv.obv.deep", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1, "x": '
			  . deep_array(10000) . '}'],
	 result => 'id'},
	{name => 'on_budget_violation: violation nested 100000 levels',
	 sql => $OBV1, bind => [deep_object(100000)], error => '54001'},
	{name => 'on_budget_violation: budget is an array',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.barr')), '[1, 2]', '{}'], error => '22023'},
	{name => 'on_budget_violation: context is a string',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.cstr')), undef, '"x"'], error => '22023'},
	{name => 'on_budget_violation: NULL budget and NULL context',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.nulls')), undef, undef], result => 'id'},
	{name => 'on_budget_violation: JSON null budget and context',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.jnulls')), 'null', 'null'], result => 'id'},
	{name => 'on_budget_violation: empty budget and context objects',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.empty')), '{}', '{}'], result => 'id'},
	{name => 'on_budget_violation: a duplicate key in the JSON (the last one counts)',
	 sql => $OBV1, bind => ['{"agent": "adv.obv.first", "budget_type": "cost", "severity": "error", "actual": 2, "threshold": 1, "agent": "adv.obv.last"}'],
	 result => 'id', check => key_is('BUDGET_adv.obv.last_cost')},
	{name => 'on_budget_violation: budget of 1 MB, context nested 10000 levels',
	 sql => $OBV3, bind => [js(viol(agent => 'adv.obv.bigargs')), js({pad => $BIG}), deep_object(10000)],
	 result => 'id'},

	################################################################ on_invariant_failure
	{name => 'on_invariant_failure: NULL everywhere',
	 sql => $OIF, bind => [undef, undef, undef], error => '22004'},
	{name => 'on_invariant_failure: JSON null eval_result',
	 sql => $OIF, bind => ['null', '{"invariant": "x"}', undef], error => '22004'},
	{name => 'on_invariant_failure: invariant_result is an array',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', '[]', undef], error => '22023'},
	{name => 'on_invariant_failure: agent is an object',
	 sql => $OIF, bind => ['{"agent": {}}', '{"invariant": "x"}', undef], error => '22023'},
	{name => 'on_invariant_failure: invariant with quotes, backslashes, control characters',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', js({invariant => $NASTY}), undef],
	 result => 'id', check => key_is("INVARIANT_adv.oif_$NASTY")},
	{name => 'on_invariant_failure: the same invariant again (duplicate)',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', js({invariant => $NASTY}), '{}'],
	 result => 'null'},
	{name => 'on_invariant_failure: invariant that makes a 256-byte key',
	 sql => $OIF,
	 bind => ['{"agent": "adv.oif"}', js({invariant => 'j' x (256 - length('INVARIANT_adv.oif_'))}), undef],
	 error => '22023'},
	{name => 'on_invariant_failure: invariant of 1 MB',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', js({invariant => $BIG}), undef], error => '22023'},
	{name => 'on_invariant_failure: unknown severity',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', '{"invariant": "s", "severity": "bogus"}', undef],
	 error => '22023'},
	{name => 'on_invariant_failure: invariant with a \u0000 escape',
	 sql => $OIF, bind => ['{"agent": "adv.oif"}', '{"invariant": "a\u0000b"}', undef],
	 error => '22P05'},
	{name => 'on_invariant_failure: eval_result of 1 MB, context nested 10000 levels',
	 sql => $OIF,
	 bind => [js({agent => 'adv.oif.big', pad => $BIG_NASTY}), '{"invariant": "big"}', deep_object(10000)],
	 result => 'id'},

	################################################################ on_planner_regression
	{name => 'on_planner_regression: NULL everywhere',
	 sql => $OPR, bind => [(undef) x 5], error => '22004'},
	{name => 'on_planner_regression: version of 1 MB',
	 sql => $OPR, bind => [$BIG, (undef) x 4], error => '22023'},
	{name => 'on_planner_regression: version with quotes, backslashes, control characters',
	 sql => $OPR, bind => [$NASTY, (undef) x 4], result => 'id', check => key_is("PLANNER_$NASTY")},
	{name => 'on_planner_regression: NULL in every JSON argument',
	 sql => $OPR, bind => ['adv-v1', (undef) x 4], result => 'id'},
	{name => 'on_planner_regression: metrics of 1 MB, baseline nested 10000 levels',
	 sql => $OPR, bind => ['adv-v2', js({pad => $BIG}), deep_object(10000), '{}', '{}'],
	 result => 'id'},
	{name => 'on_planner_regression: severity is an array',
	 sql => $OPR, bind => ['adv-v3', '{}', '{}', '{"severity": ["error"]}', undef], error => '22023'},
	{name => 'on_planner_regression: severity in the wrong case',
	 sql => $OPR, bind => ['adv-v3', '{}', '{}', '{"severity": "Critical"}', undef], error => '22023'},
	{name => 'on_planner_regression: metrics is an array',
	 sql => $OPR, bind => ['adv-v3', '[]', '{}', '{}', undef], error => '22023'},

	################################################################ on_gate_failure
	{name => 'on_gate_failure: NULL agent',
	 sql => $OGF, bind => [undef, '{}', '[]', undef, undef], error => '22004'},
	{name => 'on_gate_failure: NULL violations',
	 sql => $OGF, bind => ['adv.ogf', '{}', undef, undef, undef], error => '22004'},
	{name => 'on_gate_failure: violations is an object',
	 sql => $OGF, bind => ['adv.ogf', '{}', '{}', undef, undef], error => '22023'},
	{name => 'on_gate_failure: an empty violation object',
	 sql => $OGF, bind => ['adv.ogf', '{}', '[{}]', undef, undef], error => '22023'},
	{name => 'on_gate_failure: no violations, NULL everywhere else',
	 sql => $OGF, bind => ['adv.ogf', undef, '[]', undef, undef], result => []},
	{name => 'on_gate_failure: the same budget type twice',
	 sql => $OGF, bind => ['adv.ogf.dup', '{}', js([viol(), viol()]), undef, undef],
	 incidents => 1,
	 check => sub {
		 my ($res, $new) = @_;
		 my $ids = $res->{data}[0][0];
		 return ref($ids) eq 'ARRAY' && @$ids == 2 && ($ids->[0] // 0) == $new->[0]{id}
			 && !defined $ids->[1] ? undef : 'result is ' . js($ids);
	 }},
	{name => 'on_gate_failure: 10000 violations of one budget type',
	 sql => $OGF, bind => ['adv.ogf.many', '{}', js([map { viol() } 1 .. 10000]), undef, undef],
	 incidents => 1,
	 check => sub {
		 my ($res, $new) = @_;
		 my $ids = $res->{data}[0][0];
		 return 'result is not an array' unless ref($ids) eq 'ARRAY';
		 my $created = grep { defined } @$ids;
		 my $i = incident($new->[0]{id});
		 return @$ids == 10000 && $created == 1 && ($ids->[0] // 0) == $new->[0]{id}
			 && $i->{occurrences} == 10000 ? undef
			 : sprintf('%d ids, %d created, occurrences %d', scalar(@$ids), $created,
					   $i->{occurrences});
	 }},
	{name => 'on_gate_failure: actual is a string',
	 sql => $OGF, bind => ['adv.ogf', '{}', js([viol(actual => 'two')]), undef, undef],
	 error => '22023'},
	{name => 'on_gate_failure: an element naming another agent',
	 sql => $OGF, bind => ['adv.ogf', '{}', js([viol(agent => $NASTY)]), undef, undef],
	 error => '22023'},
	{name => 'on_gate_failure: gate_result of 1 MB, budget nested 10000 levels',
	 sql => $OGF,
	 bind => ["adv.ogf.$NASTY", js({pad => $BIG_NASTY}), js([viol(budget_type => 'latency')]),
			  deep_object(10000), undef],
	 incidents => 1,
	 check => sub {
		 my ($res, $new) = @_;
		 my $ids = $res->{data}[0][0];
		 return ref($ids) eq 'ARRAY' && @$ids == 1 && ($ids->[0] // 0) == $new->[0]{id}
			 ? undef : 'result is ' . js($ids);
	 }},

	################################################################ ack, resolve
	{name => 'ack: NULL id',
	 sql => 'SELECT gate_bridge.ack($1)', bind => [undef], error => '22004'},
	{name => 'ack: unknown id',
	 sql => 'SELECT gate_bridge.ack($1)', bind => [-1], error => 'P0002'},
	{name => 'ack: the largest bigint',
	 sql => 'SELECT gate_bridge.ack($1)', bind => ['9223372036854775807'], error => 'P0002'},
	{name => 'ack: an id beyond bigint',
	 sql => 'SELECT gate_bridge.ack($1)', bind => ['9223372036854775808'], error => '22003'},
	{name => 'ack: an id that is not a number',
	 sql => 'SELECT gate_bridge.ack($1)', bind => ['1; DROP TABLE x'], error => '22P02'},
	{name => 'ack: an acked incident',
	 sql => 'SELECT gate_bridge.ack($1)', bind => sub { [$fx{acked}] }, error => '55000'},
	{name => 'ack: a resolved incident',
	 sql => 'SELECT gate_bridge.ack($1)', bind => sub { [$fx{resolved}] }, error => '55000'},
	{name => 'resolve: a resolved incident',
	 sql => 'SELECT gate_bridge.resolve($1)', bind => sub { [$fx{resolved}] }, error => '55000'},
	{name => 'resolve: NULL actor',
	 sql => 'SELECT gate_bridge.resolve($1, $2)', bind => sub { [$fx{open}, undef] },
	 error => '22004'},
	{name => 'resolve: empty actor',
	 sql => 'SELECT gate_bridge.resolve($1, $2)', bind => sub { [$fx{open}, ''] },
	 error => '22023'},
	{name => 'ack: actor of 1 MB with control characters',
	 sql => 'SELECT gate_bridge.ack($1, $2)', bind => sub { [$fx{actors}, $BIG_NASTY] },
	 error => '22001'},
	{name => 'ack: actor of 128 bytes with control characters',
	 sql => 'SELECT gate_bridge.ack($1, $2)', bind => sub { [$fx{actors}, $ASCII_ACTOR] },
	 result => 'void',
	 check => sub {
		 my $i = incident($fx{actors});
		 return $i->{status} eq 'ack' && $i->{acked_by} eq $ASCII_ACTOR ? undef
			 : "status $i->{status}, acked_by of " . length($i->{acked_by} // '') . ' characters';
	 }},
	{name => 'resolve: actor with quotes and backslashes, note of 1 MB',
	 sql => 'SELECT gate_bridge.resolve($1, $2, $3)', bind => sub { [$fx{actors}, $NASTY, $BIG_NASTY] },
	 error => '22001'},
	{name => 'resolve: actor with quotes and backslashes, note of 8 kB',
	 sql => 'SELECT gate_bridge.resolve($1, $2, $3)', bind => sub { [$fx{actors}, $NASTY, substr($BIG_NASTY, 0, 8192)] },
	 result => 'void',
	 check => sub {
		 my $i = incident($fx{actors});
		 return $i->{status} eq 'resolved' && $i->{resolved_by} eq $NASTY
			 && $i->{resolution_note} eq substr($BIG_NASTY, 0, 8192) ? undef : "status $i->{status}";
	 }},

	################################################################ helpers
	{name => 'suggest_playbooks: NULL, NULL',
	 sql => 'SELECT gate_bridge.suggest_playbooks($1, $2)', bind => [undef, undef], result => 'null'},
	{name => 'suggest_playbooks: 1 MB type and agent',
	 sql => 'SELECT gate_bridge.suggest_playbooks($1, $2)', bind => [$BIG, $BIG],
	 result => ['rerun_eval']},
	{name => 'suggest_playbooks: agent with control characters under a glob',
	 sql => 'SELECT gate_bridge.suggest_playbooks($1, $2)', bind => ['quality', "warehouse.$NASTY"],
	 result => ['rerun_eval', 'rerun_dbt']},
	{name => 'incident_severity: NULL',
	 sql => 'SELECT gate_bridge.incident_severity($1)', bind => [undef], result => 'null'},
	{name => 'incident_severity: critical',
	 sql => 'SELECT gate_bridge.incident_severity($1)', bind => ['critical'], result => 'sev1'},
	{name => 'incident_severity: 1 MB',
	 sql => 'SELECT gate_bridge.incident_severity($1)', bind => [$BIG], error => '22023'},
	{name => 'incident_severity: trailing newline',
	 sql => 'SELECT gate_bridge.incident_severity($1)', bind => ["error\n"], error => '22023'},
	{name => 'pattern_rank: NULL pattern',
	 sql => 'SELECT gate_bridge.pattern_rank($1, $2)', bind => [undef, 'x'], result => 'null'},
	{name => 'pattern_rank: "*" against a 1 MB agent',
	 sql => 'SELECT gate_bridge.pattern_rank($1, $2)', bind => ['*', $BIG], result => 0},
	{name => 'pattern_rank: 1 MB glob against a 1 MB agent',
	 sql => 'SELECT gate_bridge.pattern_rank($1, $2)', bind => ["$BIG.*", "$BIG.x"],
	 check => sub {
		 my ($res) = @_;
		 my $v = $res->{data}[0][0];
		 return defined $v && $v =~ /^\d+$/ ? undef : 'no rank: ' . ($v // 'NULL');
	 }},
	{name => 'pattern_rank: glob with control characters does not match a longer prefix',
	 sql => 'SELECT gate_bridge.pattern_rank($1, $2)', bind => ["$NASTY.*", "${NASTY}x.y"],
	 result => 'null'},

	################################################################ evaluate_agent
	{name => 'evaluate_agent: NULL agent',
	 sql => $EVAL, bind => [undef, '7 days'], error => '22004'},
	{name => 'evaluate_agent: NULL lookback (each budget\'s own window)',
	 sql => $EVAL, bind => ['adv.row.huge', undef],
	 check => sub {
		 my ($res) = @_;
		 my $r = eval { JSON::PP->new->decode($res->{data}[0][0]) };
		 return $r && ref($r->{windows}) eq 'HASH' && keys(%{$r->{windows}}) == 5
			 ? undef : 'result: ' . substr($res->{data}[0][0] // 'NULL', 0, 300);
	 }},
	{name => 'evaluate_agent: negative lookback',
	 sql => $EVAL, bind => ['adv.row.huge', '-1 day'], error => '22023'},
	{name => 'evaluate_agent: lookback of a million years',
	 sql => $EVAL, bind => ['adv.row.huge', '1000000 years'], error => '22023'},
	{name => 'evaluate_agent: lookback that is not an interval',
	 sql => $EVAL, bind => ['adv.row.huge', 'soon'], error => '22007'},
	{name => 'evaluate_agent: agent of 1 MB',
	 sql => $EVAL, bind => [$BIG, '7 days'], error => '22023'},
	{name => 'evaluate_agent: agent with control characters and failing rows',
	 sql => $EVAL, bind => ["adv.row.$NASTY", '7 days'],
	 check => sub {
		 my ($res) = @_;
		 my $r = eval { JSON::PP->new->decode($res->{data}[0][0]) };
		 return $r && !$r->{passed} && $r->{agent} eq "adv.row.$NASTY"
			 && @{$r->{violations}} == 1 ? undef : 'result: ' . substr($res->{data}[0][0] // 'NULL', 0, 300);
	 }},
	{name => 'evaluate_agent: agent without rows',
	 sql => $EVAL, bind => ['adv.nobody', '7 days'],
	 check => sub {
		 my ($res) = @_;
		 my $r = eval { JSON::PP->new->decode($res->{data}[0][0]) };
		 # nothing to judge: insufficient_data, passed null, never a pass
		 return $r && !defined $r->{passed} && $r->{status} eq 'insufficient_data'
			 && $r->{samples} == 0 && @{$r->{insufficient}} > 0 ? undef
			 : 'result: ' . ($res->{data}[0][0] // 'NULL');
	 }},

	################################################################ run_gates
	{name => 'run_gates: NULL create_incidents',
	 sql => $GATES, bind => [undef, '7 days', undef], error => '22004'},
	{name => 'run_gates: empty agent',
	 sql => $GATES, bind => ['', '7 days', 'false'], error => '22023'},
	{name => 'run_gates: agent of 1 MB',
	 sql => $GATES, bind => [$BIG, '7 days', 'true'], error => '22023'},
	{name => 'run_gates: create_incidents that is not a boolean',
	 sql => $GATES, bind => [undef, '7 days', 'perhaps'], error => '22P02'},
	{name => 'run_gates: every agent (all the hostile names above), creating incidents',
	 sql => $GATES, bind => [undef, '1 hour', 'true'], incidents => 'any',
	 check => sub {
		 my ($res) = @_;
		 my ($agents) = $dbh->selectrow_array(
			 'SELECT count(DISTINCT agent) FROM gate_bridge.eval_results');
		 # agent, status, passed, samples, violations, insufficient,
		 # incident_ids (one per violation)
		 my @bad = grep { ($_->[1] // '') !~ /^(passed|warning|failed|insufficient_data)$/
						  || $_->[3] !~ /^\d+$/ || ref($_->[6]) ne 'ARRAY'
						  || ref(JSON::PP->new->decode($_->[5])) ne 'ARRAY'
						  || @{$_->[6]} != @{JSON::PP->new->decode($_->[4])} } @{$res->{data}};
		 return @{$res->{data}} == $agents && !@bad ? undef
			 : sprintf('%d rows for %d agents, %d malformed', scalar(@{$res->{data}}),
					   $agents, scalar(@bad));
	 }},
	{name => 'run_gates: one hostile agent, creating incidents',
	 sql => $GATES, bind => ["adv.$BREAKER", '7 days', 'true'], incidents => 'any',
	 check => sub {
		 my ($res) = @_;
		 return @{$res->{data}} == 1 && $res->{data}[0][0] eq "adv.$BREAKER"
			 && $res->{data}[0][1] eq 'failed' && !$res->{data}[0][2] ? undef : 'rows: ' . js($res->{data});
	 }},

	################################################################ float8 sums
	# Each value is accepted, yet the average over two of them overflows.
	{name => 'evaluate_agent: two rows of cost_usd 1e308',
	 rollback => 1,
	 before => [q{INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('adv.overflow', 1e308), ('adv.overflow', 1e308)}],
	 sql => $EVAL, bind => ['adv.overflow', '7 days'],
	 check => sub {
		 my ($res) = @_;
		 my $r = eval { JSON::PP->new->decode($res->{data}[0][0]) };
		 return $r && !$r->{passed} ? undef : 'result: ' . ($res->{data}[0][0] // 'NULL');
	 }},
	{name => 'run_gates: every agent, with two rows of cost_usd 1e308 among them',
	 rollback => 1,
	 before => [q{INSERT INTO gate_bridge.eval_results (agent, cost_usd)
				  VALUES ('adv.overflow', 1e308), ('adv.overflow', 1e308)}],
	 sql => $GATES, bind => [undef, '7 days', 'false'],
	 check => sub {
		 my ($res) = @_;
		 return @{$res->{data}} > 1 ? undef : 'rows: ' . scalar(@{$res->{data}});
	 }},
);

################################################################ the harness

# Everything a rejected input must leave unchanged.
sub state_of_data
{
	return join(' | ', map { $_ // 'NULL' } $dbh->selectrow_array(q{
		SELECT (SELECT count(*) FROM gate_bridge.eval_results),
			   (SELECT count(*) FROM gate_bridge.incidents),
			   (SELECT sum(occurrences) FROM gate_bridge.incidents),
			   (SELECT md5(string_agg(id || status, ',' ORDER BY id)) FROM gate_bridge.incidents),
			   (SELECT count(*) FROM gate_bridge.incident_events),
			   (SELECT sum(created) || '/' || sum(rate_limited) FROM gate_bridge.incident_keys)
	}));
}

sub short
{
	my ($s) = @_;

	$s //= '';
	$s =~ s/[^\x20-\x7e]/?/g;
	return length($s) > 300 ? substr($s, 0, 300) . '...' : $s;
}

# Runs one case; returns {rows, data} or {failed, state, errstr}.
sub run_case
{
	my ($c) = @_;
	my $conn = $session{$c->{conn} // 'main'};
	my $res;

	$conn->begin_work if $c->{rollback};
	$res = eval {
		$conn->do($_) for @{$c->{before} // []};
		if ($c->{copy})
		{
			$conn->do($c->{copy});
			$conn->pg_putcopydata($_) for @{$c->{data}};
			$conn->pg_putcopyend();
			return {rows => undef};
		}
		my $bind = ref($c->{bind}) eq 'CODE' ? $c->{bind}->() : $c->{bind} // [];
		my $sth = $conn->prepare($c->{sql});
		my $n = $sth->execute(@$bind);
		my $data = $sth->{NUM_OF_FIELDS} ? $sth->fetchall_arrayref : undef;

		return {rows => $data ? scalar(@$data) : $n + 0, data => $data};
	};
	$res = {failed => 1, state => $conn->state, errstr => $conn->errstr // $@}
		unless $res;
	eval { $conn->rollback } if $c->{rollback};
	return $res;
}

# Problems with the outcome of a case, if any.
sub outcome_problems
{
	my ($c, $res, $new) = @_;
	my $expect = $c->{result};

	if (defined $c->{error})
	{
		return ("succeeded, expected SQLSTATE $c->{error}") unless $res->{failed};
		return () if $res->{state} eq $c->{error};
		return ("SQLSTATE $res->{state}, expected $c->{error}: " . short($res->{errstr}));
	}
	return ("SQLSTATE $res->{state}: " . short($res->{errstr})) if $res->{failed};

	my @p;
	my $data = $res->{data};
	my $value = $data && @$data == 1 && @{$data->[0]} == 1 ? $data->[0][0] : undef;

	push @p, ($res->{rows} // 'unknown') . " rows, expected $c->{rows}"
		if defined $c->{rows} && ($res->{rows} // -1) != $c->{rows};
	if (defined $expect)
	{
		if (!$data || @$data != 1 || @{$data->[0]} != 1)
		{
			push @p, 'expected one value';
		}
		elsif ($expect eq 'id')
		{
			push @p, 'expected the new incident\'s id, got ' . ($value // 'NULL')
				unless defined $value && @$new == 1 && $value == $new->[0]{id};
		}
		elsif ($expect eq 'null')
		{
			push @p, "expected NULL, got $value" if defined $value;
		}
		elsif ($expect eq 'void')
		{
			push @p, "expected no value, got $value" if defined $value && $value ne '';
		}
		elsif (ref $expect)
		{
			push @p, 'got ' . js($value) . ', expected ' . js($expect)
				unless ref($value) eq 'ARRAY' && js($value) eq js($expect);
		}
		else
		{
			push @p, 'got ' . ($value // 'NULL') . ", expected $expect"
				unless defined $value && $value eq $expect;
		}
	}
	if ($c->{check} && !@p)
	{
		my $why = $c->{check}->($res, $new);

		push @p, $why if defined $why;
	}
	return @p;
}

# Waits for the barrier sent after a case; returns the payloads (bytes)
# that arrived on incident_created before it.
my $listener_select = IO::Select->new($listener->{pg_socket});

sub drain
{
	my ($tag) = @_;
	my @payloads;
	my $deadline = time + 30;
	my $sender = connect_db($DBNAME);

	$sender->do("NOTIFY $BARRIER, '$tag'");
	$sender->disconnect;
	while (time < $deadline)
	{
		while (my $note = $listener->pg_notifies)
		{
			my ($channel, $pid, $payload) = @$note;

			return \@payloads if $channel eq $BARRIER && $payload eq $tag;
			push @payloads, $payload if $channel eq $CHANNEL;
		}
		$listener_select->can_read(0.5);
	}
	die "the listener did not receive barrier $tag\n";
}

# "data" keys in the payload's text, in order, if it has the documented
# shape {"event":...,"data":{...}} with scalar values.
my $string = qr/"(?:[^"\\]|\\.)*"/s;
my $scalar = qr/$string|-?\d+|null/;

sub payload_problems
{
	my ($bytes, $incidents) = @_;
	my $doc;
	my @p;

	push @p, 'payload of ' . length($bytes) . ' bytes' if length($bytes) >= 8000;
	return (@p, 'payload is not JSON: ' . short($bytes))
		unless eval { $doc = $json->decode($bytes); 1 };
	if ($bytes =~ /^\{"event":$string,"data":\{((?:$string:$scalar,?)*)\}\}$/)
	{
		my @keys = map { substr($_, 1, -1) } ($1 =~ /($string):$scalar/g);

		push @p, 'data keys are ' . join(',', @keys)
			unless join(',', @keys) eq join(',', @DATA_KEYS);
	}
	else
	{
		push @p, 'payload does not have the shape {"event":..,"data":{..}}: ' . short($bytes);
	}
	my $d = $doc->{data};

	return (@p, 'data is not an object') unless ref($d) eq 'HASH';
	push @p, 'event is not incident_created' unless ($doc->{event} // '') eq 'incident_created';
	push @p, 'status is not open' unless ($d->{status} // '') eq 'open';
	push @p, 'created_at is ' . ($d->{created_at} // 'missing')
		unless ($d->{created_at} // '') =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
	my $i = $incidents->{$d->{id} // ''};

	return (@p, 'payload for an incident this case did not create: ' . ($d->{id} // 'no id'))
		unless $i;
	for my $k (qw(kind key severity summary))
	{
		push @p, "payload's $k differs from incident $i->{id}'s: " . short($d->{$k})
			unless ($d->{$k} // '') eq $i->{$k};
	}
	return @p;
}

# Is the server still up, without having restarted?
sub server_problems
{
	my @p;

	for my $name (sort keys %session)
	{
		my $pid = eval { $session{$name}->selectrow_array('SELECT pg_backend_pid()') };

		push @p, "the $name session is gone" . ($@ ? ": $@" : '')
			unless defined $pid && $pid == $session_pid{$name};
	}
	my $fresh = eval { connect_db($DBNAME) };

	if (!$fresh)
	{
		push @p, "no new connection: $@";
	}
	else
	{
		my ($one, $started) = eval {
			$fresh->selectrow_array('SELECT 1, pg_postmaster_start_time()') };

		push @p, 'a new connection does not answer' unless ($one // 0) == 1;
		push @p, "the postmaster restarted at $started"
			if defined $started && $started ne $postmaster_started;
		$fresh->disconnect;
	}
	return @p;
}

################################################################ run

cmp_ok(scalar(@cases), '>=', 40, 'at least 40 hostile inputs (' . scalar(@cases) . ')');
is(scalar(@{drain('setup')}), 0, 'setting up notified nothing');

my ($last_id) = $dbh->selectrow_array('SELECT COALESCE(max(id), 0) FROM gate_bridge.incidents');
my (%notified, @slow);
my $n = 0;

for my $c (@cases)
{
	$n++;
	my $title = "$n: $c->{name}";
	my $before = defined $c->{error} ? state_of_data() : undef;
	my $t0 = time;
	my $res = run_case($c);
	my $elapsed = time - $t0;

	push @slow, sprintf('%s (%.1f s)', $title, $elapsed) if $elapsed > 1;

	my @down = server_problems();

	ok(!@down, "$title: the server is still up") or diag(join("\n", @down));
	BAIL_OUT("the server went down at case $title") if @down;

	# the incidents the case created, committed
	my $new = $dbh->selectall_arrayref(
		'SELECT id, kind, key, severity, summary FROM gate_bridge.incidents'
		. ' WHERE id > $1 ORDER BY id', {Slice => {}}, $last_id);
	my %by_id = map { $_->{id} => $_ } @$new;

	$last_id = $new->[-1]{id} if @$new;

	{
		local $TODO = $c->{todo};
		my @p = outcome_problems($c, $res, $new);

		ok(!@p, "$title: " . (defined $c->{error} ? "SQLSTATE $c->{error}" : 'clean result'))
			or diag(join("\n", @p));
	}
	$fx{$c->{save}} = $res->{data}[0][0] if $c->{save} && !$res->{failed};

	my $expected = $c->{incidents}
		// (defined $c->{error} ? 0 : ($c->{result} // '') eq 'id' ? 1 : 0);

	if (defined $c->{error})
	{
		is(state_of_data(), $before, "$title: left nothing behind");
	}

	my @p;
	my $payloads = eval { drain($n) };

	push @p, "notifications could not be collected: $@" unless $payloads;
	$payloads //= [];

	push @p, scalar(@$new) . " incidents created, expected $expected"
		if $expected ne 'any' && @$new != $expected;
	push @p, scalar(@$payloads) . ' notifications for ' . scalar(@$new) . ' incidents'
		if @$payloads != @$new;
	for my $bytes (@$payloads)
	{
		push @p, payload_problems($bytes, \%by_id);
		my $id = eval { $json->decode($bytes)->{data}{id} };

		push @p, "incident $id notified twice" if defined $id && $notified{$id}++;
	}
	ok(!@p, "$title: incidents and notifications (" . scalar(@$payloads) . ')')
		or diag(join("\n", @p[0 .. ($#p < 9 ? $#p : 9)]));
}

################################################################ totals

my ($incidents, $created_events) = $dbh->selectrow_array(q{
	SELECT (SELECT count(*) FROM gate_bridge.incidents),
		   (SELECT count(*) FROM gate_bridge.incident_events WHERE event = 'created')});

is(scalar(keys %notified), $incidents,
   "every incident was notified once ($incidents incidents)");
is($created_events, $incidents, 'every incident has one "created" timeline row');
is_deeply([server_problems()], [], 'the server is still up at the end');
diag('slow cases: ' . join('; ', @slow)) if @slow;
diag(sprintf('%d cases in %.1f s', scalar(@cases), time - $test_started));

$_->disconnect for values %session;
done_testing();
