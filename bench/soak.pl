#!/usr/bin/perl
#
# Storm soak: many concurrent writers, an operator and a listener against
# one database for a fixed time, then a full audit of what the database
# says happened against what the clients know they committed.
#
#   perl bench/soak.pl [SECONDS]        (normally through bench/soak.sh)
#
# Runs inside a cluster where the PG* variables reach a superuser (as
# pg_virtualenv sets them).  It creates the database gb_soak and the roles
# regress_soak_writer and regress_soak_operator, and drops all three at the
# end.
#
# The load, for SECONDS (default 60):
#	- GB_SOAK_CLIENTS (16) writers, each its own process and connection, as
#	  a role holding only INSERT on gate_bridge.eval_results, insert rows for
#	  25 agents that have a quality floor and a latency ceiling (the glob
#	  budget "soak.*"): 50 incident keys.  A row is clean, violates one
#	  budget or violates both, so each committed row adds a known number of
#	  violations to known keys.  The shapes: single-row INSERTs, multi-row
#	  INSERTs, COPY, transactions of several statements that commit or roll
#	  back, savepoints rolled back, and "poison" statements whose last row
#	  fails inside the trigger after the earlier rows created or folded
#	  incidents (the statement must leave no trace).  The rows of one
#	  transaction are written in one global key order, so that no two
#	  writers can deadlock: any error other than the poison's is a failure.
#	- one operator, with two connections, acks and resolves unresolved
#	  incidents at random (GB_SOAK_OP_PAUSE_MS between moves), and races
#	  itself: the same incident acked or resolved from both connections at
#	  once.  Every move that succeeds is recorded.
#	- one listener LISTENs on incident_created and records every
#	  notification in the order received; between wake-ups it also reads
#	  the event stream with gate_bridge.events_after(), as a consumer would.
# gate_bridge.rate_limit is 3 and gate_bridge.rate_window GB_SOAK_WINDOW
# seconds (10, or a quarter of the run for runs under 40 s, at least 2), set
# with ALTER DATABASE, so that the limit bites many times.
#
# The audit (TAP-like "ok"/"not ok" lines, exit status 1 on any failure):
#	1 never two unresolved incidents for one key: per key, each incident
#	  was resolved before the next one was first seen; at most one is
#	  unresolved now; the unique partial index is valid, and amcheck finds
#	  every index of the schema consistent with its table;
#	2 never more than rate_limit incidents created for a key in any window
#	  of rate_window (sliding over each key's first_seen_at);
#	3 every incident has exactly one "created" timeline row (at its
#	  first_seen_at, with the payload's data as detail); "acked" and
#	  "resolved" rows match acked_at/acked_by and resolved_at/resolved_by,
#	  and match exactly the moves the operator saw succeed; every race had
#	  exactly the winners the lifecycle allows;
#	4 every incident was notified exactly once and nothing else was: each
#	  payload parses as JSON, is under 8000 bytes, and matches its incident;
#	  per key, notifications arrive in creation order; the stream consumer
#	  read every event exactly once, in increasing position order;
#	5 the eval rows in the table are exactly the rows the writers
#	  committed (by count and by eval_run_id: none lost, none from a rolled
#	  back transaction, savepoint or failed statement);
#	6 per key: occurrences of its incidents + its rate-limited count = the
#	  violations the writers committed = the violations the stored rows
#	  show; the created counter equals its incidents; gate_bridge.stats
#	  agrees;
#	and the writers got no unexpected error, and the storm exercised every
#	path (creation, deduplication, rate limiting, ack, resolve, races).
#
# Environment: GB_SOAK_SECS (if no argument), GB_SOAK_CLIENTS,
# GB_SOAK_WINDOW, GB_SOAK_SEED (the writers' and operator's random choices;
# the interleaving still varies), GB_SOAK_OP_PAUSE_MS (10), GB_SOAK_KEEP=1
# (keep the work directory with the notifications, the bookkeeping and a
# copy of the server log, and the database), and
# GB_SOAK_SABOTAGE=NAME,... to damage the outcome before the audit and see
# it fail (see %SABOTAGE).
#
# bench/soak.pl

use strict;
use warnings;

use DBI;
use DBD::Pg qw(:async);
use File::Copy ();
use File::Temp qw(tempdir);
use IO::Handle;
use IO::Select;
use JSON::PP;
use List::Util qw(max min sum0);
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);

$| = 1;

sub setting
{
	my ($name, $default) = @_;
	my $v = $ENV{$name};

	return $default if !defined $v || $v eq '';
	die "$name must be a positive integer, not \"$v\"\n" unless $v =~ /^[1-9][0-9]*$/;
	return $v;
}

my $SECS = @ARGV ? $ARGV[0] : setting('GB_SOAK_SECS', 60);
die "usage: soak.pl [SECONDS]\n" unless $SECS =~ /^[1-9][0-9]*$/;
my $CLIENTS = setting('GB_SOAK_CLIENTS', 16);
my $WINDOW = setting('GB_SOAK_WINDOW', $SECS >= 40 ? 10 : max(2, int($SECS / 4)));
my $SEED = setting('GB_SOAK_SEED', 1 + int(rand(2**31 - 2)));
my $OP_PAUSE = (defined $ENV{GB_SOAK_OP_PAUSE_MS} && $ENV{GB_SOAK_OP_PAUSE_MS} =~ /^[0-9]+$/)
  ? $ENV{GB_SOAK_OP_PAUSE_MS} : 10;
my $RATE_LIMIT = 3;
my $N_AGENTS = 25;
my $DB = 'gb_soak';
my $WRITER = 'regress_soak_writer';
my $OPERATOR = 'regress_soak_operator';
my $CHANNEL = 'incident_created';
my $EVENTS_CHANNEL = 'incident_events';

# The lifecycle in the storm.  Agents whose own budgets (same tiers as the
# glob) resolve an incident after RESOLVE_AFTER passing rows in a row; one
# agent whose budgets resolve after RESOLVE_QUIET seconds without a
# violation, and that the writers leave alone in the second half of the run;
# the odd-numbered writers reopen an incident resolved less than
# REOPEN_WINDOW seconds ago; the operator snoozes for SNOOZE_MS, ticks every
# TICK_MS, and holds silences: one per agent of @SILENCED from a quarter to
# 60 % of the run (ended with unsilence()), and one on the latency of
# $SILENCED_SHORT that runs out by itself (ended by tick()).  Flapping is
# off (gate_bridge.flap_threshold = 0): with an operator resolving every few
# milliseconds every key would flap at once and hold everything back.
my $RESOLVE_AFTER = 5;
my @RECOVERING = map { sprintf('soak.a%02d', $_) } 1 .. 5;
my $QUIET_AGENT = sprintf('soak.a%02d', $N_AGENTS);
my $RESOLVE_QUIET = 1;
my $REOPEN_WINDOW = 2;
my @SNOOZE_MS = (1000, 2000);
my $TICK_MS = 200;
my @SILENCED = ('soak.a03', 'soak.a08', 'soak.a13');
my $SILENCED_SHORT = 'soak.a18';
# a decision that read the silences just before one began or ended may
# still be committing: events this close to either edge are not judged
my $SILENCE_MARGIN = 0.05;

# Budgets (glob "soak.*"): quality is a floor, latency a ceiling.
my @Q_VIOLATING = (0.7, 0.5, 0.2);			# warning, error, critical
my @Q_CLEAN = (0.85, 0.9, 0.99, 1, undef);	# NULL: not checked
my @L_VIOLATING = (1500, 3000, 5000);
my @L_CLEAN = (120, 450, 900, 1000, undef); # 1000 is at the ceiling: clean
my $POISON_AGENT = 'soak.poison';
my $POISON_INVARIANT = 'x' x 300;	# INVARIANT_{agent}_{name} is over 255 bytes

my @AGENTS = map { sprintf('soak.a%02d', $_) } 1 .. $N_AGENTS;

