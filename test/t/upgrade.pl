#!/usr/bin/perl
#
# Upgrades: install 1.0, fill it, ALTER EXTENSION gate_bridge UPDATE, and
# check that the result matches a fresh install of the current version
# object for object, that the data survive, and that the updated database
# goes on deciding.  An installation of 1.1 updated in one step matches it
# too; the rows from before the update get the lifecycle columns' defaults;
# and a self-check shows that the comparison notices a missing column,
# default, NOT NULL, constraint, index or trigger of the lifecycle.  Grants that a deployment made on the table incidents
# of 1.1 (one on the table, column ones) move to the view of that name in
# 1.2: they still work, and pg_dump keeps them.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own databases.
#
# test/t/upgrade.pl

use strict;
use warnings;

use DBI;
use File::Temp qw(tempdir);
use Test::More;

my $OLD = 'gb_tap_upgrade_old';
my $NEW = 'gb_tap_upgrade_new';
my $MID = 'gb_tap_upgrade_mid';

sub connect_db
{
	my ($db) = @_;
	return DBI->connect("dbi:Pg:dbname=$db", undef, undef,
						{ RaiseError => 1, AutoCommit => 1, PrintError => 0 });
}

my $admin = connect_db('postgres');
$admin->do("DROP DATABASE IF EXISTS $_") for ($OLD, $NEW, $MID);
$admin->do("CREATE DATABASE $_") for ($OLD, $NEW, $MID);
# roles that users granted run_gates to (the README's pg_cron job)
my @GATE_ROLES = ('regress_upgrade_gates_job', 'regress_upgrade_gates_admin',
				  'regress_upgrade_reader', 'regress_upgrade_columns');
$admin->do("DROP ROLE IF EXISTS $_") for @GATE_ROLES;
$admin->do("CREATE ROLE $_") for @GATE_ROLES;
# what a deployment grants; applied alike to the old and the fresh database
my @GATE_GRANTS = (
	'GRANT USAGE ON SCHEMA gate_bridge TO regress_upgrade_gates_job, regress_upgrade_gates_admin',
	'GRANT EXECUTE ON FUNCTION gate_bridge.run_gates(text, interval, boolean) TO regress_upgrade_gates_job',
	'GRANT EXECUTE ON FUNCTION gate_bridge.run_gates(text, interval, boolean) TO regress_upgrade_gates_admin WITH GRANT OPTION',
	'GRANT EXECUTE ON FUNCTION gate_bridge.evaluate_agent(text, interval) TO regress_upgrade_gates_job');
# grants on incidents, the table of 1.1 and the view of 1.2: made on 1.1 in
# the old database, on the view in the fresh one
my @INCIDENT_GRANTS = (
	'GRANT USAGE ON SCHEMA gate_bridge TO regress_upgrade_reader, regress_upgrade_columns',
	'GRANT SELECT ON gate_bridge.incidents TO regress_upgrade_reader',
	'GRANT SELECT (id, status) ON gate_bridge.incidents TO regress_upgrade_columns');

my ($default) = $admin->selectrow_array(
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'gate_bridge'});
my @versions = map { $_->[0] } @{$admin->selectall_arrayref(
	q{SELECT version FROM pg_available_extension_versions
	   WHERE name = 'gate_bridge' ORDER BY string_to_array(version, '.')::int[]})};
ok(scalar(grep { $_ eq '1.0' } @versions), 'version 1.0 can still be installed');
isnt($default, '1.0', "the default version ($default) is newer than 1.0");

