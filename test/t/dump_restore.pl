#!/usr/bin/perl
#
# Dump and restore.
#
# A database is filled the way a deployment fills it: budgets of every type
# and pattern kind, playbook rules of the user's own (a new rule, an edited
# built-in rule, a disabled built-in rule), clean and violating eval rows
# inserted so that the trigger decides, incidents in every status, folded
# repeats (occurrences > 1), both compacted into incident_rows and still in
# incident_folds, rate-limited keys, incidents from the SQL
# functions, and the timeline all this leaves behind; and the lifecycle's
# state: silences (one running, one ended, a deleted one's id left out),
# snoozed, silenced, flapping, reopened, escalated and auto-resolved
# incidents, silenced events, budgets that auto-resolve, and the keys'
# re-fire, recovery and flapping counters.  It is dumped with
# pg_dump twice, as a plain script restored with psql and in the custom
# format restored with pg_restore, each into a fresh database, the plain
# way, with nothing switched off: restored eval rows bring their own ids,
# so the trigger stores them without deciding again (README, Caveats).
# Then, for both restored databases:
#
#	- every table of the extension matches the original row for row, every
#	  column (and the test knows it covers every table of the extension);
#	- the identity sequences stand where they stood, and new rows get ids
#	  above every restored one;
#	- a dump of the restored database is the dump of the original;
#	- the restored database goes on deciding against the restored state: a
#	  violation for a key with an open or acked incident folds into it, a
#	  violation for a key whose incidents are all resolved opens a new one
#	  (and notifies it), a key at its rate limit stays limited, the restored
#	  playbook rules are the ones applied, and gate_bridge.stats adds up;
#	  tick() then compacts the restored folds and the new ones without
#	  changing what gate_bridge.incidents shows; a restored silence holds a
#	  new incident back (not notified), a new silence's id is above the
#	  restored ones, and a key's restored recovery count resolves its
#	  incident with the next passing row.
#
# A self-check proves that the comparison notices a changed, a deleted and
# an added row.
#
# Finally, the same dumps are restored once more with triggers switched off
# the usual way (session_replication_role = replica): the playbook rule
# guard fires always, so that path keeps the data too.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own databases.
#
# test/t/dump_restore.pl

use strict;
use warnings;

use DBI;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my $PREFIX = 'gb_tap_dump';
my $ORIG = "${PREFIX}_orig";
my %RESTORED = (plain => "${PREFIX}_plain", custom => "${PREFIX}_custom");
my %RESTORED_ON = (plain => "${PREFIX}_plain_on", custom => "${PREFIX}_custom_on");
my @ALL_DBS = ($ORIG, values %RESTORED, values %RESTORED_ON);
my $OFF = '';
my $CHANNEL = 'incident_created';

# Every table of the extension and the order that makes its rows comparable.
my %ORDER = (
	eval_results => 'id',
	budgets => 'agent_pattern COLLATE "C", budget_type COLLATE "C"',
	incident_rows => 'id',
	incident_folds => 'incident_id, transaction_id, seq',
	incident_events => 'id',
	incident_keys => 'kind COLLATE "C", agent COLLATE "C", subject COLLATE "C"',
	incident_contexts => 'id',
	playbook_rules => 'violation_type COLLATE "C", agent_pattern COLLATE "C"',
	stream_status => 'singleton',
	silences => 'id',
	destinations => 'name COLLATE "C"',
	deliveries => 'id',
	heartbeats => 'agent_pattern COLLATE "C"',
	gate_windows => 'agent COLLATE "C", budget_type COLLATE "C", lookback, window_end',
	playbook_registry => 'name COLLATE "C"',
	playbook_auto_runs => 'incident_id, playbook COLLATE "C"',
);
my @TABLES = sort keys %ORDER;
my @SEQUENCES = sort((map { "gate_bridge.${_}_id_seq" } qw(eval_results incident_rows incident_events incident_contexts silences deliveries)),
					 'gate_bridge.incident_events_position_seq');

# An agent whose name needs quoting in every key, summary, payload and dump.
my $ODD = "dr.odd \"q\" \\ \t \x{e9}\x{2713}";

my $BINDIR = `pg_config --bindir`;
chomp $BINDIR;
my $tmp = tempdir(CLEANUP => 1);
my $parent_pid = $$;
my $started = time;

sub connect_db
{
	my ($dbname) = @_;

	return DBI->connect("dbi:Pg:dbname=$dbname", undef, undef,
						{RaiseError => 1, PrintError => 0, AutoCommit => 1,
						 AutoInactiveDestroy => 1, pg_enable_utf8 => 1});
}

sub drop_databases
{
	my $admin = connect_db('postgres');

	$admin->do('SET client_min_messages = warning');
	$admin->do("DROP DATABASE IF EXISTS $_ WITH (FORCE)") for @ALL_DBS;
	$admin->disconnect;
}

sub create_database
{
	my ($name) = @_;
	my $admin = connect_db('postgres');

	$admin->do("CREATE DATABASE $name TEMPLATE template0 ENCODING 'UTF8'"
			   . " LC_COLLATE 'C' LC_CTYPE 'C'");
	$admin->disconnect;
}

END
{
	# a test that died half way must not leave its databases behind
	drop_databases() if $$ == $parent_pid;
}

# Runs a client program from the server's bindir with PGOPTIONS as given;
# returns its exit status and everything it printed.
sub run_tool
{
	my ($pgoptions, $program, @args) = @_;
	my $pid = open(my $out, '-|') // die "fork: $!";

	if ($pid == 0)
	{
		open(STDERR, '>&', \*STDOUT) or die "dup: $!";
		$ENV{PGOPTIONS} = $pgoptions;
		exec("$BINDIR/$program", @args) or die "exec $program: $!";
	}
	my $output = do { local $/; <$out> } // '';
	close $out;
	return ($? >> 8, $output);
}