my $dir = tempdir('gb_soak_XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{GB_SOAK_KEEP});
my $parent_pid = $$;
my %children;

END
{
	if ($$ == $parent_pid)
	{
		kill 'TERM', $_ for keys %children;
	}
}

sub connect_db
{
	my ($dbname, %extra) = @_;

	return DBI->connect("dbi:Pg:dbname=$dbname", undef, undef,
						{RaiseError => 1, PrintError => 0, AutoCommit => 1,
						 AutoInactiveDestroy => 1, pg_enable_utf8 => 0, %extra});
}

sub write_json
{
	my ($path, $data) = @_;

	open my $fh, '>', "$path.tmp" or die "$path.tmp: $!";
	print $fh JSON::PP->new->canonical->encode($data);
	close $fh or die "$path.tmp: $!";
	rename "$path.tmp", $path or die "$path: $!";
}

sub read_json
{
	my ($path) = @_;

	open my $fh, '<', $path or return undef;
	local $/;
	my $text = <$fh>;
	return JSON::PP->new->decode($text);
}

sub sqlstate_of
{
	my ($dbh) = @_;
	my $s = $dbh->state;

	return (defined $s && $s ne '') ? $s : 'none';
}

###########################################################################
# Set-up
###########################################################################

sub drop_all
{
	my $admin = connect_db('postgres');

	$admin->do('SET client_min_messages = warning');
	$admin->do("DROP DATABASE IF EXISTS $DB WITH (FORCE)");
	$admin->do("DROP ROLE IF EXISTS $_") for ($WRITER, $OPERATOR);
	$admin->disconnect;
}

sub set_up
{
	drop_all();
	my $admin = connect_db('postgres');
	$admin->do("CREATE DATABASE $DB");
	$admin->do("CREATE ROLE $_ NOLOGIN") for ($WRITER, $OPERATOR);
	$admin->disconnect;

	my $dbh = connect_db($DB);
	$dbh->do('CREATE EXTENSION gate_bridge');
	$dbh->do('CREATE EXTENSION amcheck');
	$dbh->do(q{INSERT INTO gate_bridge.budgets
				 (agent_pattern, budget_type, warning, error, critical)
			   VALUES ('soak.*', 'quality', 0.8, 0.6, 0.4),
					  ('soak.*', 'latency', 1000, 2000, 4000)});
	for my $agent (@RECOVERING, $QUIET_AGENT)
	{
		my ($after, $quiet) = $agent eq $QUIET_AGENT
		  ? (undef, "$RESOLVE_QUIET s") : ($RESOLVE_AFTER, undef);
		$dbh->do(q{INSERT INTO gate_bridge.budgets
					 (agent_pattern, budget_type, warning, error, critical,
					  resolve_after, resolve_quiet)
				   VALUES ($1, 'quality', 0.8, 0.6, 0.4, $2, $3::interval),
						  ($1, 'latency', 1000, 2000, 4000, $2, $3::interval)},
				 undef, $agent, $after, $quiet);
	}
	$dbh->do("GRANT USAGE ON SCHEMA gate_bridge TO $WRITER, $OPERATOR");
	$dbh->do("GRANT INSERT ON gate_bridge.eval_results TO $WRITER");
	$dbh->do("GRANT SELECT ON gate_bridge.incidents TO $OPERATOR");
	$dbh->do("GRANT EXECUTE ON FUNCTION gate_bridge.ack(bigint, text),"
			 . " gate_bridge.resolve(bigint, text, text),"
			 . " gate_bridge.snooze(bigint, interval, text, text), gate_bridge.tick(),"
			 . " gate_bridge.silence(text, interval, text, text, text),"
			 . " gate_bridge.unsilence(bigint) TO $OPERATOR");
	# before any client connects, so every session starts with them
	$dbh->do("ALTER DATABASE $DB SET gate_bridge.rate_window = '${WINDOW}s'");
	$dbh->do("ALTER DATABASE $DB SET gate_bridge.rate_limit = $RATE_LIMIT");
	$dbh->do("ALTER DATABASE $DB SET gate_bridge.flap_threshold = 0");
	$dbh->disconnect;
}

# A client's session: the library loaded (so the database's settings for it
# are in force), the settings checked, then the client's role.
sub client_session
{
	my ($role, $name, $reopen) = @_;
	my $dbh = connect_db($DB);

	$dbh->do("SET application_name = '$name'");
	# a superuser setting, made before the role is taken
	$dbh->do("SET gate_bridge.reopen_window = '${REOPEN_WINDOW}s'") if $reopen;
	$dbh->selectrow_array(q{SELECT gate_bridge.incident_severity('error')});
	my ($window, $limit) = $dbh->selectrow_array(
		q{SELECT current_setting('gate_bridge.rate_window'),
				 current_setting('gate_bridge.rate_limit')});
	die "$name: gate_bridge.rate_window is $window, gate_bridge.rate_limit $limit"
	  . " (wanted ${WINDOW}s and $RATE_LIMIT)\n"
	  unless $window eq "${WINDOW}s" && $limit eq $RATE_LIMIT;
	$dbh->do("SET ROLE $role") if defined $role;
	return $dbh;
}

###########################################################################
# Writers
###########################################################################

my $COLS = 'agent, eval_run_id, quality, latency_p95_ms, invariants_failed, triggered_by';

sub pick { return $_[int(rand(@_))]; }

sub writer
{
	my ($w, $ready_w, $go_r) = @_;
	my $dbh = client_session($WRITER, "soak writer $w", $w % 2);
	my $seq = 0;
	my %st = (ops => {}, committed_rows => 0, rolled_back_rows => 0,
			  violations => {}, errors => {}, expected_errors => 0,
			  lat_clean => [], lat_violating => [], transactions => 0);

	open my $ids_ok, '>', "$dir/committed.$w" or die $!;
	open my $ids_rb, '>', "$dir/rolledback.$w" or die $!;

	my $new_row = sub {
		my ($agent) = @_;
		my $r = rand;
		my $bad_q = $r >= 0.5 && ($r < 0.7 || $r >= 0.9);
		my $bad_l = $r >= 0.7;

		return {agent => $AGENTS[$agent], ord => $agent, qbad => $bad_q ? 1 : 0,
				id => 'w' . $w . '-' . ++$seq,
				q => $bad_q ? pick(@Q_VIOLATING) : pick(@Q_CLEAN),
				l => $bad_l ? pick(@L_VIOLATING) : pick(@L_CLEAN)};
	};
	# the quiet agent (the last) is written in the first half of the run only
	my $quiet_from;
	my $agent = sub { return int(rand(time < $quiet_from ? $N_AGENTS : $N_AGENTS - 1)); };
	# a batch: one agent (a broken agent's run) or many, in key order
	my $new_rows = sub {
		my ($n) = @_;
		my @rows;

		if (rand() < 0.4)
		{
			my $a = $agent->();
			push @rows, $new_row->($a) for 1 .. $n;
		}
		else
		{
			push @rows, $new_row->($agent->()) for 1 .. $n;
		}
		# Key order: by agent, and within an agent the rows that violate
		# the quality floor first, so that a transaction takes its keys'
		# locks in one global order (agent, quality before latency).
		return sort { $a->{ord} <=> $b->{ord} || $b->{qbad} <=> $a->{qbad} } @rows;
	};
	my $poison_row = sub {
		return {agent => $POISON_AGENT, ord => $N_AGENTS, qbad => 0,
				id => 'w' . $w . '-' . ++$seq, q => undef, l => undef,
				inv => $POISON_INVARIANT};
	};

	my $single = $dbh->prepare(
		"INSERT INTO gate_bridge.eval_results ($COLS) VALUES (?, ?, ?, ?, NULL, 'soak')");
	my %multi;

	my $copy = sub {
		$dbh->do("COPY gate_bridge.eval_results ($COLS) FROM STDIN");
		for my $r (@_)
		{
			$dbh->pg_putcopydata(join("\t", $r->{agent}, $r->{id},
									  $r->{q} // '\N', $r->{l} // '\N',
									  '\N', 'soak') . "\n");
		}
		$dbh->pg_putcopyend();
	};
	my $insert = sub {
		my @rows = @_;

		if (@rows == 1 && !$rows[0]{inv})
		{
			$single->execute(@{$rows[0]}{qw(agent id q l)});
			return;
		}
		if (@rows >= 5 && !(grep { $_->{inv} } @rows) && rand() < 0.3)
		{
			$copy->(@rows);
			return;
		}
		my $n = scalar @rows;
		my $sth = $multi{$n} //= $dbh->prepare(
			"INSERT INTO gate_bridge.eval_results ($COLS) VALUES "
			. join(', ', ("(?, ?, ?, ?, ?::text[], 'soak')") x $n));
		$sth->execute(map { ($_->{agent}, $_->{id}, $_->{q}, $_->{l},
							 $_->{inv} ? "{$_->{inv}}" : undef) } @rows);
	};
	my $committed = sub {
		for my $r (@_)
		{
			$st{committed_rows}++;
			print $ids_ok $r->{id}, "\n";
			$st{violations}{"BUDGET_$r->{agent}_quality"}++
			  if defined $r->{q} && $r->{q} < 0.8;
			$st{violations}{"BUDGET_$r->{agent}_latency"}++
			  if defined $r->{l} && $r->{l} > 1000;
		}
	};
	my $rolled_back = sub {
		for my $r (@_)
		{
			$st{rolled_back_rows}++;
			print $ids_rb $r->{id}, "\n";
		}
	};
	# statements of 1..max rows, in order
	my $chunks = sub {
		my ($max, @rows) = @_;
		my @out;

		while (@rows)
		{
			push @out, [splice(@rows, 0, 1 + int(rand($max)))];
		}
		return @out;
	};

	syswrite $ready_w, 'r';
	close $ready_w;
	my $go = <$go_r>;			# EOF when the parent starts the storm
	close $go_r;
	my $deadline = time + $SECS;
	$quiet_from = time + $SECS / 2;

	while (time < $deadline)
	{
		my $r = rand;
		my $op;
		my (@done, @undone);

		if ($r < 0.40)
		{
			$op = 'single';
			@done = $new_rows->(1);
		}
		elsif ($r < 0.55)
		{
			$op = 'multi';
			@done = $new_rows->(2 + int(rand(19)));
		}
		elsif ($r < 0.60)
		{
			$op = 'copy';
			@done = $new_rows->(5 + int(rand(36)));
		}
		elsif ($r < 0.75)
		{
			$op = 'txn_commit';
		}
		elsif ($r < 0.86)
		{
			$op = 'txn_rollback';
		}
		elsif ($r < 0.93)
		{
			$op = 'savepoint_rollback';
		}
		elsif ($r < 0.96)
		{
			$op = 'poison_statement';
		}
		else
		{
			$op = 'poison_savepoint';
		}
		$st{ops}{$op}++;

		my $t0 = time;
		my $ok = eval {
			if ($op eq 'single' || $op eq 'multi')
			{
				$insert->(@done);
			}
			elsif ($op eq 'copy')
			{
				$copy->(@done);
			}
			elsif ($op eq 'txn_commit' || $op eq 'txn_rollback')
			{
				my @rows = $new_rows->(2 + int(rand(30)));

				$dbh->begin_work;
				$st{transactions}++;
				# set before the work: on an error, all of them are undone
				@undone = @rows;
				$insert->(@$_) for $chunks->(8, @rows);
				if ($op eq 'txn_commit')
				{
					$dbh->commit;
					@done = @rows;
					@undone = ();
				}
				else
				{
					$dbh->rollback;
				}
			}
			elsif ($op eq 'savepoint_rollback' || $op eq 'poison_savepoint')
			{
				my @rows = $new_rows->(3 + int(rand(30)));
				my $i1 = 1 + int(rand(@rows - 2));
				my $i2 = $i1 + 1 + int(rand(@rows - $i1 - 1));
				my @before = @rows[0 .. $i1 - 1];
				my @inside = @rows[$i1 .. $i2 - 1];
				my @after = @rows[$i2 .. $#rows];

				$dbh->begin_work;
				$st{transactions}++;
				@undone = @rows;
				$insert->(@$_) for $chunks->(6, @before);
				$dbh->do('SAVEPOINT s');
				if ($op eq 'poison_savepoint')
				{
					my $p = $poison_row->();

					push @inside, $p;
					push @undone, $p;
					my $failed = !eval { $insert->(@inside); 1 };
					die "poison row did not fail\n" unless $failed;
					die $@ unless sqlstate_of($dbh) eq '22023';
					$st{expected_errors}++;
				}
				else
				{
					$insert->(@$_) for $chunks->(6, @inside);
				}
				$dbh->do('ROLLBACK TO SAVEPOINT s');
				$insert->(@$_) for $chunks->(6, @after);
				$dbh->commit;
				@done = (@before, @after);
				@undone = (@inside);
			}
			elsif ($op eq 'poison_statement')
			{
				my @rows = ($new_rows->(1 + int(rand(20))), $poison_row->());

				@undone = @rows;
				my $failed = !eval { $insert->(@rows); 1 };
				die "poison row did not fail\n" unless $failed;
				die $@ unless sqlstate_of($dbh) eq '22023';
				$st{expected_errors}++;
			}
			1;
		};
		my $elapsed = time - $t0;

		if ($ok)
		{
			$committed->(@done);
			$rolled_back->(@undone);
			if ($op eq 'single')
			{
				my $bad = (defined $done[0]{q} && $done[0]{q} < 0.8)
				  || (defined $done[0]{l} && $done[0]{l} > 1000);
				push @{$st{$bad ? 'lat_violating' : 'lat_clean'}}, $elapsed * 1000;
			}
		}
		else
		{
			my $state = sqlstate_of($dbh);
			my $msg = $@;

			chomp $msg;
			$st{errors}{$state}++;
			$st{first_error}{$state} //= $msg;
			eval { $dbh->rollback unless $dbh->{AutoCommit}; 1 };
			# nothing of the failed operation was committed
			$rolled_back->(@done, @undone);
		}
	}
	$st{elapsed} = time - ($deadline - $SECS);
	close $ids_ok or die $!;
	close $ids_rb or die $!;
	$dbh->disconnect;
	write_json("$dir/writer.$w.json", \%st);
}

###########################################################################
# Operator
###########################################################################

sub operator
{
	my ($ready_w, $go_r) = @_;
	my @c = (client_session($OPERATOR, 'soak operator 1'),
			 client_session($OPERATOR, 'soak operator 2'));
	my @actor = ('soak.op1', 'soak.op2');
	my %st = (moves => {}, races => {}, race_bad => 0, errors => {},
			  picks_empty => 0, lost => [], race_none => [], race_two => [], ticks => 0,
			  tick_transitions => 0, silences => []);
	my %sql = (ack => 'SELECT gate_bridge.ack(?, ?)',
			   resolve => 'SELECT gate_bridge.resolve(?, ?, ?)');
	my $snooze = $c[0]->prepare(
		"SELECT gate_bridge.snooze(?, make_interval(secs => ?::numeric / 1000), ?, 'soak')");
	my $snooze2 = $c[1]->prepare(
		"SELECT gate_bridge.snooze(?, make_interval(secs => ?::numeric / 1000), ?, 'soak')");
	my @tick = map { $_->prepare('SELECT gate_bridge.tick()') } @c;
	my @tick_async = map { $_->prepare('SELECT gate_bridge.tick()', {pg_async => PG_ASYNC}) } @c;

	open my $log, '>', "$dir/moves" or die $!;

	my $pick = $c[0]->prepare(
		q{SELECT id, status FROM gate_bridge.incidents
		   WHERE status <> 'resolved' AND agent <> $1 ORDER BY random() LIMIT 1});
	my @sync = map {
		my $h = $_;
		{ack => $h->prepare($sql{ack}), resolve => $h->prepare($sql{resolve})}
	} @c;
	my @async = map {
		my $h = $_;
		{ack => $h->prepare($sql{ack}, {pg_async => PG_ASYNC}),
		 resolve => $h->prepare($sql{resolve}, {pg_async => PG_ASYNC})}
	} @c;
	my $args = sub {
		my ($move, $id, $side) = @_;
		return $move eq 'ack' ? ($id, $actor[$side])
		  : ($id, $actor[$side], 'soak');
	};

	syswrite $ready_w, 'r';
	close $ready_w;
	my $go = <$go_r>;
	close $go_r;
	my $t0 = time;
	my $deadline = $t0 + $SECS;
	my $next_tick = $t0 + $TICK_MS / 1000;
	my ($silence_at, $unsilence_at) = ($t0 + $SECS / 4, $t0 + $SECS * 0.6);
	my @silenced;

	# tick(), now and then from both connections at once (neither may wait
	# for the other, nor make a transition twice)
	my $do_tick = sub {
		$st{ticks}++;
		if ($st{ticks} % 5 == 0)
		{
			$tick_async[$_]->execute for 0, 1;
			for my $side (0, 1)
			{
				my $n = eval { $tick_async[$side]->pg_result; ($tick_async[$side]->fetchrow_array)[0] };
				if (defined $n) { $st{tick_transitions} += $n; }
				else
				{
					my $state = sqlstate_of($c[$side]);
					$st{errors}{$state}++;
					$st{first_error}{$state} //= "tick: $@";
				}
			}
			$st{ticks_concurrent}++;
			return;
		}
		my $n = eval { $tick[0]->execute; ($tick[0]->fetchrow_array)[0] };
		if (defined $n) { $st{tick_transitions} += $n; }
		else
		{
			my $state = sqlstate_of($c[0]);
			$st{errors}{$state}++;
			$st{first_error}{$state} //= "tick: $@";
		}
	};

	while (time < $deadline)
	{
		sleep($OP_PAUSE / 1000) if $OP_PAUSE;
		if (time >= $next_tick)
		{
			$do_tick->();
			$next_tick += $TICK_MS / 1000 while $next_tick <= time;
		}
		if (defined $silence_at && time >= $silence_at)
		{
			undef $silence_at;
			for my $agent (@SILENCED)
			{
				my ($id) = $c[0]->selectrow_array(
					q{SELECT gate_bridge.silence($1, interval '1 hour', 'soak: maintenance')},
					undef, $agent);
				push @silenced, $id;
				push @{$st{silences}}, {id => $id, agent => $agent, type => undef,
									   committed => time};
			}
			my ($id) = $c[0]->selectrow_array(
				q{SELECT gate_bridge.silence($1, make_interval(secs => $2::int),
											 'soak: short maintenance', 'budget', 'latency')},
				undef, $SILENCED_SHORT, max(2, int($SECS / 4)));
			push @{$st{silences}}, {id => $id, agent => $SILENCED_SHORT, type => 'latency',
								   committed => time};
		}
		if (defined $unsilence_at && time >= $unsilence_at)
		{
			undef $unsilence_at;
			for my $s (@{$st{silences}})
			{
				next if defined $s->{type};
				$s->{unsilence_started} = time;
				$c[0]->do('SELECT gate_bridge.unsilence(?)', undef, $s->{id});
			}
		}
		# the quiet agent's incidents are left to tick()
		$pick->execute($QUIET_AGENT);
		my ($id, $status) = $pick->fetchrow_array;
		$pick->finish;
		if (!defined $id)
		{
			$st{picks_empty}++;
			next;
		}

		my $r = rand;
		if ($r < 0.75)
		{
			# one move; only an auto-resolve by a writer can get there first
			my $move = $r < 0.12 ? 'snooze'
			  : ($r < 0.3 && $status eq 'open') ? 'ack' : 'resolve';
			my $side = int(rand(2));
			my $ms = $SNOOZE_MS[0] + int(rand($SNOOZE_MS[1] - $SNOOZE_MS[0] + 1));

			if (eval {
					if ($move eq 'snooze')
					{
						($side ? $snooze2 : $snooze)->execute($id, $ms, $actor[$side]);
					}
					else
					{
						$sync[$side]{$move}->execute($args->($move, $id, $side));
					}
					1;
				})
			{
				$st{moves}{$move}++;
				print $log "$move $id $actor[$side]\n";
			}
			else
			{
				my $state = sqlstate_of($c[$side]);

				if ($state eq '55000')
				{
					push @{$st{lost}}, "$move $id";
				}
				else
				{
					$st{errors}{$state}++;
					$st{first_error}{$state} //= "$move $id ($status): $@";
				}
			}
			next;
		}

		# a race: both connections move the same incident at once
		my @moves;
		my $kind = pick('resolve/resolve', 'ack/ack', 'ack/resolve');
		$kind = 'resolve/resolve' if $kind eq 'ack/ack' && $status ne 'open';
		$kind = 'resolve/resolve' if $kind eq 'ack/resolve' && $status ne 'open';
		@moves = split m{/}, $kind;
		@moves = reverse @moves if rand() < 0.5;
		$st{races}{$kind}++;

		$async[$_]{$moves[$_]}->execute($args->($moves[$_], $id, $_)) for 0, 1;
		my @won;
		for my $side (0, 1)
		{
			if (eval { $c[$side]->pg_result; 1 })
			{
				push @won, $moves[$side];
				$st{moves}{$moves[$side]}++;
				print $log "$moves[$side] $id $actor[$side]\n";
			}
			else
			{
				my $state = sqlstate_of($c[$side]);

				if ($state ne '55000')
				{
					$st{errors}{$state}++;
					$st{first_error}{$state} //= "race $kind on $id: $@";
				}
				else
				{
					$st{race_losers}++;
				}
			}
		}
		# the winners the lifecycle allows
		my $won = join('/', sort @won);
		my $good = $kind eq 'ack/resolve'
		  ? ($won eq 'resolve' || $won eq 'ack/resolve')
		  : ($won eq $moves[0]);
		# nobody won: an auto-resolve got there first (the audit checks)
		if ($won eq '')
		{
			push @{$st{race_none}}, $id;
			$good = 1;
		}
		# both won: only if a reopen undid the first winner's move meanwhile
		# (the audit checks)
		if (!$good && $won eq "$moves[0]/$moves[0]")
		{
			push @{$st{race_two}}, $id;
			$good = 1;
		}
		if (!$good)
		{
			$st{race_bad}++;
			$st{race_bad_example} //= "$kind on incident $id: winners [$won]";
		}
	}
	close $log or die $!;
	undef $pick;
	undef $snooze;
	undef $snooze2;
	@sync = @async = @tick = @tick_async = ();
	$_->disconnect for @c;
	write_json("$dir/operator.json", \%st);
}

###########################################################################
# Listener
###########################################################################

my $drain = 0;

sub listener
{
	my ($ready_w) = @_;
	my $dbh = connect_db($DB);
	my $sel = IO::Select->new($dbh->{pg_socket});
	my $n = 0;
	my $last = time;

	$SIG{USR1} = sub { $drain = 1; };
	$dbh->do("SET application_name = 'soak listener'");
	$dbh->do("LISTEN $CHANNEL");
	$dbh->do("LISTEN $EVENTS_CHANNEL");
	open my $out, '>', "$dir/notifications" or die $!;
	$out->autoflush(1);
	# and a consumer of the event stream, as any client would write one
	open my $stream, '>', "$dir/stream" or die $!;
	$stream->autoflush(1);
	my $position = 0;
	my $n_stream = 0;
	my $consume = sub {
		for (;;)
		{
			my $rows = $dbh->selectall_arrayref(
				'SELECT position, id, incident_id, event FROM gate_bridge.events_after(?, 1000)',
				undef, $position);
			for my $r (@$rows)
			{
				print $stream join("\t", @$r), "\n";
				$position = $r->[0];
				$n_stream++;
			}
			last if @$rows < 1000;
		}
	};
	syswrite $ready_w, 'r';
	close $ready_w;

	my $read = sub {
		while (my $nt = $dbh->pg_notifies)
		{
			$n++;
			$last = time;
			# the payload in hex: any byte survives the file
			printf $out "%d\t%.6f\t%s\t%d\t%s\n", $n, $last, $nt->[0], $nt->[1],
			  unpack('H*', $nt->[2]);
		}
	};

	until ($drain)
	{
		$sel->can_read(0.2);
		$read->();
		$consume->();
	}

	# Everyone else has finished: wait until there are as many notifications
	# as announced events (and incident_created for the creations and the
	# ends of silences), then a little longer for any extra one.
	my $give_up = time + 60;
	while (time < $give_up)
	{
		$sel->can_read(0.2);
		$read->();
		my ($announced, $created, $events) = $dbh->selectrow_array(q{
			SELECT count(*) FILTER (WHERE NOT silenced),
				   count(*) FILTER (WHERE NOT silenced AND event IN ('created', 'silence_ended')),
				   count(*)
			  FROM gate_bridge.incident_events});
		$read->();
		$consume->();
		last if $n >= $announced + $created && $n_stream >= $events && time - $last > 0.5;
	}
	close $out or die $!;
	close $stream or die $!;
	$dbh->disconnect;
}

###########################################################################
# Sabotage: proof that the audit fails when the data are wrong
###########################################################################

# GB_SOAK_SABOTAGE=NAME[,NAME...] damages the outcome after the storm, as a
# superuser behind the bridge's back, so that the audit must fail.
my %SABOTAGE = (
	lost_row => ['an eval row disappears (5, 6a)',
				 q{DELETE FROM gate_bridge.eval_results
					WHERE id = (SELECT max(id) FROM gate_bridge.eval_results
								 WHERE quality < 0.8)}],
	ghost_row => ['a row nobody committed appears, with the bridge off (5, 6a)',
				  q{SET gate_bridge.enabled = off;
					INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality)
					VALUES ('soak.a01', 'ghost', 0.1);
					RESET gate_bridge.enabled}],
	overlap => ['an incident is resolved after its successor was opened (1a)',
				q{WITH n AS (SELECT id, lead(first_seen_at) OVER (PARTITION BY kind, agent, subject
																 ORDER BY first_seen_at) AS next_seen
							   FROM gate_bridge.incidents),
					   one AS (SELECT id, next_seen FROM n WHERE next_seen IS NOT NULL
								ORDER BY id LIMIT 1)
				  UPDATE gate_bridge.incidents i SET resolved_at = one.next_seen + interval '1 ms'
					FROM one WHERE one.id = i.id}],
	rate => ['a key gets one incident more in a window (2)',
			 q{WITH k AS (SELECT kind, agent, subject FROM gate_bridge.incidents
						   GROUP BY kind, agent, subject ORDER BY count(*) DESC LIMIT 1),
					four AS (SELECT i.id, i.first_seen_at,
									first_value(i.first_seen_at) OVER w AS t0,
									row_number() OVER w AS n
							   FROM gate_bridge.incidents i JOIN k USING (kind, agent, subject)
							 WINDOW w AS (ORDER BY i.first_seen_at))
			   UPDATE gate_bridge.incidents i
				  SET first_seen_at = f.t0 + (f.n - 1) * interval '1 ms'
				 FROM four f
				WHERE f.id = i.id AND f.n <= 4}],
	event => ['an "acked" timeline row disappears (3a)',
			  q{DELETE FROM gate_bridge.incident_events
				 WHERE id = (SELECT min(id) FROM gate_bridge.incident_events WHERE event = 'acked')}],
	notify => ['an incident is notified a second time (4b)',
			   q{SELECT pg_notify('incident_created',
								  '{"event":"incident_created","data":' || detail::text || '}')
				   FROM gate_bridge.incident_events
				  WHERE id = (SELECT max(id) FROM gate_bridge.incident_events WHERE event = 'created')}],
	announce_silenced => ['a silenced event is announced (8c)',
						  q{SELECT pg_notify('incident_events',
											 format('{"event":"%s","position":%s,"id":%s,"incident_id":%s}',
													event, position, id, incident_id))
							  FROM gate_bridge.incident_events
							 WHERE id = (SELECT max(id) FROM gate_bridge.incident_events WHERE silenced)}],
	resolve_twice => ['an incident is resolved twice without a reopen between (8a)',
					  q{INSERT INTO gate_bridge.incident_events (incident_id, event, at, actor, detail)
						SELECT incident_id, event, at, actor, detail FROM gate_bridge.incident_events
						 WHERE id = (SELECT max(id) FROM gate_bridge.incident_events WHERE event = 'resolved')}],
	occurrence => ['an incident counts one occurrence more (6a)',
				   q{UPDATE gate_bridge.incident_rows SET occurrences = occurrences + 1
					  WHERE id = (SELECT max(id) FROM gate_bridge.incident_rows)}],
);

