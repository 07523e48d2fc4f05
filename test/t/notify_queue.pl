#!/usr/bin/perl
#
# NOTIFY never refuses an eval row.  A session that LISTENs and then stays
# idle in an open transaction keeps PostgreSQL's notification queue (8 GB
# of pages, pg_notify/ in the data directory) from being emptied; once it
# is full every commit that sends a notification fails with "too many
# notifications in the NOTIFY queue" (SQLSTATE 54000).  gate_bridge skips
# its notifications when the queue is half full, so eval rows and their
# incidents keep committing.  On a cluster of its own (GBCluster):
#
#	1. A watcher gets the notifications of a first incident: they flow.
#	2. A listener stays idle in an open transaction, and pg_notify()
#	   batches with ~4 kB payloads (one queue page each) fill the queue
#	   past half (about 4 GB written).
#	3. Eval rows that create incidents commit, one transaction each; the
#	   incidents and their timeline rows exist, with positions, and
#	   events_after() returns them; stream_status.notifications_skipped
#	   counts what was skipped (2 per created incident: incident_events
#	   and incident_created); the server log says so once, not once per
#	   transaction.
#	4. If there is disk and time for it, the queue is filled up (8 GB):
#	   a plain pg_notify() from another session fails with 54000, and
#	   gate_bridge's commits still succeed.
#	5. The stuck listener is ended (pg_terminate_backend), the queue
#	   drains, and a new incident is notified again, with nothing skipped.
#
# Needs about 4.5 GB free under TMPDIR (8.5 GB for step 4); skipped with
# the reason when there is less.  Runs in about a minute and prints its
# timings.  Runs anywhere the PostgreSQL 15 server binaries and
# gate_bridge are installed (as root the cluster runs as the postgres
# user); inside pg_virtualenv too, whose cluster it does not use.
#
# test/t/notify_queue.pl

use strict;
use warnings;

use File::Spec;
use FindBin;
use lib $FindBin::Bin;

use GBCluster;
use GBUtil qw(slurp wait_until);
use JSON::PP;
use Test::More;
use Time::HiRes qw(time);

my $DB = 'gb_notify_queue';
my $GB = 1024 * 1024 * 1024;
my $HALF_BYTES = 4.5 * $GB;		# the queue past half, and the rest of the cluster
my $FULL_BYTES = 8.5 * $GB;
my $FILL_SECONDS = 45;			# to reach half
my $FULL_BY = 80;				# seconds since the start: step 4 must be done by then
my $BATCH = 4000;				# notifications per filling transaction
my $PAYLOAD = 4100;				# bytes: one queue page per notification
my $SKIPPED = qr/gate_bridge: skipped (\d+) notifications, the notification queue is (\d+)% full/;

my $started = time;

sub since { return sprintf '%.1fs', time - $_[0] }

# free bytes in the file system of DIR
sub free_bytes
{
	my ($dir) = @_;
	my @df = `df -Pk '$dir' 2>/dev/null`;

	return undef unless @df >= 2 && (split ' ', $df[1])[3] =~ /^(\d+)$/;
	return $1 * 1024;
}

my $tmpdir = File::Spec->tmpdir;
my $free = free_bytes($tmpdir);
plan skip_all => "cannot tell how much disk is free under $tmpdir" unless defined $free;
plan skip_all => sprintf('%.1f GB free under %s; filling the notification queue past half needs %.1f GB',
						 $free / $GB, $tmpdir, $HALF_BYTES / $GB)
  if $free < $HALF_BYTES;
diag(sprintf '%.1f GB free under %s', $free / $GB, $tmpdir);

my $cluster = GBCluster->new('nq');
$cluster->start;
$cluster->create_database($DB, extension => 'gate_bridge');
$cluster->sql($DB, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
					 VALUES ('nq.*', 'quality', 0.90, 0.80, 0.50)});

my $writer = $cluster->connect($DB);
my $admin = $cluster->connect($DB);

sub usage { return $admin->selectrow_array('SELECT pg_catalog.pg_notification_queue_usage()') }

sub skipped_so_far
{
	return $admin->selectrow_array('SELECT notifications_skipped FROM gate_bridge.stream_status') // 0;
}

sub skip_lines { my @n = slurp($cluster->log_file) =~ /$SKIPPED/g; return @n / 2 }

# violating TAG N: N eval rows of agents nq.TAG.1 .. nq.TAG.N, each in a
# transaction of its own, each creating an incident; the seconds each
# commit took, and the errors
sub violating
{
	my ($tag, $n) = @_;
	my (@took, @errors);

	for my $i (1 .. $n)
	{
		my $t0 = time;
		eval {
			$writer->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ($1, 0.10)',
						undef, "nq.$tag.$i");
			1;
		} or push @errors, "nq.$tag.$i: " . ($writer->state // '') . ' ' . ($writer->errstr // $@);
		push @took, time - $t0;
	}
	return (\@took, \@errors);
}

