# The gate-bridge command line against a throw-away cluster.
#
# Run inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGVERSION
# set), from the top of the tree:
#
#   pg_virtualenv -t -v 15 prove --ext .pl test/t/cli.pl
#
# Builds the binary from cli/*.c into a temporary directory, creates its own
# database with CREATE EXTENSION gate_bridge, and checks each exit code of
# run-gates, each subcommand's output, INTERVENTIONS_ENABLED=false, --help,
# bad options, the connection failure message, and that "listen" prints
# every incident event exactly once and in id order across a gap left by a
# transaction still in flight, a rolled-back one, a burst of concurrent
# writers (pgbench) and a server restart (pg_ctlcluster), ending with exit
# status 0 on SIGTERM and SIGINT.  Takes about 20 s.
use strict;
use warnings;

use Cwd qw(abs_path);
use DBI;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = tempdir('gb_cli_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $dbname = 'gb_cli_test';
my $listener_role = 'regress_cli_listener';
my $listener_password = 'regress_cli_' . $$;
my $json = JSON::PP->new->utf8->canonical;

die "run this test inside pg_virtualenv (PGHOST/PGPORT/PGVERSION are not set)\n"
  unless defined $ENV{PGPORT} && defined $ENV{PGVERSION};

delete $ENV{DATABASE_URL};
delete $ENV{INTERVENTIONS_ENABLED};

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

sub slurp
{
	my ($path) = @_;
	open my $fh, '<', $path or return '';
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text;
}

my $bin = "$tmp/gate-bridge";
my $runs = 0;

# Background listeners started here; stopped whatever happens to the test.
my @background;
my $test_pid = $$;
END
{
	for my $pid ($$ == $test_pid ? @background : ())
	{
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
}

# Run a command; returns (exit status, stdout, stderr).  Options: env =>
# {NAME => value or undef to unset}, timeout => seconds.
sub run_cmd
{
	my ($opts, @cmd) = @_;
	my $n = $runs++;
	my ($out, $err) = ("$tmp/out.$n", "$tmp/err.$n");
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		while (my ($k, $v) = each %{ $opts->{env} || {} })
		{
			if (defined $v) { $ENV{$k} = $v } else { delete $ENV{$k} }
		}
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', $out or die;
		open STDERR, '>', $err or die;
		exec @cmd or POSIX::_exit(127);
	}
	my $deadline = time + ($opts->{timeout} // 30);
	while (waitpid($pid, WNOHANG) == 0)
	{
		if (time > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			return (-1, slurp($out), slurp($err) . "\n(killed: timeout)");
		}
		sleep 0.02;
	}
	my $status = $?;
	my $rc = ($status & 127) ? -($status & 127) : ($status >> 8);
	return ($rc, slurp($out), slurp($err));
}

# gate-bridge with the test database as the default
sub gb
{
	my $opts = ref $_[0] eq 'HASH' ? shift : {};
	return run_cmd($opts, $bin, @_);
}

sub connect_db
{
	my ($db) = @_;
	return DBI->connect("dbi:Pg:dbname=$db", undef, undef,
		{ AutoCommit => 1, RaiseError => 1, PrintError => 0, PrintWarn => 0 });
}

sub wait_until
{
	my ($what, $timeout, $cond) = @_;
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		return 1 if $cond->();
		sleep 0.05;
	}
	diag("timed out waiting for $what");
	return 0;
}

sub json_lines
{
	my ($text) = @_;
	my @objs;
	for my $line (split /\n/, $text)
	{
		my $obj = eval { $json->decode($line) };
		push @objs, $obj // { _unparsable => $line };
	}
	return @objs;
}

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
chomp(my $includedir = `$pg_config --includedir`);
chomp(my $libdir = `$pg_config --libdir`);
my @sources = glob("$root/cli/*.c");
my ($brc, undef, $berr) = run_cmd({ timeout => 120 },
	$ENV{CC} // 'gcc', qw(-std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -O2),
	"-I$includedir", '-o', $bin, @sources, "-L$libdir", '-lpq');
is($brc, 0, 'gate-bridge builds with -Wall -Wextra -Werror') or diag($berr);
BAIL_OUT('the command line does not build') if $brc != 0;

# ---------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------

my $admin = connect_db('postgres');
$admin->do("DROP DATABASE IF EXISTS $dbname");
$admin->do("CREATE DATABASE $dbname");
$admin->do("DROP ROLE IF EXISTS $listener_role");
$admin->do("CREATE ROLE $listener_role LOGIN PASSWORD '$listener_password'");
$admin->do("GRANT CONNECT ON DATABASE $dbname TO $listener_role");
$admin->do("REVOKE CONNECT ON DATABASE $dbname FROM PUBLIC");

my $dbh = connect_db($dbname);
$dbh->do('CREATE EXTENSION gate_bridge');
$dbh->do("GRANT USAGE ON SCHEMA gate_bridge TO $listener_role");
$dbh->do("GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events TO $listener_role");

my ($have_run_gates) = $dbh->selectrow_array(
	q{SELECT to_regprocedure('gate_bridge.run_gates(text,interval,boolean)') IS NOT NULL});
ok($have_run_gates, 'the installed extension has gate_bridge.run_gates(text, interval, boolean)');

# Eval rows first, budgets after: the trigger checks rows against the
# budgets in force when they are inserted, so these rows open nothing and
# run-gates is the one to find the violations.
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, cost_usd, created_at) VALUES
		('regress.pass', 0.9, 0.5, now()),
		('regress.crit', 0.25, 0.5, now()),
		('regress.err', 0.45, 0.5, now()),
		('regress.warn', 0.9, 1.5, now()),
		('regress.old', 0.25, 0.5, now() - interval '2 days')});