sub sabotage
{
	my ($name) = @_;
	my $s = $SABOTAGE{$name}
	  or die "GB_SOAK_SABOTAGE: unknown \"$name\"; one of " . join(', ', sort keys %SABOTAGE) . "\n";
	my $dbh = connect_db($DB);

	print "# SABOTAGE $name: $s->[0]; the audit must fail\n";
	$dbh->do($_) for split /;\s*/, $s->[1];
	$dbh->disconnect;
}

###########################################################################
# The storm
###########################################################################

sub spawn
{
	my ($name, $code) = @_;
	my $pid = fork // die "fork: $!";

	if ($pid == 0)
	{
		%children = ();
		my $ok = eval { $code->(); 1 };
		if (!$ok)
		{
			print STDERR "soak: $name: $@";
			_exit(1);
		}
		_exit(0);
	}
	$children{$pid} = $name;
	return $pid;
}

sub wait_child
{
	my ($pid) = @_;

	waitpid($pid, 0);
	my $status = $?;
	my $name = delete $children{$pid};
	return ($name, $status);
}

print "# gate_bridge storm soak: ${SECS} s, $CLIENTS writers, 1 operator"
  . " (${OP_PAUSE} ms pause), 1 listener, " . (2 * $N_AGENTS) . " keys,"
  . " rate_limit $RATE_LIMIT per ${WINDOW} s, seed $SEED\n";
