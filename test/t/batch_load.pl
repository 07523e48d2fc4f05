#!/usr/bin/perl
#
# Batch loaders and an operator, at READ COMMITTED: no transaction fails.
#
# Four loaders COPY 100-row batches of eval rows over ten agents, in random
# order, 30 % of them violating; half of their transactions add a second
# statement with the agents in reverse order.  An operator acknowledges,
# then resolves, every open incident in one transaction, in random order,
# over and over.  gate_bridge decides a
# transaction's violations at its commit, in one key order, and takes the
# lock manager's locks without waiting while it holds one: none of these
# transactions may fail with a deadlock (40P01) or anything else, whatever
# the order of rows, statements or transactions.  Afterwards every key's
# occurrences and rate-limited count add up to the violating rows that
# were committed, no key ever has two unresolved incidents, and every
# incident has one "created" event.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set);
# creates and drops its own database.
#
# test/t/batch_load.pl

use strict;
use warnings;

use FindBin;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database drop_scratch_database);

my $DBNAME = 'gb_tap_batch_load';
my $LOADERS = 4;
my $RUN_SECONDS = $ENV{GB_BATCH_SECONDS} // 8;
my @AGENTS = map { "batch.a$_" } 0 .. 9;

create_scratch_database($DBNAME);
my $dbh = connect_db($DBNAME);
$dbh->do('CREATE EXTENSION gate_bridge');
$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning)"
		 . " VALUES ('batch.*', 'quality', 0.5)");

# one line per process on the pipe: "ok=N failed=N STATE=N ..."
sub report
{
	my ($pipe, %count) = @_;

	print $pipe join(' ', map { "$_=$count{$_}" } sort keys %count), "\n";
}

sub connect_worker
{
	my $w = connect_db($DBNAME);

	# a deadlock would cost deadlock_timeout: find one quickly
	$w->do("SET deadlock_timeout = '20ms'");
	$w->{AutoCommit} = 1;
	return $w;
}

sub row
{
	my ($agent) = @_;

	return sprintf("%s\t%.3f\n", $agent, rand() < 0.3 ? 0.1 : 0.9);
}

sub loader
{
	my ($pipe, $n) = @_;
	my $w = connect_worker();
	my %count = (ok => 0, failed => 0);
	my $deadline = time + $RUN_SECONDS;

	srand($$);
	while (time < $deadline)
	{
		my $ok = eval {
			$w->begin_work;
			$w->do('COPY gate_bridge.eval_results (agent, quality) FROM STDIN');
			$w->pg_putcopydata(row($AGENTS[int(rand(@AGENTS))])) for 1 .. 100;
			$w->pg_putcopyend;
			if (rand() < 0.5)
			{
				# a second statement, the agents in reverse order
				$w->do('INSERT INTO gate_bridge.eval_results (agent, quality)'
					   . ' SELECT a, 0.1 FROM unnest(?::text[]) WITH ORDINALITY u(a, o)'
					   . ' ORDER BY o DESC', undef, '{' . join(',', reverse @AGENTS) . '}');
			}
			$w->commit;
			1;
		};
		if ($ok)
		{
			$count{ok}++;
		}
		else
		{
			my $state = $w->state || 'unknown';

			eval { $w->rollback };
			$count{failed}++;
			$count{"loader_$state"}++;
		}
	}
	$w->disconnect;
	report($pipe, %count);
}

