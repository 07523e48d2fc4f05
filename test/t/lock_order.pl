#!/usr/bin/perl
#
# Single statements that decide for several keys, at READ COMMITTED.
#
# One eval row with several failed invariants, or one on_gate_failure()
# call with several violations, takes a decision (and a lock) for each key
# and holds them to commit (the eval row's as it commits, in key order).
# Plain single-statement, autocommit writers must not fail with a deadlock
# (SQLSTATE 40P01) merely because two of them list the same failed
# invariants, or the same violations, in a different order: the
# application would lose the eval row.
#
# Writers insert rows (or call the function) with the same keys in opposite
# orders for a couple of seconds and count their errors.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set);
# creates and drops its own database.
#
# test/t/lock_order.pl

use strict;
use warnings;

use FindBin;
use POSIX qw(_exit);
use Time::HiRes qw(time);
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database drop_scratch_database);

my $DBNAME = 'gb_tap_lock_order';
my $WRITERS = 4;
my $RUN_SECONDS = 2;
create_scratch_database($DBNAME);

my $dbh = connect_db($DBNAME);
$dbh->do('CREATE EXTENSION gate_bridge');

# Run $statement with the writer's own argument list, in autocommit, from
# $WRITERS processes at once; return the number of statements that
# succeeded and a hash of SQLSTATE => count for those that did not.
sub race
{
	my ($statement, @args) = @_;
	my $deadline = time + $RUN_SECONDS;
	my @pids;

	pipe(my $reader, my $writer) or die "pipe: $!";
	for my $n (0 .. $WRITERS - 1)
	{
		my $pid = fork;

		die "fork: $!" unless defined $pid;
		if ($pid == 0)
		{
			close($reader);
			my $w = connect_db($DBNAME);

			# a deadlock costs deadlock_timeout; find them quickly
			# (superuser only, which the test cluster's user is)
			eval { $w->do("SET deadlock_timeout = '20ms'") };
			my $sth = $w->prepare($statement);
			my %count = (ok => 0);

			while (time < $deadline)
			{
				if (eval { $sth->execute($args[$n % @args]); $sth->finish; 1 })
				{
					$count{ok}++;
				}
				else
				{
					$count{$w->state || 'unknown'}++;
				}
			}
			$w->disconnect;
			print $writer join(' ', map { "$_=$count{$_}" } sort keys %count), "\n";
			close($writer);
			_exit(0);
		}
		push @pids, $pid;
	}
	close($writer);
	my %total;
	while (my $line = <$reader>)
	{
		for (split ' ', $line)
		{
			my ($k, $v) = split /=/;

			$total{$k} += $v;
		}
	}
	close($reader);
	waitpid($_, 0) for @pids;

	my $ok = delete $total{ok} // 0;

	return ($ok, \%total);
}

my ($ok, $errors) = race(
	'INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES (\'tap.lock\', ?)',
	'{inv_a,inv_b,inv_c}', '{inv_c,inv_b,inv_a}');
ok($ok > 0, "rows with failed invariants were inserted ($ok)");
my ($stored) = $dbh->selectrow_array(
	"SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'tap.lock'");
is($stored, $ok, 'every row whose INSERT succeeded is stored');
is_deeply($errors, {}, 'no single-row INSERT failed, whatever the order of its invariants')
	or diag('errors by SQLSTATE: ' . join(', ', map { "$_: $errors->{$_}" } sort keys %$errors));

my $violation = sub {
	my ($type) = @_;

	return qq({"agent": "tap.gate", "budget_type": "$type", "severity": "error",)
		. q( "actual": 1, "threshold": 0.5});
};
($ok, $errors) = race(
	"SELECT gate_bridge.on_gate_failure('tap.gate', '{}', ?::jsonb)",
	'[' . join(',', map { $violation->($_) } qw(cost latency)) . ']',
	'[' . join(',', map { $violation->($_) } qw(latency cost)) . ']');
ok($ok > 0, "on_gate_failure() calls succeeded ($ok)");
is_deeply($errors, {}, 'no on_gate_failure() call failed, whatever the order of its violations')
	or diag('errors by SQLSTATE: ' . join(', ', map { "$_: $errors->{$_}" } sort keys %$errors));

my ($two_unresolved) = $dbh->selectrow_array(
	"SELECT count(*) FROM (SELECT kind, key FROM gate_bridge.incidents"
	. " WHERE status <> 'resolved' GROUP BY kind, key HAVING count(*) > 1) d");
is($two_unresolved, 0, 'no key has two unresolved incidents');

$dbh->disconnect;
drop_scratch_database();

done_testing();