sub errors_in
{
	my ($output) = @_;

	# psql: "psql:FILE:LINE: ERROR:  ..."; pg_restore: "pg_restore: error: ..."
	return scalar(() = $output =~ /^[^\n]*\b(?:ERROR|error):/mg);
}

# Every row of a table as its text form, in key order: all columns.
sub table_rows
{
	my ($dbh, $table) = @_;

	return $dbh->selectcol_arrayref(
		"SELECT t::text FROM gate_bridge.$table t ORDER BY $ORDER{$table}");
}

sub all_tables
{
	my ($dbh) = @_;

	return {map { $_ => table_rows($dbh, $_) } @TABLES};
}

# is_deeply's report names the first row that differs; the counts say the rest.
sub rows_match
{
	my ($got, $want, $name) = @_;

	is_deeply($got, $want, $name)
		or diag(sprintf('%d rows, expected %d', scalar @$got, scalar @$want));
}

sub sequence_state
{
	my ($dbh) = @_;

	return {map {
		my ($last, $called) = $dbh->selectrow_array(
			"SELECT last_value, is_called FROM $_");
		$_ => "$last/" . ($called ? 't' : 'f')
	} @SEQUENCES};
}

sub stats
{
	my ($dbh) = @_;
	my %s;

	for my $r (@{$dbh->selectall_arrayref(
		'SELECT kind, created, deduplicated, rate_limited FROM gate_bridge.stats',
		{Slice => {}})})
	{
		$s{$r->{kind}} = {created => $r->{created}, deduplicated => $r->{deduplicated},
						  rate_limited => $r->{rate_limited}};
	}
	return \%s;
}

# A plain dump of a database, minus what differs between any two runs of
# pg_dump (the \restrict key of recent minor releases).
sub plain_dump
{
	my ($dbname, $file) = @_;
	my ($rc, $out) = run_tool('', 'pg_dump', '-d', $dbname, '-f', $file);

	die "pg_dump $dbname failed:\n$out" if $rc != 0;
	open(my $fh, '<', $file) or die "$file: $!";
	my @lines = grep { !/^\\(?:un)?restrict / } <$fh>;
	close $fh;
	return join('', @lines);
}

################################################################ fill

drop_databases();
create_database($ORIG);
my $orig = connect_db($ORIG);

$orig->do('CREATE EXTENSION gate_bridge');

# budgets: exact names, "prefix.*" globs and "*"; every type; missing tiers,
# odd lookbacks, a disabled one, floats that need every digit
my $budget = $orig->prepare(
	'INSERT INTO gate_bridge.budgets'
	. ' (agent_pattern, budget_type, warning, error, critical, lookback, enabled)'
	. ' VALUES (?, ?, ?, ?, ?, ?, ?)');
$budget->execute(@$_) for (
	['dr.alpha', 'quality', 0.9, 0.8, 0.5, '7 days', 1],
	['dr.alpha', 'invariants', 0, 2, 5, '7 days', 1],
	['dr.*', 'latency', 1000, 2000, undef, '1 day', 1],
	['*', 'cost', undef, 0.05, 0.5, '14 days', 1],
	['dr.beta', 'success_rate', 0.99, undef, 0.9, '2 days 03:00:00', 1],
	['knowledge.*', 'latency', 500, 1500, 3000, '3 days', 1],
	['elastic.*', 'latency', 500, 1500, 3000, '7 days', 1],
	['dr.disabled', 'quality', 0.9, 0.8, 0.5, '7 days', 0],
	['dr.precise', 'quality', '0.30000000000000004', '0.1234567890123456789', '1e-300', '1 mon 2 days 00:00:01.5', 1],
	[$ODD, 'quality', 0.9, undef, undef, '7 days', 1],
);

# destinations: every event of every incident goes to two of them, so the
# outbox gets rows in every status below
$orig->do(q{INSERT INTO gate_bridge.destinations (name, kind, url, secret, min_severity, agent_pattern, events)
			VALUES ('dr.hook', 'webhook', 'https://hook.test/in', 'hmac-key', 'sev3', '*',
					'{created,escalated,reopened,acked,snoozed,snooze_expired,silence_ended,resolved,auto_resolved,silenced,flapping}'),
				   ('dr.pd', 'pagerduty', 'https://events.pagerduty.test/v2/enqueue', 'rk', 'sev2', 'dr.*', DEFAULT),
				   ('dr.off', 'slack', 'https://hooks.slack.test/x', NULL, 'sev1', '*', DEFAULT)});
$orig->do(q{UPDATE gate_bridge.destinations SET enabled = false WHERE name = 'dr.off'});
# issue openers, for agents that report nothing here (the outbox stays as
# it is): their options, and restored through destinations_guard
$orig->do(q{INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern, options)
			VALUES ('dr.gh', 'github', 'https://api.github.com/repos/acme/ops', 'ghp_dr', 'dr.none.*', '{}'),
				   ('dr.jira', 'jira', 'https://acme.atlassian.net/rest/api/2/project/OPS', 'dr@acme.test:tok',
					'dr.none.*', '{"resolve_transition": "31", "issue_type": "Task"}')});

# playbook rules: one of the user's own, an edited and a disabled built-in
# the playbooks the rules name, registered first (one with a runbook)
$orig->do(q{INSERT INTO gate_bridge.playbooks (name, title, runbook_url) VALUES
			('page_owner', 'Page the owner', 'https://runbooks.example.com/page_owner'),
			('warm_index', 'Warm the index', NULL)});
$orig->do(q{INSERT INTO gate_bridge.playbook_rules (violation_type, agent_pattern, playbooks)
			VALUES ('quality', 'dr.*', '{page_owner,rerun_eval}')});
$orig->do(q{UPDATE gate_bridge.playbook_rules SET playbooks = '{clear_cache,warm_index}'
			 WHERE violation_type = 'latency' AND agent_pattern = 'knowledge.*'});
$orig->do(q{UPDATE gate_bridge.playbook_rules SET enabled = false
			 WHERE violation_type = 'latency' AND agent_pattern = 'elastic.*'});

