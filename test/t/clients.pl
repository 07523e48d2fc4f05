#!/usr/bin/perl
#
# Real drivers against the extension: the examples under examples/, run as
# subprocesses with the README's roles and grants, and what PgBouncer and
# two-phase commit do to clients.
#
#   pg_virtualenv -t -v 15 prove test/t/clients.pl
#
# - The roles get the grants of the README's Privileges section, read from
#   README.md and executed as they stand.
# - examples/psycopg_runner.py and psycopg_async_runner.py (psycopg 3) load
#   batches with COPY as the writer: rows stored once, context stored as
#   jsonb, incidents opened.  Each is made to fail once with a deadlock
#   (40P01: this test holds one key's decision row the batch needs to
#   create an incident and then asks for one the batch holds) and once with
#   a serialization failure (40001: the runner at REPEATABLE READ waits for
#   a key's decision row that this test's creation changed, and this test
#   commits); each must retry the whole batch and succeed.  A bad value is
#   not retried.  (A fold locks no row: the batches create.)
# - examples/sqlalchemy_orm.py (SQLAlchemy 1.4 ORM on psycopg2): fails with
#   the writer grant of release 1.1 (no SELECT on id), works with the
#   README's; the ids it prints are the rows stored.
# - PgBouncer 1.18, started here on a free loopback port: psycopg's prepared
#   statements break in transaction mode ("prepared statement ... does not
#   exist") and prepare_threshold=None fixes it; both runners work through
#   it; LISTEN through transaction mode is accepted and delivers nothing,
#   while a direct connection and a session-mode pool receive the
#   notification.
# - Two-phase commit: an eval row that creates an incident makes PREPARE
#   TRANSACTION fail (it sent NOTIFY) and nothing is stored; a clean row, or
#   a violation folded into an open incident, prepares and commits.  On a
#   cluster of its own (GBCluster) with max_prepared_transactions = 5.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own database and roles.
# Needs python3-psycopg, python3-psycopg2, python3-sqlalchemy and pgbouncer
# (tools/common.sh installs them).  Takes about 20 s.
#
# test/t/clients.pl

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use DBI;
use FindBin;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use lib $FindBin::Bin;
use GBCluster;
use GBScratch qw(connect_db create_scratch_database drop_scratch_database);
use GBUtil qw(slurp wait_until);

die "run this test inside pg_virtualenv (PGPORT is not set)\n"
  unless defined $ENV{PGPORT};

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = tempdir('gb_clients_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $DBNAME = 'gb_tap_clients';
# Debian's python3-psycopg and friends are installed for /usr/bin/python3
my $PYTHON = $ENV{GB_PYTHON} // '/usr/bin/python3';
my $EXAMPLE_TIMEOUT = 60;		# seconds, per example run
my $json = JSON::PP->new->utf8->canonical;	# files and pipes: UTF-8 bytes
my $json_text = JSON::PP->new->canonical;	# bind values: characters
my $test_pid = $$;

# The README's roles, and the writer grant of release 1.1 (without SELECT
# on id) for the ORM's failure.
my @ROLES = qw(eval_writer oncall dashboard clients_old_writer);
my %password = map { $_ => "pw_${_}_$$" } @ROLES;

my @children;					# pids to stop whatever happens
my $pgbouncer_pid;

################################################################ helpers

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "$path: $!";
	print $fh $text;
	close $fh or die "$path: $!";
}

sub jsonl
{
	return join('', map { $json->encode($_) . "\n" } @_);
}

# latency_batch EVAL_RUN_ID, AGENT => LATENCY, ...: JSON lines, one row each
sub latency_batch
{
	my ($eval_run_id, @rows) = @_;
	my @records;
	while (my ($agent, $latency) = splice(@rows, 0, 2))
	{
		push @records, {agent => $agent, eval_run_id => $eval_run_id,
						latency_p95_ms => $latency};
	}
	return jsonl(@records);
}

my $dbh;						# superuser, the scratch database

sub q1
{
	my ($sql, @bind) = @_;
	return scalar $dbh->selectrow_array($sql, undef, @bind);
}

