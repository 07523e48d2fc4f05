#!/usr/bin/perl
#
# A consumer of the event stream across every way its history can be
# rewritten under it.  The consumer is what any client does: it stores the
# last position it processed, calls gate_bridge.events_after() with it,
# and on SQLSTATE SR001 (the server does not hold that position) resumes
# from gate_bridge.events_resume_point().  For each case it must be told
# (SR001) instead of silently skipping, resume where the server says, and
# afterwards have been handed every event the server now holds exactly
# once, with the content the server holds, and never two different events
# under one position.  Clusters of their own (GBCluster):
#
#	a. Failover to a streaming standby that is behind: the standby is
#	   stopped, the primary records events that the consumer reads, the
#	   primary stops hard, the standby is promoted.  The consumer connects
#	   with a multi-host conninfo (primary, standby;
#	   target_session_attrs=read-write) and so lands on the promoted
#	   standby by itself.  What it read there is gone; it is told, resumes
#	   at the standby's last position, and the promoted server's events
#	   (recorded before and after the consumer came back) have positions of
#	   a new history, above 1,000,000,000.
#	b. A crash with asynchronous commit (synchronous_commit = off,
#	   wal_writer_delay = 10s).  The WAL writer is frozen (SIGSTOP) so that
#	   the crash certainly lands before the commits the consumer read were
#	   written out; the test checks that their WAL was written nowhere.
#	   b1: the server is stopped immediately (pg_ctl stop -m immediate; the
#	       postmaster kills the frozen WAL writer) and started again;
#	   b2: a backend is killed with SIGKILL (as the OOM killer does): the
#	       postmaster ends every other server process, runs crash recovery
#	       and carries on without restarting itself, so
#	       pg_postmaster_start_time() does not change, and still the
#	       positions after it are a new history.
#	   Events and eval rows the consumer read are gone together; the
#	   consumer is told and skips nothing the server holds.
#	c. TRUNCATE incidents, incident_events, incident_keys RESTART IDENTITY
#	   CASCADE under a consumer with a stored position: SR001, resume point
#	   0, and the events recorded afterwards (positions continue above the
#	   stored one: the position sequence is not the table's) are delivered.
#	d. A clean restart: positions move on to the next multiple of
#	   1,000,000,000, the stored position still exists, so no SR001, and
#	   nothing is skipped.
#	e. Not a rewind: the consumer moves from the primary to a standby that
#	   has not replayed its position yet (replay paused).  It gets nothing
#	   until the standby catches up, then only what is new: no SR001, no
#	   event twice.
#
# Runs anywhere the PostgreSQL 15 server binaries and gate_bridge are
# installed (as root the clusters run as the postgres user, and the test
# signals their processes); inside pg_virtualenv too, whose cluster it does
# not use.
#
# test/t/rewind.pl

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GBCluster;
use GBUtil qw(slurp);
use Test::More;
use Time::HiRes qw(time);

my $started = time;
my $DB = 'gb_rewind';
my $EPOCH = 1_000_000_000;

######################################################## the consumer

package Consumer;

use Carp qw(croak);
use DBI;

# Consumer->new(NAME, CONNINFO): nothing read yet, position 0
sub new
{
	my ($class, $name, $conninfo) = @_;

	return bless {
		name => $name,
		conninfo => $conninfo,
		position => 0,
		content => {},		# position => the event as it was delivered
		delivered => {},	# position => how many times it was delivered
		conflicts => [],	# one position, two different events
		backwards => [],	# a delivery at or below the one before
		told => [],			# every SR001: {from, to, message}
	}, $class;
}

sub point_at
{
	my ($self, $conninfo) = @_;

	$self->disconnect;
	$self->{conninfo} = $conninfo;
}

sub disconnect
{
	my ($self) = @_;

	eval { $self->{dbh}->disconnect } if $self->{dbh};
	delete $self->{dbh};
}