my $insert_sql = 'INSERT INTO gate_bridge.eval_results'
	. ' (agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate,'
	. '  invariants_failed, planner_version, triggered_by, context)'
	. ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb)';

# one eval row: (agent, {column => value}), through the trigger
sub eval_row
{
	my ($dbh, $agent, %c) = @_;
	my ($id) = $dbh->selectrow_array(
		"$insert_sql RETURNING id", undef, $agent, $c{run} // "run-$agent",
		$c{quality}, $c{latency}, $c{cost}, $c{success_rate}, $c{invariants},
		$c{planner}, $c{by} // 'dump_restore.pl', $c{context});
	return $id;
}

sub unresolved_id
{
	my ($dbh, $key) = @_;
	my ($id) = $dbh->selectrow_array(
		q{SELECT id FROM gate_bridge.incidents WHERE key = ? AND status <> 'resolved'},
		undef, $key);
	return $id;
}

# clean rows, NULL metrics, an explicit timestamp, a disabled budget
for my $i (1 .. 6)
{
	eval_row($orig, 'dr.clean', quality => 0.95, latency => 100 + $i,
			 cost => 0.001 * $i, success_rate => 1,
			 context => encode_json({i => $i, nested => {a => [1, 2, {b => undef}]},
									 text => "line\nbreak \x{2713}"}));
}
eval_row($orig, 'dr.alpha', quality => 0.95, latency => 200, cost => 0.01);
eval_row($orig, 'dr.disabled', quality => 0.1);
eval_row($orig, 'dr.empty');
$orig->do(q{INSERT INTO gate_bridge.eval_results (agent, quality, created_at, invariants_failed)
			VALUES ('dr.past', 0.5, '2024-01-15 10:30:00+00', '{}')});

# open, occurrences 3: two rows in one statement (folded in memory), one more
$orig->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('dr.alpha', 0.6), ('dr.alpha', 0.85)});
eval_row($orig, 'dr.alpha', quality => 0.4, context => '{"deploy": "v42"}');

# a context large enough to be stored apart, once for the row's incidents
# (incident_contexts, which incident_rows references)
eval_row($orig, 'dr.large', quality => 0.95,
		 invariants => '{dr_big_a,dr_big_b}',
		 context => encode_json({blob => join('', map { sprintf('%08x', $_ * 2654435761 % 4294967296) } 1 .. 1024)}));

# acked, occurrences 2
eval_row($orig, 'dr.beta', success_rate => 0.95);
eval_row($orig, 'dr.beta', success_rate => 0.5);
$orig->do('SELECT gate_bridge.ack(?, ?)', undef,
		  unresolved_id($orig, 'BUDGET_dr.beta_success_rate'), 'alice');
# ... its fold compacted into its row; dr.alpha's stays a fold
$orig->do('SELECT gate_bridge.compact_folds(?)', undef,
		  unresolved_id($orig, 'BUDGET_dr.beta_success_rate'));

# resolved after an ack, and with a note
eval_row($orig, 'knowledge.search', latency => 2000);
my $kid = unresolved_id($orig, 'BUDGET_knowledge.search_latency');
$orig->do('SELECT gate_bridge.ack(?, ?)', undef, $kid, 'bob');
$orig->do('SELECT gate_bridge.resolve(?, ?, ?)', undef, $kid, 'bob', "cache warmed \x{2713}");

# at the rate limit: three incidents created and resolved, two limited
for (1 .. 3)
{
	eval_row($orig, 'elastic.query', latency => 5000);
	$orig->do('SELECT gate_bridge.resolve(?)', undef,
			  unresolved_id($orig, 'BUDGET_elastic.query_latency'));
}
eval_row($orig, 'elastic.query', latency => 5000) for 1 .. 2;

# a ceiling through "*", a glob budget resolved straight from open
eval_row($orig, 'dr.beta', cost => 0.1);
eval_row($orig, 'dr.alpha', latency => 1500);
$orig->do('SELECT gate_bridge.resolve(?, ?, NULL)', undef,
		  unresolved_id($orig, 'BUDGET_dr.alpha_latency'), 'carol');

# invariants: with a budget (severity from it), without one; one acked
eval_row($orig, 'dr.alpha', invariants => ['schema_drift', 'pii_leak'], quality => 0.99);
$orig->do('SELECT gate_bridge.ack(?)', undef,
		  unresolved_id($orig, 'INVARIANT_dr.alpha_pii_leak'));
eval_row($orig, 'dr.gamma', invariants => ['timeout']) for 1 .. 2;

# the SQL functions
$orig->do(q{SELECT gate_bridge.on_planner_regression('v7', '{"p95": 1.5}', '{"p95": 0.5}',
			'{"severity": "critical"}', '{"ci": "nightly"}')});
$orig->do('SELECT gate_bridge.ack(?, ?)', undef, unresolved_id($orig, 'PLANNER_v7'), 'dave');
$orig->do(q{SELECT gate_bridge.on_budget_violation(
			'{"agent": "dr.api", "budget_type": "cost", "severity": "warning", "actual": 0.07, "threshold": 0.05}',
			'{"agent_pattern": "*", "budget_type": "cost", "warning": 0.05}', '{"source": "ci"}')});

# an agent name that needs quoting everywhere
eval_row($orig, $ODD, quality => 0.5, context => encode_json({agent => $ODD}));

# the lifecycle (agents dr.life.*, which the restored database is asked
# about at the end only): budgets that auto-resolve
$orig->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, error, critical, resolve_after, resolve_quiet)
			VALUES ('dr.life.*', 'cost', 1, 2, 3, NULL), ('dr.life.quiet', 'cost', 1, 2, 5, '1 day 02:03:04.5')});