# Every member object of the extension, described with its definition, its
# owner and its privileges, so that two databases can be compared.
my $DESCRIBE = q{
	SELECT pg_describe_object(d.classid, d.objid, 0) || ' | ' ||
		   COALESCE(CASE d.classid
			WHEN 'pg_proc'::regclass THEN
				pg_get_functiondef(d.objid) || ' acl=' || COALESCE((SELECT proacl::text FROM pg_proc WHERE oid = d.objid), '')
			WHEN 'pg_class'::regclass THEN
				(SELECT relkind::text || ' acl=' || COALESCE(relacl::text, '') || ' cols=' ||
						COALESCE((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
											 CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
											 COALESCE(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') ||
											 CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END ||
											 COALESCE(' acl=' || a.attacl::text, ''),
											 ', ' ORDER BY a.attnum)
								   FROM pg_attribute a
								   LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
								  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') ||
						' constraints=' ||
						COALESCE((SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname)
								   FROM pg_constraint WHERE conrelid = c.oid), '') ||
						' indexes=' ||
						COALESCE((SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY 1)
								   FROM pg_index WHERE indrelid = c.oid), '') ||
						' triggers=' ||
						COALESCE((SELECT string_agg(pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text, '; ' ORDER BY t.tgname)
								   FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal), '') ||
						' view=' || COALESCE(pg_get_viewdef(c.oid), '')
				   FROM pg_class c WHERE c.oid = d.objid)
			WHEN 'pg_namespace'::regclass THEN
				(SELECT 'acl=' || COALESCE(nspacl::text, '') FROM pg_namespace WHERE oid = d.objid)
			ELSE ''
		   END, '')
	  FROM pg_depend d
	 WHERE d.refclassid = 'pg_extension'::regclass
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'gate_bridge')
	   AND d.deptype = 'e'
	 ORDER BY 1
};
# each table with its condition, in name order (the order of extconfig is
# the order the scripts registered them in, which pg_dump does not keep)
my $CONFIG = q{
	SELECT string_agg(u.c::regclass::text || ' ' || quote_literal(u.cond), ', '
					  ORDER BY u.c::regclass::text)
	  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
	 WHERE e.extname = 'gate_bridge'
};

################################################################ install 1.0 and fill it

# The library is the newest release's: it decides only for the objects of
# its own version.  So the 1.0 database is filled as 1.0 left it, by hand:
# eval rows (stored without a decision), and the incidents, timeline and
# key rows that 1.0 would have written -- including the ambiguous key texts
# that 1.0 folded together.
my $old = connect_db($OLD);
$old->do(q{SET client_min_messages = warning});
$old->do(q{CREATE EXTENSION gate_bridge VERSION '1.0'});
$old->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('up.a', 'quality', 0.9, 0.8, 0.5), ('up.*', 'latency', 100, 200, 300), ('*', 'cost', 1, 2, 3)});
$old->do(q{UPDATE gate_bridge.playbook_rules SET playbooks = '{rerun_eval,page_owner}'
			WHERE violation_type = 'cost' AND agent_pattern = '*'});
# budgets that 1.0 accepted and 1.2 refuses: inverted tiers, out of domain
$old->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('up.bad', 'quality', 0.5, 0.8, 0.95), ('up.bad', 'latency', 9000, NULL, 100),
		('up.worse.*', 'success_rate', 5, NULL, NULL)});
$old->do($_) for @GATE_GRANTS;

# a violating row on 1.0's objects is stored, with a warning, and decides nothing
{
	my @warnings;
	local $old->{PrintWarn} = 1;
	local $SIG{__WARN__} = sub { push @warnings, @_ };
	$old->do(q{SET client_min_messages = warning});
	$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('up.a', 0.1)});
	my ($n) = $old->selectrow_array(q{SELECT count(*) FROM gate_bridge.incidents});
	is($n, 0, 'before the update, a violating row opens nothing');
	like(join('', @warnings), qr/gate_bridge 1\.0 is installed in this database, but its library is version \Q$default\E/,
		 'and the writer is warned that the extension needs ALTER EXTENSION UPDATE');
}
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, invariants_failed)
		   SELECT 'up.' || chr(97 + g % 3), 0.1 * (g % 10), 50 * (g % 8), g % 4, CASE WHEN g % 7 = 0 THEN '{no_pii}'::text[] END
			 FROM generate_series(1, 300) g});