# The libpq environment of an example: the writer, on loopback, straight to
# the server unless told otherwise.  undef removes a variable.
sub client_env
{
	my (%env) = @_;
	return {PGHOST => '127.0.0.1', PGPORT => $ENV{PGPORT}, PGDATABASE => $DBNAME,
			PGUSER => 'eval_writer', PGPASSWORD => $password{eval_writer},
			PGAPPNAME => undef, PGOPTIONS => undef, DATABASE_URL => undef,
			PYTHONDONTWRITEBYTECODE => 1, %env};
}

# start_example NAME, [SCRIPT, ARGS...], input => TEXT, env => {...},
# fails => 1 (a failure is expected: do not print its output)
sub start_example
{
	my ($name, $args, %o) = @_;
	my %run = (name => $name, fails => $o{fails}, map { $_ => "$tmp/$name.$_" } qw(in out err));
	write_file($run{in}, $o{input} // '');
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		my $env = $o{env} // client_env();
		for my $k (keys %$env)
		{
			if (defined $env->{$k}) { $ENV{$k} = $env->{$k} } else { delete $ENV{$k} }
		}
		open STDIN, '<', $run{in} or _exit(127);
		open STDOUT, '>', $run{out} or _exit(127);
		open STDERR, '>', $run{err} or _exit(127);
		# timeout bounds the run: the example is killed after the limit
		exec('timeout', '-k', '5', $EXAMPLE_TIMEOUT, $PYTHON, @$args) or _exit(127);
	}
	push @children, $pid;
	$run{pid} = $pid;
	return \%run;
}

sub finish_example
{
	my ($run) = @_;
	waitpid($run->{pid}, 0);
	@children = grep { $_ != $run->{pid} } @children;
	$run->{status} = $? >> 8;
	$run->{stdout} = slurp($run->{out});
	$run->{stderr} = slurp($run->{err});
	my ($last) = reverse grep { /\S/ } split /\n/, $run->{stdout};
	$run->{result} = defined $last ? eval { $json->decode($last) } : undef;
	if (!$run->{fails} && ($run->{status} != 0 || !defined $run->{result}))
	{
		diag("$run->{name}: exit status $run->{status}");
		diag("$run->{name} stdout: $run->{stdout}") if $run->{stdout} ne '';
		diag("$run->{name} stderr: $run->{stderr}") if $run->{stderr} ne '';
	}
	return $run;
}

sub run_example
{
	return finish_example(start_example(@_));
}

sub example
{
	my ($file) = @_;
	return "$root/examples/$file";
}

# Is the session with this application_name waiting for a lock?
sub waits_for_lock
{
	my ($appname) = @_;
	return q1("SELECT count(*) FROM pg_stat_activity"
			  . " WHERE application_name = ? AND wait_event_type = 'Lock'", $appname) > 0;
}

sub deadlocks
{
	$dbh->do('SELECT pg_stat_clear_snapshot()');
	return q1('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()');
}

sub occurrences
{
	my ($key) = @_;
	return q1("SELECT occurrences FROM gate_bridge.incidents"
			  . " WHERE key = ? AND status <> 'resolved'", $key);
}

sub stored
{
	my ($eval_run_id) = @_;
	return q1('SELECT count(*) FROM gate_bridge.eval_results WHERE eval_run_id = ?',
			  $eval_run_id);
}

# A two-row batch (eval_run_id = the run's name) that failed once with
# SQLSTATE and went through on its second attempt.
sub retried_once
{
	my ($run, $runner, $sqlstate, $message) = @_;
	is($run->{status}, 0, "$runner: the batch loads after SQLSTATE $sqlstate");
	is_deeply($run->{result}, {rows => 2, attempts => 2}, "$runner: on the second attempt");
	like($run->{stderr},
		 qr/attempt 1 of 5 failed with SQLSTATE $sqlstate \(\Q$message\E\); retrying in \d/,
		 "$runner: it reports the $sqlstate ($message) and the retry");
	is(stored($run->{name}), 2, "$runner: each row is stored once");
}