# recovering: two passing rows of the three that resolve
eval_row($orig, 'dr.life.rec', cost => 5);
eval_row($orig, 'dr.life.rec', cost => 0.5) for 1 .. 2;
# recovered: auto-resolved by three passing rows
eval_row($orig, 'dr.life.done', cost => 5);
eval_row($orig, 'dr.life.done', cost => 0.5) for 1 .. 3;
# quiet: resolve_quiet, not yet due
eval_row($orig, 'dr.life.quiet', cost => 1.5);
# escalated: a worse violation raises the open incident
eval_row($orig, 'dr.life.esc', cost => 1.5);
eval_row($orig, 'dr.life.esc', cost => 5);
# snoozed for a day
eval_row($orig, 'dr.life.snooze', cost => 5);
$orig->do(q{SELECT gate_bridge.snooze(?, '1 day', 'alice', 'overnight')}, undef,
		  unresolved_id($orig, 'BUDGET_dr.life.snooze_cost'));
# silences: one ended with unsilence() (its incident announced then), one
# deleted, one running that holds an incident back
my ($ended_silence) = $orig->selectrow_array(
	q{SELECT gate_bridge.silence('dr.life.old', '1 hour', 'ended early')});
eval_row($orig, 'dr.life.old', cost => 5);
$orig->do('SELECT gate_bridge.unsilence(?)', undef, $ended_silence);
my ($deleted_silence) = $orig->selectrow_array(
	q{SELECT gate_bridge.silence('*', '1 hour', 'a mistake')});
$orig->do('DELETE FROM gate_bridge.silences WHERE id = ?', undef, $deleted_silence);
my ($silence) = $orig->selectrow_array(
	qq{SELECT gate_bridge.silence('dr.life.sil.*', '30 days', 'maintenance of dr.life.sil \x{2713}', 'budget', 'cost')});
eval_row($orig, 'dr.life.sil.a', cost => 5);
# reopened within the reopen window; held back by the re-fire backoff;
# flapping (three state changes with flap_threshold 3)
$orig->do(q{SET gate_bridge.reopen_window = '1h'});
eval_row($orig, 'dr.life.reopen', cost => 5);
$orig->do('SELECT gate_bridge.resolve(?)', undef, unresolved_id($orig, 'BUDGET_dr.life.reopen_cost'));
eval_row($orig, 'dr.life.reopen', cost => 5);
$orig->do(q{RESET gate_bridge.reopen_window});
$orig->do(q{SET gate_bridge.refire_backoff = '1h, 4h'});
eval_row($orig, 'dr.life.refire', cost => 5);
$orig->do('SELECT gate_bridge.resolve(?)', undef, unresolved_id($orig, 'BUDGET_dr.life.refire_cost'));
eval_row($orig, 'dr.life.refire', cost => 5);
$orig->do(q{RESET gate_bridge.refire_backoff});
$orig->do(q{SET gate_bridge.flap_threshold = 3});
eval_row($orig, 'dr.life.flap', cost => 5);
$orig->do('SELECT gate_bridge.resolve(?)', undef, unresolved_id($orig, 'BUDGET_dr.life.flap_cost'));
eval_row($orig, 'dr.life.flap', cost => 5);
$orig->do(q{RESET gate_bridge.flap_threshold});

# a heartbeat, and the past windows a baseline budget keeps
$orig->do(q{INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence, severity)
			VALUES ('dr.hb.*', '1 hour', 'warning')});
# disabled: tick() after the restore must have nothing to do
$orig->do(q{INSERT INTO gate_bridge.heartbeats (agent_pattern, max_silence, severity, enabled)
			VALUES ('dr.hb.never', '2 hours 30 minutes', 'critical', false)});
$orig->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, method, lookback)
			VALUES ('dr.base', 'quality', 0.1, 'baseline', '1 day')});
$orig->do(q{INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
			SELECT 'dr.base', 0.5 + 0.01 * d, now() - d * interval '1 day' FROM generate_series(0, 5) d});
$orig->do(q{SELECT count(*) FROM gate_bridge.run_gates('dr.base')});
# an edited built-in playbook, and an auto-run's bookkeeping
$orig->do(q{UPDATE gate_bridge.playbooks SET description = 'Rebuild the models, then evaluate again.'
			 WHERE name = 'rerun_dbt'});
$orig->do(q{INSERT INTO gate_bridge.playbook_auto_runs (incident_id, playbook)
			SELECT min(id), 'rerun_eval' FROM gate_bridge.incident_rows});

# deliveries in every status: delivered, retried, dead (which opens
# DELIVERY_dr.hook), claimed (sending), pending, held and skipped
$orig->do(q{SELECT gate_bridge.complete_delivery(c.id, 200)
			  FROM gate_bridge.claim_deliveries('dr.w', 5) c});
$orig->do(q{SELECT gate_bridge.complete_delivery(c.id, 503, 'unavailable', '1 hour')
			  FROM gate_bridge.claim_deliveries('dr.w', 2) c});
$orig->do(q{SELECT gate_bridge.complete_delivery(c.id, 404, 'not found')
			  FROM gate_bridge.claim_deliveries('dr.w', 1) c});
$orig->do(q{SELECT count(*) FROM gate_bridge.claim_deliveries('dr.w', 1)});
# an incident's issues, as complete_delivery() stores them (on the newest
# incident: its row stays the last one, and the dump's order the same)
$orig->do(q{UPDATE gate_bridge.incident_rows
			   SET external_refs = '{"dr.gh": {"kind": "github", "id": "42", "url": "https://github.com/acme/ops/issues/42"},
									 "dr.jira": {"kind": "jira", "id": "10042", "key": "OPS-7", "url": "https://acme.atlassian.net/browse/OPS-7"}}'
			 WHERE id = (SELECT max(id) FROM gate_bridge.incident_rows)});

################################################################ the original

my $want = all_tables($orig);
my $want_seq = sequence_state($orig);
my $want_stats = stats($orig);
my %max;
for my $t (qw(eval_results incident_rows incident_events))
{
	($max{$t}) = $orig->selectrow_array("SELECT max(id) FROM gate_bridge.$t");
}

