#!/usr/bin/perl
#
# Retention under load: gate_bridge.purge_eval_results() deletes a large
# backlog of old eval rows while writers keep inserting and gates keep
# reading, on a cluster of its own (GBCluster) that logs every lock wait
# longer than 5 ms (log_lock_waits, deadlock_timeout = 5ms).
#
#	1. 150,000 old rows (20 to 80 days) over 100 agents, gated agents with
#	   rows inside and outside their budgets' windows, and rows just on
#	   either side of the cutoff (14 days).
#	2. While the purge runs (batches of 1,000): four writers insert single
#	   rows (every tenth a violation, folded into an incident of its own
#	   key), a gate session evaluates the gated agents again and again, and
#	   a monitor samples pg_stat_activity and the purge's progress.
#	   - No writer ever waits for the purge: no pg_stat_activity sample has
#	     the purge among a writer's blocking pids, and no lock wait in the
#	     server log was on a lock the purge held.  Writers wait only for
#	     each other (to extend a relation, or for the lock that orders
#	     stream positions when two create incidents at once).  No insert
#	     fails, and the slowest insert stays far below the purge's
#	     duration.
#	   - Writers' inserts commit while the purge is mid-way (the first old
#	     agent's rows gone, the last one's not yet).
#	   - The purge commits batch after batch: many transactions, and its
#	     xmin moves, so it holds back no vacuum.
#	   - Every gate evaluated during the purge equals the one before it.
#	3. Afterwards: every row older than the cutoff is gone, every newer row
#	   is there (the writers' too), the gates of the windows are what they
#	   were, and run_gates() lists the same agents but those left with no
#	   row at all (which had passed with 0 samples).
#
# Runs in about 10 s.  Runs anywhere the PostgreSQL 15 server binaries and
# gate_bridge are installed; inside pg_virtualenv too, whose cluster it does
# not use.
#
# test/t/retention.pl

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use lib $FindBin::Bin;

use GBCluster;
use GBUtil qw(slurp wait_until);
use JSON::PP;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(sleep time);

my $DB = 'gb_retention';
my $OLD_ROWS = 150_000;
my $OLD_AGENTS = 100;
my $WRITERS = 4;
my $OLDER_THAN = '14 days';
my $BATCH = 1000;

my $started = time;
sub since { return sprintf '%.1fs', time - $_[0] }

my $cluster = GBCluster->new('retention',
							 settings => {log_lock_waits => 'on',
										  deadlock_timeout => "'5ms'",
										  autovacuum_naptime => "'1s'"});
$cluster->start;
$cluster->create_database($DB, extension => 'gate_bridge');
my $dbh = $cluster->connect($DB);

###########################################################################
# 1. The backlog
###########################################################################
$dbh->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical, lookback) VALUES
		('gate.*',   'quality', 0.90, 0.80, 0.50, '7 days'),
		('*',        'latency', 500,  800,  1000, '1 day'),
		('gate.2',   'cost',    0.10, 0.20, 0.50, '3 days'),
		('writer.*', 'quality', 0.90, 0.80, 0.50, '1 day')});
# Old rows go in with the bridge off: they are history, not news.
$dbh->do('SET gate_bridge.enabled = off');
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, created_at)
	SELECT 'old.' || lpad((g % $1)::text, 3, '0'), (g % 100) / 100.0, g % 1200, (g % 7) / 10.0,
		   now() - interval '20 days' - (g % 86400) * interval '1 minute'
	  FROM generate_series(1, $2) g}, undef, $OLD_AGENTS, $OLD_ROWS);
# gated agents: rows in the last 2 days (inside every window) and 20 to 60
# days ago (outside them); one agent with old rows only
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, invariants_failed, created_at)
	SELECT 'gate.' || (g % 5), (g % 20) / 20.0 + 0.04, (g * 7) % 1100, (g % 5) / 10.0,
		   CASE WHEN g % 9 = 0 THEN ARRAY['inv_' || (g % 2)] END,
		   now() - CASE WHEN g % 3 = 0 THEN interval '20 days' + (g % 40) * interval '1 day'
						ELSE (g % 2880) * interval '1 minute' END
	  FROM generate_series(1, 6000) g});
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
	SELECT 'gate.only_old', 0.2, now() - interval '30 days' - g * interval '1 hour'
	  FROM generate_series(1, 50) g});
# just on either side of the cutoff
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
	SELECT 'edge', 0.95, now() - $1::interval + s * interval '1 minute' + g * interval '1 second'
	  FROM generate_series(1, 20) g, (VALUES (-2), (1)) v(s)}, undef, $OLDER_THAN);