# [key, severity, actor of the created event] of the agents' incidents
sub created_incidents
{
	my (@agents) = @_;
	return $dbh->selectall_arrayref(
		"SELECT i.key, i.severity, e.actor FROM gate_bridge.incidents i"
		. " JOIN gate_bridge.incident_events e ON e.incident_id = i.id AND e.event = 'created'"
		. " WHERE i.agent = ANY (?) ORDER BY i.key", undef, \@agents);
}

# An open incident for the agent's latency key, opened by the superuser.
sub open_latency_incident
{
	my ($agent) = @_;
	$dbh->do("INSERT INTO gate_bridge.eval_results (agent, eval_run_id, latency_p95_ms)"
			 . " VALUES (?, 'setup', 9000)", undef, $agent);
	return "BUDGET_${agent}_latency";
}

# A key with its decision row and no unresolved incident: the next
# violation creates one, locking that row.
sub resolved_latency_key
{
	my ($agent) = @_;
	my $key = open_latency_incident($agent);
	$dbh->do("SELECT gate_bridge.resolve(id) FROM gate_bridge.incidents"
			 . " WHERE key = ? AND status <> 'resolved'", undef, $key);
	return $key;
}

sub stop_pid
{
	my ($pid, $what) = @_;
	return 1 unless defined $pid && kill(0, $pid);
	kill 'TERM', $pid;
	my $gone = wait_until("$what to stop", 10, sub { waitpid($pid, WNOHANG) == $pid });
	unless ($gone)
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	return $gone;
}

END
{
	if ($$ == $test_pid)
	{
		local $?;
		stop_pid($_, "child $_") for @children;
		stop_pid($pgbouncer_pid, 'pgbouncer');
		undef $dbh;
		drop_scratch_database();
		my $pg = eval { connect_db('postgres') };
		$pg->do("DROP ROLE IF EXISTS $_") for $pg ? @ROLES : ();
	}
}

################################################################ setup

create_scratch_database($DBNAME, "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
my $pg = connect_db('postgres');
$pg->do('SET client_min_messages = warning');
for my $role (@ROLES)
{
	$pg->do("DROP ROLE IF EXISTS $role");
	$pg->do("CREATE ROLE $role LOGIN PASSWORD '$password{$role}'");
}
$pg->disconnect;

$dbh = connect_db($DBNAME);
$dbh->do('CREATE EXTENSION gate_bridge');
# The budgets of the README's Getting started.
$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)"
		 . " VALUES ('inbox.triage', 'quality', 0.90, 0.80, 0.60),"
		 . "        ('*', 'latency', 1500, 3000, 8000)");

# The grants, as README.md's Privileges section has them.
my ($privileges) = slurp("$root/README.md") =~ /^## Privileges\n.*?^```sql\n(.*?)^```/ms;
ok(defined $privileges && $privileges =~ /GRANT SELECT \(id\) ON gate_bridge\.eval_results TO eval_writer/,
   "README: the Privileges section's grants, with SELECT (id) for the writer")
  or BAIL_OUT('no grants found in README.md');
$dbh->do($privileges);
# release 1.1's writer grant: INSERT on every column but id, nothing else
$dbh->do('GRANT USAGE ON SCHEMA gate_bridge TO clients_old_writer');
$dbh->do('GRANT INSERT (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,'
		 . ' invariants_failed, planner_version, triggered_by, context, created_at)'
		 . ' ON gate_bridge.eval_results TO clients_old_writer');
# A deadlock is found by the session whose deadlock_timeout runs out first:
# the runners', 3 s (against this test's 60 s), which leaves this test time
# to close the cycle.
$dbh->do("ALTER ROLE eval_writer IN DATABASE $DBNAME SET deadlock_timeout = '3s'");

################################################################ the runners

