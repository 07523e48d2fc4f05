#!/usr/bin/perl
#
# Logical replication: the database where an eval row is first inserted
# decides; other databases see its incidents by replicating the incident
# tables.  Two clusters of their own (GBCluster): a publisher with
# wal_level = logical and a subscriber.
#
# 1. Only eval_results is published.  The subscriber has budgets of its own
#    that the replicated rows violate, and still opens no incident: for the
#    rows of the initial table copy and for rows streamed later, with its
#    eval_results sequence behind the publisher's (replicated ids look like
#    rows that bring their own id) and ahead of it (they look like ids its
#    sequence handed out), with the trigger ENABLE ALWAYS (so that it fires
#    in the apply worker), and with the trigger as installed.  Every row is
#    stored.  The publisher opens the right incidents.  The subscriber's
#    budgets stay its own, and a row first inserted on the subscriber is
#    decided there, against them.  A session that replays changes under a
#    replication origin (as other replication tools do) is not a place
#    where rows are first inserted either.
#
# 2. eval_results and the incident tables (incident_rows, incident_folds,
#    incident_events, incident_keys: the view incidents is over the first
#    two) are published, with the subscriber's trigger ENABLE ALWAYS and its
#    sequence ahead: after an initial copy, folded repeats, an ack,
#    resolutions, a reopened key and a rate-limited one on the publisher,
#    the subscriber's incident tables equal the publisher's row for row
#    (same ids, counts, statuses, folds), with no incident of its own and
#    no notification; and again after tick() compacted the publisher's
#    folds (its deletes replicate).
#
# Runs anywhere the PostgreSQL 15 server binaries and gate_bridge are
# installed (as root the clusters run as the postgres user); inside
# pg_virtualenv too, whose cluster it does not use.
#
# test/t/logical_replication.pl

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GBCluster;
use Test::More;

my $started = time;
my $AHEAD = 1_000_000;	# a sequence position far beyond the publisher's ids

my $pub = GBCluster->new('lr_pub',
						 settings => {wal_level => 'logical', max_wal_senders => 10,
									  max_replication_slots => 10});
my $sub = GBCluster->new('lr_sub',
						 settings => {wal_retrieve_retry_interval => "'200ms'",
									  max_replication_slots => 10});
$pub->start;
$sub->start;

my $EVAL_COLUMNS = 'id, agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,'
  . ' invariants_failed, planner_version, triggered_by, context, created_at';

# (id, key, severity, status, occurrences) of every incident
sub incidents
{
	my ($cluster, $db) = @_;

	return $cluster->rows($db, 'SELECT key, severity, status, occurrences'
						  . ' FROM gate_bridge.incidents ORDER BY key COLLATE "C", id');
}

sub counts
{
	my ($cluster, $db) = @_;

	return join '/', $cluster->query(
		$db, 'SELECT (SELECT count(*) FROM gate_bridge.incidents),'
		  . ' (SELECT count(*) FROM gate_bridge.incident_events),'
		  . ' (SELECT count(*) FROM gate_bridge.incident_keys)');
}

sub set_sequence
{
	my ($cluster, $db, $value) = @_;

	$cluster->query($db, "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence("
					. "'gate_bridge.eval_results', 'id'), \$1)", $value);
}

sub insert_evals
{
	my ($cluster, $db, @rows) = @_;

	for my $r (@rows)
	{
		$cluster->sql($db, 'INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)'
					  . ' VALUES ($1, $2, $3)', @$r);
	}
}

sub caught_up
{
	my ($subname, $what) = @_;

	ok($pub->wait_for_catchup($subname), "$what: the subscriber applied everything")
	  or BAIL_OUT("the subscription $subname does not apply; see the diagnostics above");
}

# ---------------------------------------------------------------------------
# 1. Only eval_results is published.
# ---------------------------------------------------------------------------
my $db = 'gb_lr_evals';
$pub->create_database($db, extension => 'gate_bridge');
$sub->create_database($db, extension => 'gate_bridge');