$dbh->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('regress.pass', 'quality', 0.8, 0.5, 0.3),
		('regress.crit', 'quality', 0.8, 0.5, 0.3),
		('regress.err', 'quality', 0.8, 0.5, 0.3),
		('regress.warn', 'quality', 0.8, 0.5, 0.3),
		('regress.warn', 'cost', 1.0, 2.0, 4.0),
		('regress.old', 'quality', 0.8, 0.5, 0.3)});

$ENV{PGDATABASE} = $dbname;

my ($rc, $out, $err);

# ---------------------------------------------------------------------------
# --help and usage errors
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('--help');
is($rc, 0, '--help exits 0');
like($out, qr/^Usage:\n  gate-bridge \[-d CONNINFO\] COMMAND/m, '--help shows the usage');
like($out, qr/^  $_ /m, "--help lists $_") for qw(run-gates listen incidents ack resolve);
like($out, qr/^  64 /m, '--help documents the exit status of usage errors');
is($err, '', '--help writes nothing to stderr');

for my $cmd (qw(run-gates listen incidents ack resolve))
{
	($rc, $out, $err) = gb($cmd, '--help');
	is($rc, 0, "$cmd --help exits 0");
	like($out, qr/gate-bridge $cmd /, "$cmd --help shows its usage");
	my ($rc2, $out2) = gb('help', $cmd);
	is($out2, $out, "help $cmd is $cmd --help");
}
($rc, $out) = gb('run-gates', '--help');
like($out, qr/--fail-on-warning/, 'run-gates --help names --fail-on-warning');
like($out, qr/INTERVENTIONS_ENABLED/, 'run-gates --help documents INTERVENTIONS_ENABLED');