$dbh->do('RESET gate_bridge.enabled');
$dbh->do('VACUUM ANALYZE gate_bridge.eval_results');

# What there was: ids and stamps, the gates, run_gates().
$dbh->do('CREATE TABLE before_rows AS SELECT id, created_at FROM gate_bridge.eval_results');
my ($rows_before) = $dbh->selectrow_array('SELECT count(*) FROM before_rows');
$dbh->do(q{CREATE TABLE gates_before AS
		   SELECT a.agent, gate_bridge.evaluate_agent(a.agent) AS gate
			 FROM (VALUES ('gate.0'), ('gate.1'), ('gate.2'), ('gate.3'), ('gate.4'),
						  ('gate.only_old'), ('edge')) a(agent)});
$dbh->do('CREATE TABLE run_gates_before AS SELECT * FROM gate_bridge.run_gates()');

# A gate as canonical text, its numbers to 12 significant digits: the last
# digits of a float average depend on the order the rows are summed in,
# which the plan decides.
my $json = JSON::PP->new->canonical;
sub rounded
{
	my ($v) = @_;
	return {map { $_ => rounded($v->{$_}) } keys %$v} if ref $v eq 'HASH';
	return [map { rounded($_) } @$v] if ref $v eq 'ARRAY';
	return $v if !defined $v || ref $v || $v !~ /^-?[\d.]+(?:e[-+]?\d+)?$/i;
	return 0 + sprintf('%.12g', $v);
}
sub gate_text { return $json->encode(rounded($json->decode($_[0]))) }
my %gate_before = map { $_->[0] => gate_text($_->[1]) }
  @{$dbh->selectall_arrayref('SELECT agent, gate::text FROM gates_before')};
diag("$rows_before rows loaded in " . since($started));

###########################################################################
# 2. The purge, with writers, a gate session and a monitor around it
###########################################################################
my $tmp = tempdir('gb_retention_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $stop = "$tmp/stop";
my $purging = "$tmp/purging";
my @children;

# child NAME CODE: CODE runs in a child with a connection of its own, whose
# application_name is NAME, until the stop file exists; what it returns
# (a hash) comes back as "key=value" lines in $tmp/NAME.out
sub child
{
	my ($name, $code) = @_;
	my $pid = fork;

	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my %result = eval {
			my $c = $cluster->connect($DB);
			$c->do("SET application_name = '$name'");
			my ($pid) = $c->selectrow_array('SELECT pg_backend_pid()');
			($code->($c), pid => $pid);
		};
		%result = (fatal => $@ =~ s/\s+/ /gr) if $@;
		if (open my $fh, '>', "$tmp/$name.out")
		{
			print $fh map { "$_=$result{$_}\n" } sort keys %result;
			close $fh;
		}
		_exit(0);
	}
	push @children, [$name, $pid];
}

sub result
{
	my ($name) = @_;
	my %r = map { /^([^=]+)=(.*)$/ ? ($1 => $2) : () } split /\n/, slurp("$tmp/$name.out");
	return \%r;
}

# the purge's session, made before the children so that they know its pid
my $purger = $cluster->connect($DB);
$purger->do("SET application_name = 'gb_purge'");
my ($purge_pid) = $purger->selectrow_array('SELECT pg_backend_pid()');