$pub->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
				 VALUES ('lr.*', 'quality', 0.90, 0.80, 0.50)});
# The subscriber's own budgets: stricter, so that every replicated
# violating row violates them too, and tell-apart thresholds.
$sub->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
				 VALUES ('lr.*', 'quality', 0.95, 0.85, 0.60)});

# Rows that exist before the subscription: the initial table copy.
insert_evals($pub, $db, ['lr.pre', 0.40, undef], ['lr.pre', 0.45, undef]);

$pub->sql($db, 'CREATE PUBLICATION gb_evals FOR TABLE gate_bridge.eval_results');
$sub->sql($db, 'ALTER TABLE gate_bridge.eval_results ENABLE ALWAYS TRIGGER gate_bridge_gate');
is($sub->query($db, q{SELECT tgenabled FROM pg_catalog.pg_trigger
					   WHERE tgname = 'gate_bridge_gate'}),
   'A', 'subscriber: the gate trigger fires also in replica mode (ENABLE ALWAYS)');

# Behind: the subscriber's sequence has handed out 1, the publisher's ids
# go beyond it.
set_sequence($sub, $db, 1);
$sub->sql($db, 'CREATE SUBSCRIPTION gb_evals_sub CONNECTION ' . $sub->dbh($db)->quote($pub->connstr($db))
		  . ' PUBLICATION gb_evals');
ok($sub->wait_for_subscription_sync($db), 'initial copy of eval_results finished')
  or BAIL_OUT('the initial table synchronisation did not finish');
caught_up('gb_evals_sub', 'initial copy');
is($sub->query($db, 'SELECT count(*) FROM gate_bridge.eval_results'), 2,
   'initial copy (ENABLE ALWAYS, sequence behind): both rows stored');
is(counts($sub, $db), '0/0/0', 'initial copy: no incident, event or key on the subscriber');

# Streamed rows, sequence behind.
my $seq_pub = $pub->query($db, 'SELECT last_value FROM gate_bridge.eval_results_id_seq');
cmp_ok(1, '<', $seq_pub, "sequence behind: subscriber at 1, publisher at $seq_pub");
insert_evals($pub, $db, ['lr.behind', 0.70, '{no_pii}'], ['lr.behind', 0.97, undef]);
caught_up('gb_evals_sub', 'sequence behind');
is(counts($sub, $db), '0/0/0',
   'ENABLE ALWAYS, sequence behind: no incident, event or key on the subscriber');

# Streamed rows, sequence ahead: replicated ids are ones the subscriber's
# sequence has handed out, as if inserted there.
set_sequence($sub, $db, $AHEAD);
$pub->sql($db, q{INSERT INTO gate_bridge.eval_results (agent, quality)
				 VALUES ('lr.ahead', 0.55), ('lr.ahead', 0.58)});
caught_up('gb_evals_sub', 'sequence ahead');
cmp_ok($sub->query($db, 'SELECT max(id) FROM gate_bridge.eval_results'), '<', $AHEAD,
	   'sequence ahead: the replicated ids are below the subscriber\'s sequence');
is(counts($sub, $db), '0/0/0',
   'ENABLE ALWAYS, sequence ahead: no incident, event or key on the subscriber');

# The trigger as installed (ENABLE): it does not fire in the apply worker.
$sub->sql($db, 'ALTER TABLE gate_bridge.eval_results ENABLE TRIGGER gate_bridge_gate');
insert_evals($pub, $db, ['lr.default', 0.30, undef]);
caught_up('gb_evals_sub', 'trigger as installed');
is(counts($sub, $db), '0/0/0', 'trigger as installed: no incident on the subscriber');

is_deeply($sub->rows($db, "SELECT $EVAL_COLUMNS FROM gate_bridge.eval_results ORDER BY id"),
		  $pub->rows($db, "SELECT $EVAL_COLUMNS FROM gate_bridge.eval_results ORDER BY id"),
		  'the subscriber stored every eval row, every column as on the publisher');