my @usage = (
	[[], qr/no command given/, 'no command'],
	[['frobnicate'], qr/unknown command "frobnicate"/, 'unknown command'],
	[['--frob'], qr/unrecognized option/, 'unknown global option'],
	[['run-gates', '--frob'], qr/run-gates: unrecognized option '--frob'/, 'unknown run-gates option'],
	[['run-gates', '--lookback'], qr/requires an argument/, 'missing option value'],
	[['run-gates', '--lookback', ''], qr/invalid --lookback ""/, 'empty lookback'],
	[['run-gates', '--lookback', 'seven days'], qr/invalid --lookback "seven days": invalid input syntax/, 'unparsable lookback'],
	[['run-gates', '--lookback', '-1 day'], qr/window must be longer than zero/, 'negative lookback'],
	[['run-gates', 'extra'], qr/unexpected argument "extra"/, 'stray argument'],
	[['incidents', '--status', 'closed'], qr/invalid --status "closed"/, 'bad --status'],
	[['incidents', '--severity', 'sev9'], qr/invalid --severity "sev9"/, 'bad --severity'],
	[['ack'], qr/missing incident ID/, 'ack without an id'],
	[['ack', '12abc'], qr/invalid incident ID "12abc"/, 'ack with a bad id'],
	[['ack', '--note', 'x', '1'], qr/--note is only for resolve/, 'ack --note'],
	[['resolve', '1', '2'], qr/unexpected argument "2"/, 'resolve with two ids'],
	[['listen', '--since', '-5'], qr/invalid --since "-5"/, 'bad --since'],
	[['listen', '--interval', '0'], qr/invalid --interval "0"/, 'bad --interval'],
);
for my $u (@usage)
{
	my ($args, $re, $name) = @$u;
	($rc, $out, $err) = gb(@$args);
	is($rc, 64, "usage error exits 64: $name");
	like($err, $re, "usage error message: $name");
	like($err, qr/Try "gate-bridge.*--help"/, "usage error points at --help: $name");
	is($out, '', "usage error prints nothing on stdout: $name");
}

($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'maybe' } }, 'run-gates');
is($rc, 64, 'INTERVENTIONS_ENABLED=maybe is a usage error');
like($err, qr/INTERVENTIONS_ENABLED must be true or false.*"maybe"/, 'and says which value is wrong');

# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5', 'incidents');
is($rc, 3, 'a connection failure exits 3');
like($err, qr/could not connect to database "regress_nodb" on host "127\.0\.0\.1" port 1: /,
	'a connection failure names the database, host and port');

($rc, $out, $err) = gb('listen', '-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5');
is($rc, 3, 'listen: a failed first connection exits 3 (only later ones are retried)');
like($err, qr/could not connect to database "regress_nodb" on host "127\.0\.0\.1" port 1: /,
	'listen: and names the server');

($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb?connect_timeout=5' } },
	'run-gates');
is($rc, 3, 'a bad DATABASE_URL exits 3');
like($err, qr/database "regress_urldb" on host "127\.0\.0\.1" port 1/, 'and names the server from DATABASE_URL');

($rc, $out, $err) = gb({ env => { DATABASE_URL => "postgresql:///$dbname", PGDATABASE => 'postgres' } },
	'incidents', '--status', 'all');
is($rc, 0, 'DATABASE_URL is used when there is no -d') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb' } },
	'-d', "dbname=$dbname", 'incidents');
is($rc, 0, '-d before the command wins over DATABASE_URL') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb' } },
	'incidents', '-d', "dbname=$dbname");
is($rc, 0, '-d after the command wins over DATABASE_URL') or diag($err);
($rc, $out, $err) = gb({ env => { PGDATABASE => 'postgres' } }, 'incidents');
is($rc, 1, 'a database without the extension: the server refuses, exit 1');
like($err, qr/gate_bridge.* does not exist/, 'with the server\'s message');

# ---------------------------------------------------------------------------
# run-gates: exit codes and report
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.pass');
is($rc, 0, 'run-gates: a passing gate exits 0') or diag($err);
like($out, qr/^PASS  regress\.pass$/m, 'run-gates: PASS for the passing agent');
like($out, qr/^1 passed, 0 with warnings, 0 failed: PASS$/m, 'run-gates: summary line');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.warn');
is($rc, 0, 'run-gates: warnings only exit 0 without --fail-on-warning');
like($out, qr/^WARN  regress\.warn\n\s+warning\s+cost\s+actual 1\.5 vs threshold 1$/m,
	'run-gates: the warning with actual and threshold');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.warn', '--fail-on-warning');
is($rc, 2, 'run-gates: warnings only exit 2 with --fail-on-warning');
like($out, qr/FAIL \(warnings, --fail-on-warning\)/, 'run-gates: the summary says why');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.crit', '--fail-on-warning');
is($rc, 1, 'run-gates: a critical violation exits 1');
like($out, qr/^FAIL  regress\.crit\n\s+critical\s+quality\s+actual 0\.25 vs threshold 0\.3$/m,
	'run-gates: the critical violation with actual and threshold');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.err');
