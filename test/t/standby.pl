#!/usr/bin/perl
#
# A streaming standby serves reads of incidents and refuses every change
# with SQLSTATE 25006 (read_only_sql_transaction) and a message that says
# the server is read-only.  A primary and a standby made with
# pg_basebackup -R, clusters of their own (GBCluster); an incident is opened
# on the primary, acked and folded into there, and once the standby has
# replayed it:
#
#	- the standby is in recovery and reads incidents, the timeline, the
#	  views and gate_bridge.stats as the primary has them;
#	- gate_bridge.ack() and gate_bridge.resolve() fail with 25006 and a
#	  message of their own matching /read-only/ (for an open and for an
#	  acked incident), not PostgreSQL's refusal of a statement they run;
#	- an INSERT into eval_results fails with 25006, violating or clean;
#	- none of this changed anything: a change made on the primary
#	  afterwards still reaches the standby.
#
# Runs anywhere the PostgreSQL 15 server binaries and gate_bridge are
# installed (as root the clusters run as the postgres user); inside
# pg_virtualenv too, whose cluster it does not use.
#
# test/t/standby.pl

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GBCluster;
use Test::More;

my $started = time;
my $db = 'gb_standby';

my $primary = GBCluster->new('sb_primary');
$primary->start;
$primary->create_database($db, extension => 'gate_bridge');
$primary->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
					 VALUES ('sb.*', 'quality', 0.90, 0.80, 0.50)});
$primary->sql($db, q{INSERT INTO gate_bridge.eval_results (agent, quality)
					 VALUES ('sb.open', 0.40), ('sb.acked', 0.70)});
$primary->sql($db, q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('sb.acked', 0.75)});
my %id = map { $_->[0] => $_->[1] }
  @{$primary->rows($db, 'SELECT agent, id FROM gate_bridge.incidents')};
ok($id{'sb.open'} && $id{'sb.acked'}, 'primary: two incidents opened');
$primary->query($db, 'SELECT gate_bridge.ack($1, $2)', $id{'sb.acked'}, 'alice');

my $standby = $primary->backup_standby('sb_standby');
$standby->start;
# a change after the base backup, which only streaming brings over
$primary->sql($db, q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('sb.open', 0.45)});
ok($primary->wait_for_replay($standby), 'the standby replayed the primary\'s WAL')
  or BAIL_OUT('the standby does not replay; see the diagnostics above');

is($standby->query($db, 'SELECT pg_catalog.pg_is_in_recovery()'), 1, 'standby: in recovery');

# Reads.
my $INCIDENTS = 'SELECT id, kind, key, severity, status, occurrences, acked_by, summary'
  . ' FROM gate_bridge.incidents ORDER BY id';
is_deeply($standby->rows($db, $INCIDENTS), $primary->rows($db, $INCIDENTS),
		  'standby: incidents read as on the primary');
# The first INSERT's two keys were decided as it committed, in key order:
# sb.acked's incident has the lower id.
is_deeply($standby->rows($db, 'SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY id'),
		  [['BUDGET_sb.acked_quality', 'ack', 2], ['BUDGET_sb.open_quality', 'open', 2]],
		  'standby: the folded repeat and the ack are there');
is_deeply($standby->rows($db, 'SELECT incident_id, event FROM gate_bridge.incident_events ORDER BY id'),
		  $primary->rows($db, 'SELECT incident_id, event FROM gate_bridge.incident_events ORDER BY id'),
		  'standby: the timeline reads as on the primary');
is_deeply([$standby->query($db, 'SELECT sev1, sev2, sev3, open, ack FROM gate_bridge.incident_counts')],
		  [1, 1, 0, 1, 1], 'standby: incident_counts');
is($standby->query($db, 'SELECT count(*) FROM gate_bridge.open_incidents'), 2,
   'standby: open_incidents');
is_deeply($standby->rows($db, 'SELECT * FROM gate_bridge.stats ORDER BY kind'),
		  $primary->rows($db, 'SELECT * FROM gate_bridge.stats ORDER BY kind'),
		  'standby: gate_bridge.stats as on the primary');

# Changes: each fails with 25006 and says the server is read-only.
my $dbh = $standby->connect($db);

# refused DESCRIPTION OWN SQL [BIND ...]: OWN means gate_bridge reports the
# error itself, rather than PostgreSQL refusing one of the statements it
# runs inside ("cannot execute SELECT FOR NO KEY UPDATE in a read-only
# transaction" says nothing about the server to an operator)
sub refused
{
	my ($what, $own, $sql, @bind) = @_;
	my $ok = eval { $dbh->selectall_arrayref($sql, undef, @bind); 1 };
	my $state = $dbh->state;
	my $err = $dbh->errstr // '';
	my $internal = qr/cannot execute [A-Z ]+ in a read-only transaction/;

	subtest $what => sub {
		ok(!$ok, 'fails');
		is($state, '25006', 'SQLSTATE 25006 (read_only_sql_transaction)');
		like($err, qr/read-only/, 'the message says read-only');
		unlike($err, $internal,
			   'the message is gate_bridge\'s, not the refusal of a statement inside it')
		  if $own;
	};
	my $as_expected = !$ok && $state eq '25006' && $err =~ /read-only/
	  && !($own && $err =~ $internal);
	$as_expected ? note("error was: $err") : diag("error was: $err");
}

refused('ack of an open incident on the standby', 1,
		'SELECT gate_bridge.ack($1)', $id{'sb.open'});
refused('resolve of an open incident on the standby', 1,
		'SELECT gate_bridge.resolve($1)', $id{'sb.open'});
refused('resolve of an acked incident on the standby', 1,
		'SELECT gate_bridge.resolve($1, $2, $3)', $id{'sb.acked'}, 'bob', 'on the standby');
refused('a violating eval row on the standby', 0,
		q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('sb.open', 0.10)});
refused('a clean eval row on the standby', 0,
		q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('sb.clean', 0.99)});
ok($dbh->ping, 'standby: the session is still usable');
$dbh->disconnect;

is_deeply($standby->rows($db, $INCIDENTS), $primary->rows($db, $INCIDENTS),
		  'nothing changed on either side');

# The standby still follows the primary.
$primary->query($db, 'SELECT gate_bridge.resolve($1, $2)', $id{'sb.open'}, 'carol');
ok($primary->wait_for_replay($standby), 'the standby replayed the resolution');
is($standby->query($db, 'SELECT status FROM gate_bridge.incidents WHERE id = $1', $id{'sb.open'}),
   'resolved', 'standby: the incident resolved on the primary reads resolved');

my $elapsed = time - $started;
cmp_ok($elapsed, '<', 60, "finished in ${elapsed}s");

done_testing();