# The comparisons cover every table of the extension, and pg_dump is told
# to keep each table and identity sequence.
is_deeply($orig->selectcol_arrayref(q{
	SELECT c.relname::text COLLATE "C" FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
	 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
	   AND d.refclassid = 'pg_extension'::regclass
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'gate_bridge')
	   AND c.relkind IN ('r', 'p')
	 ORDER BY 1}), \@TABLES,
	'the test compares every table of the extension');
is_deeply($orig->selectcol_arrayref(q{
	SELECT c::regclass::text COLLATE "C" FROM pg_extension e, unnest(e.extconfig) c
	 WHERE e.extname = 'gate_bridge' ORDER BY 1}),
	[sort(map({ "gate_bridge.$_" } @TABLES), @SEQUENCES)],
	'every table and identity sequence is registered with pg_extension_config_dump');

# The fill is what the test promises to restore.
is_deeply($orig->selectcol_arrayref(
	'SELECT DISTINCT status FROM gate_bridge.incidents ORDER BY 1'),
	[qw(ack open resolved)], 'the original has incidents in every status');
is_deeply($orig->selectcol_arrayref(
	'SELECT DISTINCT kind FROM gate_bridge.incidents ORDER BY 1'),
	[qw(budget delivery invariant planner)], 'the original has incidents of every kind');
ok($orig->selectrow_array('SELECT count(*) FROM gate_bridge.incidents WHERE occurrences > 1') >= 3,
   'the original has incidents with folded repeats');
ok($orig->selectrow_array('SELECT count(DISTINCT incident_id) FROM gate_bridge.incident_folds') >= 2,
   'the original has folds not yet compacted');
ok($orig->selectrow_array(q{SELECT occurrences FROM gate_bridge.incident_rows
							 WHERE key = 'BUDGET_dr.beta_success_rate'}) == 2,
   'the original has a fold compacted into its row');
is($orig->selectrow_array(q{SELECT rate_limited FROM gate_bridge.incident_keys
							WHERE key = 'BUDGET_elastic.query_latency'}), 2,
   'the original has a rate-limited key');
is_deeply($orig->selectcol_arrayref(
	'SELECT DISTINCT event FROM gate_bridge.incident_events ORDER BY 1'),
	[qw(acked auto_resolved created escalated flapping reopened resolved silence_ended silenced snoozed)],
	'the original has a timeline of every event');
is(scalar $orig->selectrow_array(q{SELECT count(*) FROM gate_bridge.incident_events WHERE event = 'created'}),
   scalar @{$want->{incident_rows}}, 'the original has one created event per incident');
is_deeply($orig->selectcol_arrayref(q{
	SELECT (violation_type || ' ' || agent_pattern || ' ' || playbooks::text || ' ' || enabled) COLLATE "C"
	  FROM gate_bridge.playbook_rules WHERE NOT builtin ORDER BY 1}),
	['latency elastic.* {clear_cache,refresh_synonyms} false',
	 'latency knowledge.* {clear_cache,warm_index} true',
	 'quality dr.* {page_owner,rerun_eval} true'],
	'the original has a new, an edited and a disabled built-in playbook rule');
is_deeply($orig->selectcol_arrayref(
	'SELECT DISTINCT status FROM gate_bridge.deliveries ORDER BY 1'),
	[qw(dead delivered held pending sending skipped)], 'the original has deliveries in every status');
my %count = map { ($_ => scalar @{$want->{$_}}) } @TABLES;
ok($count{eval_results} >= 25 && $count{budgets} == 13 && $count{incident_keys} >= 10
   && $count{heartbeats} == 2 && $count{gate_windows} == 4,
   "the original has $count{eval_results} eval rows, $count{budgets} budgets,"
   . " $count{incident_rows} incidents, $count{incident_folds} folds, $count{incident_events} events,"
   . " $count{incident_keys} keys, $count{playbook_rules} playbook rules, $count{heartbeats} heartbeats,"
   . " $count{gate_windows} kept past windows");

# The lifecycle's state is in the fill, with values other than the defaults.
is_deeply($orig->selectall_arrayref(q{SELECT id, agent_pattern, kind, violation_type, ends_at > now() FROM gate_bridge.silences ORDER BY id}),
		  [[$ended_silence, 'dr.life.old', undef, undef, 0], [$silence, 'dr.life.sil.*', 'budget', 'cost', 1]],
		  'the original has an ended and a running silence, and a gap in their ids');
is_deeply($orig->selectall_arrayref(q{
	SELECT agent, status, snoozed_until IS NOT NULL, silence_id, flapping::int, resolved_by
	  FROM gate_bridge.incidents WHERE agent LIKE 'dr.life.%' ORDER BY id}),
	[['dr.life.rec', 'open', 0, undef, 0, undef],
	 ['dr.life.done', 'resolved', 0, undef, 0, 'gate_bridge'],
	 ['dr.life.quiet', 'open', 0, undef, 0, undef],
	 ['dr.life.esc', 'open', 0, undef, 0, undef],
	 ['dr.life.snooze', 'ack', 1, undef, 0, undef],
	 ['dr.life.old', 'open', 0, undef, 0, undef],
	 ['dr.life.sil.a', 'open', 0, $silence, 0, undef],
	 ['dr.life.reopen', 'open', 0, undef, 0, undef],
	 ['dr.life.refire', 'resolved', 0, undef, 0, 'postgres'],
	 ['dr.life.flap', 'resolved', 0, undef, 0, 'postgres'],
	 ['dr.life.flap', 'open', 0, undef, 1, undef]],
	'the original has recovering, auto-resolved, escalated, snoozed, silenced, reopened and flapping incidents');