is($rc, 1, 'run-gates: an error violation exits 1');
like($out, qr/^\s+error\s+quality\s+actual 0\.45 vs threshold 0\.5$/m, 'run-gates: the error violation');

($rc, $out, $err) = gb('run-gates');
is($rc, 1, 'run-gates over every agent: the worst one decides, exit 1');
like($out, qr/^Gates over the last 7d:$/m, 'run-gates: default lookback 7d');
for my $want (['PASS', 'regress.pass'], ['WARN', 'regress.warn'], ['FAIL', 'regress.crit'],
	['FAIL', 'regress.err'], ['FAIL', 'regress.old'])
{
	like($out, qr/^$want->[0]  \Q$want->[1]\E$/m, "run-gates over every agent: $want->[0] $want->[1]");
}
like($out, qr/^1 passed, 1 with warnings, 3 failed: FAIL$/m, 'run-gates over every agent: the summary counts');

# the window: regress.old's only row is two days old
($rc, $out) = gb('run-gates', '--agent', 'regress.old', '--lookback', '1d');
is($rc, 0, 'lookback 1d: a row two days old is outside the window');
($rc, $out) = gb('run-gates', '--agent', 'regress.old', '--lookback', '3d');
is($rc, 1, 'lookback 3d: it is inside');
for my $lb ('72h', '4320m', '259200s', '1w', '2 days 23 hours')
{
	($rc, $out, $err) = gb('run-gates', '--agent', 'regress.old', '--lookback', $lb);
	is($rc, 1, "lookback $lb is accepted and reaches the row") or diag($err);
}
for my $lb ('47h', '2820m', '1 day')
{
	($rc, $out, $err) = gb('run-gates', '--agent', 'regress.old', '--lookback', $lb);
	is($rc, 0, "lookback $lb does not reach the row") or diag($err);
}

# JSON
($rc, $out, $err) = gb('run-gates', '--json');
is($rc, 1, 'run-gates --json: same exit status');
my %gates = map { $_->{agent} => $_ } json_lines($out);
is_deeply([sort grep { /^regress\.(pass|warn|crit|err)$/ } keys %gates],
	[qw(regress.crit regress.err regress.pass regress.warn)], 'run-gates --json: one line per agent');
is($gates{'regress.pass'}{status}, 'pass', 'run-gates --json: pass');
ok($gates{'regress.pass'}{passed} && JSON::PP::is_bool($gates{'regress.pass'}{passed}),
	'run-gates --json: "passed" is a JSON boolean');
is_deeply($gates{'regress.pass'}{violations}, [], 'run-gates --json: no violations for a pass');
is($gates{'regress.warn'}{status}, 'warn', 'run-gates --json: warn');
is($gates{'regress.crit'}{status}, 'fail', 'run-gates --json: fail');
my ($v) = @{ $gates{'regress.crit'}{violations} || [] };
is_deeply($v, { agent => 'regress.crit', budget_type => 'quality', severity => 'critical',
		actual => 0.25, threshold => 0.3 }, 'run-gates --json: the violation, numbers as numbers');
is_deeply($gates{'regress.crit'}{incident_ids}, [], 'run-gates --json: no incidents without --create-incidents');
my ($nincidents) = $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.incidents');
is($nincidents, 0, 'run-gates without --create-incidents creates nothing');

# INTERVENTIONS_ENABLED=false and its spellings
for my $off ('false', 'FALSE', '0', 'no', 'Off')
{
	($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => $off } },
		'run-gates', '--create-incidents', '--agent', 'regress.crit');
	is($rc, 1, "INTERVENTIONS_ENABLED=$off: the gate still fails");
	like($out, qr/^Interventions are disabled \(INTERVENTIONS_ENABLED=\Q$off\E\): no incidents will be created\.$/m,
		"INTERVENTIONS_ENABLED=$off: the report says so");
}
($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'false' } },
	'run-gates', '--create-incidents', '--json', '--agent', 'regress.crit');