sub operator
{
	my ($pipe) = @_;
	my $w = connect_worker();
	my %count = (resolves => 0, resolve_failed => 0);
	my $deadline = time + $RUN_SECONDS;

	while (time < $deadline)
	{
		# every open incident, in whatever order the scan gives, in one
		# transaction: acknowledge them all, then resolve them all
		my $ok = eval {
			$w->begin_work;
			$w->do("SELECT gate_bridge.ack(id, 'tap_operator') FROM gate_bridge.incidents"
				   . " WHERE agent LIKE 'batch.%' AND status = 'open' ORDER BY random()");
			$w->do("SELECT gate_bridge.resolve(id, 'tap_operator') FROM gate_bridge.incidents"
				   . " WHERE agent LIKE 'batch.%' AND status <> 'resolved' ORDER BY random()");
			$w->commit;
			1;
		};
		if ($ok)
		{
			$count{resolves}++;
		}
		else
		{
			my $state = $w->state || 'unknown';

			# an incident resolved by nobody else cannot be "already resolved"
			eval { $w->rollback };
			$count{resolve_failed}++;
			$count{"operator_$state"}++;
		}
		sleep(0.05);
	}
	$w->disconnect;
	report($pipe, %count);
}

pipe(my $reader, my $writer) or die "pipe: $!";
my @pids;
for my $n (0 .. $LOADERS)
{
	my $pid = fork;

	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		close($reader);
		$n < $LOADERS ? loader($writer, $n) : operator($writer);
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

my %errors = map { $_ => $total{$_} } grep { /^(loader|operator)_/ } keys %total;
diag(sprintf('%d batches committed, %d failed; %d resolve rounds, %d failed, in %d s',
			 $total{ok} // 0, $total{failed} // 0, $total{resolves} // 0,
			 $total{resolve_failed} // 0, $RUN_SECONDS));
ok(($total{ok} // 0) > 0, 'batches were committed');
ok(($total{resolves} // 0) > 0, 'the operator resolved');
is($total{failed} // 0, 0, 'no loader transaction failed')
	or diag('errors by SQLSTATE: ' . join(', ', map { "$_: $errors{$_}" } sort keys %errors));
is($total{resolve_failed} // 0, 0, "no operator transaction failed");

my ($incidents) = $dbh->selectrow_array(
	"SELECT count(*) FROM gate_bridge.incidents WHERE agent LIKE 'batch.%'");
ok($incidents > count_agents(), "incidents were created again after resolutions ($incidents)");

sub count_agents { return scalar @AGENTS }

my $audit = $dbh->selectall_arrayref(<<'SQL');
SELECT r.agent, r.n, COALESCE(i.occ, 0) AS occ, COALESCE(k.rate_limited, 0) AS rl
  FROM (SELECT agent, count(*) AS n FROM gate_bridge.eval_results
		 WHERE quality < 0.5 GROUP BY agent) r
  LEFT JOIN (SELECT agent, sum(occurrences) AS occ FROM gate_bridge.incidents
			  GROUP BY agent) i USING (agent)
  LEFT JOIN gate_bridge.incident_keys k
		 ON k.kind = 'budget' AND k.agent = r.agent AND k.subject = 'quality'
 ORDER BY r.agent
SQL
is(scalar @$audit, count_agents(), 'every agent violated');
my @wrong = grep { $_->[1] != $_->[2] + $_->[3] } @$audit;
is_deeply(\@wrong, [], 'every key: occurrences + rate limited = committed violations')
	or diag(join("\n", map { "$_->[0]: $_->[1] rows, $_->[2] + $_->[3]" } @wrong));

my ($two) = $dbh->selectrow_array(
	"SELECT count(*) FROM (SELECT kind, agent, subject FROM gate_bridge.incidents"
	. " WHERE status <> 'resolved' GROUP BY 1, 2, 3 HAVING count(*) > 1) d");
is($two, 0, 'no key has two unresolved incidents');
my ($created) = $dbh->selectrow_array(
	"SELECT count(*) FROM gate_bridge.incidents i WHERE (SELECT count(*)"
	. " FROM gate_bridge.incident_events e WHERE e.incident_id = i.id AND e.event = 'created') = 1");
is($created, $incidents, 'every incident has one created event');
my ($deadlocks) = $dbh->selectrow_array(
	'SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()');
is($deadlocks, 0, 'the server counted no deadlock in this database');

$dbh->disconnect;
drop_scratch_database();

done_testing();
