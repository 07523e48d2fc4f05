#!/usr/bin/perl
#
# The stream listeners of examples/ (psycopg_listener.py, node_listener.js)
# under fire: each is run as the README's reader against a throw-away
# database while writers make events and this test keeps cutting its
# connection, and what it printed must be exactly the stream.
#
#   pg_virtualenv -t -v 15 prove test/t/listeners.pl
#
# For each listener in turn:
# - It starts from a position whose incident was deleted since (the stream
#   no longer holds it, as after a failover to a standby that was behind):
#   it must say so (SQLSTATE SR001) and resume from events_resume_point().
# - Four writer processes insert violating eval rows for 60 agents, one to
#   three rows a transaction, and ack and resolve incidents (so that keys
#   open new incidents); about 10 % of their transactions roll back, some
#   of them holding an ack or a resolve, and every row of the agent
#   lst.ghost is written in one of those.  (Violations are decided as their
#   transaction commits: the ones that roll back decide theirs beforehand
#   with decide_pending(), so that they do hold incidents and events.)
# - Meanwhile this test ends the listener's backend with
#   pg_terminate_backend() about every 1.3 s, and half way stops the
#   listener with SIGTERM and starts it again on the same state file.
# - A new event then reaches it within a second, long before the 5 s it
#   waits between reads without a notification.
# - Then: the lines of both runs, one per event, are exactly the events of
#   the database after the resume point, in position order, each once
#   (position, id, incident, kind, actor, detail); every incident created
#   meanwhile has its "created" line once; no event of a rolled-back
#   transaction and no ghost incident appears; the listener reconnected once
#   per termination and its summary lines add up.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own database and role.  Needs
# python3-psycopg, Node.js and node-postgres in examples/node_modules
# (tools/common.sh installs them).  Takes about 35 s.
#
# test/t/listeners.pl

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use FindBin;
use JSON::PP;
use POSIX qw(_exit WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database drop_scratch_database);
use GBUtil qw(slurp wait_until);

die "run this test inside pg_virtualenv (PGPORT is not set)\n"
  unless defined $ENV{PGPORT};

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = tempdir('gb_listeners_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $DBNAME = 'gb_tap_listeners';
my $READER = 'gb_listeners_dashboard';	# the README's dashboard role
my $PASSWORD = "pw_reader_$$";
my $PYTHON = $ENV{GB_PYTHON} // '/usr/bin/python3';
my $NODE = $ENV{GB_NODE} // 'node';
my $WRITERS = 4;
my $AGENTS = 60;
my $GHOST = 'lst.ghost';
my $STORM_SECONDS = 14;
my $TERMINATE_EVERY = 1.3;			# seconds
my $ROLLBACK_SHARE = 0.10;
my $LISTENER_TIMEOUT = 90;			# seconds, per listener run
my $json = JSON::PP->new->utf8->canonical;
my $test_pid = $$;

my @LISTENERS = (
	{name => 'psycopg_listener', command => [$PYTHON, "$root/examples/psycopg_listener.py"]},
	{name => 'node_listener', command => [$NODE, "$root/examples/node_listener.js"]},
);

my @children;

################################################################ helpers

my $dbh;

sub q1
{
	my ($sql, @bind) = @_;
	return scalar $dbh->selectrow_array($sql, undef, @bind);
}

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "$path: $!";
	print $fh $text;
	close $fh or die "$path: $!";
}

sub stop_pid
{
	my ($pid) = @_;
	return unless defined $pid && kill(0, $pid);
	kill 'TERM', $pid;
	unless (wait_until("process $pid to stop", 10, sub { waitpid($pid, WNOHANG) == $pid }))
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
}