$old->do(q{
	INSERT INTO gate_bridge.incidents (id, kind, key, agent, violation_type, severity, status, summary,
									   details, playbooks, occurrences, first_seen_at, last_seen_at,
									   acked_at, acked_by, resolved_at, resolved_by, resolution_note)
	OVERRIDING SYSTEM VALUE VALUES
	(1, 'budget', 'BUDGET_up.a_quality', 'up.a', 'quality', 'sev1', 'ack', 'Budget violation: up.a quality',
	 '{"violation": {"agent": "up.a"}}', '{rerun_eval}', 40, now() - interval '2 h', now() - interval '1 h',
	 now() - interval '90 min', 'alice', NULL, NULL, NULL),
	(2, 'budget', 'BUDGET_up.b_latency', 'up.b', 'latency', 'sev2', 'resolved', 'Budget violation: up.b latency',
	 '{}', '{rerun_eval}', 3, now() - interval '3 h', now() - interval '2 h',
	 NULL, NULL, now() - interval '1 h', 'bob', 'fixed'),
	(3, 'invariant', 'INVARIANT_billing_bot_no_pii', 'billing_bot', 'invariants', 'sev2', 'resolved',
	 'Invariant failed: billing_bot no_pii', '{}', '{rerun_eval,rerun_dbt}', 2, now() - interval '5 h',
	 now() - interval '4 h', NULL, NULL, now() - interval '4 h', 'carol', NULL),
	(4, 'invariant', 'INVARIANT_billing_bot_no_pii', 'billing', 'invariants', 'sev2', 'open',
	 'Invariant failed: billing bot_no_pii', '{}', '{rerun_eval,rerun_dbt}', 7, now() - interval '3 h',
	 now() - interval '1 min', NULL, NULL, NULL, NULL, NULL),
	(5, 'planner', 'PLANNER_v9', 'planner.v9', 'planner_regression', 'sev1', 'open',
	 'Planner regression: v9', '{}', '{rerun_eval,rollback_planner}', 1, now() - interval '10 min',
	 now() - interval '10 min', NULL, NULL, NULL, NULL, NULL)});
$old->do(q{SELECT setval('gate_bridge.incidents_id_seq', 5)});
$old->do(q{
	INSERT INTO gate_bridge.incident_events (incident_id, event, actor, detail)
	SELECT id, 'created', 'writer', jsonb_build_object('id', id, 'key', key) FROM gate_bridge.incidents ORDER BY id});
$old->do(q{INSERT INTO gate_bridge.incident_events (incident_id, event, actor) VALUES (1, 'acked', 'alice'), (2, 'resolved', 'bob'), (3, 'resolved', 'carol')});
$old->do(q{
	INSERT INTO gate_bridge.incident_keys (kind, key, created, rate_limited, last_created_at, last_rate_limited_at) VALUES
	('budget', 'BUDGET_up.a_quality', 1, 0, now() - interval '2 h', NULL),
	('budget', 'BUDGET_up.b_latency', 1, 4, now() - interval '3 h', now() - interval '150 min'),
	('invariant', 'INVARIANT_billing_bot_no_pii', 2, 0, now() - interval '3 h', NULL),
	('planner', 'PLANNER_v9', 1, 0, now() - interval '10 min', NULL),
	('budget', 'BUDGET_gone_cost', 1, 0, now() - interval '30 days', NULL)});