is_deeply($orig->selectall_arrayref(q{
	SELECT i.agent, e.event, e.silenced::int FROM gate_bridge.incident_events e
	  JOIN gate_bridge.incidents i ON i.id = e.incident_id
	 WHERE i.agent IN ('dr.life.sil.a', 'dr.life.old', 'dr.life.flap') ORDER BY e.id}),
	[['dr.life.old', 'created', 1], ['dr.life.old', 'silenced', 1], ['dr.life.old', 'silence_ended', 0],
	 ['dr.life.sil.a', 'created', 1], ['dr.life.sil.a', 'silenced', 1],
	 ['dr.life.flap', 'created', 0], ['dr.life.flap', 'resolved', 0],
	 ['dr.life.flap', 'created', 0], ['dr.life.flap', 'flapping', 0]],
	'the original has silenced events');
is_deeply($orig->selectall_arrayref(q{
	SELECT agent, refires, recovery_passes, recovery_occurrences, cardinality(state_changes) > 0,
		   flapping_since IS NOT NULL, rate_limited
	  FROM gate_bridge.incident_keys
	 WHERE agent IN ('dr.life.rec', 'dr.life.refire', 'dr.life.flap') ORDER BY agent COLLATE "C"}),
	[['dr.life.flap', 2, 0, undef, 1, 1, 0], ['dr.life.rec', 1, 2, 1, 1, 0, 0],
	 ['dr.life.refire', 1, 0, undef, 1, 0, 1]],
	'the original has keys with re-fire, recovery and flapping state');
is_deeply($orig->selectall_arrayref(q{
	SELECT agent_pattern, resolve_after, resolve_quiet::text FROM gate_bridge.budgets
	 WHERE resolve_after IS NOT NULL OR resolve_quiet IS NOT NULL ORDER BY agent_pattern COLLATE "C"}),
	[['dr.life.*', 3, undef], ['dr.life.quiet', 5, '1 day 02:03:04.5']],
	'the original has budgets that auto-resolve');

# What the playbook rules suggest, to be asked again after the restore.
my @SUGGEST = (['latency', 'knowledge.search'], ['latency', 'elastic.query'],
			   ['quality', 'dr.alpha'], ['cost', 'dr.beta'], ['quality', 'planner.x'],
			   ['success_rate', 'dbt.run']);
sub suggestions
{
	my ($dbh) = @_;

	return [map { scalar $dbh->selectrow_array(
		'SELECT gate_bridge.suggest_playbooks(?, ?)::text', undef, @$_) } @SUGGEST];
}
my $want_suggest = suggestions($orig);

################################################################ dump

my $plain_file = "$tmp/orig.sql";
my $custom_file = "$tmp/orig.dump";
my $orig_dump = plain_dump($ORIG, $plain_file);
{
	my ($rc, $out) = run_tool('', 'pg_dump', '-Fc', '-d', $ORIG, '-f', $custom_file);

	is($rc, 0, 'pg_dump -Fc of the original succeeds') or diag($out);
}
like($orig_dump, qr/^COPY gate_bridge\.incident_rows /m, 'the plain dump holds the incidents');
like($orig_dump, qr/^COPY gate_bridge\.incident_folds /m, 'the plain dump holds their folds');

my %restore = (
	plain => ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $plain_file, '-d'],
	custom => ['pg_restore', '--exit-on-error', $custom_file, '-d'],
);

################################################################ restore, bridge off

my %dbh;
for my $format (qw(plain custom))
{
	my $db = $RESTORED{$format};

	create_database($db);
	my ($rc, $out) = run_tool($OFF, @{$restore{$format}}, $db);

	is($rc, 0, "$format: a plain restore with $restore{$format}[0] succeeds")
		or diag($out);
	is(errors_in($out), 0, "$format: the restore reports no error") or diag($out);

	my $dbh = $dbh{$format} = connect_db($db);
	my $got = all_tables($dbh);

	rows_match($got->{$_}, $want->{$_}, "$format: $_ matches the original row for row")
		for @TABLES;
	is_deeply(sequence_state($dbh), $want_seq,
			  "$format: the identity sequences stand where they stood");
	is_deeply(stats($dbh), $want_stats, "$format: gate_bridge.stats matches the original");
	is_deeply(suggestions($dbh), $want_suggest,
			  "$format: the restored playbook rules suggest what the original's did");

	my $redump = plain_dump($db, "$tmp/$format.sql");

	ok($redump eq $orig_dump, "$format: a dump of the restored database is the original's dump")
		or diag(`diff -u '$plain_file' '$tmp/$format.sql' | head -40`);
}

################################################################ self-check