my ($server_version) = connect_db('postgres')->selectrow_array('SHOW server_version');
print "# PostgreSQL $server_version; work directory $dir"
  . ($ENV{GB_SOAK_KEEP} ? ' (kept)' : '') . "\n";

set_up();

pipe(my $ready_r, my $ready_w) or die "pipe: $!";
pipe(my $go_r, my $go_w) or die "pipe: $!";

my $listener_pid = spawn('listener', sub {
	close $ready_r;
	close $go_r;
	close $go_w;
	listener($ready_w);
});
my @worker_pids;
for my $w (1 .. $CLIENTS)
{
	push @worker_pids, spawn("writer $w", sub {
		close $ready_r;
		close $go_w;
		srand($SEED + 7919 * $w);
		writer($w, $ready_w, $go_r);
	});
}
push @worker_pids, spawn('operator', sub {
	close $ready_r;
	close $go_w;
	srand($SEED + 1);
	operator($ready_w, $go_r);
});
close $ready_w;
close $go_r;

# everyone connected (and the listener listening) before the start
my $ready = 0;
my $ready_sel = IO::Select->new($ready_r);
my $ready_by = time + 60;
while ($ready < $CLIENTS + 2 && time < $ready_by)
{
	next unless $ready_sel->can_read(0.5);
	my $got = sysread($ready_r, my $buf, 64);
	last unless $got;
	$ready += $got;
}
die "soak: only $ready of " . ($CLIENTS + 2) . " clients got ready\n"
  if $ready < $CLIENTS + 2;

my $t_start = time;
close $go_w;					# go
print "# storm started\n";

my @child_failures;
for my $pid (@worker_pids)
{
	my ($name, $status) = wait_child($pid);
	push @child_failures, "$name exited with status " . ($status >> 8) if $status;
}
my $t_end = time;
print "# storm over after " . sprintf('%.1f', $t_end - $t_start) . " s; draining the listener\n";
sabotage($_) for grep { $_ ne '' } split /[ ,]+/, $ENV{GB_SOAK_SABOTAGE} // '';
kill 'USR1', $listener_pid;
{
	my ($name, $status) = wait_child($listener_pid);
	push @child_failures, "$name exited with status " . ($status >> 8) if $status;
}
my $t_drained = time;

###########################################################################
# The audit
###########################################################################

my $n_checks = 0;
my $n_failed = 0;

sub ok
{
	my ($good, $what, @detail) = @_;

	$n_checks++;
	if ($good)
	{
		print "ok $n_checks - $what\n";
	}
	else
	{
		$n_failed++;
		print "not ok $n_checks - $what\n";
		print "#   $_\n" for map { split /\n/ } grep { defined } @detail;
	}
	return $good;
}

ok(!@child_failures, 'every client ran to the end', @child_failures);

my $dbh = connect_db($DB);

# --- the clients' bookkeeping -------------------------------------------
my %w = (ops => {}, errors => {}, first_error => {}, violations => {});
my (@lat_clean, @lat_violating);
for my $i (1 .. $CLIENTS)
{
	my $s = read_json("$dir/writer.$i.json") or next;

	$w{$_} += $s->{$_} for qw(committed_rows rolled_back_rows expected_errors transactions);
	$w{ops}{$_} += $s->{ops}{$_} for keys %{$s->{ops}};
	$w{errors}{$_} += $s->{errors}{$_} for keys %{$s->{errors}};
	$w{first_error}{$_} //= $s->{first_error}{$_} for keys %{$s->{first_error} // {}};
	$w{violations}{$_} += $s->{violations}{$_} for keys %{$s->{violations}};
	push @lat_clean, @{$s->{lat_clean}};
	push @lat_violating, @{$s->{lat_violating}};
	$w{results}++;
}
$w{$_} //= 0 for qw(committed_rows rolled_back_rows expected_errors transactions results);
my $op = read_json("$dir/operator.json") // {moves => {}, races => {}, errors => {}};
my $violations_committed = sum0(values %{$w{violations}});