# Each table's rows in the columns 1.0 has: the update may add columns, never
# change or lose what was there.
my %SNAP = (
	eval_results => ['id', '*'],
	budgets => ['agent_pattern, budget_type', 'agent_pattern, budget_type, warning, error, critical, lookback, enabled'],
	incidents => ['id', 'id, kind, key, agent, violation_type, severity, status, summary, details, playbooks, '
				  . 'occurrences, first_seen_at, last_seen_at, acked_at, acked_by, resolved_at, resolved_by, resolution_note'],
	incident_events => ['id', 'id, incident_id, event, at, actor, detail'],
	incident_keys => ['kind, key', 'kind, key, created, rate_limited, last_created_at, last_rate_limited_at'],
	playbook_rules => ['violation_type, agent_pattern', '*'],
);
sub snapshot
{
	my ($dbh) = @_;
	my %s;
	for my $t (sort keys %SNAP)
	{
		my ($order, $cols) = @{$SNAP{$t}};
		($s{$t}) = $dbh->selectrow_array(
			"SELECT count(*) || ':' || md5(COALESCE(string_agg(t::text, E'\\n' ORDER BY $order), ''))"
			. " FROM (SELECT $cols FROM gate_bridge.$t) t");
	}
	return \%s;
}
my $before = snapshot($old);
my ($rows_before) = $old->selectrow_array('SELECT count(*) FROM gate_bridge.eval_results');
is($rows_before, 301, 'the 1.0 database holds its eval rows');

################################################################ update, one release at a time

my @chain = grep { $_ ne '1.0' } @versions;
my %update_warnings;
for my $v (@chain)
{
	my @warnings;
	{
		local $old->{PrintWarn} = 1;
		local $SIG{__WARN__} = sub { push @warnings, @_ };
		$old->do("ALTER EXTENSION gate_bridge UPDATE TO '$v'");
	}
	$update_warnings{$v} = join('', @warnings);
	my ($ver) = $old->selectrow_array(q{SELECT extversion FROM pg_extension WHERE extname = 'gate_bridge'});
	is($ver, $v, "ALTER EXTENSION gate_bridge UPDATE TO '$v'");
	is_deeply(snapshot($old), $before, "every row of every table survives the update to $v");
	if ($v eq '1.1')
	{
		$old->do($_) for @INCIDENT_GRANTS;
		is($old->selectrow_array(q{SELECT relkind FROM pg_class WHERE oid = 'gate_bridge.incidents'::regclass}),
		   'r', 'in 1.1, the grants on incidents are made on a table');
	}
}
is((@chain ? $chain[-1] : ''), $default, "the chain 1.0 -> @chain ends at the default version $default");