for my $w (1 .. $WRITERS)
{
	child("gb_writer_$w", sub {
		my ($c) = @_;
		my $sth = $c->prepare(
			'INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms) VALUES ($1, $2, 100)');
		my %r = (ok => 0, errors => 0, max => 0, during => 0, max_during => 0, first_error => '');
		my $n = 0;
		until (-e $stop)
		{
			my $t0 = time;
			my $in_purge = -e $purging;
			if (eval { $sth->execute("writer.$w", ++$n % 10 == 0 ? 0.1 : 0.95); 1 })
			{
				$r{ok}++;
			}
			else
			{
				$r{errors}++;
				$r{first_error} ||= ($c->state // '') . ' ' . ($c->errstr // $@) =~ s/\s+/ /gr;
			}
			my $took = time - $t0;
			$r{max} = $took if $took > $r{max};
			if ($in_purge)
			{
				$r{during}++;
				$r{max_during} = $took if $took > $r{max_during};
			}
		}
		return %r;
	});
}

child('gb_gate', sub {
	my ($c) = @_;
	my %r = (evaluations => 0, different => 0, during => 0, first_difference => '');
	my $sth = $c->prepare('SELECT agent, gate_bridge.evaluate_agent(agent)::text FROM unnest($1::text[]) agent');
	my @agents = sort keys %gate_before;
	until (-e $stop)
	{
		my $in_purge = -e $purging;
		sleep 0.01;
		for my $row (@{$c->selectall_arrayref($sth, undef, \@agents)})
		{
			$r{evaluations}++;
			$r{during}++ if $in_purge;
			my $now = gate_text($row->[1]);
			next if $now eq $gate_before{$row->[0]};
			$r{different}++;
			$r{first_difference} ||= "$row->[0]: $now, before: $gate_before{$row->[0]}";
		}
	}
	return %r;
});

child('gb_monitor', sub {
	my ($c) = @_;
	my %r = (samples => 0, blocked_by_purge => 0, blocked_by_others => 0, writer_waits => 0,
			 purge_active => 0, lock_waits_seen => '');
	my (%xacts, %xmins, @progress);
	my $activity = $c->prepare(q{
		SELECT a.application_name, a.state, a.wait_event_type, a.wait_event, a.xact_start::text,
			   a.backend_xmin::text, $1 = ANY (pg_blocking_pids(a.pid)),
			   EXISTS (SELECT FROM pg_stat_activity b
					    WHERE b.pid = ANY (pg_blocking_pids(a.pid))
						  AND b.application_name NOT LIKE 'gb\_writer\_%'),
			   (SELECT string_agg(l.locktype || ' ' || COALESCE(l.relation::regclass::text, '') || ' '
								  || l.mode, ', ')
				  FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)
			   || ' held by ' ||
			   (SELECT string_agg(COALESCE(NULLIF(b.application_name, ''), b.backend_type)
								  || ' ' || COALESCE(b.query, ''), ', ')
				  FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)))
		  FROM pg_stat_activity a
		 WHERE a.application_name LIKE 'gb\_writer\_%' OR a.application_name = 'gb_purge'});
	# the first and the last old agent's old rows, the writers' rows
	my $progress = $c->prepare(q{
		SELECT (SELECT count(*) FROM gate_bridge.eval_results
				 WHERE agent = 'old.000' AND created_at < now() - interval '15 days'),
			   (SELECT count(*) FROM gate_bridge.eval_results
				 WHERE agent = $1 AND created_at < now() - interval '15 days'),
			   (SELECT count(*) FROM gate_bridge.eval_results
				 WHERE agent >= 'writer.' AND agent < 'writer/')});
	my $last_agent = sprintf 'old.%03d', $OLD_AGENTS - 1;
	my $next_progress = 0;
	until (-e $stop)
	{
		my $active = 0;
		for my $a (@{$c->selectall_arrayref($activity, undef, $purge_pid)})
		{
			my ($app, $state, $wtype, $wevent, $xact, $xmin, $by_purge, $by_others, $what) = @$a;
			if ($app eq 'gb_purge')
			{
				next unless ($state // '') eq 'active';
				$active = 1;
				$xacts{$xact}++ if defined $xact;
				$xmins{$xmin}++ if defined $xmin;
			}
			elsif (($wtype // '') eq 'Lock')
			{
				# writers queue for each other to extend a relation, or for
				# the lock that orders stream positions when they create
				# incidents at the same moment
				$r{writer_waits}++;
				$r{blocked_by_purge}++ if $by_purge;
				$r{blocked_by_others}++ if $by_others;
				$r{lock_waits_seen} .= "$app:$wevent (" . ($what // '?') . ') '
				  if $by_purge || $by_others;
			}
		}
		$r{samples}++;
		$r{purge_active}++ if $active;
		if ($active && time >= $next_progress)
		{
			my ($first, $last, $writers) = $c->selectrow_array($progress, undef, $last_agent);
			push @progress, "$first/$last/$writers";
			$next_progress = time + 0.05;
		}
		sleep 0.01;
	}
	$r{purge_xacts} = keys %xacts;
	$r{purge_xmins} = keys %xmins;
	$r{progress} = join ' ', @progress;
	return %r;
});

# the writers get going first
wait_until('the writers', 10, sub {
	my ($n) = $dbh->selectrow_array(q{SELECT count(*) FROM gate_bridge.eval_results
									   WHERE agent >= 'writer.' AND agent < 'writer/'});
	return $n >= 100;
}) or fail('the writers insert');

open my $flag, '>', $purging or die "$purging: $!";
close $flag;
my ($t_before) = $dbh->selectrow_array('SELECT clock_timestamp()');
my $t0 = time;
my ($deleted) = eval {
	$purger->selectrow_array('CALL gate_bridge.purge_eval_results($1, $2)', undef, $OLDER_THAN, $BATCH);
};
my $purge_error = $@;
my $purge_seconds = time - $t0;
my ($t_after) = $dbh->selectrow_array('SELECT clock_timestamp()');
unlink $purging;
sleep 0.3;		# the writers go on after the purge too
open $flag, '>', $stop or die "$stop: $!";
close $flag;
waitpid($_->[1], 0) for @children;

is($purge_error, '', 'the purge succeeded');
diag(sprintf 'purge: %s rows in %.2f s', $deleted // 'no', $purge_seconds);

my %writer = (ok => 0, errors => 0, during => 0, max => 0, max_during => 0);
for my $w (1 .. $WRITERS)
{
	my $r = result("gb_writer_$w");
	is($r->{fatal}, undef, "writer $w ran") or diag($r->{fatal});
	$writer{$_} += $r->{$_} // 0 for qw(ok errors during);
	$writer{$_} = ($r->{$_} // 0) > $writer{$_} ? $r->{$_} : $writer{$_} for qw(max max_during);
	diag("writer $w: first error $r->{first_error}") if $r->{errors};
}
my $monitor = result('gb_monitor');
my $gate = result('gb_gate');
is($monitor->{fatal}, undef, 'the monitor ran') or diag($monitor->{fatal});
is($gate->{fatal}, undef, 'the gate session ran') or diag($gate->{fatal});
diag(sprintf 'writers: %d inserts, %d during the purge, slowest %.1f ms (%.1f ms during it)',
			 $writer{ok}, $writer{during}, $writer{max} * 1000, $writer{max_during} * 1000);
diag("monitor: $monitor->{samples} samples, $monitor->{purge_active} with the purge active, "
	 . "$monitor->{purge_xacts} purge transactions and $monitor->{purge_xmins} xmins seen");

# No waiting writer.
is($writer{errors}, 0, 'no insert failed');
is($monitor->{blocked_by_purge}, 0, 'no writer was ever seen waiting for the purge')
  or diag("seen: $monitor->{lock_waits_seen}");
is($monitor->{blocked_by_others}, 0, 'nor for anyone but another writer')
  or diag("seen: $monitor->{lock_waits_seen}");
# every lock wait of 5 ms or more, from the server log: what was waited
# for, and who held it
my @waits;
my @log = split /\n/, slurp($cluster->log_file);
for my $i (0 .. $#log)
{
	next unless $log[$i] =~ /\[(\d+)\] (\S*) ?LOG:  process \d+ still waiting for (.*) after/;
	my ($pid, $app, $what) = ($1, $2, $3);
	my ($detail) = grep { /\[$pid\].*DETAIL:  Process(?:es)? holding the lock: ([\d, ]+)\./ }
	  @log[$i + 1 .. ($i + 3 > $#log ? $#log : $i + 3)];
	my @holders = ($detail // '') =~ /holding the lock: ([\d, ]+)\./ ? split(/, /, $1) : ('?');
	push @waits, {what => $what, app => $app, holders => \@holders, line => $log[$i]};
}
is_deeply([map { $_->{line} } grep { grep { $_ eq $purge_pid || $_ eq '?' } @{$_->{holders}} } @waits], [],
		  'the server log has no lock wait of 5 ms or more on a lock the purge held');
my %writer_pid = map { (result("gb_writer_$_")->{pid} // 0) => 1 } 1 .. $WRITERS;
is_deeply([map { $_->{line} }
		   grep { $_->{app} =~ /^gb_writer_/ && grep { !$writer_pid{$_} } @{$_->{holders}} } @waits], [],
		  'every lock wait of a writer of 5 ms or more was on a lock another writer held');
diag(sprintf 'writers waiting for each other: %d of the samples; %d waits of 5 ms or more in the log',
			 $monitor->{writer_waits}, scalar grep { $_->{app} =~ /^gb_writer_/ } @waits);
cmp_ok($writer{during}, '>=', 100, 'the writers kept inserting during the purge');
cmp_ok($writer{max_during}, '<', $purge_seconds / 2,
	   'the slowest insert during the purge took less than half the purge');

# Inserts committed while the purge was mid-way.
my @mid = grep { $_->[0] == 0 && $_->[1] > 0 }
  map { [split m{/}] } split ' ', ($monitor->{progress} // '');
cmp_ok(scalar @mid, '>=', 2, 'the purge was seen mid-way (first old agent done, last not yet) more than once')
  or diag("progress (first/last/writer rows): $monitor->{progress}");
cmp_ok(@mid ? $mid[-1][2] - $mid[0][2] : 0, '>', 0,
	   'writers\' rows committed between those moments');

# Batch after batch, each committed.
cmp_ok($monitor->{purge_xacts}, '>=', 5, 'the purge ran as many transactions, one after the other');
cmp_ok($monitor->{purge_xmins}, '>=', 2, 'its xmin moved on: it held back no vacuum for the whole run');

# Gates during the purge.
cmp_ok($gate->{during}, '>', 0, 'gates were evaluated during the purge');
is($gate->{different}, 0, 'every gate evaluated meanwhile equals the one before the purge')
  or diag($gate->{first_difference});

###########################################################################
# 3. What is left
###########################################################################
my ($gone_early, $kept_late, $late, $old_left) = $dbh->selectrow_array(q{
	SELECT count(*) FILTER (WHERE b.created_at < $1::timestamptz - $3::interval AND e.id IS NOT NULL),
		   count(*) FILTER (WHERE b.created_at >= $2::timestamptz - $3::interval AND e.id IS NOT NULL),
		   count(*) FILTER (WHERE b.created_at >= $2::timestamptz - $3::interval),
		   count(*) FILTER (WHERE b.created_at < $1::timestamptz - $3::interval)
	  FROM before_rows b LEFT JOIN gate_bridge.eval_results e ON e.id = b.id},
	undef, $t_before, $t_after, $OLDER_THAN);
is($gone_early, 0, "no row older than the cutoff is left ($old_left were older)");
is($kept_late, $late, "every row newer than the cutoff is kept ($late)");
is($deleted, $rows_before - $late, 'the purge returned the number of rows it deleted');
my ($edge) = $dbh->selectrow_array(q{SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'edge'});
is($edge, 20, 'of the rows a minute either side of the cutoff, the newer 20 are kept');
my ($writer_rows) = $dbh->selectrow_array(
	q{SELECT count(*) FROM gate_bridge.eval_results WHERE agent >= 'writer.' AND agent < 'writer/'});
is($writer_rows, $writer{ok}, 'every row the writers inserted is there');
my ($folded) = $dbh->selectrow_array(q{
	SELECT sum(i.occurrences) + sum(k.rate_limited) FROM gate_bridge.incidents i
	  JOIN gate_bridge.incident_keys k USING (kind, agent, subject) WHERE i.agent LIKE 'writer.%'});
my ($violations) = $dbh->selectrow_array(q{
	SELECT count(*) FROM gate_bridge.eval_results WHERE agent >= 'writer.' AND agent < 'writer/'
	   AND quality < 0.5});
is($folded, $violations, 'the writers\' violations were all counted into their incidents');

is_deeply({map { $_->[0] => gate_text($_->[1]) }
		   @{$dbh->selectall_arrayref('SELECT agent, gate_bridge.evaluate_agent(agent)::text FROM gates_before')}},
		  \%gate_before, 'evaluate_agent: every gate is what it was before the purge');
my $gone_agents = $dbh->selectcol_arrayref(q{
	SELECT r.agent FROM run_gates_before r
	 WHERE NOT EXISTS (SELECT FROM gate_bridge.eval_results e WHERE e.agent = r.agent)
	 ORDER BY 1});
sub gates_of
{
	my ($sql) = @_;
	return {map { $_->[0] => "$_->[1] $_->[2] " . gate_text($_->[3]) }
			@{$dbh->selectall_arrayref($sql)}};
}
my $rg_before = gates_of(q{
	SELECT agent, passed, samples, violations::text FROM run_gates_before r
	 WHERE EXISTS (SELECT FROM gate_bridge.eval_results e WHERE e.agent = r.agent)});
is_deeply(gates_of(q{
	SELECT agent, passed, samples, violations::text FROM gate_bridge.run_gates()
	 WHERE agent NOT LIKE 'writer.%'}), $rg_before,
	'run_gates(): the same result for every agent that still has rows');
is(scalar @$gone_agents, $OLD_AGENTS + 1, 'the agents left with no row are the old ones and gate.only_old');
is_deeply($dbh->selectall_arrayref(q{
	SELECT count(*), bool_and(status = 'insufficient_data' AND passed IS NULL AND samples = 0)
	  FROM run_gates_before
	 WHERE agent = ANY ($1)}, undef, $gone_agents), [[$OLD_AGENTS + 1, 1]],
	'they had no rows in their windows (insufficient_data, 0 samples), and run_gates() no longer lists them');

diag('retention.pl took ' . since($started));
done_testing();