ok($w{results} == $CLIENTS && -e "$dir/operator.json",
   'every writer and the operator reported their bookkeeping');
ok(!%{$w{errors}}, 'writers: no error but the poison rows\' (SQLSTATE 22023)',
   map { "SQLSTATE $_: $w{errors}{$_} times, first: $w{first_error}{$_}" } sort keys %{$w{errors}});
ok(!%{$op->{errors}}, 'operator: every move succeeded but the losers of races (SQLSTATE 55000)',
   map { "SQLSTATE $_: $op->{errors}{$_} times, first: $op->{first_error}{$_}" } sort keys %{$op->{errors}});

# --- 1. never two unresolved incidents for one key -----------------------
{
	my $overlaps = $dbh->selectall_arrayref(q{
		SELECT key, prev_id, id, prev_resolved, first_seen_at
		  FROM (SELECT key, id, first_seen_at,
					   lag(id) OVER w AS prev_id,
					   lag(resolved_at) OVER w AS prev_resolved
				  FROM gate_bridge.incidents
				WINDOW w AS (PARTITION BY kind, agent, subject ORDER BY first_seen_at, id)) s
		 WHERE prev_id IS NOT NULL
		   AND (prev_resolved IS NULL OR prev_resolved > first_seen_at)
		 ORDER BY key, id});
	ok(!@$overlaps,
	   '1a. per key, every incident was resolved before the next one was first seen',
	   scalar(@$overlaps) . ' overlaps',
	   map { "$_->[0]: incident $_->[1] resolved at " . ($_->[3] // 'never')
			   . ", incident $_->[2] first seen at $_->[4]" } @$overlaps[0 .. min(4, $#$overlaps)]);

	my $order = $dbh->selectall_arrayref(q{
		SELECT key, id, first_seen_at
		  FROM (SELECT key, id, first_seen_at, lag(id) OVER w AS prev_id
				  FROM gate_bridge.incidents
				WINDOW w AS (PARTITION BY kind, agent, subject ORDER BY first_seen_at, id)) s
		 WHERE prev_id > id});
	ok(!@$order, '1b. per key, incident ids follow first_seen_at (creation is serialised)',
	   map { "$_->[0]: incident $_->[1] at $_->[2]" } @$order[0 .. min(4, $#$order)]);

	my $dups = $dbh->selectall_arrayref(q{
		SELECT kind, key, count(*) FROM gate_bridge.incidents
		 WHERE status <> 'resolved' GROUP BY kind, key, agent, subject HAVING count(*) > 1});
	my ($index_ok) = $dbh->selectrow_array(q{
		SELECT i.indisunique AND i.indisvalid AND i.indisready AND i.indislive
			   AND pg_get_expr(i.indpred, i.indrelid) = '(status <> ''resolved''::text)'
		  FROM pg_index i
		 WHERE i.indexrelid = 'gate_bridge.incidents_unresolved_idx'::regclass});
	ok(!@$dups && $index_ok,
	   '1c. at most one unresolved incident per key now; the unique partial index is valid',
	   map { "$_->[0] $_->[1]: $_->[2] unresolved" } @$dups);

	my $checked = eval {
		$dbh->selectall_arrayref(q{
			SELECT c.relname, bt_index_check(c.oid, true)
			  FROM pg_index i
			  JOIN pg_class c ON c.oid = i.indexrelid
			  JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
			 WHERE i.indrelid IN ('gate_bridge.incident_rows'::regclass,
								  'gate_bridge.incident_folds'::regclass,
								  'gate_bridge.incident_events'::regclass,
								  'gate_bridge.incident_keys'::regclass,
								  'gate_bridge.eval_results'::regclass)});
	};
	ok($checked && @$checked >= 7,
	   '1d. amcheck: every btree index of the five tables matches its table ('
	   . ($checked ? scalar(@$checked) : 0) . ' indexes, heapallindexed)',
	   $checked ? undef : $@);
}

# --- 2. the rate limit in every window ------------------------------------
my ($max_in_window, $saturated_windows, $limited_keys);
{
	my $over = $dbh->selectall_arrayref(q{
		SELECT key, first_seen_at, later
		  FROM (SELECT key, first_seen_at,
					   lead(first_seen_at, $1::int) OVER w AS later
				  FROM gate_bridge.incidents
				WINDOW w AS (PARTITION BY kind, agent, subject ORDER BY first_seen_at, id)) s
		 WHERE later - first_seen_at < make_interval(secs => $2::int)
		 ORDER BY key, first_seen_at}, undef, $RATE_LIMIT, $WINDOW);
	# the most incidents of one key in any window [t, t + rate_window)
	# that starts at an incident (where a maximum is always found)
	($max_in_window, $saturated_windows) = $dbh->selectrow_array(q{
		SELECT max(n), count(*) FILTER (WHERE n = $1::int)
		  FROM (SELECT (SELECT count(*) FROM gate_bridge.incidents j
						 WHERE j.kind = i.kind AND j.key = i.key
						   AND j.first_seen_at >= i.first_seen_at
						   AND j.first_seen_at < i.first_seen_at
											   + make_interval(secs => $2::int)) AS n
				  FROM gate_bridge.incidents i) s}, undef, $RATE_LIMIT, $WINDOW);
	$max_in_window //= 0;
	ok(!@$over && $max_in_window <= $RATE_LIMIT,
	   "2. no key got more than $RATE_LIMIT incidents in any ${WINDOW} s window"
	   . " (most in one window: $max_in_window; windows at the limit: $saturated_windows)",
	   map { "$_->[0]: $RATE_LIMIT + 1 incidents from $_->[1] to $_->[2]" } @$over[0 .. min(4, $#$over)]);
}

# --- 3. the timeline --------------------------------------------------------
# Every incident and every event, walked in stream order through the
# lifecycle; the walk's findings are judged in 3a and 8a.
my %inc = map { $_->{id} => $_ } @{$dbh->selectall_arrayref(q{
	SELECT id, kind, key, agent, subject, severity, summary, status, acked_by, resolved_by,
		   snoozed_until IS NOT NULL AS snoozed, first_seen_at::text AS first_seen_at,
		   to_char(date_trunc('second', first_seen_at) AT TIME ZONE 'UTC',
				   'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS created_at
	  FROM gate_bridge.incidents}, {Slice => {}})};
my @events = @{$dbh->selectall_arrayref(q{
	SELECT e.id, e.incident_id, e.event, e.actor, e.position, e.silenced, e.detail::text AS detail,
		   e.at = i.first_seen_at AS at_first_seen, extract(epoch FROM e.at)::float8 AS t,
		   to_char(date_trunc('second', e.at) AT TIME ZONE 'UTC',
				   'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS at_utc
	  FROM gate_bridge.incident_events e
	  JOIN gate_bridge.incidents i ON i.id = e.incident_id
	 ORDER BY e.position NULLS FIRST, e.id}, {Slice => {}})};
my %event_by_id = map { $_->{id} => $_ } @events;
my %timeline;
push @{$timeline{$_->{incident_id}}}, $_ for @events;
my $json = JSON::PP->new->canonical;
$_->{d} = $json->decode($_->{detail}) for @events;
my %ops_actor = map { $_ => 1 } qw(soak.op1 soak.op2);
my (@created_bad, @final_bad, @walk_bad, %count);
for my $id (sort { $a <=> $b } keys %inc)
{
	my $i = $inc{$id};
	my ($state, $snoozed, $ack_by, $res_by, $held, $created) = (undef, 0, undef, undef, 0, 0);

	for my $e (@{$timeline{$id} // []})
	{
		my $ev = $e->{event};
		my $bad = sub { push @walk_bad, "incident $id ($i->{key}): $ev (event $e->{id}) $_[0]"; };

		$count{$ev}++;
		$held = 1 if $e->{silenced};
		push @walk_bad, "incident $id: event $e->{id} ($ev) has no position" unless defined $e->{position};
		if ($ev eq 'created')
		{
			$created++;
			push @created_bad, "incident $id: created event $e->{id} after others" if defined $state;
			push @created_bad, "incident $id: created event $e->{id} not at first_seen_at, by "
			  . ($e->{actor} // 'NULL') . ", detail $e->{detail}"
			  unless $e->{at_first_seen} && ($e->{actor} // '') eq $WRITER
			  && ($e->{d}{id} // '') eq $id && ($e->{d}{key} // '') eq $i->{key};
			$state = 'open';
			next;
		}
		if (!defined $state)
		{
			$bad->('before the incident was created');
			next;
		}
		if ($ev eq 'acked')
		{
			$bad->("while $state") unless $state eq 'open';
			($state, $ack_by) = ('ack', $e->{actor});
		}
		elsif ($ev eq 'snoozed')
		{
			$bad->("while $state") if $state eq 'resolved';
			($state, $snoozed, $ack_by) = ('ack', 1, $e->{actor});
		}
		elsif ($ev eq 'snooze_expired')
		{
			$bad->('without a snooze running') unless $state eq 'ack' && $snoozed;
			$bad->('by ' . ($e->{actor} // 'NULL')) unless ($e->{actor} // '') eq 'gate_bridge';
			($state, $snoozed, $ack_by) = ('open', 0, undef);
		}
		elsif ($ev eq 'resolved' || $ev eq 'auto_resolved')
		{
			$bad->('after a resolution with no reopen between') if $state eq 'resolved';
			$bad->('by ' . ($e->{actor} // 'NULL'))
			  unless $ev eq 'resolved' ? $ops_actor{$e->{actor} // ''} : ($e->{actor} // '') eq 'gate_bridge';
			($state, $snoozed, $res_by) = ('resolved', 0, $e->{actor});
			$count{"auto_resolved $e->{d}{reason}"}++ if $ev eq 'auto_resolved';
		}
		elsif ($ev eq 'reopened')
		{
			$bad->("while $state") unless $state eq 'resolved';
			$bad->('names the resolution by ' . ($e->{d}{resolved_by} // 'NULL') . ', not ' . ($res_by // 'NULL'))
			  unless defined $res_by && ($e->{d}{resolved_by} // '') eq $res_by;
			$bad->('by ' . ($e->{actor} // 'NULL')) unless ($e->{actor} // '') eq $WRITER;
			($state, $ack_by, $res_by) = ('open', undef, undef);
		}
		elsif ($ev eq 'escalated')
		{
			$bad->("while $state") if $state eq 'resolved';
			$bad->("from $e->{d}{from} to $e->{d}{to}")
			  unless ($e->{d}{to} // 'sev9') lt ($e->{d}{from} // '');
		}
		elsif ($ev eq 'silenced')
		{
			$bad->("while $state") if $state eq 'resolved';
			$bad->('not held back itself') unless $e->{silenced};
			$bad->('by ' . ($e->{actor} // 'NULL')) unless ($e->{actor} // '') eq 'gate_bridge';
		}
		elsif ($ev eq 'silence_ended')
		{
			$bad->("while $state") if $state eq 'resolved';
			$bad->('with nothing held back before') unless $held;
			$held = 0;
		}
		else
		{
			$bad->('is no event of this storm');
		}
	}
	push @created_bad, "incident $id: $created created events" unless $created == 1;
	push @final_bad, "incident $id is $i->{status}" . ($i->{snoozed} ? ' (snoozed)' : '')
	  . ', acked by ' . ($i->{acked_by} // 'NULL') . ', resolved by ' . ($i->{resolved_by} // 'NULL')
	  . "; its timeline ends " . ($state // 'empty') . ($snoozed ? ' (snoozed)' : '')
	  . ', acked by ' . ($ack_by // 'NULL') . ', resolved by ' . ($res_by // 'NULL')
	  unless defined $state && $state eq $i->{status} && !$snoozed == !$i->{snoozed}
	  && ($state ne 'ack' || ($ack_by // '') eq ($i->{acked_by} // ''))
	  && ($state ne 'resolved' || ($res_by // '') eq ($i->{resolved_by} // ''));
}
my @orphans = grep { !$inc{$_} } keys %timeline;
{
	ok(!@created_bad && !@final_bad && !@orphans,
	   '3a. every incident has exactly one "created" row, its first (at first_seen_at, by the writer),'
	   . ' and its timeline ends where the incident is (status, snooze, acked_by, resolved_by)',
	   scalar(@created_bad) + scalar(@final_bad) . ' incidents disagree',
	   @created_bad[0 .. min(4, $#created_bad)], @final_bad[0 .. min(4, $#final_bad)],
	   (@orphans ? "events of incidents that do not exist: @orphans[0 .. min(4, $#orphans)]" : undef));

	# the moves the operator saw succeed, against the timeline
	my (%seen, %db);
	if (open my $fh, '<', "$dir/moves")
	{
		while (<$fh>)
		{
			chomp;
			$seen{$_}++;
		}
	}
	my %move_of = (acked => 'ack', resolved => 'resolve', snoozed => 'snooze');
	for my $e (@events)
	{
		my $m = $move_of{$e->{event}} or next;
		$db{"$m $e->{incident_id} " . ($e->{actor} // 'NULL')}++;
	}
	my @diff;
	for my $k (sort keys %{{%seen, %db}})
	{
		push @diff, "$k: the operator saw it succeed " . ($seen{$k} // 0) . " times, the timeline has "
		  . ($db{$k} // 0)
		  unless ($seen{$k} // 0) == ($db{$k} // 0);
	}
	my %n;
	$n{(split / /, $_)[0]} += $seen{$_} for keys %seen;
	ok(!@diff,
	   '3b. the acks (' . ($n{ack} // 0) . '), snoozes (' . ($n{snooze} // 0) . ') and resolves ('
	   . ($n{resolve} // 0) . ') that succeeded are exactly those the timeline records',
	   scalar(@diff) . ' differ', @diff[0 .. min(4, $#diff)]);

	# a move or a race lost to nobody but an auto-resolve by a writer
	my %auto = map { $_->{incident_id} => 1 } grep { $_->{event} eq 'auto_resolved' } @events;
	my %reopened = map { $_->{incident_id} => 1 } grep { $_->{event} eq 'reopened' } @events;
	my @unexplained = ((map { "move \"$_\" failed" } grep { !$auto{(split / /, $_)[1]} } @{$op->{lost} // []}),
					   (map { "race on $_ had no winner" } grep { !$auto{$_} } @{$op->{race_none} // []}),
					   (map { "race on $_ had two winners and no reopen" } grep { !$reopened{$_} } @{$op->{race_two} // []}));
	my $n_races = sum0(values %{$op->{races} // {}});
	ok(($op->{race_bad} // 0) == 0 && !@unexplained,
	   "3c. ack/resolve races: each had the winners the lifecycle allows ($n_races races);"
	   . ' each move lost (' . scalar(@{$op->{lost} // []}) . ') or race without a winner ('
	   . scalar(@{$op->{race_none} // []}) . ') lost to an auto-resolve',
	   ($op->{race_bad} ? "$op->{race_bad} races went wrong; first: " . ($op->{race_bad_example} // '') : undef),
	   @unexplained[0 .. min(4, $#unexplained)]);
}

# --- 4. notifications ---------------------------------------------------------
my (@notes, @created_notes, @event_notes);
my $n_notified = 0;
my %announced;		# event id => how many times on the events channel
my %paged;			# event id => how many times on incident_created
my @note_bad;
{
	if (open my $fh, '<', "$dir/notifications")
	{
		while (<$fh>)
		{
			chomp;
			my ($n, $t, $channel, $pid, $hex) = split /\t/;
			push @notes, {n => $n, channel => $channel, payload => pack('H*', $hex)};
		}
	}
	$n_notified = @notes;

	my (@bad, @unknown, @dup, @mismatch, %order);
	my $longest = 0;

	for my $note (@notes)
	{
		my $bytes = length $note->{payload};
		$longest = $bytes if $bytes > $longest;
		my $p = eval { $json->decode($note->{payload}) };

		if ($note->{channel} eq $EVENTS_CHANNEL && $bytes < 8000 && $p && ref $p eq 'HASH'
			&& join(',', $note->{payload} =~ /"(event|position|id|incident_id)":/g) eq 'event,position,id,incident_id'
			&& keys %$p == 4 && ($p->{id} // '') =~ /^[0-9]+$/)
		{
			my $e = $event_by_id{$p->{id}};
			if (!$e)
			{
				push @unknown, "notification $note->{n} on $EVENTS_CHANNEL for event $p->{id}, which does not exist";
				next;
			}
			$announced{$p->{id}}++;
			push @mismatch, "notification $note->{n}: $note->{payload} is not event $e->{id}"
			  . " ($e->{event} of incident $e->{incident_id} at position " . ($e->{position} // 'NULL') . ')'
			  unless $p->{event} eq $e->{event} && $p->{incident_id} == $e->{incident_id}
			  && defined $e->{position} && $p->{position} == $e->{position};
			push @event_notes, [$note, $e];
			next;
		}
		if ($note->{channel} ne $CHANNEL || $bytes >= 8000 || !$p
			|| ref $p ne 'HASH' || ($p->{event} // '') ne 'incident_created'
			|| ref $p->{data} ne 'HASH' || ($p->{data}{id} // '') !~ /^[0-9]+$/
			|| ($p->{data}{event_id} // '') !~ /^[0-9]+$/)
		{
			push @bad, "notification $note->{n} on $note->{channel}: $note->{payload}";
			next;
		}
		my $d = $p->{data};
		my $id = $d->{id};
		my $e = $event_by_id{$d->{event_id}};
		if (!$e || $e->{incident_id} != $id || ($e->{event} ne 'created' && $e->{event} ne 'silence_ended'))
		{
			push @unknown, "notification $note->{n} for incident $id, event $d->{event_id},"
			  . ' which is not a creation or end of silence of it';
			next;
		}
		if ($paged{$e->{id}}++)
		{
			push @dup, "event $e->{id} ($e->{event} of incident $id) paged again (notification $note->{n})";
			next;
		}
		my $i = $inc{$id};
		# a creation pages with its own row's detail; an end of silence with
		# the incident as it is then, at that time
		my $src = $e->{d};
		my @want = (kind => $i->{kind}, key => $i->{key}, severity => $src->{severity},
					summary => $i->{summary}, status => 'open',
					created_at => $e->{event} eq 'created' ? $i->{created_at} : $e->{at_utc},
					agent => $i->{agent});
		my @diffs;
		while (my ($k, $v) = splice(@want, 0, 2))
		{
			push @diffs, "$k is " . ($d->{$k} // 'missing') . ", not " . ($v // 'NULL')
			  unless defined $d->{$k} && defined $v && $d->{$k} eq $v;
		}
		my @keys_in_order = $note->{payload} =~ /"(id|kind|key|severity|summary|status|created_at|agent|event_id|position)":/g;
		push @diffs, 'data has other keys or keys out of order: ' . join(',', @keys_in_order)
		  unless join(',', @keys_in_order) eq 'id,kind,key,severity,summary,status,created_at,agent,event_id,position'
		  && keys %$d == 10;
		if ($e->{event} eq 'created')
		{
			# the detail is the data without the event's id and position
			my %detail = %$d;
			delete @detail{qw(event_id position)};
			push @diffs, 'data differs from the "created" row\'s detail'
			  unless $json->encode(\%detail) eq $json->encode($src);
		}
		push @diffs, "position is " . ($d->{position} // 'missing') . ", not " . ($e->{position} // 'NULL')
		  unless defined $d->{position} && defined $e->{position} && $d->{position} == $e->{position};
		push @mismatch, "incident $id ($e->{event}): " . join('; ', @diffs) if @diffs;
		push @{$order{$i->{key}}}, [$e->{position} // 0, $note->{n}, $id];
		push @created_notes, [$note, $e];
	}
	my @want_paged = grep { !$_->{silenced} && ($_->{event} eq 'created' || $_->{event} eq 'silence_ended') } @events;
	my @missing = map { "$_->{event} of incident $_->{incident_id} (event $_->{id})" }
	  grep { !$paged{$_->{id}} } @want_paged;

	ok(!@bad, "4a. every payload parses as JSON and is under 8000 bytes: an incident_created event"
	   . " on $CHANNEL or an event on $EVENTS_CHANNEL (longest: $longest bytes)",
	   scalar(@bad) . ' bad', @bad[0 .. min(4, $#bad)]);
	ok(!@missing && !@dup && !@unknown,
	   '4b. every announced creation or end of silence (' . scalar(@want_paged) . ' of '
	   . scalar(keys %inc) . " incidents) paged on $CHANNEL exactly once, and nothing else did ("
	   . scalar(@created_notes) . ' notifications)',
	   (@missing ? scalar(@missing) . ' never paged, first: '
		. join(', ', @missing[0 .. min(4, $#missing)]) : undef),
	   @dup[0 .. min(4, $#dup)], @unknown[0 .. min(4, $#unknown)]);
	ok(!@mismatch, '4c. every payload matches its incident (kind, key, summary, status, agent)'
	   . ' and its event (severity, created_at, detail, event id, position)',
	   @mismatch[0 .. min(4, $#mismatch)]);

	# Per key, creations are serialised by the key's lock held to commit,
	# and notifications are delivered in commit order (position order).
	my @out_of_order;
	for my $key (sort keys %order)
	{
		my @by_pos = sort { $a->[0] <=> $b->[0] } @{$order{$key}};
		for my $k (1 .. $#by_pos)
		{
			push @out_of_order, "$key: position $by_pos[$k][0] (incident $by_pos[$k][2]) paged (#$by_pos[$k][1])"
			  . " before position $by_pos[$k - 1][0] (#$by_pos[$k - 1][1])"
			  if $by_pos[$k][1] < $by_pos[$k - 1][1];
		}
	}
	my %last_pos;
	for my $ne (@event_notes)
	{
		my ($note, $e) = @$ne;
		push @out_of_order, "incident $e->{incident_id}: event at position " . ($e->{position} // 'NULL')
		  . " announced after position $last_pos{$e->{incident_id}}"
		  if defined $last_pos{$e->{incident_id}} && ($e->{position} // 0) <= $last_pos{$e->{incident_id}};
		$last_pos{$e->{incident_id}} = $e->{position} // 0;
	}
	ok(!@out_of_order, '4d. per key, pages arrived in creation order; per incident, events were'
	   . ' announced in position order',
	   @out_of_order[0 .. min(4, $#out_of_order)]);

	# The stream consumer read events_after() all through the storm: it saw
	# every committed event exactly once, in increasing position order, and
	# nothing that was rolled back.
	my (@seen_stream, %stream_seen, @stream_bad);
	if (open my $fh, '<', "$dir/stream")
	{
		while (<$fh>)
		{
			chomp;
			push @seen_stream, [split /\t/];
		}
	}
	my %event = map { $_->[1] => $_ }
		@{$dbh->selectall_arrayref('SELECT position, id, incident_id, event FROM gate_bridge.incident_events')};
	my $prev = 0;
	for my $r (@seen_stream)
	{
		my ($pos, $id) = @$r;
		push @stream_bad, "position $pos after $prev" unless $pos > $prev;
		$prev = $pos;
		push @stream_bad, "event $id read twice" if $stream_seen{$id}++;
		my $e = $event{$id};
		push @stream_bad, "event $id read, but it does not exist" unless $e;
		push @stream_bad, "event $id read at position $pos, but it has " . ($e->[0] // 'NULL')
		  if $e && (($e->[0] // -1) != $pos || $e->[2] != $r->[2] || $e->[3] ne $r->[3]);
	}
	my @stream_missed = grep { !$stream_seen{$_} } sort { $a <=> $b } keys %event;
	push @stream_bad, scalar(@stream_missed) . ' events never read, first: '
	  . join(', ', @stream_missed[0 .. min(9, $#stream_missed)]) if @stream_missed;
	ok(!@stream_bad, '4e. a consumer of events_after() read every event ('
	   . scalar(keys %event) . ') exactly once, in increasing position order, and nothing else',
	   @stream_bad[0 .. min(4, $#stream_bad)]);
}

# --- 5. no eval row lost, none invented -----------------------------------------
my $rows_in_table;
{
	($rows_in_table) = $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.eval_results');
	$dbh->do('CREATE TEMP TABLE soak_ids (run_id text PRIMARY KEY, committed boolean NOT NULL)');
	for my $kind (['committed', 't'], ['rolledback', 'f'])
	{
		$dbh->do('COPY soak_ids FROM STDIN');
		for my $i (1 .. $CLIENTS)
		{
			open my $fh, '<', "$dir/$kind->[0].$i" or next;
			while (my $id = <$fh>)
			{
				chomp $id;
				$dbh->pg_putcopydata("$id\t$kind->[1]\n");
			}
		}
		$dbh->pg_putcopyend();
	}
	my ($known, $lost, $ghosts, $unknown) = $dbh->selectrow_array(q{
		SELECT (SELECT count(*) FROM soak_ids WHERE committed),
			   (SELECT count(*) FROM soak_ids s WHERE s.committed
				   AND NOT EXISTS (SELECT FROM gate_bridge.eval_results e
								   WHERE e.eval_run_id = s.run_id)),
			   (SELECT count(*) FROM gate_bridge.eval_results e
				  JOIN soak_ids s ON s.run_id = e.eval_run_id AND NOT s.committed),
			   (SELECT count(*) FROM gate_bridge.eval_results e
				 WHERE NOT EXISTS (SELECT FROM soak_ids s WHERE s.run_id = e.eval_run_id))});
	ok($rows_in_table == $w{committed_rows} && $known == $w{committed_rows}
	   && !$lost && !$ghosts && !$unknown,
	   "5. the table holds exactly the $w{committed_rows} rows the writers committed"
	   . " ($rows_in_table rows; $w{rolled_back_rows} rows rolled back)",
	   "rows in the table: $rows_in_table; committed according to the writers: $w{committed_rows}"
	   . " ($known ids recorded)",
	   "committed but missing: $lost; present though rolled back: $ghosts; present and unknown: $unknown");
}

# --- 6. every violation accounted for ---------------------------------------------
my %totals;
{
	my $rows = $dbh->selectall_arrayref(q{
		WITH stored AS (
			SELECT 'BUDGET_' || agent || '_quality' AS key,
				   count(*) FILTER (WHERE quality < 0.8) AS n
			  FROM gate_bridge.eval_results GROUP BY agent
			UNION ALL
			SELECT 'BUDGET_' || agent || '_latency',
				   count(*) FILTER (WHERE latency_p95_ms > 1000)
			  FROM gate_bridge.eval_results GROUP BY agent
		), inc AS (
			SELECT key, count(*) AS incidents, sum(occurrences) AS occurrences
			  FROM gate_bridge.incidents WHERE kind = 'budget' GROUP BY key
		), k AS (
			SELECT key, created, rate_limited FROM gate_bridge.incident_keys
			 WHERE kind = 'budget'
		)
		SELECT key, COALESCE(s.n, 0), COALESCE(inc.incidents, 0),
			   COALESCE(inc.occurrences, 0), COALESCE(k.created, 0),
			   COALESCE(k.rate_limited, 0)
		  FROM stored s FULL JOIN inc USING (key) FULL JOIN k USING (key)
		 ORDER BY key});
	my @diff;
	my %db_keys;
	for my $r (@$rows)
	{
		my ($key, $stored, $incidents, $occ, $created, $rl) = @$r;
		my $client = $w{violations}{$key} // 0;

		$db_keys{$key} = 1;
		$totals{$_->[0]} += $_->[1]
		  for ([stored => $stored], [incidents => $incidents], [occurrences => $occ],
			   [created => $created], [rate_limited => $rl], [client => $client]);
		$totals{limited_keys}++ if $rl > 0;
		$totals{most_per_key} = $incidents if $incidents > ($totals{most_per_key} // 0);
		push @diff, "$key: occurrences $occ + rate limited $rl = " . ($occ + $rl)
		  . ", writers committed $client violations, stored rows show $stored;"
		  . " incidents $incidents, created counter $created"
		  unless $occ + $rl == $client && $client == $stored && $created == $incidents;
	}
	push @diff, map { "$_: writers committed violations the database knows nothing of" }
	  grep { !$db_keys{$_} } sort keys %{$w{violations}};
	my $keys_hit = grep { $_->[1] > 0 } @$rows;
	ok(!@diff,
	   "6a. per key, occurrences + rate limited = violations committed = violations stored"
	   . " ($totals{occurrences} + $totals{rate_limited} = $violations_committed over $keys_hit keys)",
	   @diff[0 .. min(4, $#diff)]);

	my ($s_created, $s_dedup, $s_rl) = $dbh->selectrow_array(
		q{SELECT sum(created), sum(deduplicated), sum(rate_limited) FROM gate_bridge.stats});
	my ($n_incidents, $n_dedup) = $dbh->selectrow_array(
		q{SELECT count(*), COALESCE(sum(occurrences - 1), 0) FROM gate_bridge.incidents});
	$totals{dedup} = $n_dedup;
	ok($s_created == $n_incidents && $s_dedup == $n_dedup && $s_rl == $totals{rate_limited},
	   "6b. gate_bridge.stats agrees: created $s_created, deduplicated $s_dedup, rate limited $s_rl",
	   "incidents $n_incidents, occurrences - 1: $n_dedup, rate limited per key: $totals{rate_limited}");
}

# --- the storm was a storm ------------------------------------------------------------
{
	my ($acks, $resolves) = $dbh->selectrow_array(
		q{SELECT count(*) FILTER (WHERE event = 'acked'), count(*) FILTER (WHERE event = 'resolved')
			FROM gate_bridge.incident_events});
	my $races = sum0(values %{$op->{races} // {}});
	my @missing;
	push @missing, 'no incident created' unless $totals{incidents};
	push @missing, 'no key had more than one incident' unless ($totals{most_per_key} // 0) > 1;
	push @missing, 'nothing deduplicated' unless $totals{dedup};
	push @missing, 'nothing rate limited' unless $totals{rate_limited};
	push @missing, "no window at the limit" unless $saturated_windows;
	push @missing, 'no ack' unless $acks;
	push @missing, 'no resolve' unless $resolves;
	push @missing, 'no race' unless $races;
	push @missing, 'no rolled-back row' unless $w{rolled_back_rows};
	push @missing, 'no poison statement' unless $w{expected_errors};
	ok(!@missing, '7. the storm exercised every path (creation, deduplication, rate limiting'
	   . ' at the limit, ack, resolve, races, rollbacks, failed statements)', @missing);
}

# --- 8. the lifecycle: snoozes, silences, reopening, auto-resolve -----------------
{
	ok(!@walk_bad, '8a. every transition on the timeline once, in an order the lifecycle allows'
	   . ' (a snooze expires only while it runs, no two resolutions without a reopen between,'
	   . ' a reopen only of a resolution, by a writer; an escalation raises)',
	   scalar(@walk_bad) . ' bad', @walk_bad[0 .. min(4, $#walk_bad)]);

	# auto-resolutions: by gate_bridge only (8a), for the reasons the
	# agents' budgets give, and exactly the incidents resolved_by says
	my %recovering = map { $_ => 1 } @RECOVERING;
	my @auto_bad;
	for my $e (grep { $_->{event} eq 'auto_resolved' } @events)
	{
		my $agent = $inc{$e->{incident_id}}{agent};
		my $r = $e->{d}{reason} // 'NULL';
		push @auto_bad, "incident $e->{incident_id} ($agent) auto-resolved: $e->{detail}"
		  unless ($r eq 'recovered' && $recovering{$agent} && ($e->{d}{passes} // 0) >= $RESOLVE_AFTER
				  && ($e->{d}{resolve_after} // 0) == $RESOLVE_AFTER)
		  || ($r eq 'quiet' && $agent eq $QUIET_AGENT);
	}
	my @by_bridge = grep { ($_->{resolved_by} // '') eq 'gate_bridge' } values %inc;
	my @last_auto = grep {
		my @res = grep { $_->{event} =~ /^(resolved|auto_resolved|reopened)$/ } @{$timeline{$_}};
		@res && $res[-1]{event} eq 'auto_resolved'
	} keys %inc;
	ok(!@auto_bad && @by_bridge == @last_auto,
	   '8b. auto_resolved events (' . ($count{auto_resolved} // 0) . ') only for the agents whose budgets'
	   . " say so (after $RESOLVE_AFTER or more passing rows, or ${RESOLVE_QUIET} s quiet), and exactly the incidents"
	   . " resolved by gate_bridge now end with one (" . scalar(@by_bridge) . ')',
	   @auto_bad[0 .. min(4, $#auto_bad)],
	   (@by_bridge == @last_auto ? undef : scalar(@by_bridge) . ' incidents resolved by gate_bridge, '
		. scalar(@last_auto) . ' whose last resolution is auto_resolved'));

	# nothing announced while silenced
	my @silences = @{$op->{silences} // []};
	my %ends = map { $_->[0] => $_->[1] } @{$dbh->selectall_arrayref(
		'SELECT id, extract(epoch FROM ends_at)::float8 FROM gate_bridge.silences')};
	my $held_by = sub {
		my ($e) = @_;
		my $i = $inc{$e->{incident_id}};
		for my $s (@silences)
		{
			next unless $i->{agent} eq $s->{agent} && (!defined $s->{type} || $i->{subject} eq $s->{type});
			return ($s, $e->{t} > $s->{committed} + $SILENCE_MARGIN
					&& $e->{t} < ($s->{unsilence_started} // $ends{$s->{id}} // 0) - $SILENCE_MARGIN);
		}
		return;
	};
	my (@loud, @quiet_bad);
	my $n_held = 0;
	for my $e (@events)
	{
		my ($s, $inside) = $held_by->($e);

		push @loud, "event $e->{id} ($e->{event} of incident $e->{incident_id}) is silenced but was"
		  . " announced $announced{$e->{id}} times"
		  if $e->{silenced} && $announced{$e->{id}};
		push @loud, "event $e->{id} ($e->{event} of incident $e->{incident_id}) is silenced but paged"
		  if $e->{silenced} && $paged{$e->{id}};
		push @loud, "incident $e->{incident_id} paged by its creation (event $e->{id}) while silence"
		  . " $s->{id} was on"
		  if $inside && $e->{event} eq 'created' && $paged{$e->{id}};
		push @quiet_bad, "event $e->{id} ($e->{event} of incident $e->{incident_id}) is silenced,"
		  . ' but none of the silences covers its key'
		  if $e->{silenced} && !$s;
		push @quiet_bad, "event $e->{id} ($e->{event} of incident $e->{incident_id}) came while"
		  . " silence $s->{id} was on, but was not held back"
		  if $inside && !$e->{silenced} && $e->{event} =~ /^(created|reopened|escalated|silenced)$/;
		$n_held++ if $e->{silenced};
	}
	ok(!@loud && !@quiet_bad,
	   "8c. nothing announced while silenced ($n_held events held back): no silenced event on"
	   . " $EVENTS_CHANNEL or $CHANNEL, no page for a creation inside a silence; every creation,"
	   . ' reopen, escalation inside one was held back, and only those of silenced keys',
	   @loud[0 .. min(4, $#loud)], @quiet_bad[0 .. min(4, $#quiet_bad)]);

	# every resolution announced: the queue never skipped, and every event
	# not held back (resolutions never are) came exactly once
	my ($skipped) = $dbh->selectrow_array(
		'SELECT COALESCE(sum(notifications_skipped), 0) FROM gate_bridge.stream_status');
	my @unannounced = map { "$_->{event} of incident $_->{incident_id} (event $_->{id}) announced "
							  . ($announced{$_->{id}} // 0) . ' times' }
	  grep { !$_->{silenced} && ($announced{$_->{id}} // 0) != 1 } @events;
	my $n_resolutions = grep { $_->{event} =~ /^(resolved|auto_resolved)$/ } @events;
	my @res_unannounced = grep { /^(resolved|auto_resolved) / } @unannounced;
	ok($skipped == 0 && !@unannounced,
	   "8d. every resolution ($n_resolutions) announced on $EVENTS_CHANNEL, and every other event"
	   . " not held back, exactly once (notifications skipped: $skipped)",
	   scalar(@unannounced) . ' events not announced exactly once, ' . scalar(@res_unannounced)
	   . ' of them resolutions', @unannounced[0 .. min(4, $#unannounced)]);

	my %silence_ended_by;
	for my $e (grep { $_->{event} eq 'silence_ended' } @events)
	{
		my ($s) = grep { $_->{id} == ($e->{d}{silence_id} // 0) } @silences;
		$silence_ended_by{$s && defined $s->{type} ? 'tick' : 'unsilence'}++;
	}
	my @missing;
	for my $what ('snoozed', 'snooze_expired', 'reopened', 'escalated', 'auto_resolved recovered',
				  'auto_resolved quiet')
	{
		push @missing, "no $what" unless $count{$what};
	}
	push @missing, 'nothing held back by a silence' unless $n_held;
	# a silence that runs out ends by tick() only if an incident it holds is
	# still unresolved then, which the operator may have resolved: not required
	push @missing, 'no silence ended by unsilence' unless $silence_ended_by{unsilence};
	push @missing, 'no tick made a transition' unless $op->{tick_transitions};
	push @missing, 'no concurrent ticks' unless $op->{ticks_concurrent};
	ok(!@missing, '8e. the storm exercised the lifecycle (snooze and its expiry, silences ended by'
	   . ' unsilence and by tick, reopen, escalation, auto-resolve after passing rows and when quiet)',
	   @missing);
}

$dbh->disconnect;

###########################################################################
# Figures
###########################################################################

sub pct
{
	my ($p, @v) = @_;

	return 'n/a' unless @v;
	@v = sort { $a <=> $b } @v;
	return sprintf('%.1f', $v[min($#v, int($p / 100 * @v))]);
}

my $secs = $t_end - $t_start;
my %ops = %{$w{ops}};
my $n_ops = sum0(values %ops);
my $moves = $op->{moves} // {};
my $races = $op->{races} // {};

print "#\n# figures\n";
printf "#   storm: %.1f s (listener drained %.1f s later), %d writers\n",
  $secs, $t_drained - $t_end, $CLIENTS;
printf "#   writer operations: %d (%s)\n", $n_ops,
  join(', ', map { "$_ $ops{$_}" } sort keys %ops);
printf "#   eval rows committed: %d (%.0f rows/s); rolled back or failed: %d; poison statements refused: %d\n",
  $w{committed_rows}, $w{committed_rows} / $secs, $w{rolled_back_rows}, $w{expected_errors};
printf "#   violations committed: %d over %d keys (%.0f/s)\n",
  $violations_committed, scalar(keys %{$w{violations}}), $violations_committed / $secs;
printf "#   incidents created: %d; deduplicated: %d; rate limited: %d (on %d keys); windows at the limit: %d\n",
  $totals{incidents} // 0, $totals{dedup} // 0, $totals{rate_limited} // 0,
  $totals{limited_keys} // 0, $saturated_windows // 0;
printf "#   notifications received: %d (%d pages on %s, %d events on %s)\n", $n_notified,
  scalar(@created_notes), $CHANNEL, scalar(@event_notes), $EVENTS_CHANNEL;
printf "#   lifecycle: %s; %d ticks (%d twice at once), %d transitions\n",
  join(', ', map { "$_ " . ($count{$_} // 0) }
	   'snoozed', 'snooze_expired', 'reopened', 'escalated', 'auto_resolved recovered',
	   'auto_resolved quiet', 'silence_ended'),
  $op->{ticks} // 0, $op->{ticks_concurrent} // 0, $op->{tick_transitions} // 0;
printf "#   operator: %d acks, %d snoozes, %d resolves; races: %s; race losers (SQLSTATE 55000): %d\n",
  $moves->{ack} // 0, $moves->{snooze} // 0, $moves->{resolve} // 0,
  join(', ', map { "$_ $races->{$_}" } sort keys %$races) || 'none', $op->{race_losers} // 0;
printf "#   single-row INSERT latency, ms (p50/p95/p99/max): clean %s/%s/%s/%s (n=%d), violating %s/%s/%s/%s (n=%d)\n",
  (map { pct($_, @lat_clean) } 50, 95, 99, 100), scalar(@lat_clean),
  (map { pct($_, @lat_violating) } 50, 95, 99, 100), scalar(@lat_violating);
printf "# %d checks, %d failed\n", $n_checks, $n_failed;

if ($ENV{GB_SOAK_KEEP})
{
	# pg_virtualenv keeps the server log beside its configuration
	my ($log) = glob(($ENV{PGSYSCONFDIR} // '/nonexistent') . '/../log/*.log');
	if ($log && File::Copy::copy($log, "$dir/server.log"))
	{
		print "# server log copied to $dir/server.log\n";
	}
}
else
{
	drop_all();
}

exit($n_failed ? 1 : 0);