# The comparison notices a changed, a deleted and an added row in each
# table (in a transaction that is rolled back).
{
	my $dbh = $dbh{plain};
	my %mutate = (
		eval_results => 'UPDATE gate_bridge.eval_results SET cost_usd = 0.002 WHERE id = (SELECT min(id) FROM gate_bridge.eval_results)',
		budgets => q{UPDATE gate_bridge.budgets SET lookback = '7 days 00:00:01' WHERE agent_pattern = '*'},
		incident_rows => q{UPDATE gate_bridge.incident_rows SET details = details || '{"x": 1}' WHERE id = (SELECT max(id) FROM gate_bridge.incident_rows)},
		incident_folds => q{UPDATE gate_bridge.incident_folds SET occurrences = occurrences + 1 WHERE (incident_id, transaction_id, seq) = (SELECT incident_id, transaction_id, seq FROM gate_bridge.incident_folds ORDER BY 1, 2, 3 LIMIT 1)},
		# a row that no incident uses: a changed one would change the
		# incidents' details too, before their own mutation
		incident_contexts => q{INSERT INTO gate_bridge.incident_contexts (context) VALUES ('{"x": 1}')},
		incident_events => 'DELETE FROM gate_bridge.incident_events WHERE id = (SELECT max(id) FROM gate_bridge.incident_events)',
		incident_keys => q{INSERT INTO gate_bridge.incident_keys (kind, key, agent, subject) VALUES ('budget', 'BUDGET_zz_cost', 'zz', 'cost')},
		playbook_rules => q{UPDATE gate_bridge.playbook_rules SET enabled = NOT enabled WHERE violation_type = 'quality' AND agent_pattern = 'warehouse.*'},
		stream_status => q{INSERT INTO gate_bridge.stream_status (notifications_skipped) VALUES (1) ON CONFLICT (singleton) DO UPDATE SET notifications_skipped = gate_bridge.stream_status.notifications_skipped + 1},
		silences => q{UPDATE gate_bridge.silences SET comment = comment || '.' WHERE id = (SELECT min(id) FROM gate_bridge.silences)},
		deliveries => q{UPDATE gate_bridge.deliveries SET last_error = 'x' WHERE id = (SELECT min(id) FROM gate_bridge.deliveries)},
		destinations => q{UPDATE gate_bridge.destinations SET url = url || '?x' WHERE name = 'dr.off'},
		heartbeats => q{UPDATE gate_bridge.heartbeats SET max_silence = max_silence + interval '1 second' WHERE agent_pattern = 'dr.hb.*'},
		gate_windows => q{DELETE FROM gate_bridge.gate_windows WHERE window_end = (SELECT max(window_end) FROM gate_bridge.gate_windows)},
		playbook_registry => q{UPDATE gate_bridge.playbooks SET description = description || '.' WHERE name = 'page_owner'},
		playbook_auto_runs => q{INSERT INTO gate_bridge.playbook_auto_runs (incident_id, playbook) VALUES (0, 'x')},
	);
	my @noticed;

	$dbh->begin_work;
	for my $t (@TABLES)
	{
		my $before = table_rows($dbh, $t);

		$dbh->do($mutate{$t});
		my $after = table_rows($dbh, $t);

		push @noticed, $t if !eq_array($after, $want->{$t}) && eq_array($before, $want->{$t});
	}
	$dbh->rollback;
	is_deeply(\@noticed, \@TABLES,
			  'self-check: the comparison notices a changed, deleted or added row in every table');
}

################################################################ the restored database decides

# The keys whose unresolved incident (open or acked) must take the new
# violations, and the state the original left them in.
my @FOLD_KEYS = qw(BUDGET_dr.alpha_quality BUDGET_dr.beta_success_rate
				   INVARIANT_dr.gamma_timeout PLANNER_v7);
my $unresolved_sql = q{SELECT id || ' ' || status || ' ' || occurrences FROM gate_bridge.incidents
						WHERE key = ? AND status <> 'resolved'};