# 1.2: the budgets that break its rules are named, each once, and kept
my @bad = ($update_warnings{'1.2'} // '') =~ /budget "([^"]+)" \((\w+)\) breaks a rule of gate_bridge 1\.2/g;
is_deeply(\@bad, ['up.bad', 'latency', 'up.bad', 'quality', 'up.worse.*', 'success_rate'],
		  'the update to 1.2 warns about each stored budget that breaks its rules');
like($update_warnings{'1.2'} // '', qr/tiers of a floor must be warning >= error >= critical \(warning = 0\.5, error = 0\.8, critical = 0\.95\)/,
	 'the warning gives the rule and the values');
is($old->selectrow_array(q{SELECT count(*) FROM gate_bridge.budgets WHERE agent_pattern IN ('up.bad', 'up.worse.*')}), 3,
   'the budgets that break the rules are kept');
is($update_warnings{'1.1'} // '', '', 'the update to 1.1 warns about nothing');

# 1.2: run_gates is created anew (new columns, a new argument); the
# grants on it stay
is_deeply($old->selectall_arrayref(q{
	SELECT r, has_function_privilege(r, 'gate_bridge.run_gates(text, interval, boolean, integer)', 'EXECUTE'),
			  has_function_privilege(r, 'gate_bridge.run_gates(text, interval, boolean, integer)', 'EXECUTE WITH GRANT OPTION'),
			  has_function_privilege(r, 'gate_bridge.evaluate_agent(text, interval)', 'EXECUTE')
	  FROM unnest(ARRAY['regress_upgrade_gates_job', 'regress_upgrade_gates_admin']) r ORDER BY r}),
		  [['regress_upgrade_gates_admin', 1, 1, 0], ['regress_upgrade_gates_job', 1, 0, 1]],
		  'EXECUTE on run_gates granted before the update is kept, with its grant option');
is($old->selectrow_array(q{SELECT has_function_privilege('public', 'gate_bridge.run_gates(text, interval, boolean, integer)', 'EXECUTE')}),
   0, 'and PUBLIC still has none');

# 1.2: what identifies a key is filled in from the key text and the agent
is_deeply($old->selectall_arrayref(q{SELECT id, agent, subject FROM gate_bridge.incidents ORDER BY id}),
		  [[1, 'up.a', 'quality'], [2, 'up.b', 'latency'], [3, 'billing_bot', 'no_pii'],
		   [4, 'billing', 'bot_no_pii'], [5, 'planner.v9', 'v9']],
		  'each incident gets its (agent, subject), also where two agents spelled one key text');
is_deeply($old->selectall_arrayref(q{SELECT kind, key, agent, subject, created, rate_limited
									   FROM gate_bridge.incident_keys ORDER BY kind, key}),
		  [['budget', 'BUDGET_gone_cost', '', 'BUDGET_gone_cost', 1, 0],
		   ['budget', 'BUDGET_up.a_quality', 'up.a', 'quality', 1, 0],
		   ['budget', 'BUDGET_up.b_latency', 'up.b', 'latency', 1, 4],
		   ['invariant', 'INVARIANT_billing_bot_no_pii', 'billing', 'bot_no_pii', 2, 0],
		   ['planner', 'PLANNER_v9', 'planner.v9', 'v9', 1, 0]],
		  'each key row goes to the identity of its newest incident, counters kept');

################################################################ compare with a fresh install

my $new = connect_db($NEW);
$new->do(q{SET client_min_messages = warning});
$new->do(q{CREATE EXTENSION gate_bridge});
# run_gates of 1.2 has one argument more
$new->do(s/run_gates\(text, interval, boolean\)/run_gates(text, interval, boolean, integer)/r)
  for @GATE_GRANTS, @INCIDENT_GRANTS;
my $want = $new->selectcol_arrayref($DESCRIBE);
my $got = $old->selectcol_arrayref($DESCRIBE);
cmp_ok(scalar @$want, '>', 20, 'a fresh install has its objects (' . scalar(@$want) . ')');
is_deeply($got, $want, 'the updated extension matches a fresh install object for object');
if (!Test::More->builder->is_passing)
{
	my %w = map { $_ => 1 } @$want;
	my %g = map { $_ => 1 } @$got;
	diag("only after update: $_") for grep { !$w{$_} } @$got;
	diag("only in fresh install: $_") for grep { !$g{$_} } @$want;
}
is($old->selectrow_array($CONFIG), $new->selectrow_array($CONFIG),
   'pg_dump keeps the same tables, with the same conditions');
like($new->selectrow_array($CONFIG), qr/gate_bridge\.silences '', gate_bridge\.silences_id_seq ''/,
	 'silences and its sequence among them');

# The comparison would notice a lifecycle object that the update script
# forgot or made differently (each change in a transaction rolled back).
{
	my @MISSING = (
		'ALTER TABLE gate_bridge.incident_keys DROP COLUMN refires',
		'ALTER TABLE gate_bridge.budgets DROP COLUMN resolve_quiet',
		'ALTER TABLE gate_bridge.incident_events ALTER COLUMN silenced DROP DEFAULT',
		'ALTER TABLE gate_bridge.incident_rows ALTER COLUMN flapping DROP NOT NULL',
		'ALTER TABLE gate_bridge.budgets DROP CONSTRAINT budgets_resolve_after_check',
		'ALTER TABLE gate_bridge.silences DROP CONSTRAINT silences_ends_at_check',
		'DROP INDEX gate_bridge.incident_rows_silence_id_idx',
		'DROP INDEX gate_bridge.incident_keys_flapping_since_idx',
		'DROP INDEX gate_bridge.silences_ends_at_idx',
		'DROP TRIGGER incident_events_held ON gate_bridge.incident_events',
		'ALTER TABLE gate_bridge.incident_rows ENABLE TRIGGER incident_rows_changed',
		'ALTER EXTENSION gate_bridge DROP FUNCTION gate_bridge.unsilence(bigint)',
		# an update script that forgot its REVOKE from PUBLIC
		'GRANT EXECUTE ON FUNCTION gate_bridge.snooze(bigint, interval, text, text) TO PUBLIC',
	);
	my @noticed;
	for my $change (@MISSING)
	{
		$old->begin_work;
		my $before = $old->selectcol_arrayref($DESCRIBE);
		$old->do($change);
		my $after = $old->selectcol_arrayref($DESCRIBE);
		$old->rollback;
		push @noticed, $change if !eq_array($after, $before);
	}
	is_deeply(\@noticed, \@MISSING,
			  'self-check: the comparison notices each lifecycle object missing or changed');
}

################################################################ the rows from before the update

# The lifecycle's columns: the rows from before take their defaults, and
# nothing is silenced, snoozed or flapping.
is_deeply($old->selectrow_arrayref(q{
	SELECT count(*), count(*) FILTER (WHERE snoozed_until IS NULL AND silence_id IS NULL AND NOT flapping)
	  FROM gate_bridge.incident_rows}), [5, 5],
	'incidents from before the update are neither snoozed, silenced nor flapping');
is_deeply($old->selectrow_arrayref(q{
	SELECT count(*), count(*) FILTER (WHERE NOT silenced) FROM gate_bridge.incident_events}), [8, 8],
	'their events are not marked silenced');
is_deeply($old->selectall_arrayref(q{
	SELECT DISTINCT refires, recovery_passes, recovery_occurrences, state_changes::text, flapping_since
	  FROM gate_bridge.incident_keys}), [[0, 0, undef, '{}', undef]],
	'their keys start the lifecycle counters at zero');
is_deeply($old->selectall_arrayref(q{
	SELECT DISTINCT resolve_after, resolve_quiet FROM gate_bridge.budgets}), [[undef, undef]],
	'the budgets from before auto-resolve nothing (resolved by hand only)');
is($old->selectrow_array(q{SELECT count(*) FROM gate_bridge.silences}), 0, 'there is no silence');

################################################################ 1.1, updated in one step

{
	my $mid = connect_db($MID);
	$mid->do(q{SET client_min_messages = warning});
	$mid->do(q{CREATE EXTENSION gate_bridge VERSION '1.1'});
	$mid->do($_) for @GATE_GRANTS, @INCIDENT_GRANTS;
	$mid->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('mid.a', 'cost', 1)});
	$mid->do(q{
		INSERT INTO gate_bridge.incidents (kind, key, agent, violation_type, severity, status, summary)
		VALUES ('budget', 'BUDGET_mid.a_cost', 'mid.a', 'cost', 'sev1', 'open', 'Budget violation: mid.a cost')});
	$mid->do(q{INSERT INTO gate_bridge.incident_events (incident_id, event, actor) SELECT id, 'created', 'writer' FROM gate_bridge.incidents});
	$mid->do(q{INSERT INTO gate_bridge.incident_keys (kind, key, created, last_created_at) VALUES ('budget', 'BUDGET_mid.a_cost', 1, now())});
	$mid->do(q{ALTER EXTENSION gate_bridge UPDATE});
	is($mid->selectrow_array(q{SELECT extversion FROM pg_extension WHERE extname = 'gate_bridge'}), $default,
	   "1.1: ALTER EXTENSION gate_bridge UPDATE goes to $default");
	is_deeply($mid->selectcol_arrayref($DESCRIBE), $want,
			  '1.1 updated in one step matches a fresh install object for object');
	is($mid->selectrow_array($CONFIG), $new->selectrow_array($CONFIG),
	   '1.1 updated: pg_dump keeps the same tables, with the same conditions');
	is_deeply($mid->selectrow_arrayref(q{
		SELECT i.status, i.snoozed_until, i.silence_id, i.flapping::text, e.silenced::text,
			   k.agent, k.subject, k.refires, k.state_changes::text, b.resolve_after, b.resolve_quiet
		  FROM gate_bridge.incident_rows i
		  JOIN gate_bridge.incident_events e ON e.incident_id = i.id
		  JOIN gate_bridge.incident_keys k ON k.kind = i.kind
		  CROSS JOIN gate_bridge.budgets b}),
		['open', undef, undef, 'false', 'false', 'mid.a', 'cost', 0, '{}', undef, undef],
		'1.1 updated: its rows keep their values and take the lifecycle defaults');
	# it goes on deciding, with the lifecycle: a silence holds a new incident back
	$mid->do(q{SELECT gate_bridge.silence('mid.b', '1 hour', 'maintenance')});
	$mid->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical) VALUES ('mid.b', 'cost', 1)});
	$mid->do(q{INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('mid.a', 5), ('mid.b', 5)});
	is_deeply($mid->selectall_arrayref(q{
		SELECT i.agent, i.occurrences, i.silence_id IS NOT NULL, e.event, e.silenced
		  FROM gate_bridge.incidents i JOIN gate_bridge.incident_events e ON e.incident_id = i.id
		 ORDER BY i.id, e.id}),
		[['mid.a', 2, 0, 'created', 0], ['mid.b', 1, 1, 'created', 1], ['mid.b', 1, 1, 'silenced', 1]],
		'1.1 updated: a violation folds into the incident from 1.1, and a silenced agent\'s incident is held back');
	$mid->disconnect;
}