is($sub->query($db, 'SELECT count(*) FROM gate_bridge.eval_results'), 7, 'seven eval rows');

is_deeply(incidents($pub, $db),
		  [['BUDGET_lr.ahead_quality', 'sev2', 'open', 2],
		   ['BUDGET_lr.behind_quality', 'sev2', 'open', 1],
		   ['BUDGET_lr.default_quality', 'sev1', 'open', 1],
		   ['BUDGET_lr.pre_quality', 'sev1', 'open', 2],
		   ['INVARIANT_lr.behind_no_pii', 'sev2', 'open', 1]],
		  'the publisher decided: its incidents, severities and folded repeats');
is_deeply($pub->rows($db, 'SELECT kind, created, deduplicated, rate_limited FROM gate_bridge.stats'
					 . ' ORDER BY kind'),
		  [['budget', 4, 2, 0], ['delivery', 0, 0, 0], ['heartbeat', 0, 0, 0], ['invariant', 1, 0, 0],
		   ['planner', 0, 0, 0]],
		  'publisher: gate_bridge.stats counts its decisions');

# Budgets are not replicated unless published: each database keeps its own.
$pub->sql($db, q{UPDATE gate_bridge.budgets SET critical = 0.55 WHERE agent_pattern = 'lr.*'});
$pub->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning)
				 VALUES ('*', 'cost', 1)});
caught_up('gb_evals_sub', 'budget change');
is_deeply($sub->rows($db, 'SELECT agent_pattern, budget_type, warning, error, critical'
					 . ' FROM gate_bridge.budgets ORDER BY 1, 2'),
		  [['lr.*', 'quality', 0.95, 0.85, 0.60]],
		  'budgets are not replicated: the subscriber keeps its own');

# A row first inserted on the subscriber is decided there, against the
# subscriber's budgets (0.82 is an error there, a warning on the publisher).
insert_evals($sub, $db, ['lr.local', 0.82, undef]);
is_deeply(incidents($sub, $db), [['BUDGET_lr.local_quality', 'sev2', 'open', 1]],
		  'a row inserted on the subscriber opens its incident there, by the subscriber\'s budgets');

# A session replaying changes under a replication origin does not decide.
$sub->query($db, q{SELECT pg_catalog.pg_replication_origin_create('gb_lr_tool')});
my $tool = $sub->connect($db);
$tool->do(q{SELECT pg_catalog.pg_replication_origin_session_setup('gb_lr_tool')});
$tool->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('lr.tool', 0.30)});
is($sub->query($db, q{SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'lr.tool'}), 0,
   'a row written under a replication origin opens no incident');
$tool->do('SELECT pg_catalog.pg_replication_origin_session_reset()');
$tool->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('lr.tool', 0.30)});
is($sub->query($db, q{SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'lr.tool'}), 1,
   'the same row without the origin opens its incident');
is($sub->query($db, q{SELECT count(*) FROM gate_bridge.eval_results WHERE agent = 'lr.tool'}), 2,
   'both rows are stored');
$tool->disconnect;

# ---------------------------------------------------------------------------
# 2. eval_results and the incident tables are published.
# ---------------------------------------------------------------------------
$db = 'gb_lr_all';
$pub->create_database($db, extension => 'gate_bridge');
$sub->create_database($db, extension => 'gate_bridge');
for my $c ($pub, $sub)
{
	$c->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
				   VALUES ('lr2.*', 'quality', 0.90, 0.80, 0.50)});
}
$sub->sql($db, 'ALTER TABLE gate_bridge.eval_results ENABLE ALWAYS TRIGGER gate_bridge_gate');
set_sequence($sub, $db, $AHEAD);

# before the subscription: an incident for the initial copy
insert_evals($pub, $db, ['lr2.pre', 0.40, undef], ['lr2.pre', 0.41, undef]);