# The README's command: the sample batch through psycopg_runner.py.
{
	my $run = run_example('sample', [example('psycopg_runner.py')],
						  input => slurp(example('evals.jsonl')));
	is($run->{status}, 0, 'psycopg_runner: the sample batch loads');
	is_deeply($run->{result}, {rows => 3, attempts => 1},
			  'psycopg_runner: prints {"rows": 3, "attempts": 1}');
	is(stored('nightly-0412'), 3, 'psycopg_runner: the three sample rows are stored');
	is(q1("SELECT count(*) FROM gate_bridge.eval_results WHERE eval_run_id = 'nightly-0412'"
		  . " AND jsonb_typeof(context) = 'object' AND context->>'commit' = '3f2a1c9'"), 3,
	   'psycopg_runner: each context is stored as a jsonb object');
	is_deeply(created_incidents('inbox.triage', 'support.reply'),
		[['BUDGET_inbox.triage_latency', 'sev2', 'eval_writer'],
		 ['BUDGET_inbox.triage_quality', 'sev1', 'eval_writer'],
		 ['INVARIANT_support.reply_cites_source', 'sev2', 'eval_writer']],
		'psycopg_runner: the failing sample rows opened three incidents, in the writer\'s name');
}

for my $runner (qw(psycopg_runner psycopg_async_runner))
{
	my $short = $runner eq 'psycopg_runner' ? 'sync' : 'async';
	my $agent = "clients.$short";
	my $context = {commit => 'a1b2c3', shards => [1, 2], note => "quote \" and \x{e9}"};

	# A plain batch: two clean rows and a violation, nested context.
	my $run = run_example("$short-plain", [example("$runner.py")],
		input => jsonl({agent => $agent, eval_run_id => "$short-plain", quality => 0.99,
						latency_p95_ms => 100, context => $context},
					   {agent => $agent, eval_run_id => "$short-plain", latency_p95_ms => 200,
						invariants_failed => []},
					   {agent => $agent, eval_run_id => "$short-plain", latency_p95_ms => 9000,
						cost_usd => 0.5, context => $context}));
	is($run->{status}, 0, "$runner: a batch loads");
	is_deeply($run->{result}, {rows => 3, attempts => 1}, "$runner: 3 rows, 1 attempt");
	is(stored("$short-plain"), 3, "$runner: the three rows are stored");
	is(q1("SELECT count(*) FROM gate_bridge.eval_results WHERE eval_run_id = ?"
		  . " AND context = ?::jsonb", "$short-plain", $json_text->encode($context)), 2,
	   "$runner: context arrives as the same jsonb value");
	is(q1("SELECT severity FROM gate_bridge.incidents WHERE key = ?", "BUDGET_${agent}_latency"),
	   'sev1', "$runner: the violating row opened a sev1 latency incident");

	# A bad value is an error to report, not to retry.
	$run = run_example("$short-bad", [example("$runner.py")], fails => 1,
		input => jsonl({agent => "$agent.bad", eval_run_id => "$short-bad", latency_p95_ms => 9000},
					   {agent => "$agent.bad", eval_run_id => "$short-bad", quality => 2}));
	isnt($run->{status}, 0, "$runner: a quality of 2 fails the batch");
	like($run->{stderr}, qr/SQLSTATE 23514: .*"eval_results_quality_check"/,
		 "$runner: the error is reported with its SQLSTATE and names the column's check");
	unlike($run->{stderr}, qr/retrying/, "$runner: and is not retried");
	is(stored("$short-bad"), 0, "$runner: nothing of the failed batch is stored");
	is(q1("SELECT count(*) FROM gate_bridge.incidents WHERE agent = ?", "$agent.bad"), 0,
	   "$runner: and its violation opened no incident");

	# 40P01.  The batch creates incidents for two keys whose incidents are
	# resolved as it commits, first A, then B (key order), locking each
	# key's decision row.  This test holds B's; once the runner waits for
	# it (holding A's), this test asks for A's.  The runner's deadlock
	# check fires first and aborts its transaction; this test gets A's,
	# commits, and the runner's second attempt goes through.
	my $key_a = resolved_latency_key("$agent.deadlock.a");
	my $key_b = resolved_latency_key("$agent.deadlock.b");
	my $deadlocks_before = deadlocks();
	my $locker = connect_db($DBNAME);
	$locker->do("SET deadlock_timeout = '60s'");
	$locker->do("SET statement_timeout = '30s'");
	my $lock_row = "SELECT 1 FROM gate_bridge.incident_keys WHERE key = ? FOR UPDATE";
	$locker->begin_work;
	$locker->do($lock_row, undef, $key_b);
	$run = start_example("$short-40P01", [example("$runner.py")],
		env => client_env(PGAPPNAME => "clients_${short}_40P01"),
		input => latency_batch("$short-40P01", "$agent.deadlock.a" => 9000,
							   "$agent.deadlock.b" => 9000));
	ok(wait_until("the runner to wait for B", 20, sub { waits_for_lock("clients_${short}_40P01") }),
	   "$runner: the batch waits for the key's row this test holds");
	$locker->do($lock_row, undef, $key_a);	# closes the cycle; returns once the runner gave way
	$locker->commit;
	$locker->disconnect;
	retried_once(finish_example($run), $runner, '40P01', 'deadlock detected');
	is_deeply([occurrences($key_a), occurrences($key_b)], [1, 1],
			  "$runner: each new incident counts the batch's violation once");
	ok(wait_until('the deadlock in pg_stat_database', 10, sub { deadlocks() > $deadlocks_before }),
	   "$runner: the server counted the deadlock");
	is(deadlocks(), $deadlocks_before + 1, "$runner: exactly one");

	# 40001.  The runner works at REPEATABLE READ; this test creates key
	# C's next incident (C's incidents are resolved) and keeps it
	# uncommitted; the runner's batch, creating too, waits for C's decision
	# row as it commits; this test commits, and the runner, whose snapshot
	# cannot see that change of the row, fails with 40001 and retries: its
	# second attempt folds into this test's incident.  (A violation is
	# decided when its transaction commits: decide_pending() decides this
	# test's at once, holding C's row.)
	my $key_c = resolved_latency_key("$agent.serial");
	$locker = connect_db($DBNAME);
	$locker->begin_work;
	$locker->do("INSERT INTO gate_bridge.eval_results (agent, eval_run_id, latency_p95_ms)"
				. " VALUES (?, 'locker', 9000)", undef, "$agent.serial");
	$locker->do('SELECT gate_bridge.decide_pending()');
	$run = start_example("$short-40001", [example("$runner.py")],
		env => client_env(PGAPPNAME => "clients_${short}_40001",
						  PGOPTIONS => '-c default_transaction_isolation=repeatable\ read'),
		input => latency_batch("$short-40001", "$agent.serial.clean" => 100,
							   "$agent.serial" => 9000));
	ok(wait_until("the runner to wait for C", 20, sub { waits_for_lock("clients_${short}_40001") }),
	   "$runner: the REPEATABLE READ batch waits for the key's row this test changed");
	$locker->commit;
	$locker->disconnect;
	retried_once(finish_example($run), $runner, '40001',
				 'could not serialize access due to concurrent update');
	is(occurrences($key_c), 2, "$runner: the new incident counts this test's row and the batch's, once each");
}