like($err, qr/Interventions are disabled/, 'INTERVENTIONS_ENABLED=false with --json: said on stderr');
is(scalar(grep { $_->{_unparsable} } json_lines($out)), 0, 'and stdout stays JSON');
($nincidents) = $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.incidents');
is($nincidents, 0, 'INTERVENTIONS_ENABLED=false: no incident was created');

# --create-incidents
($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'true' } },
	'run-gates', '--create-incidents', '--agent', 'regress.crit');
is($rc, 1, 'run-gates --create-incidents: exit 1');
my ($crit_id) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.crit_quality' AND status = 'open'});
ok(defined $crit_id, 'run-gates --create-incidents opened the incident');
my $crit_text = $crit_id // 'none';
like($out, qr/^\s+incidents created: \Q$crit_text\E$/m, 'and the report names it');
($rc, $out, $err) = gb('run-gates', '--create-incidents', '--json');
%gates = map { $_->{agent} => $_ } json_lines($out);
is_deeply($gates{'regress.crit'}{incident_ids}, [], 'a second run: deduplicated, nothing created');
my @new = @{ $gates{'regress.err'}{incident_ids} || [] };
my ($err_id) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.err_quality'});
is_deeply(\@new, [$err_id], 'run-gates --json --create-incidents lists the incident it created');
($rc, $out) = gb('run-gates', '--create-incidents', '--agent', 'regress.crit');
like($out, qr/no new incident/, 'the text report says when nothing new was created');

# ---------------------------------------------------------------------------
# incidents, ack, resolve
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('incidents');
is($rc, 0, 'incidents exits 0');
like($out, qr/^ID\s+SEV\s+STATUS\s+OCC\s+FIRST SEEN \(UTC\)\s+KEY$/m, 'incidents: table header');
like($out, qr/^\Q$crit_id\E\s+sev1\s+open\s+\d+\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+BUDGET_regress\.crit_quality$/m,
	'incidents: the sev1 row');
like($out, qr/^\(\d+ incidents\)$/m, 'incidents: count line');

($rc, $out, $err) = gb('incidents', '--json');
my @inc = json_lines($out);
my ($ids_db) = $dbh->selectcol_arrayref(
	q{SELECT id FROM gate_bridge.incidents WHERE status <> 'resolved' ORDER BY severity, first_seen_at, id});
is_deeply([map { $_->{id} } @inc], $ids_db, 'incidents --json: the unresolved incidents, most severe first');
my ($crit) = grep { $_->{id} == $crit_id } @inc;
is($crit->{severity}, 'sev1', 'incidents --json: severity');
is($crit->{status}, 'open', 'incidents --json: status');
is($crit->{summary}, 'Budget violation: regress.crit quality', 'incidents --json: summary');
is(ref $crit->{playbooks}, 'ARRAY', 'incidents --json: playbooks is an array');
ok(exists $crit->{acked_at} && !defined $crit->{acked_at}, 'incidents --json: null timestamps are null');

($rc, $out) = gb('incidents', '--json', '--severity', 'sev2');
is_deeply([map { $_->{id} } json_lines($out)], [$err_id], 'incidents --severity sev2');
($rc, $out) = gb('incidents', '--status', 'resolved');
like($out, qr/^\(0 incidents\)$/m, 'incidents --status resolved: none yet');

($rc, $out, $err) = gb('ack', $crit_id);
is($rc, 0, 'ack exits 0') or diag($err);
is($out, "Incident $crit_id acknowledged (BUDGET_regress.crit_quality).\n", 'ack confirms');
my ($st, $by) = $dbh->selectrow_array('SELECT status, acked_by FROM gate_bridge.incidents WHERE id = ?',
	undef, $crit_id);
is($st, 'ack', 'ack: the incident is acknowledged');
($rc, $out, $err) = gb('ack', $crit_id);
is($rc, 1, 'ack twice exits 1');
like($err, qr/^gate-bridge: incident \Q$crit_id\E is already acknowledged$/m, 'with the server\'s message');

($rc, $out, $err) = gb('incidents', '--json', '--status', 'ack');
is_deeply([map { $_->{id} } json_lines($out)], [$crit_id], 'incidents --status ack');