my %fold_before = map { $_ => scalar $orig->selectrow_array($unresolved_sql, undef, $_) } @FOLD_KEYS;
is_deeply([map { (split / /, $fold_before{$_} // '')[1] } @FOLD_KEYS], [qw(open ack open ack)],
		  'the original has open and acked incidents for the keys that fold');
my $rate_limited_sql = q{SELECT rate_limited FROM gate_bridge.incident_keys
						  WHERE key = 'BUDGET_elastic.query_latency'};
my $rate_limited_before = $orig->selectrow_array($rate_limited_sql);

for my $format (qw(plain custom))
{
	my $dbh = $dbh{$format};
	my ($clean_id, $planner_id);

	$dbh->do("LISTEN $CHANNEL");

	# An error here (an id that collides with a restored row, say) is a
	# failure of its own; the checks below still run.
	my $decided = eval {
		# a clean row
		$clean_id = eval_row($dbh, 'dr.clean', quality => 0.99);
		# keys with an open or acked incident: folded in
		eval_row($dbh, 'dr.alpha', quality => 0.6);
		eval_row($dbh, 'dr.beta', success_rate => 0.5);
		eval_row($dbh, 'dr.gamma', invariants => ['timeout']);
		($planner_id) = $dbh->selectrow_array(
			q{SELECT gate_bridge.on_planner_regression('v7', '{}', '{}', '{}')});
		# every incident resolved, under the limit: a new incident
		eval_row($dbh, 'knowledge.search', latency => 2000);
		# every incident resolved, at the limit: rate limited
		eval_row($dbh, 'elastic.query', latency => 5000);
		1;
	};
	ok($decided, "$format: new rows and violations are taken without error")
		or diag($@);

	cmp_ok($clean_id // 0, '>', $max{eval_results},
		   "$format: a new eval row gets an id above the restored ones");
	is($planner_id, undef,
	   "$format: on_planner_regression creates nothing for a key with a restored acked incident");
	is_deeply({map { $_ => scalar $dbh->selectrow_array($unresolved_sql, undef, $_) } @FOLD_KEYS},
			  {map { $_ => ($fold_before{$_} // 'none') =~ s/(\d+)$/$1 + 1/er } @FOLD_KEYS},
			  "$format: violations fold into the restored open and acked incidents (same id, status, occurrences + 1)");

	my $new = $dbh->selectall_arrayref(
		'SELECT id, key, status, playbooks::text AS playbooks FROM gate_bridge.incidents WHERE id > ? ORDER BY id',
		{Slice => {}}, $max{incident_rows});
	my $new_id = @$new ? $new->[0]{id} : 'none';

	is_deeply([map { "$_->{key} $_->{status} $_->{playbooks}" } @$new],
			  ['BUDGET_knowledge.search_latency open {clear_cache,warm_index}'],
			  "$format: exactly one incident is created, above the restored ids, for the key whose incidents were all resolved, with the edited rule's playbooks");
	is_deeply($dbh->selectcol_arrayref(
		q{SELECT status FROM gate_bridge.incidents WHERE key = 'BUDGET_knowledge.search_latency' ORDER BY id}),
		[qw(resolved open)], "$format: the restored resolved incident is kept beside the new one");

	my $events = $dbh->selectall_arrayref(
		'SELECT incident_id, event FROM gate_bridge.incident_events WHERE id > ? ORDER BY id',
		{Slice => {}}, $max{incident_events});
	is_deeply([map { "$_->{incident_id} $_->{event}" } @$events], ["$new_id created"],
			  "$format: the new incident's created event continues the timeline's ids");

	is(scalar $dbh->selectrow_array($rate_limited_sql), $rate_limited_before + 1,
	   "$format: the key at its rate limit stays limited after the restore");

	my %expect = map { $_ => {%{$want_stats->{$_}}} } keys %$want_stats;
	$expect{budget}{created} += 1;
	$expect{budget}{deduplicated} += 2;
	$expect{budget}{rate_limited} += 1;
	$expect{invariant}{deduplicated} += 1;
	$expect{planner}{deduplicated} += 1;
	is_deeply(stats($dbh), \%expect,
			  "$format: gate_bridge.stats adds exactly these decisions to the original's counts");

	$dbh->do('SELECT 1');
	my @notes;
	while (my $n = $dbh->pg_notifies)
	{
		push @notes, $n;
	}
	is_deeply([map { my $d = JSON::PP->new->decode($_->[2])->{data}; "$_->[0] $d->{id} $d->{key}" } @notes],
			  ["$CHANNEL $new_id BUDGET_knowledge.search_latency"],
			  "$format: the new incident, and only it, is notified");
	is(scalar @{$dbh->selectall_arrayref(
		q{SELECT kind, key FROM gate_bridge.incidents WHERE status <> 'resolved'
		  GROUP BY kind, key HAVING count(*) > 1})}, 0,
	   "$format: no key has two unresolved incidents");

	# the restored folds and the new ones compact into their rows
	my $shown_sql = 'SELECT id || \' \' || occurrences || \' \' || last_seen_at FROM gate_bridge.incidents ORDER BY id';
	my $shown = $dbh->selectcol_arrayref($shown_sql);
	cmp_ok(scalar $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.incident_folds'), '>', 0,
		   "$format: the restored database has folds to compact");
	$dbh->do('SELECT gate_bridge.tick()');
	is(scalar $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.incident_folds'), 0,
	   "$format: tick() compacts every fold");
	is_deeply($dbh->selectcol_arrayref($shown_sql), $shown,
			  "$format: gate_bridge.incidents shows the same occurrences and last_seen_at after tick()");
	is_deeply(stats($dbh), \%expect, "$format: and gate_bridge.stats the same counts");

	# the lifecycle goes on from the restored state
	my ($held) = eval {
		eval_row($dbh, 'dr.life.sil.b', cost => 5);
		$dbh->selectrow_array(q{SELECT silence_id FROM gate_bridge.incidents WHERE agent = 'dr.life.sil.b'});
	};
	is($held, $silence, "$format: the restored silence holds a new incident back");
	is_deeply($dbh->selectall_arrayref(q{
		SELECT e.event, e.silenced::int FROM gate_bridge.incident_events e
		  JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = 'dr.life.sil.b' ORDER BY e.id}),
		[['created', 1], ['silenced', 1]], "$format: its created event is marked silenced, and the silence's hold is on its timeline");
	$dbh->do('SELECT 1');
	my $notified = 0;
	$notified++ while $dbh->pg_notifies;
	is($notified, 0, "$format: and it is not notified");
	my ($new_silence) = $dbh->selectrow_array(q{SELECT gate_bridge.silence('dr.life.x', '1 hour', 'after the restore')});
	cmp_ok($new_silence // 0, '>', $silence, "$format: a new silence gets an id above the restored ones");
	eval_row($dbh, 'dr.life.rec', cost => 0.5);
	is_deeply($dbh->selectrow_arrayref(q{SELECT status, resolved_by, resolution_note FROM gate_bridge.incidents
										  WHERE agent = 'dr.life.rec'}),
			  ['resolved', 'gate_bridge', 'recovered: 3 passing rows in a row'],
			  "$format: the restored recovery count resolves its incident with the third passing row");
	$dbh->disconnect;
}

################################################################ restore with triggers off

# session_replication_role = replica switches ordinary triggers off; the
# restore must still keep every row.
for my $format (qw(plain custom))
{
	my $db = $RESTORED_ON{$format};
	my @cmd = @{$restore{$format}};

	create_database($db);
	my ($rc, $out) = run_tool('-c session_replication_role=replica', @cmd, $db);
	is($rc, 0, "$format: restore with session_replication_role = replica succeeds")
		or diag($out);
	my $dbh = connect_db($db);
	my $got = all_tables($dbh);
	my @report;

	for my $t (@TABLES)
	{
		my %in_orig = map { $_ => 1 } @{$want->{$t}};
		my $same = grep { $in_orig{$_} } @{$got->{$t}};

		push @report, sprintf('%s %d rows (original %d, identical %d)',
							  $t, scalar @{$got->{$t}}, scalar @{$want->{$t}}, $same);
	}
	my $inc = $dbh->selectrow_hashref(q{
		SELECT count(*) AS n, count(*) FILTER (WHERE status = 'open') AS open,
			   count(*) FILTER (WHERE status = 'ack') AS ack,
			   count(*) FILTER (WHERE status = 'resolved') AS resolved,
			   COALESCE(sum(occurrences), 0) AS occurrences
		  FROM gate_bridge.incidents});
	my $orig_inc = $orig->selectrow_hashref(q{
		SELECT count(*) AS n, count(*) FILTER (WHERE status = 'open') AS open,
			   count(*) FILTER (WHERE status = 'ack') AS ack,
			   count(*) FILTER (WHERE status = 'resolved') AS resolved,
			   COALESCE(sum(occurrences), 0) AS occurrences
		  FROM gate_bridge.incidents});
	my @first_errors = map { s/\s+$//r } (grep { /ERROR/ } split /\n/, $out)[0 .. 2];

	is_deeply($got, $want, "$format: a restore with triggers switched off keeps the data")
		or diag(join("\n", @report, @first_errors));
	$dbh->disconnect;
}

$orig->disconnect;
drop_databases();
my $ok = connect_db('postgres')->selectrow_array(
	"SELECT count(*) FROM pg_database WHERE datname LIKE '${PREFIX}%'");
is($ok, 0, 'the test databases are dropped');
diag(sprintf('dump_restore.pl took %d s', time - $started));

done_testing();