################################################################ the ORM

{
	my $input = jsonl({agent => 'clients.orm', eval_run_id => 'orm', quality => 0.97,
					   latency_p95_ms => 300, context => {suite => 'smoke'}},
					  {agent => 'clients.orm', eval_run_id => 'orm', latency_p95_ms => 9000,
					   invariants_failed => ['no_pii']},
					  {agent => 'clients.orm', eval_run_id => 'orm', success_rate => 0.5});

	my $run = run_example('orm-old-grant', [example('sqlalchemy_orm.py')], input => $input, fails => 1,
		env => client_env(PGUSER => 'clients_old_writer',
						  PGPASSWORD => $password{clients_old_writer}));
	isnt($run->{status}, 0, 'sqlalchemy_orm: fails with the writer grant of 1.1');
	like($run->{stderr}, qr/InsufficientPrivilege\) permission denied for table eval_results/,
		 'sqlalchemy_orm: permission denied, since INSERT ... RETURNING id needs SELECT on id');
	is(stored('orm'), 0, 'sqlalchemy_orm: nothing stored then');

	$run = run_example('orm', [example('sqlalchemy_orm.py')], input => $input);
	is($run->{status}, 0, 'sqlalchemy_orm: works with the README\'s writer grant');
	my $ids = $run->{result}{ids} // [];
	is(scalar(@$ids), 3, 'sqlalchemy_orm: prints three ids');
	is_deeply($dbh->selectall_arrayref(
		"SELECT id, agent, quality, latency_p95_ms, invariants_failed, context->>'suite',"
		. " created_at IS NOT NULL FROM gate_bridge.eval_results WHERE eval_run_id = 'orm' ORDER BY id"),
		[[$ids->[0], 'clients.orm', 0.97, 300, undef, 'smoke', 1],
		 [$ids->[1], 'clients.orm', undef, 9000, ['no_pii'], undef, 1],
		 [$ids->[2], 'clients.orm', undef, undef, undef, undef, 1]],
		'sqlalchemy_orm: the ids are those of the rows stored, each with the server\'s created_at');
	is_deeply(created_incidents('clients.orm'),
		[['BUDGET_clients.orm_latency', 'sev1', 'eval_writer'],
		 ['INVARIANT_clients.orm_no_pii', 'sev2', 'eval_writer']],
		'sqlalchemy_orm: the violating row opened its incidents, in the writer\'s name');

	# Why the model is configured as it is: each other way reads a column
	# the writer may not read.
	$run = run_example('orm-readback', ["$FindBin::Bin/clients/orm_readback.py"],
					   env => client_env(PYTHONPATH => "$root/examples"));
	is_deeply($run->{result}, {'as configured' => 'ok', 'read created_at' => '42501',
							   'eager_defaults' => '42501', 'expire_on_commit' => '42501'},
			  'sqlalchemy_orm: reading created_at, eager_defaults or expire_on_commit would need more than SELECT (id)');
	is(stored('orm-readback'), 2,
	   'sqlalchemy_orm: two rows stored: as configured, and with expire_on_commit, which fails after COMMIT');
}