my $note = qq{rolled back "v2" \\ see runbook};
($rc, $out, $err) = gb('resolve', $crit_id, '--note', $note);
is($rc, 0, 'resolve exits 0') or diag($err);
is($out, "Incident $crit_id resolved (BUDGET_regress.crit_quality).\n", 'resolve confirms');
my ($rnote) = $dbh->selectrow_array('SELECT resolution_note FROM gate_bridge.incidents WHERE id = ?',
	undef, $crit_id);
is($rnote, $note, 'resolve: the note is stored as given');
($rc, $out, $err) = gb('resolve', $crit_id);
is($rc, 1, 'resolve twice exits 1');
like($err, qr/is already resolved\nDETAIL:  A resolved incident is final/, 'with the server\'s message and detail');
($rc, $out, $err) = gb('ack', '987654321');
is($rc, 1, 'ack of an unknown id exits 1');
like($err, qr/incident 987654321 does not exist/, 'and says so');

($rc, $out) = gb('incidents', '--json', '--status', 'resolved');
my ($resolved) = json_lines($out);
is($resolved->{resolution_note}, $note, 'incidents --json: the note, escaped and read back');

# ---------------------------------------------------------------------------
# listen
# ---------------------------------------------------------------------------

# Every agent under regress.live. violates its quality budget with each row.
$dbh->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
		   VALUES ('regress.live.*', 'quality', 0.5)});
my $live = 0;
sub violate
{
	my ($h, $agent) = @_;
	$agent //= 'regress.live.' . ++$live;
	$h->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (?, 0.1)', undef, $agent);
}

sub max_event
{
	my ($h) = @_;
	my ($m) = $h->selectrow_array('SELECT COALESCE(max(id), 0) FROM gate_bridge.incident_events');
	return $m;
}

# --once --since: what is there, then exit
($rc, $out, $err) = gb('listen', '--since', '0', '--once');
is($rc, 0, 'listen --since 0 --once exits 0') or diag($err);
my @once = json_lines($out);
my $events_db = $dbh->selectcol_arrayref('SELECT id FROM gate_bridge.incident_events ORDER BY id');
is_deeply([map { $_->{id} } @once], $events_db, 'listen --once: every event, in id order');
my ($acked) = grep { $_->{event} eq 'acked' } @once;
is($acked->{status}, 'ack', 'listen: an acked event says status ack');
my ($res_ev) = grep { $_->{event} eq 'resolved' } @once;
is($res_ev->{note}, $note, 'listen: a resolved event carries its note');
is($res_ev->{key}, 'BUDGET_regress.crit_quality', 'listen: events carry the incident key');

($rc, $out) = gb('listen', '--since', $events_db->[-2], '--once');
is_deeply([map { $_->{id} } json_lines($out)], [$events_db->[-1]], 'listen --since ID: only what follows ID');

# A listener as a role that may only read incidents and their timeline.
my $start = max_event($dbh);
my $lconn = "dbname=$dbname user=$listener_role password=$listener_password";
my ($lout, $lerr) = ("$tmp/listen.out", "$tmp/listen.err");
my $lpid = fork() // die "fork: $!";
if ($lpid == 0)
{
	open STDIN, '<', '/dev/null' or die;
	open STDOUT, '>', $lout or die;
	open STDERR, '>', $lerr or die;
	exec $bin, 'listen', '-d', $lconn, '--interval', '0.2' or POSIX::_exit(127);
}
push @background, $lpid;

sub listener_ids
{
	return map { $_->{id} // -1 } json_lines(slurp($lout));
}

sub listener_has
{
	my ($id) = @_;
	return grep { $_ == $id } listener_ids();
}

# ready once it has read where the timeline ends (its first query of it)
ok(wait_until('the listener', 10, sub {
	my ($n) = $dbh->selectrow_array(
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE usename = ? AND application_name = 'gate-bridge' AND state = 'idle'
			 AND query LIKE '%gate_bridge.incident_events%'},
		undef, $listener_role);
	return $n > 0;
}), 'listen: the listener is up');