# start_listener LISTENER, RUN, STATE_FILE: the listener as the reader,
# on loopback, with an application_name this test can find it by
sub start_listener
{
	my ($l, $run, $state) = @_;
	my %r = (name => "$l->{name} run $run", out => "$tmp/$l->{name}.$run.out",
			 err => "$tmp/$l->{name}.$run.err");
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		%ENV = (%ENV, PGHOST => '127.0.0.1', PGDATABASE => $DBNAME, PGUSER => $READER,
				PGPASSWORD => $PASSWORD, PGAPPNAME => "gb_$l->{name}",
				PYTHONDONTWRITEBYTECODE => 1);
		delete @ENV{qw(PGOPTIONS DATABASE_URL)};
		open STDIN, '<', '/dev/null' or _exit(127);
		open STDOUT, '>', $r{out} or _exit(127);
		open STDERR, '>', $r{err} or _exit(127);
		exec('timeout', '-k', '5', $LISTENER_TIMEOUT, @{$l->{command}}, $state) or _exit(127);
	}
	push @children, $pid;
	$r{pid} = $pid;
	return \%r;
}

# stop_listener RUN: SIGTERM, and what it printed: its event lines and its
# summary (the last line)
sub stop_listener
{
	my ($r) = @_;
	kill 'TERM', $r->{pid};
	my $done = wait_until("$r->{name} to stop", 20, sub { waitpid($r->{pid}, WNOHANG) == $r->{pid} });
	$r->{status} = $done ? $? >> 8 : -1;
	stop_pid($r->{pid}) unless $done;
	@children = grep { $_ != $r->{pid} } @children;
	$r->{stderr} = slurp($r->{err});
	my @lines = grep { /\S/ } split /\n/, slurp($r->{out});
	my $last = pop @lines;
	$r->{summary} = defined $last ? eval { $json->decode($last) } : undef;
	$r->{events} = [map { my $e = eval { $json->decode($_) }; $e // {bad_line => $_} } @lines];
	unless ($r->{status} == 0 && ref $r->{summary} eq 'HASH' && exists $r->{summary}{events})
	{
		diag("$r->{name}: exit status $r->{status}, last line: " . ($last // '(none)'));
		diag("$r->{name} stderr: $r->{stderr}");
	}
	return $r;
}

# the listener's backend, connected and waiting
sub listener_connected
{
	my ($l) = @_;
	return q1("SELECT count(*) FROM pg_stat_activity WHERE application_name = ?"
			  . " AND state = 'idle'", "gb_$l->{name}") > 0;
}

sub terminate_listener
{
	my ($l) = @_;
	return q1("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done"
			  . " FROM pg_stat_activity WHERE application_name = ?) t WHERE done",
			  "gb_$l->{name}");
}

sub state_position
{
	my ($path) = @_;
	my ($n) = slurp($path) =~ /^(\d+)$/m;
	return $n;
}

################################################################ writers

# One writer process: until the deadline, transactions of violating rows
# (about 10 % rolled back) and acks and resolves.  Writes what it did to
# OUT as JSON: the ids of the events its rolled-back transactions had
# recorded, and the SQLSTATEs of the errors it met.
sub writer
{
	my ($n, $deadline, $out) = @_;
	my $w = connect_db($DBNAME);
	my %r = (committed => 0, rolled_back => 0, ghost_rows => 0, operations => 0,
			 rolled_back_event_ids => [], errors => {});
	my $pick = $w->prepare("SELECT id, status FROM gate_bridge.incidents"
						   . " WHERE status <> 'resolved' AND agent LIKE 'lst.k%'"
						   . " ORDER BY random() LIMIT 1");
	my $operate = sub {
		$pick->execute;
		my ($id, $status) = $pick->fetchrow_array;
		$pick->finish;
		return unless defined $id;
		if ($status eq 'open' && rand() < 0.5)
		{
			$w->do('SELECT gate_bridge.ack(?)', undef, $id);
		}
		else
		{
			$w->do('SELECT gate_bridge.resolve(?, ?, ?)', undef, $id, "writer $n", 'fixed');
		}
	};
	srand($$ ^ int(time * 1000));

	while (time < $deadline)
	{
		my $rollback = rand() < $ROLLBACK_SHARE;
		my $ok = eval {
			if (!$rollback && rand() < 0.3)
			{
				# an operator's ack or resolve, on its own
				$operate->();
				$r{operations}++;
				return 1;
			}
			# agents in order, so that writers take the keys' rows in one order
			my %agents = map { (sprintf('lst.k%02d', int(rand($AGENTS))) => 1) } 1 .. 1 + int(rand(3));
			$agents{$GHOST} = 1 if $rollback;
			my @agents = sort keys %agents;
			$w->begin_work;
			$w->do('INSERT INTO gate_bridge.eval_results (agent, eval_run_id, latency_p95_ms) VALUES '
				   . join(', ', ('(?, ?, 9000)') x @agents), undef,
				   map { ($_, $rollback ? 'rolled back' : "writer $n") } @agents);
			if ($rollback)
			{
				# decided at commit otherwise: create the incidents now
				$w->do('SELECT gate_bridge.decide_pending()');
				$operate->() if rand() < 0.3;
				# this transaction's own events: nobody else's uncommitted
				# rows are visible, and every committed event has a position
				push @{$r{rolled_back_event_ids}},
				  @{$w->selectcol_arrayref('SELECT id FROM gate_bridge.incident_events'
										   . ' WHERE position IS NULL')};
				$r{ghost_rows}++;
				$w->rollback;
				$r{rolled_back}++;
			}
			else
			{
				$w->commit;
				$r{committed}++;
			}
			1;
		};
		unless ($ok)
		{
			my $state = $w->state || 'none';
			$r{errors}{$state}++;
			eval { $w->rollback } unless $w->{AutoCommit};
		}
	}
	write_file($out, $json->encode(\%r));
	$w->disconnect;
}

END
{
	if ($$ == $test_pid)
	{
		local $?;
		stop_pid($_) for @children;
		undef $dbh;
		drop_scratch_database();
		my $pg = eval { connect_db('postgres') };
		$pg->do("DROP ROLE IF EXISTS $READER") if $pg;
	}
}

################################################################ setup

ok(-e "$root/examples/node_modules/pg/package.json",
   'node-postgres is installed in examples/node_modules (npm ci in examples/)')
  or BAIL_OUT('node-postgres is missing: run "npm ci" in examples/ (tools/common.sh does)');

create_scratch_database($DBNAME, "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
{
	my $pg = connect_db('postgres');
	$pg->do('SET client_min_messages = warning');
	$pg->do("DROP ROLE IF EXISTS $READER");
	$pg->do("CREATE ROLE $READER LOGIN PASSWORD '$PASSWORD'");
	# keys re-fire often here: the default of 3 an hour would stop them
	$pg->do("ALTER DATABASE $DBNAME SET gate_bridge.rate_limit = 100000");
	$pg->disconnect;
}
$dbh = connect_db($DBNAME);
$dbh->do('CREATE EXTENSION gate_bridge');
$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)"
		 . " VALUES ('lst.*', 'latency', 1500, 3000, 8000)");

# The reader's grants as the README's Privileges section has them.
{
	my ($privileges) = slurp("$root/README.md") =~ /^## Privileges\n.*?^```sql\n(.*?)^```/ms;
	my ($readers) = ($privileges // '') =~ /^-- Readers:[^\n]*\n(?:--[^\n]*\n)*(.*?)(?:^\s*$|\z)/ms;
	ok(defined $readers && $readers =~ /GRANT SELECT ON .*gate_bridge\.incident_events/s
	   && $readers =~ /GRANT EXECUTE ON FUNCTION gate_bridge\.events_after\(bigint, integer\)/,
	   "README: the Privileges section's grant for dashboards covers the event stream")
	  or BAIL_OUT('no reader grants found in README.md');
	$readers =~ s/\bdashboard\b/$READER/g;
	$dbh->do($readers);
}

################################################################ the storms

for my $l (@LISTENERS)
{
	my $name = $l->{name};
	my $state = "$tmp/$name.position";

	# A position the stream no longer holds: its incident is deleted.
	$dbh->do("INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES (?, 9000)",
			 undef, "lst.rewind.$name");
	my ($gone_incident, $gone) = $dbh->selectrow_array(
		"SELECT i.id, e.position FROM gate_bridge.incidents i"
		. " JOIN gate_bridge.incident_events e ON e.incident_id = i.id AND e.event = 'created'"
		. " WHERE i.agent = ?", undef, "lst.rewind.$name");
	$dbh->do('DELETE FROM gate_bridge.incidents WHERE id = ?', undef, $gone_incident);
	my $resume = q1('SELECT gate_bridge.events_resume_point(?)', $gone);
	write_file($state, "$gone\n");

	my @runs = (start_listener($l, 1, $state));
	ok(wait_until("$name to connect", 20, sub { listener_connected($l) }), "$name: connects");
	ok(wait_until("$name to resume", 10, sub { (state_position($state) // -1) == $resume }),
	   "$name: moves its position back to the resume point");

	# the storm
	my $deadline = time + $STORM_SECONDS;
	my %writers;
	for my $n (1 .. $WRITERS)
	{
		my $out = "$tmp/$name.writer$n.json";
		my $pid = fork // die "fork: $!";
		if ($pid == 0)
		{
			my $ok = eval { writer($n, $deadline, $out); 1 };
			print STDERR "writer $n: $@" unless $ok;
			_exit($ok ? 0 : 1);
		}
		push @children, $pid;
		$writers{$pid} = $out;
	}
	my $terminated = 0;
	my $restarted = 0;
	my $next = time + $TERMINATE_EVERY;
	while (time < $deadline)
	{
		sleep 0.05;
		next if time < $next;
		$next += $TERMINATE_EVERY;
		if (!$restarted && time > $deadline - $STORM_SECONDS / 2)
		{
			# half way: a restart of the program, on the same state file
			wait_until("$name to reconnect", 10, sub { listener_connected($l) });
			stop_listener($runs[-1]);
			push @runs, start_listener($l, 2, $state);
			$restarted = 1;
			next;
		}
		$terminated += terminate_listener($l);
	}
	my %writer_status;
	for my $pid (keys %writers)
	{
		my $done = wait_until("writer $pid", 30, sub { waitpid($pid, WNOHANG) == $pid });
		$writer_status{$pid} = $done ? $? >> 8 : -1;
		stop_pid($pid) unless $done;
		@children = grep { $_ != $pid } @children;
	}
	is_deeply([values %writer_status], [(0) x $WRITERS], "$name: the $WRITERS writers finished");
	my %w = (committed => 0, rolled_back => 0, ghost_rows => 0, operations => 0);
	my (@rolled_back_ids, %errors);
	for my $out (values %writers)
	{
		my $r = eval { $json->decode(slurp($out)) } // {};
		$w{$_} += $r->{$_} // 0 for keys %w;
		push @rolled_back_ids, @{$r->{rolled_back_event_ids} // []};
		$errors{$_} += $r->{errors}{$_} for keys %{$r->{errors} // {}};
	}
	# 55000: two operators raced for one incident; 40P01: a rolled-back
	# transaction's ack met a writer's row in the other order
	is_deeply([grep { !/^(55000|40P01)$/ } sort keys %errors], [],
			  "$name: the writers met no error but lost ack/resolve races and deadlocks")
	  or diag(explain(\%errors));

	# caught up, connected, then stopped
	my $head = q1('SELECT gate_bridge.events_head()');
	ok(wait_until("$name to reach position $head", 30,
				  sub { (state_position($state) // -1) == $head && listener_connected($l) }),
	   "$name: catches up with the stream's head");
	# NOTIFY wakes it: each new event is printed well within the 5 s it
	# otherwise waits between reads
	my @latency;
	for my $k (1 .. 3)
	{
		my $t0 = time;
		$dbh->do("INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms) VALUES (?, 9000)",
				 undef, "lst.wake.$name.$k");
		my $target = q1('SELECT gate_bridge.events_head()');
		wait_until("$name to print position $target", 5,
				   sub { (state_position($state) // -1) >= $target });
		push @latency, time - $t0;
	}
	ok(!grep({ $_ >= 1 } @latency), "$name: a notification wakes it (within "
	   . join(', ', map { sprintf('%.2f', $_) } @latency) . ' s)');
	$head = q1('SELECT gate_bridge.events_head()');
	stop_listener($runs[-1]);

	is_deeply([map { $_->{status} } @runs], [0, 0], "$name: both runs exit 0 on SIGTERM");
	like($runs[0]{stderr},
		 qr/^$name: position $gone is not in the stream \(SQLSTATE SR001: the history was rewound\); resuming after position $resume$/m,
		 "$name: says that position $gone is gone and where it resumes");
	is_deeply([map { $_->{summary}{rewinds} } @runs], [1, 0], "$name: one rewind, in the first run");

	# What it printed, against the database.
	my @printed = map { @{$_->{events}} } @runs;
	my $rows = $dbh->selectall_arrayref(
		"SELECT position, id, incident_id, event, actor, detail::text FROM gate_bridge.incident_events"
		. " WHERE position > ? ORDER BY position", undef, $resume);
	my @expected = map { [@$_[0 .. 4], $json->decode($_->[5])] } @$rows;
	my @got = map { [@$_{qw(position id incident_id event actor detail)}] } @printed;
	ok(scalar(@expected) > 100, "$name: the storm made events (" . scalar(@expected) . ')');
	is(scalar(@got), scalar(@expected), "$name: as many lines as events");
	my @order = map { $_->{position} // 0 } @printed;
	ok(!grep({ $order[$_] <= $order[$_ - 1] } 1 .. $#order) && ($order[0] // 0) > $resume,
	   "$name: positions rise strictly, from after the resume point");
	is_deeply(\@got, \@expected,
			  "$name: every event after the resume point, once, in position order, as stored");

	my %created;
	$created{$_->{incident_id}}++ for grep { ($_->{event} // '') eq 'created' } @printed;
	my $incidents = $dbh->selectcol_arrayref(
		"SELECT i.id FROM gate_bridge.incidents i"
		. " JOIN gate_bridge.incident_events e ON e.incident_id = i.id AND e.event = 'created'"
		. " WHERE e.position > ? ORDER BY i.id", undef, $resume);
	ok(@$incidents > 10, "$name: the storm created incidents (" . scalar(@$incidents) . ')');
	is_deeply([grep { ($created{$_} // 0) != 1 } @$incidents], [],
			  "$name: every incident created meanwhile has its created line exactly once");
	is(scalar(keys %created), scalar(@$incidents), "$name: and no other created line");

	ok($w{rolled_back} > 0 && @rolled_back_ids > 0 && $w{ghost_rows} > 0,
	   "$name: rolled-back transactions recorded events (" . scalar(@rolled_back_ids) . ')');
	my %printed_id = map { ($_->{id} // 0) => 1 } @printed;
	is_deeply([grep { $printed_id{$_} } @rolled_back_ids], [],
			  "$name: no event of a rolled-back transaction is printed");
	is(q1('SELECT count(*) FROM gate_bridge.incidents WHERE agent = ?', $GHOST), 0,
	   "$name: the ghost agent has no incident");
	is_deeply([grep { (($_->{detail} // {})->{agent} // '') eq $GHOST } @printed], [],
			  "$name: and none is printed");

	# The connection cuts, and the summaries.
	ok($terminated >= 5, "$name: its backend was terminated $terminated times");
	my $reconnects = 0;
	$reconnects += $_->{summary}{reconnects} // 0 for @runs;
	is($reconnects, $terminated, "$name: it reconnected once per termination");
	my $reported = () = join('', map { $_->{stderr} } @runs) =~ /; reconnecting in \d/g;
	is($reported, $terminated, "$name: and said so on stderr each time");
	is_deeply([map { $_->{summary}{events} } @runs], [map { scalar @{$_->{events}} } @runs],
			  "$name: each summary counts the lines printed");
	is($runs[-1]{summary}{position}, $head, "$name: the last summary ends at the head");

	my %kinds;
	$kinds{$_->{event} // '?'}++ for @printed;
	note(sprintf("%s: %d events printed (%s) for %d incidents; %d terminations, %d reconnects;"
				 . " writers: %d transactions committed, %d rolled back (%d events of theirs"
				 . " not printed), %d acks/resolves; errors %s",
				 $name, scalar(@printed), join(', ', map { "$kinds{$_} $_" } sort keys %kinds),
				 scalar(@$incidents), $terminated, $reconnects, $w{committed},
				 $w{rolled_back}, scalar(@rolled_back_ids), $w{operations},
				 $json->encode(\%errors)));
}

done_testing();