################################################################ PgBouncer

my $bouncer_dir = "$tmp/pgbouncer";
mkdir $bouncer_dir or die "$bouncer_dir: $!";
my $bouncer_port = do {
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
	  or die "no free port: $!";
	my $p = $s->sockport;
	close $s;
	$p;
};
my $bouncer_log = "$bouncer_dir/pgbouncer.log";
# gb_tx: transaction pooling; gb_session: session pooling; same database.
write_file("$bouncer_dir/pgbouncer.ini", <<"EOF");
[databases]
gb_tx = host=127.0.0.1 port=$ENV{PGPORT} dbname=$DBNAME pool_mode=transaction
gb_session = host=127.0.0.1 port=$ENV{PGPORT} dbname=$DBNAME pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $bouncer_dir/userlist.txt
default_pool_size = 4
logfile = $bouncer_log
EOF
write_file("$bouncer_dir/userlist.txt",
		   join('', map { qq{"$_" "$password{$_}"\n} } qw(eval_writer dashboard)));
my @as_postgres;
if ($> == 0)
{
	# PgBouncer refuses to run as root
	my (undef, undef, $uid, $gid) = getpwnam('postgres') or die "no user postgres\n";
	chown $uid, $gid, $tmp, $bouncer_dir, glob("$bouncer_dir/*");
	@as_postgres = ('-u', 'postgres');
}
$pgbouncer_pid = fork // die "fork: $!";
if ($pgbouncer_pid == 0)
{
	open STDOUT, '>>', "$bouncer_dir/pgbouncer.out";
	open STDERR, '>&', \*STDOUT;
	exec('pgbouncer', @as_postgres, "$bouncer_dir/pgbouncer.ini") or _exit(127);
}
ok(wait_until('pgbouncer to listen', 10, sub {
	IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $bouncer_port) ? 1 : 0 }),
   "pgbouncer: listens on 127.0.0.1:$bouncer_port")
  or diag(slurp("$bouncer_dir/pgbouncer.out") . slurp($bouncer_log));
like(`pgbouncer --version`, qr/^PgBouncer 1\.18\./, 'pgbouncer: version 1.18');

my %tx_pool = (PGPORT => $bouncer_port, PGDATABASE => 'gb_tx');