$pub->sql($db, 'CREATE PUBLICATION gb_all FOR TABLE gate_bridge.eval_results,'
		  . ' gate_bridge.incident_rows, gate_bridge.incident_folds,'
		  . ' gate_bridge.incident_events, gate_bridge.incident_keys');
$sub->sql($db, 'CREATE SUBSCRIPTION gb_all_sub CONNECTION ' . $sub->dbh($db)->quote($pub->connstr($db))
		  . ' PUBLICATION gb_all');
ok($sub->wait_for_subscription_sync($db), 'initial copy of the five tables finished')
  or BAIL_OUT('the initial table synchronisation did not finish');
caught_up('gb_all_sub', 'initial copy');

my $listener = $sub->connect($db);
$listener->do('LISTEN incident_created');

# On the publisher: new incidents, folded repeats, an ack, resolutions,
# a key opened again after its resolution, and a rate-limited violation.
insert_evals($pub, $db, ['lr2.a', 0.40, undef], ['lr2.a', 0.42, undef], ['lr2.a', 0.44, undef],
			 ['lr2.b', 0.70, undef], ['lr2.c', 0.30, '{x_check}']);
my %id = map { $_->[0] => $_->[1] }
  @{$pub->rows($db, q{SELECT key, id FROM gate_bridge.incidents WHERE status <> 'resolved'})};
$pub->query($db, 'SELECT gate_bridge.ack($1, $2)', $id{'BUDGET_lr2.a_quality'}, 'alice');
$pub->query($db, 'SELECT gate_bridge.resolve($1, $2, $3)', $id{'BUDGET_lr2.b_quality'}, 'bob', 'fixed');
$pub->query($db, 'SELECT gate_bridge.ack($1, $2)', $id{'BUDGET_lr2.pre_quality'}, 'alice');
$pub->query($db, 'SELECT gate_bridge.resolve($1, $2)', $id{'BUDGET_lr2.pre_quality'}, 'alice');
insert_evals($pub, $db, ['lr2.b', 0.60, undef]);	# opens lr2.b again
my $rl = $pub->connect($db);
$rl->do('SET gate_bridge.rate_limit = 2');
$rl->do('SELECT gate_bridge.resolve(id) FROM gate_bridge.incidents'
		. q{ WHERE key = 'BUDGET_lr2.b_quality' AND status = 'open'});
$rl->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('lr2.b', 0.61)});
$rl->disconnect;
insert_evals($pub, $db, ['lr2.c', 0.35, undef]);	# folds into the open lr2.c

caught_up('gb_all_sub', 'lifecycle on the publisher');

is_deeply($pub->rows($db, 'SELECT key, status, occurrences FROM gate_bridge.incidents ORDER BY id'),
		  [['BUDGET_lr2.pre_quality', 'resolved', 2],
		   ['BUDGET_lr2.a_quality', 'ack', 3],
		   ['BUDGET_lr2.b_quality', 'resolved', 1],
		   ['BUDGET_lr2.c_quality', 'open', 2],
		   ['INVARIANT_lr2.c_x_check', 'open', 1],
		   ['BUDGET_lr2.b_quality', 'resolved', 1]],
		  'publisher: the incidents the scenario makes');
is($pub->query($db, q{SELECT rate_limited FROM gate_bridge.incident_keys
					   WHERE key = 'BUDGET_lr2.b_quality'}), 1,
   'publisher: the last lr2.b violation was rate limited');

my %ORDER = (incidents => 'id', incident_rows => 'id',
			 incident_folds => 'incident_id, transaction_id, seq', incident_events => 'id',
			 incident_keys => 'kind COLLATE "C", agent COLLATE "C", subject COLLATE "C"', eval_results => 'id');