################################################################ the grants on incidents

is($old->selectrow_array(q{SELECT relkind FROM pg_class WHERE oid = 'gate_bridge.incidents'::regclass}),
   'v', 'after the update, incidents is a view');
# a fold, so that the view has something to add to the row
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('up.a', 0.1)});
is($old->selectrow_array(q{SELECT count(*) FROM gate_bridge.incident_folds WHERE incident_id = 1}), 1,
   'a violation of the open key is a fold');
{
	my $as = sub {
		my ($role, $sql) = @_;
		$old->begin_work;
		$old->do("SET LOCAL ROLE $role");
		my $r = eval { [$old->selectrow_array($sql)] };
		my $state = $r ? '' : $old->state;
		$old->rollback;
		return $r ? join('/', map { $_ // '' } @$r) : "error $state";
	};
	is($as->('regress_upgrade_reader', q{SELECT occurrences FROM gate_bridge.incidents WHERE id = 1}), 41,
	   'the role granted SELECT on the table incidents reads the view, folds added in');
	is($as->('regress_upgrade_columns', q{SELECT id, status FROM gate_bridge.incidents WHERE id = 1}), '1/ack',
	   'the role granted SELECT on two columns reads them on the view');
	is($as->('regress_upgrade_columns', q{SELECT occurrences FROM gate_bridge.incidents WHERE id = 1}), 'error 42501',
	   'and no other column');
	is($as->('regress_upgrade_reader', q{SELECT count(*) FROM gate_bridge.incident_rows}), 'error 42501',
	   'the grants moved to the view: none is left on incident_rows');
	is($as->('regress_upgrade_columns', q{SELECT id FROM gate_bridge.incident_rows}), 'error 42501',
	   'nor a column grant');
}
$old->do(q{SELECT gate_bridge.compact_folds(1)});

# pg_dump of the updated database gives the grants, on the view
{
	my $tmp = tempdir(CLEANUP => 1);
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	system("$bindir/pg_dump", '-d', $OLD, '-f', "$tmp/old.sql") == 0 or die "pg_dump $OLD failed";
	system("$bindir/pg_dump", '-d', $NEW, '-f', "$tmp/new.sql") == 0 or die "pg_dump $NEW failed";
	my %grants;
	for my $db ('old', 'new')
	{
		open(my $fh, '<', "$tmp/$db.sql") or die "$tmp/$db.sql: $!";
		$grants{$db} = [sort grep { /^(?:GRANT|REVOKE) .* ON TABLE gate_bridge\.incident/ } <$fh>];
		close $fh;
	}
	is_deeply($grants{old}, ["GRANT SELECT ON TABLE gate_bridge.incidents TO regress_upgrade_reader;\n",
							 "GRANT SELECT(id) ON TABLE gate_bridge.incidents TO regress_upgrade_columns;\n",
							 "GRANT SELECT(status) ON TABLE gate_bridge.incidents TO regress_upgrade_columns;\n"],
			  'pg_dump of the updated database grants SELECT on the view incidents and on its two columns, and nothing on incident_rows');
	is_deeply($grants{old}, $grants{new}, 'as it does for a fresh install with the same grants');
}

################################################################ it goes on deciding

my ($occ) = $old->selectrow_array(q{SELECT occurrences FROM gate_bridge.incidents WHERE id = 1});
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('up.a', 0.1)});
my ($occ2) = $old->selectrow_array(q{SELECT occurrences FROM gate_bridge.incidents WHERE id = 1});
is($occ2, $occ + 1, 'a violation after the update folds into the open incident of its key');
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('up.z', 9)});
my ($pb) = $old->selectrow_array(q{SELECT playbooks::text FROM gate_bridge.incidents WHERE key = 'BUDGET_up.z_cost'});
is($pb, '{rerun_eval,page_owner}', 'a new incident after the update uses the edited playbook rule');
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, invariants_failed) VALUES ('billing', '{bot_no_pii}'), ('billing_bot', '{no_pii}')});
is_deeply($old->selectall_arrayref(q{SELECT agent, subject, occurrences, status FROM gate_bridge.incidents
									  WHERE key = 'INVARIANT_billing_bot_no_pii' ORDER BY id}),
		  [['billing_bot', 'no_pii', 2, 'resolved'], ['billing', 'bot_no_pii', 8, 'open'],
		   ['billing_bot', 'no_pii', 1, 'open']],
		  'two agents that spell one key text get incidents of their own after the update');