# Prepared statements: first, while the pool has no server connection yet.
{
	my $run = run_example('prepared-default', ["$FindBin::Bin/clients/prepared_statements.py", 'default'],
						  env => client_env(%tx_pool));
	is($run->{status}, 0, 'pgbouncer: the prepared-statement probe ran');
	is($run->{result}{error}{sqlstate}, '26000',
	   'pgbouncer, transaction mode: psycopg\'s defaults fail with 26000 once the connection moves');
	like($run->{result}{error}{message}, qr/^prepared statement "_pg3_\d+" does not exist$/,
		 'pgbouncer: "prepared statement _pg3_N does not exist"');
	is($run->{result}{error}{at}, 6, 'pgbouncer: at the first execution on another server connection');
	is(stored('prepared-default'), 6, 'pgbouncer: the INSERTs before that were stored');

	$run = run_example('prepared-none', ["$FindBin::Bin/clients/prepared_statements.py", 'none'],
					   env => client_env(%tx_pool));
	is_deeply($run->{result}, {stored => 8, error => undef},
			  'pgbouncer, transaction mode: with prepare_threshold=None every INSERT succeeds');
	is(stored('prepared-none'), 8, 'pgbouncer: all eight rows are stored');
}

# Both runners through transaction pooling.
for my $runner (qw(psycopg_runner psycopg_async_runner))
{
	my $agent = "clients.bouncer.$runner";
	my $run = run_example("bouncer-$runner", [example("$runner.py")], env => client_env(%tx_pool),
		input => jsonl({agent => $agent, eval_run_id => "bouncer-$runner", latency_p95_ms => 100},
					   {agent => $agent, eval_run_id => "bouncer-$runner", latency_p95_ms => 9000,
						context => {via => 'pgbouncer'}}));
	is_deeply($run->{result}, {rows => 2, attempts => 1},
			  "pgbouncer, transaction mode: $runner loads its batch");
	is(stored("bouncer-$runner"), 2, "pgbouncer: $runner\'s rows are stored");
	is(q1('SELECT count(*) FROM gate_bridge.incidents WHERE key = ?', "BUDGET_${agent}_latency"), 1,
	   "pgbouncer: $runner\'s violation opened an incident");
}

# LISTEN: directly, through session pooling, through transaction pooling.
{
	my %listener;
	for my $via (['direct', $ENV{PGPORT}, $DBNAME], ['session', $bouncer_port, 'gb_session'],
				 ['transaction', $bouncer_port, 'gb_tx'])
	{
		my ($name, $port, $db) = @$via;
		$listener{$name} = DBI->connect("dbi:Pg:host=127.0.0.1;port=$port;dbname=$db",
			'dashboard', $password{dashboard}, {RaiseError => 1, PrintError => 0, AutoCommit => 1});
		ok(eval { $listener{$name}->do('LISTEN incident_created'); 1 },
		   "LISTEN is accepted ($name)");
	}
	my %got;
	my $poll = sub {
		for my $name (keys %listener)
		{
			next if $got{$name};
			my $n = $listener{$name}->pg_notifies;	# reads what has arrived, never waits
			$got{$name} = $n->[2] if $n;
		}
	};
	my $key = open_latency_incident('clients.listen');
	ok(wait_until('the direct and session listeners', 10, sub {
		$poll->(); $got{direct} && $got{session} }),
	   'LISTEN: the direct and the session-pooled listener are notified');
	like($got{$_} // '', qr/"key":"\Q$key\E"/, "LISTEN ($_): the payload names the new incident")
	  for qw(direct session);
	my $deadline = time + 3;
	while (time < $deadline && !$got{transaction})
	{
		$poll->();
		sleep 0.05;
	}
	ok(!$got{transaction}, 'LISTEN through transaction pooling: nothing arrives within 3 s');
	$listener{transaction}->do('SELECT 1');
	$poll->();
	ok(!$got{transaction}, 'LISTEN through transaction pooling: nor after another query');
	like(slurp($bouncer_log), qr/got packet 'A' from server when not linked/,
		 'pgbouncer: logs that it dropped the notification (packet A) of a server connection no client holds');
	$_->disconnect for values %listener;
}

ok(stop_pid($pgbouncer_pid, 'pgbouncer'), 'pgbouncer: stops on SIGTERM');
undef $pgbouncer_pid;

################################################################ two-phase commit

# The shared test cluster has max_prepared_transactions = 0: this part runs
# on a cluster of its own, set up as above (roles, README grants, budgets).
# From here on the helpers (q1, stored, occurrences) read that cluster.
my $twophase = GBCluster->new('clients_2pc', settings => {max_prepared_transactions => 5});
$twophase->start;
$twophase->create_database($DBNAME, extension => 'gate_bridge');
$dbh->disconnect;
$dbh = $twophase->connect($DBNAME);
$dbh->do("CREATE ROLE $_ LOGIN") for qw(eval_writer oncall dashboard);
$dbh->do($privileges);
$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)"
		 . " VALUES ('*', 'latency', 1500, 3000, 8000)");