sub same_tables
{
	my ($what, %empty) = @_;

	for my $t (sort keys %ORDER)
	{
		my $sql = "SELECT * FROM gate_bridge.$t ORDER BY $ORDER{$t}";
		my $want = $pub->rows($db, $sql);
		if ($empty{$t})
		{
			is(scalar @$want, 0, "$what: publisher: $t is empty");
		}
		else
		{
			ok(@$want > 0, "$what: publisher: $t has rows");
		}
		is_deeply($sub->rows($db, $sql), $want,
				  "$what: subscriber: $t equals the publisher's, every row and column");
	}
	is_deeply($sub->rows($db, 'SELECT * FROM gate_bridge.stats ORDER BY kind'),
			  $pub->rows($db, 'SELECT * FROM gate_bridge.stats ORDER BY kind'),
			  "$what: subscriber: gate_bridge.stats equals the publisher's");
}
same_tables('with folds');

# The publisher compacts: its deletes of folds replicate (the table's
# replica identity), the view shows the same on both sides.
my $shown = $pub->rows($db, 'SELECT * FROM gate_bridge.incidents ORDER BY id');
$pub->query($db, 'SELECT gate_bridge.tick()');
caught_up('gb_all_sub', 'tick() on the publisher');
same_tables('compacted', incident_folds => 1);
is_deeply($sub->rows($db, 'SELECT * FROM gate_bridge.incidents ORDER BY id'), $shown,
		  'compacted: the subscriber shows the incidents as before the compaction');
is($sub->query($db, 'SELECT count(*) FROM (SELECT kind, key FROM gate_bridge.incidents'
			   . q{ WHERE status <> 'resolved' GROUP BY 1, 2 HAVING count(*) > 1) d}), 0,
   'subscriber: no key has two unresolved incidents');

$listener->do('SELECT 1');	# collect what arrived
is($listener->pg_notifies, undef, 'subscriber: no notification for replicated incidents');
$listener->disconnect;

is_deeply($sub->rows($db, 'SELECT agent_pattern FROM gate_bridge.budgets'), [['lr2.*']],
		  'subscriber: its budgets are its own (not published)');

# ---------------------------------------------------------------------------
# 3. budgets are published: a subscriber session that already has the
#    budgets cached sees the replicated change (the apply worker fires row
#    triggers only, so the cache is told by a row trigger enabled for
#    replica mode).
# ---------------------------------------------------------------------------
$db = 'gb_lr_budgets';
$pub->create_database($db, extension => 'gate_bridge');
$sub->create_database($db, extension => 'gate_bridge');
$pub->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning)
			   VALUES ('lr3.*', 'quality', 0.50)});
$pub->sql($db, 'CREATE PUBLICATION gb_budgets FOR TABLE gate_bridge.budgets');
$sub->sql($db, 'CREATE SUBSCRIPTION gb_budgets_sub CONNECTION ' . $sub->dbh($db)->quote($pub->connstr($db))
		  . ' PUBLICATION gb_budgets');
ok($sub->wait_for_subscription_sync($db), 'initial copy of budgets finished')
  or BAIL_OUT('the initial table synchronisation did not finish');
caught_up('gb_budgets_sub', 'initial copy of budgets');
my $session = $sub->connect($db);
$session->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('lr3.a', 0.60)});
is($sub->query($db, q{SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'lr3.a'}), 0,
   'subscriber session: 0.60 passes the replicated warning floor of 0.50 (its cache holds the budget)');
$pub->sql($db, q{UPDATE gate_bridge.budgets SET warning = 0.90 WHERE agent_pattern = 'lr3.*'});
caught_up('gb_budgets_sub', 'budget change');
is($sub->query($db, q{SELECT warning FROM gate_bridge.budgets WHERE agent_pattern = 'lr3.*'}), 0.9,
   'subscriber: the budget change arrived');
$session->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('lr3.a', 0.60)});
is($sub->query($db, q{SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'lr3.a'}), 1,
   'the same session now decides with the replicated budget: 0.60 is below 0.90');
$session->disconnect;

my $elapsed = time - $started;
cmp_ok($elapsed, '<', 60, "finished in ${elapsed}s");

done_testing();