# live: created (trigger), acked, resolved, created again for the same key
my $weird = "regress.live.q\"uote\\back\x01ctl\nnl \x{fc}ber \x{2603}";
violate($dbh);
violate($dbh);
violate($dbh, $weird);
my ($first_live) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE agent = 'regress.live.1' AND status = 'open'});
$dbh->do('SELECT gate_bridge.ack(?)', undef, $first_live);
$dbh->do('SELECT gate_bridge.resolve(?, current_user, ?)', undef, $first_live, 'live note');
violate($dbh, 'regress.live.1');
my $phase1 = max_event($dbh);
ok(wait_until('phase 1 events', 10, sub { listener_has($phase1) }), 'listen: live events arrive');
my ($weird_ev) = grep { ($_->{agent} // '') eq $weird } json_lines(slurp($lout));
ok($weird_ev, 'listen: quotes, backslashes, control characters and UTF-8 survive the JSON round trip');

# A gap: an event id taken by a transaction still in flight must not be
# skipped, and what follows it waits for it.
my $dba = connect_db($dbname);
my $dbb = connect_db($dbname);
$dba->begin_work;
violate($dba);
my ($held) = $dba->selectrow_array('SELECT max(id) FROM gate_bridge.incident_events');
violate($dbb);
my $after = max_event($dbb);
ok($after > $held, 'the second transaction took the later event id');
sleep 1.0;
ok(!listener_has($after), 'listen: an event does not jump ahead of one still in flight');
$dba->commit;
ok(wait_until('the held event', 10, sub { listener_has($after) }), 'listen: both arrive once the first commits');

# A gap that never fills: a rolled-back transaction
$dba->begin_work;
violate($dba);
violate($dbb);
my $after_rb = max_event($dbb);
$dba->rollback;
ok(wait_until('the event after a rollback', 10, sub { listener_has($after_rb) }),
	'listen: an id left by a rollback does not stop the listener');
$dba->disconnect;
$dbb->disconnect;

# A burst of concurrent writers: violations (a quarter rolled back) and
# acks and resolves, racing each other and the listener.
{
	my $violate = "$tmp/violate.pgb";
	my $move = "$tmp/move.pgb";
	open my $fh, '>', $violate or die;
	print $fh <<'PGB';
\set a random(1, 1000000000)
\set r random(0, 3)
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.live.burst.' || :a, 0.1);
SELECT pg_sleep(random() * 0.01);
\if :r = 0
ROLLBACK;
\else
COMMIT;
\endif
PGB
	close $fh;
	open $fh, '>', $move or die;
	print $fh <<'PGB';
DO $$
DECLARE
	i bigint;
BEGIN
	SELECT id INTO i FROM gate_bridge.incidents
	 WHERE status <> 'resolved' ORDER BY id DESC LIMIT 1;
	IF i IS NOT NULL THEN
		BEGIN
			IF random() < 0.5 THEN PERFORM gate_bridge.ack(i);
			ELSE PERFORM gate_bridge.resolve(i); END IF;
		EXCEPTION WHEN object_not_in_prerequisite_state THEN
			NULL;			-- another client moved it first
		END;
	END IF;
END
$$;
PGB
	close $fh;
	my ($prc, $pout, $perr) = run_cmd({ timeout => 60 }, 'pgbench', '-n', '-c', '6', '-j', '2', '-T', '3',
		'-f', "$violate\@3", '-f', "$move\@1", $dbname);
	is($prc, 0, 'a burst of concurrent writers ran') or diag($pout, $perr);
	my ($done) = $pout =~ /number of transactions actually processed: (\d+)/;
	diag('burst: ' . ($done // '?') . ' transactions');
}

# A server restart.  While the server is down and just after, the
# listener's role may not connect, so what happens then can only reach it
# by catching up from the timeline.
my $before_restart = max_event($dbh);
ok(wait_until('events before the restart', 10, sub { listener_has($before_restart) }),
	'listen: caught up before the restart');
$dbh->disconnect;
$admin->do("REVOKE CONNECT ON DATABASE $dbname FROM $listener_role");
$admin->disconnect;
my $t0 = time;
system('pg_ctlcluster', $ENV{PGVERSION}, 'regress', 'stop', '-m', 'fast') == 0
  or BAIL_OUT('pg_ctlcluster stop failed');
ok(wait_until('the listener to notice', 10, sub { slurp($lerr) =~ /lost the connection/ }),
	'listen: reports the lost connection');
system('pg_ctlcluster', $ENV{PGVERSION}, 'regress', 'start') == 0
  or BAIL_OUT('pg_ctlcluster start failed');
$dbh = connect_db($dbname);
$admin = connect_db('postgres');
my ($connected) = $dbh->selectrow_array(
	q{SELECT count(*) FROM pg_stat_activity WHERE usename = ?}, undef, $listener_role);
is($connected, 0, 'listen: the listener is not connected after the restart');
for (1 .. 3) { violate($dbh) }
my ($open_one) = $dbh->selectrow_array(
	q{SELECT min(id) FROM gate_bridge.incidents WHERE agent LIKE 'regress.live.%' AND status = 'open'});
$dbh->do('SELECT gate_bridge.resolve(?)', undef, $open_one);
my $missed = max_event($dbh);
ok(!listener_has($missed), 'listen: nothing printed while disconnected');
$admin->do("GRANT CONNECT ON DATABASE $dbname TO $listener_role");
ok(wait_until('the missed events', 30, sub { listener_has($missed) }),
	'listen: after reconnecting it prints what it missed');
like(slurp($lerr), qr/reconnecting in 0\.25 s\n/, 'listen: first retry after 0.25 s');
like(slurp($lerr), qr/reconnecting in 0\.50 s\n/, 'listen: then backs off');
like(slurp($lerr), qr/reconnected to database "\Q$dbname\E" on host ".*" port \d+; catching up after event \Q$before_restart\E\n/,
	'listen: reports the reconnect and where it catches up from');
diag(sprintf('listener was disconnected for %.1f s', time - $t0));

# and it keeps listening
violate($dbh);
my $last = max_event($dbh);
ok(wait_until('events after the reconnect', 10, sub { listener_has($last) }), 'listen: live again after the reconnect');

kill 'TERM', $lpid;
my $lstatus;
wait_until('the listener to exit', 10, sub { my $r = waitpid($lpid, WNOHANG); $lstatus = $?; $r == $lpid });
is($lstatus, 0, 'listen: SIGTERM ends it with exit status 0') or diag(slurp($lerr));
@background = grep { $_ != $lpid } @background;

# SIGINT, on a listener with nothing to print
{
	my $ipid = fork() // die "fork: $!";
	if ($ipid == 0)
	{
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', "$tmp/int.out" or die;
		open STDERR, '>', "$tmp/int.err" or die;
		exec $bin, 'listen' or POSIX::_exit(127);
	}
	push @background, $ipid;
	sleep 0.5;
	kill 'INT', $ipid;
	my $istatus;
	wait_until('the second listener to exit', 10,
		sub { my $r = waitpid($ipid, WNOHANG); $istatus = $?; $r == $ipid });
	is($istatus, 0, 'listen: SIGINT ends it with exit status 0') or diag(slurp("$tmp/int.err"));
	@background = grep { $_ != $ipid } @background;
	is(slurp("$tmp/int.out"), '', 'listen: without --since it starts after the newest event');
}

my @got = json_lines(slurp($lout));
my $want = $dbh->selectall_arrayref(
	'SELECT id, event, incident_id FROM gate_bridge.incident_events WHERE id > ? ORDER BY id',
	undef, $start);
is_deeply([map { $_->{id} } @got], [map { $_->[0] } @$want],
	'listen: every event after the start, each exactly once, in id order');
is_deeply([map { [$_->{event}, $_->{incident_id}] } @got], [map { [$_->[1], $_->[2]] } @$want],
	'listen: each line names its event and incident');
ok(@$want >= 12, 'listen: a meaningful number of events (' . scalar(@$want) . ')');
is(scalar(grep { $_->{_unparsable} } @got), 0, 'listen: every line is JSON');

# ---------------------------------------------------------------------------
# Clean up
# ---------------------------------------------------------------------------

$dbh->disconnect;
$admin->do("DROP DATABASE $dbname");
$admin->do("DROP ROLE $listener_role");
$admin->disconnect;

done_testing();