is(q1('SHOW max_prepared_transactions'), 5, '2PC: a cluster with max_prepared_transactions = 5');

{
	my $writer = DBI->connect("dbi:Pg:host=" . $twophase->host . ";port=" . $twophase->port
							  . ";dbname=$DBNAME", 'eval_writer', undef,
							  {RaiseError => 0, PrintError => 0, AutoCommit => 1});
	my $insert = "INSERT INTO gate_bridge.eval_results (agent, eval_run_id, latency_p95_ms)"
	  . " VALUES (?, ?, ?)";
	my $prepared = sub {
		q1('SELECT count(*) FROM pg_prepared_xacts WHERE gid = ?', $_[0]) };

	# A row that creates an incident: PREPARE refuses, everything is rolled back.
	$writer->do('BEGIN');
	ok($writer->do($insert, undef, 'clients.2pc', '2pc-incident', 9000),
	   '2PC: a violating row is accepted inside the transaction');
	ok(!$writer->do("PREPARE TRANSACTION 'gb_clients_incident'"), '2PC: PREPARE TRANSACTION fails');
	is($writer->state, '0A000', '2PC: with SQLSTATE 0A000');
	like($writer->errstr, qr/cannot PREPARE a transaction that recorded incident events/,
		 '2PC: because the new incident\'s event gets its position at commit');
	is($prepared->('gb_clients_incident'), 0, '2PC: no prepared transaction is left');
	is(stored('2pc-incident'), 0, '2PC: the eval row is not stored');
	is(q1("SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'clients.2pc'"), 0,
	   '2PC: no incident was opened');
	ok($writer->do('SELECT 1'), '2PC: the session is usable again');

	# A clean row prepares and commits.
	$writer->do('BEGIN');
	$writer->do($insert, undef, 'clients.2pc', '2pc-clean', 100);
	ok($writer->do("PREPARE TRANSACTION 'gb_clients_clean'"), '2PC: a clean row prepares')
	  or diag($writer->errstr);
	is($prepared->('gb_clients_clean'), 1, '2PC: it is in pg_prepared_xacts');
	is(stored('2pc-clean'), 0, '2PC: not visible before COMMIT PREPARED');
	ok($writer->do("COMMIT PREPARED 'gb_clients_clean'"), '2PC: the writer commits it')
	  or diag($writer->errstr);
	is(stored('2pc-clean'), 1, '2PC: and the row is stored');

	# A violation folded into an open incident notifies nothing: it
	# prepares, and its count arrives with COMMIT PREPARED (and not with
	# ROLLBACK PREPARED).
	my $key = open_latency_incident('clients.2pc.fold');
	for my $end ('ROLLBACK', 'COMMIT')
	{
		my $gid = 'gb_clients_fold_' . lc $end;
		$writer->do('BEGIN');
		$writer->do($insert, undef, 'clients.2pc.fold', $gid, 9000);
		ok($writer->do("PREPARE TRANSACTION '$gid'"), "2PC: a folded violation prepares ($end)")
		  or diag($writer->errstr);
		is(occurrences($key), 1, "2PC: the prepared fold is not visible yet ($end)");
		ok($writer->do("$end PREPARED '$gid'"), "2PC: $end PREPARED") or diag($writer->errstr);
	}
	is(occurrences($key), 2, '2PC: the incident counts the committed fold only');
	is_deeply([stored('gb_clients_fold_rollback'), stored('gb_clients_fold_commit')], [0, 1],
			  '2PC: only the committed eval row is stored');
	$writer->disconnect;
}
$dbh->disconnect;
$twophase->stop;

done_testing();