$old->do(q{SELECT gate_bridge.ack(4, 'dave')});
is($old->selectrow_array(q{SELECT status FROM gate_bridge.incidents WHERE id = 4}), 'ack',
   'an incident from 1.0 can be acknowledged after the update');

# the kept bad budget goes on deciding, in the trigger and in the gates
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('up.bad', 0.9)});
is($old->selectrow_array(q{SELECT severity FROM gate_bridge.incidents WHERE key = 'BUDGET_up.bad_quality'}), 'sev1',
   'a kept budget with inverted tiers still decides: 0.9 is below its critical 0.95');
is($old->selectrow_array(q{SELECT v->>'severity' FROM gate_bridge.evaluate_agent('up.bad') r,
								  jsonb_array_elements(r->'violations') v WHERE v->>'budget_type' = 'quality'}),
   'critical', 'and evaluate_agent applies it the same way');
is($old->selectrow_array(q{SELECT count(*) FROM gate_bridge.run_gates() WHERE agent = 'up.bad'}), 1,
   'run_gates runs with it');
$old->do(q{UPDATE gate_bridge.budgets SET enabled = false WHERE agent_pattern = 'up.bad' AND budget_type = 'latency'});
ok(!$old->selectrow_array(q{SELECT enabled FROM gate_bridge.budgets WHERE agent_pattern = 'up.bad' AND budget_type = 'latency'}),
   'a kept budget can be disabled');
ok(!eval { $old->do(q{UPDATE gate_bridge.budgets SET critical = 0.97 WHERE agent_pattern = 'up.bad' AND budget_type = 'quality'}); 1 }
   && $old->state eq '23514', 'changing its thresholds must fix them (23514)');

$old->disconnect;
$new->disconnect;
$admin->do("DROP DATABASE $_") for ($OLD, $NEW, $MID);
$admin->do("DROP ROLE $_") for @GATE_ROLES;
done_testing();