# the positions of TAG's events
sub positions
{
	my ($tag) = @_;

	return $admin->selectcol_arrayref(
		q{SELECT e.position FROM gate_bridge.incident_events e
			JOIN gate_bridge.incidents i ON i.id = e.incident_id
		   WHERE i.agent LIKE $1 ORDER BY e.position}, undef, "nq.$tag.%");
}

# notifications CONNECTION COUNT: wait (bounded) until COUNT have arrived;
# all of them
sub notifications
{
	my ($dbh, $count) = @_;
	my @got;

	wait_until("$count notifications", 10, sub {
		while (my $n = $dbh->pg_notifies) { push @got, $n }
		return @got >= $count;
	});
	while (my $n = $dbh->pg_notifies) { push @got, $n }
	return @got;
}

# check_step LABEL TAG N TOOK ERRORS HEAD SKIPPED_BEFORE: N incidents of TAG
# committed with their events numbered, events_after(HEAD) returns them,
# and 2 N notifications were counted as skipped
sub check_step
{
	my ($label, $tag, $n, $took, $errors, $head, $skipped_before) = @_;
	my $positions = positions($tag);

	is_deeply($errors, [], "$label: $n eval rows that create incidents commit");
	is($admin->selectrow_array('SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE $1', undef, "nq.$tag.%"),
	   $n, "$label: their $n incidents exist");
	is(scalar(grep { defined } @$positions), $n, "$label: their $n created events have positions: @$positions");
	is_deeply($admin->selectcol_arrayref('SELECT position FROM gate_bridge.events_after($1)', undef, $head),
			  $positions, "$label: events_after($head) returns them");
	is(skipped_so_far() - $skipped_before, 2 * $n,
	   "$label: stream_status counts the " . (2 * $n) . ' notifications skipped');
	diag(sprintf "%s: %d commits, %.0f-%.0f ms each", $label, scalar @$took,
		 1000 * (sort { $a <=> $b } @$took)[0], 1000 * (sort { $a <=> $b } @$took)[-1]);
}

################################################################ 1. notifications flow

my $watcher = $cluster->connect($DB);
$watcher->do('LISTEN incident_created');
$watcher->do('LISTEN incident_events');
my ($took, $errors) = violating('first', 1);
is_deeply($errors, [], 'step 1: a first incident');
my @first = notifications($watcher, 2);
is_deeply([sort map { $_->[0] } @first], ['incident_created', 'incident_events'],
		  'step 1: the watcher got its two notifications');
is(skipped_so_far(), 0, 'step 1: nothing skipped');
$watcher->disconnect;

################################################################ 2. fill past half

my $listener = $cluster->connect($DB);
$listener->do('LISTEN anything');
$listener->begin_work;
$listener->do('SELECT 1');
my $listener_pid = $listener->selectrow_array('SELECT pg_catalog.pg_backend_pid()');
is($admin->selectrow_array('SELECT state FROM pg_catalog.pg_stat_activity WHERE pid = $1', undef, $listener_pid),
   'idle in transaction', 'step 2: a listener stays idle in an open transaction');

my $filler = $cluster->connect('postgres');
$filler->do('SET client_min_messages = error');		# PostgreSQL warns from half full on
my $sent = 0;
my $full_error;

# fill UNTIL DEADLINE: batches until UNTIL returns true, the deadline
# passes or the queue refuses a batch (then the error)
sub fill
{
	my ($until, $deadline) = @_;

	while (!$until->() && time < $deadline)
	{
		my $batch = $sent;
		my $ok = eval {
			$filler->do(q{SELECT pg_catalog.pg_notify('filler', $1 || ':' || i || repeat('x', $2))
						    FROM pg_catalog.generate_series(1, $3) AS i}, undef, $batch, $PAYLOAD, $BATCH);
			1;
		};
		unless ($ok)
		{
			return $full_error = [$filler->state, $filler->errstr];
		}
		$sent += $BATCH;
	}
	return undef;
}

my $t_fill = time;
my $error = fill(sub { usage() >= 0.5 }, $t_fill + $FILL_SECONDS);
my $fill_time = time - $t_fill;
my $half = usage();
diag(sprintf 'step 2: %d notifications in %.1fs (%.0f a second), queue %.1f%% full',
	 $sent, $fill_time, $sent / $fill_time, 100 * $half);
is($error, undef, 'step 2: the queue took every batch');