sub dbh
{
	my ($self) = @_;

	return $self->{dbh} if $self->{dbh} && $self->{dbh}->ping;
	$self->disconnect;
	# errors raise, but are not printed: SR001 is expected
	$self->{dbh} = DBI->connect("dbi:Pg:$self->{conninfo}", undef, undef,
								{RaiseError => 1, PrintError => 0, AutoCommit => 1,
								 AutoInactiveDestroy => 1});
	# the server's farewell in a crash is no news here
	$self->{dbh}->do('SET client_min_messages = error');
	return $self->{dbh};
}

# where the consumer is connected, for the log
sub server
{
	my ($self) = @_;

	return join ' ', $self->dbh->selectrow_array(
		q{SELECT current_setting('port'), CASE WHEN pg_catalog.pg_is_in_recovery()
										   THEN 'standby' ELSE 'primary' END});
}

# The event as the consumer compares it: everything but the position.
my $COLUMNS = q{e.position, pg_catalog.concat_ws(' | ', e.id, e.incident_id, e.event, e.at, e.actor, e.detail)};

# poll: read everything after the stored position, 100 events a call, as a
# consumer does; SR001 moves the position back to the resume point.  The
# number of events delivered.
sub poll
{
	my ($self) = @_;
	my $delivered = 0;

	for (my $calls = 0;; $calls++)
	{
		croak "$self->{name}: more than 1000 calls of events_after() in one poll" if $calls > 1000;
		my $dbh = $self->dbh;
		my $rows = eval {
			$dbh->selectall_arrayref("SELECT $COLUMNS FROM gate_bridge.events_after(\$1, 100) e",
									 undef, $self->{position});
		};
		unless ($rows)
		{
			my ($state, $message) = ($dbh->state, $dbh->errstr // $@);
			croak "$self->{name}: events_after($self->{position}) failed: $message"
			  unless $state eq 'SR001';
			my $resume = $dbh->selectrow_array('SELECT gate_bridge.events_resume_point($1)',
											   undef, $self->{position});
			push @{$self->{told}}, {from => $self->{position}, to => $resume, message => $message};
			$self->{position} = $resume;
			next;
		}
		last unless @$rows;
		for my $row (@$rows)
		{
			my ($position, $content) = @$row;

			push @{$self->{backwards}}, "$position after $self->{position}"
			  if $position <= $self->{position};
			push @{$self->{conflicts}}, "$position: '$self->{content}{$position}' and '$content'"
			  if exists $self->{content}{$position} && $self->{content}{$position} ne $content;
			$self->{content}{$position} = $content;
			$self->{delivered}{$position}++;
			$self->{position} = $position;
			$delivered++;
		}
	}
	return $delivered;
}

# the SR001s since the count given
sub told_since
{
	my ($self, $count) = @_;
	my @told = @{$self->{told}};

	return @told[$count .. $#told];
}

package main;

# check_consumer CONSUMER CLUSTER LABEL: the consumer was handed every
# event CLUSTER holds exactly once, as the server holds it, never one
# position for two events, never a position at or below the one before.
# Returns the positions it was handed that the server does not hold.
sub check_consumer
{
	my ($consumer, $cluster, $label) = @_;
	my $held = $cluster->rows($DB, "SELECT $COLUMNS FROM gate_bridge.incident_events e"
							  . ' WHERE e.position IS NOT NULL ORDER BY e.position');
	my %held = map { $_->[0] => $_->[1] } @$held;
	my @missing = grep { !$consumer->{delivered}{$_->[0]} } @$held;
	my @twice = grep { $consumer->{delivered}{$_} > 1 } sort { $a <=> $b } keys %{$consumer->{delivered}};
	my @changed = grep { $consumer->{delivered}{$_->[0]} && $consumer->{content}{$_->[0]} ne $_->[1] }
	  @$held;
	my $unnumbered = $cluster->query($DB, 'SELECT count(*) FROM gate_bridge.incident_events'
									 . ' WHERE position IS NULL');

	subtest "$label: the consumer has every event the server holds, once" => sub {
		ok(scalar @$held, scalar(@$held) . ' events held, the last at ' . ($held->[-1][0] // 'none'));
		is($unnumbered, 0, 'every committed event has a position');
		is_deeply([map { $_->[0] } @missing], [], 'none of them skipped');
		is_deeply(\@twice, [], 'no position delivered twice');
		is_deeply([map { $_->[0] } @changed], [], 'each delivered as the server holds it');
		is_deeply($consumer->{conflicts}, [], 'never two different events under one position');
		is_deeply($consumer->{backwards}, [], 'positions only ever went up between SR001s');
	};
	return grep { !exists $held{$_} } sort { $a <=> $b } keys %{$consumer->{delivered}};
}

# setup CLUSTER: the database, a budget, and a writer session
sub setup
{
	my ($cluster) = @_;

	$cluster->create_database($DB, extension => 'gate_bridge');
	$cluster->sql($DB, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
						 VALUES ('rw.*', 'quality', 0.90, 0.80, 0.50)});
}

# make_events CLUSTER TAG N [SYNCHRONOUS_COMMIT]: N eval rows of agents
# rw.TAG.1 .. rw.TAG.N, each committed on its own and each creating an
# incident, then the first of them acked: N + 1 events.  Their positions.
sub make_events
{
	my ($cluster, $tag, $n, $sync) = @_;
	my $dbh = $cluster->connect($DB);

	$dbh->do("SET synchronous_commit = $sync") if $sync;
	$dbh->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ($1, 0.10)',
			 undef, "rw.$tag.$_") for 1 .. $n;
	$dbh->selectrow_array(q{SELECT gate_bridge.ack(id, 'rw') FROM gate_bridge.incidents WHERE agent = $1},
						  undef, "rw.$tag.1");
	my $positions = $dbh->selectcol_arrayref(
		q{SELECT e.position FROM gate_bridge.incident_events e
			JOIN gate_bridge.incidents i ON i.id = e.incident_id
		   WHERE i.agent LIKE $1 ORDER BY e.position}, undef, "rw.$tag.%");
	$dbh->disconnect;
	is(scalar @$positions, $n + 1, "$tag: " . ($n + 1) . " events recorded at @$positions");
	return @$positions;
}

# rows of TAG's agents: [eval rows, incidents]
sub tag_rows
{
	my ($cluster, $tag) = @_;

	return [$cluster->query($DB, q{SELECT (SELECT count(*) FROM gate_bridge.eval_results WHERE agent LIKE $1),
										  (SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE $1)},
							"rw.$tag.%")];
}

# how often the server log says that a new history began, and at what
sub new_histories
{
	my ($cluster) = @_;

	return (slurp($cluster->log_file) =~ /event positions start a new history at (\d+)/g);
}

sub pid_of
{
	my ($cluster, $type) = @_;

	return $cluster->query('postgres', 'SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type = $1',
						   $type);
}

# told_once LABEL CONSUMER SINCE FROM TO: exactly one SR001 since SINCE,
# for position FROM, resumed at TO
sub told_once
{
	my ($label, $consumer, $since, $from, $to) = @_;
	my @told = $consumer->told_since($since);

	subtest "$label: the consumer is told (SR001) and resumes at the server's last position" => sub {
		is(scalar @told, 1, 'told once');
		is($told[0]{from}, $from, "for its stored position $from");
		is($told[0]{to}, $to, "resumed at $to");
		like($told[0]{message} // '', qr/the event stream has no position $from\b/, 'the message names the position');
		like($told[0]{message} // '', qr/the last position this server holds before it is $to\b/,
			 'the detail names the resume point');
	};
	note("$label: SR001 for $from, resumed at $to") if @told == 1;
}

sub last_of { return $_[-1] }

######################################################## a. failover

{
	my $t0 = time;
	my $primary = GBCluster->new('rw_primary');
	$primary->start;
	setup($primary);
	my $standby = $primary->backup_standby('rw_standby');
	$standby->start;

	my $consumer = Consumer->new('failover consumer',
								 "host=" . $primary->host . ',' . $standby->host
								 . ';port=' . $primary->port . ',' . $standby->port
								 . ";dbname=$DB;user=postgres;target_session_attrs=read-write");
	my @before = make_events($primary, 'a_before', 3);
	ok($primary->wait_for_replay($standby), 'a: the standby replayed the first events')
	  or BAIL_OUT('the standby does not replay');
	is($consumer->poll, scalar @before, 'a: the consumer read the first events');
	is($consumer->server, $primary->port . ' primary', 'a: the consumer is on the primary');
	cmp_ok($before[-1], '<', $EPOCH, 'a: the first history starts at 1');

	# the standby falls behind: what follows never reaches it
	$standby->stop;
	my @lost = make_events($primary, 'a_lost', 2);
	is($consumer->poll, scalar @lost, 'a: the consumer read events the standby never got');
	$primary->stop('immediate');

	$standby->start;
	is($standby->query('postgres', 'SELECT pg_catalog.pg_is_in_recovery()'), 1,
	   'a: the standby is still in recovery');
	is_deeply(tag_rows($standby, 'a_lost'), [0, 0], 'a: the standby has none of those rows');
	$standby->promote;
	is($standby->query('postgres', 'SELECT pg_catalog.pg_is_in_recovery()'), 0, 'a: the standby is promoted');

	# events recorded on the promoted server before the consumer comes back
	my @after = make_events($standby, 'a_after', 2);
	cmp_ok($after[0], '>', $EPOCH, "a: the promoted server's positions are a new history ($after[0])");
	is_deeply([new_histories($standby)], [$EPOCH + 1],
			  'a: its log says the positions start a new history at 1000000001');

	my $told = @{$consumer->{told}};
	is($consumer->poll, scalar @after, 'a: the consumer, back through the same conninfo, reads the new events');
	is($consumer->server, $standby->port . ' primary', 'a: it landed on the promoted standby');
	told_once('a', $consumer, $told, $lost[-1], $before[-1]);

	my @later = make_events($standby, 'a_later', 1);
	is($consumer->poll, scalar @later, 'a: and what comes after');
	is_deeply([check_consumer($consumer, $standby, 'a')], \@lost,
			  'a: the only events it read that the server no longer holds are those the standby never got');
	is(scalar @{$consumer->{told}}, $told + 1, 'a: told once in all');
	$consumer->disconnect;
	note(sprintf 'a: %.1fs', time - $t0);
}

######################################################## b. crash with asynchronous commit

# crash_tail LABEL CLUSTER CONSUMER CRASH: events whose commits are only in
# the WAL buffers when CRASH (a sub) brings the server down, read by the
# consumer before; afterwards the server has lost them, tells the consumer,
# and gives the next events positions of a new history
sub crash_tail
{
	my ($label, $cluster, $consumer, $crash) = @_;

	my @kept = make_events($cluster, "${label}_kept", 2, 'on');
	is($consumer->poll, scalar @kept, "$label: the consumer read events whose commits were flushed");

	my $walwriter = pid_of($cluster, 'walwriter');
	ok($walwriter && kill('STOP', $walwriter), "$label: the WAL writer ($walwriter) is frozen");
	my $written = $cluster->query('postgres', 'SELECT pg_catalog.pg_current_wal_lsn()');
	my @lost = make_events($cluster, "${label}_lost", 3, 'off');
	is($consumer->poll, scalar @lost, "$label: the consumer read events committed asynchronously");
	my ($inserted, $written_now) = $cluster->query(
		'postgres', 'SELECT pg_catalog.pg_current_wal_insert_lsn(), pg_catalog.pg_current_wal_lsn()');
	note("$label: WAL inserted up to $inserted, written up to $written_now (before the events: $written)");
	my $unwritten = $cluster->query('postgres', 'SELECT $1::pg_lsn = $2::pg_lsn AND $3::pg_lsn > $2::pg_lsn',
									$written_now, $written, $inserted);

	my $postmaster_started = $cluster->query('postgres', 'SELECT pg_catalog.pg_postmaster_start_time()');
	$crash->($walwriter);

	my $rows = tag_rows($cluster, "${label}_lost");
	SKIP:
	{
		skip("$label: some of the asynchronous commits reached the disk before the crash"
			 . " (WAL written up to $written_now, inserted up to $inserted); nothing was lost", 1)
		  unless $unwritten || $rows->[0] > 0;
		ok($unwritten, "$label: none of their WAL had been written when the server went down");
		is_deeply($rows, [0, 0], "$label: their eval rows and incidents are gone together");
	}
	is_deeply(tag_rows($cluster, "${label}_kept"), [2, 2], "$label: the flushed ones are there");

	my $told = @{$consumer->{told}};
	my @after = make_events($cluster, "${label}_after", 1);
	my $epochs = int($kept[-1] / $EPOCH) + 1;
	cmp_ok($after[0], '>', $epochs * $EPOCH, "$label: the next positions are a new history ($after[0])");
	is(last_of(new_histories($cluster)), $epochs * $EPOCH + 1,
	   "$label: the log says so (a new history at " . ($epochs * $EPOCH + 1) . ')');
	is($consumer->poll, scalar @after, "$label: the consumer reads what came after");
	told_once($label, $consumer, $told, $lost[-1], $kept[-1]) if $rows->[0] == 0;
	is_deeply([grep { $_ > $kept[-1] } check_consumer($consumer, $cluster, $label)],
			  $rows->[0] == 0 ? \@lost : [],
			  "$label: it read nothing more that the server no longer holds than the lost events");
	return $postmaster_started;
}

{
	my $t0 = time;
	my $cluster = GBCluster->new('rw_async',
								 settings => {synchronous_commit => 'off',
											  wal_writer_delay => "'10s'",
											  # nothing else writes WAL out meanwhile
											  wal_buffers => "'4MB'",
											  bgwriter_lru_maxpages => 0,
											  autovacuum => 'off',
											  checkpoint_timeout => "'1h'",
											  max_wal_size => "'1GB'"});
	$cluster->start;
	setup($cluster);
	my $consumer = Consumer->new('async consumer',
								 "host=" . $cluster->host . ';port=' . $cluster->port
								 . ";dbname=$DB;user=postgres");

	# b1: pg_ctl stop -m immediate (the postmaster kills the frozen WAL
	# writer after 5 s) and a start
	crash_tail('b1', $cluster, $consumer, sub {
		$cluster->stop('immediate');
		$cluster->start;
	});

	# b2: a backend killed; the postmaster carries on
	my $victim = $cluster->connect('postgres');
	$victim->do('SET client_min_messages = error');
	my $victim_pid = $victim->selectrow_array('SELECT pg_catalog.pg_backend_pid()');
	my $cycles = () = slurp($cluster->log_file) =~ /all server processes terminated; reinitializing/g;
	my $postmaster_started;
	$postmaster_started = crash_tail('b2', $cluster, $consumer, sub {
		my ($walwriter) = @_;

		$cluster->disconnect_all;
		ok(kill('KILL', $victim_pid), "b2: backend $victim_pid killed with SIGKILL");
		ok($cluster->poll_until(
			   'the postmaster to reinitialise after the crash and accept connections again',
			   sub {
				   my $n = () = slurp($cluster->log_file) =~ /all server processes terminated; reinitializing/g;
				   return 0 unless $n > $cycles;
				   my $dbh = $cluster->connect('postgres');
				   my $ok = $dbh->selectrow_array('SELECT NOT pg_catalog.pg_is_in_recovery()');
				   $dbh->disconnect;
				   return $ok;
			   }),
		   'b2: the postmaster ran crash recovery by itself')
		  or BAIL_OUT('the server did not come back after the crash');
		$cluster->disconnect_all;
		isnt(pid_of($cluster, 'walwriter'), $walwriter, 'b2: a new WAL writer');
	});
	is($cluster->query('postgres', 'SELECT pg_catalog.pg_postmaster_start_time()'), $postmaster_started,
	   'b2: the postmaster did not restart (pg_postmaster_start_time() is the same)');
	$consumer->disconnect;
	note(sprintf 'b: %.1fs', time - $t0);
}

######################################################## d. clean restart, c. TRUNCATE, e. a lagging standby

{
	my $t0 = time;
	my $cluster = GBCluster->new('rw_plain');
	$cluster->start;
	setup($cluster);
	my $consumer = Consumer->new('consumer',
								 "host=" . $cluster->host . ';port=' . $cluster->port
								 . ";dbname=$DB;user=postgres");

	# d. a clean restart
	my @before = make_events($cluster, 'd_before', 2);
	is($consumer->poll, scalar @before, 'd: the consumer read the first events');
	$cluster->restart;
	is($consumer->poll, 0, 'd: after the restart, nothing new and no SR001');
	my @after = make_events($cluster, 'd_after', 2);
	is($after[0], $EPOCH + 1, 'd: positions after the restart start at the next multiple of 1e9');
	is($consumer->poll, scalar @after, 'd: the consumer reads them');
	is(scalar @{$consumer->{told}}, 0, 'd: never told that its position is gone: it is not');
	is_deeply([check_consumer($consumer, $cluster, 'd')], [], 'd: nothing read that the server does not hold');

	# c. TRUNCATE ... RESTART IDENTITY under the consumer's stored position
	my $stored = $consumer->{position};
	$cluster->sql($DB, 'TRUNCATE gate_bridge.incident_rows, gate_bridge.incident_events,'
				  . ' gate_bridge.incident_keys RESTART IDENTITY CASCADE');
	my @new = make_events($cluster, 'c_after', 2);
	cmp_ok($new[0], '>', $stored, "c: positions go on after the TRUNCATE ($new[0] after $stored)");
	is($cluster->query($DB, 'SELECT min(id) FROM gate_bridge.incident_events'), 1,
	   'c: while event ids started again at 1');
	is($consumer->poll, scalar @new, 'c: the consumer reads the new events');
	told_once('c', $consumer, 0, $stored, 0);
	is_deeply([check_consumer($consumer, $cluster, 'c')], [@before, @after],
			  'c: what it read before the TRUNCATE is what the server no longer holds');
	note(sprintf 'c, d: %.1fs', time - $t0);

	# e. not a rewind: a standby that has not replayed the consumer's
	# position yet
	$t0 = time;
	my $standby = $cluster->backup_standby('rw_lagging');
	$standby->start;
	ok($cluster->wait_for_replay($standby), 'e: a standby has replayed everything');
	$standby->sql('postgres', 'SELECT pg_catalog.pg_wal_replay_pause()');
	ok($standby->poll_until('replay to pause',
							sub { $standby->query('postgres', 'SELECT pg_catalog.pg_get_wal_replay_pause_state()') eq 'paused' }),
	   'e: its replay is paused');
	my @ahead = make_events($cluster, 'e_ahead', 2);
	is($consumer->poll, scalar @ahead, 'e: the consumer read them on the primary');
	my $told = @{$consumer->{told}};
	$consumer->point_at("host=" . $standby->host . ';port=' . $standby->port . ";dbname=$DB;user=postgres");
	is($consumer->poll, 0, 'e: on the standby that has not replayed them, nothing yet');
	is($consumer->server, $standby->port . ' standby', 'e: the consumer is on the standby');
	is(scalar @{$consumer->{told}}, $told, 'e: and no SR001: its position is not gone, only not there yet');
	$standby->sql('postgres', 'SELECT pg_catalog.pg_wal_replay_resume()');
	my @more = make_events($cluster, 'e_more', 1);
	ok($cluster->wait_for_replay($standby), 'e: the standby caught up');
	is($consumer->poll, scalar @more, 'e: the consumer reads what is new, and only that');
	is(scalar @{$consumer->{told}}, $told, 'e: still no SR001');
	is_deeply([check_consumer($consumer, $standby, 'e')], [@before, @after],
			  'e: nothing read that the standby does not hold but what the TRUNCATE removed');
	$consumer->disconnect;
	note(sprintf 'e: %.1fs', time - $t0);
}

my $elapsed = time - $started;
cmp_ok($elapsed, '<', 120, sprintf('finished in %.0fs', $elapsed));

done_testing();