SKIP:
{
	skip(sprintf('the queue reached %.1f%% in %ds; this machine writes it too slowly to reach half',
				 100 * $half, $FILL_SECONDS), 1)
	  if $half < 0.5;

	################################################################ 3. past half

	my $head = $admin->selectrow_array('SELECT gate_bridge.events_head()');
	my $skipped_before = skipped_so_far();
	my $t_half = time;
	($took, $errors) = violating('half', 5);
	check_step('step 3', 'half', 5, $took, $errors, $head, $skipped_before);
	cmp_ok(usage(), '>=', 0.5, sprintf('step 3: the queue was %.1f%% full meanwhile', 100 * usage()));
	is(skip_lines(), 1, 'step 3: the server log says so once, not once per transaction');
	like(slurp($cluster->log_file), qr/$SKIPPED\n.*DETAIL:  The events are recorded/,
		 'step 3: with what it means');
	my ($logged_n, $logged_pct) = slurp($cluster->log_file) =~ $SKIPPED;
	note("step 3: logged: skipped $logged_n notifications, the queue is $logged_pct% full");

	################################################################ 4. full

	SKIP:
	{
		my $rate = $sent / $fill_time;			# notifications, and pages, a second
		my $to_full = (1 - usage()) * 1048576 / $rate;
		skip(sprintf('%.1f GB free under %s; filling the queue up needs %.1f GB',
					 $free / $GB, $tmpdir, $FULL_BYTES / $GB), 1)
		  if $free < $FULL_BYTES;
		skip(sprintf('filling the queue up would take about %.0fs more; the test stops at %ds',
					 $to_full, $FULL_BY), 1)
		  if time - $started + $to_full > $FULL_BY;

		my $t_full = time;
		my $refused = fill(sub { 0 }, $started + $FULL_BY);
		diag(sprintf 'step 4: %d notifications in all, full after %.1fs more (queue %.1f%% full): %s',
			 $sent, time - $t_full, 100 * usage(), $refused ? "@$refused" : 'not refused');
		ok($refused && $refused->[0] eq '54000', 'step 4: the queue is full: a batch was refused with 54000')
		  or skip('the queue did not fill up in time', 1);

		my $other = $cluster->connect($DB);
		my $plain = eval { $other->do(q{SELECT pg_catalog.pg_notify('plain', 'hello')}); 1 };
		ok(!$plain && $other->state eq '54000'
		   && $other->errstr =~ /too many notifications in the NOTIFY queue/,
		   'step 4: a plain pg_notify() from another session fails: ' . ($other->errstr // 'no error'));
		$other->disconnect;

		$head = $admin->selectrow_array('SELECT gate_bridge.events_head()');
		$skipped_before = skipped_so_far();
		($took, $errors) = violating('full', 2);
		check_step('step 4', 'full', 2, $took, $errors, $head, $skipped_before);
		# logged at most once a minute
		my $since_logged = time - $t_half;
		if ($since_logged < 55)
		{
			is(skip_lines(), 1, sprintf('step 4: still one line in the server log (%.0fs after the first)', $since_logged));
		}
		else
		{
			cmp_ok(skip_lines(), '<=', 2, sprintf('step 4: at most one more line in the server log (%.0fs after the first)',
												   $since_logged));
		}
	}
}

################################################################ 5. drain

my $t_drain = time;
ok($admin->selectrow_array('SELECT pg_catalog.pg_terminate_backend($1)', undef, $listener_pid),
   'step 5: the stuck listener is ended');
# its connection is gone: no warnings when it is dropped
$listener->{$_} = 0 for qw(RaiseError PrintError PrintWarn Warn);
ok(wait_until('the queue to drain', 30, sub { usage() < 0.01 }),
   sprintf('step 5: the queue drains (%.1f%% full after %s)', 100 * usage(), since($t_drain)));
diag('step 5: drained in ' . since($t_drain));

$watcher = $cluster->connect($DB);
$watcher->do('LISTEN incident_created');
$watcher->do('LISTEN incident_events');
my $skipped_before = skipped_so_far();
($took, $errors) = violating('after', 1);
is_deeply($errors, [], 'step 5: a new incident');
my @again = notifications($watcher, 2);
is_deeply([sort map { $_->[0] } @again], ['incident_created', 'incident_events'],
		  'step 5: it is notified again');
my ($event) = map { decode_json($_->[2]) } grep { $_->[0] eq 'incident_events' } @again;
is($event && $event->{position}, positions('after')->[0], 'step 5: with its position');
is(skipped_so_far(), $skipped_before, 'step 5: nothing skipped');
$watcher->disconnect;
eval { $listener->disconnect };

my $elapsed = time - $started;
diag(sprintf 'finished in %.1fs', $elapsed);
cmp_ok($elapsed, '<', 120, sprintf('finished in %.0fs', $elapsed));

done_testing();
