#!/usr/bin/perl
#
# Upgrades: install 1.0, fill it, ALTER EXTENSION gate_bridge UPDATE, and
# check that the result matches a fresh install of the current version
# object for object, that the data survive, and that the updated database
# goes on deciding.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own databases.
#
# test/t/upgrade.pl

use strict;
use warnings;

use DBI;
use Test::More;

my $OLD = 'gb_tap_upgrade_old';
my $NEW = 'gb_tap_upgrade_new';

sub connect_db
{
	my ($db) = @_;
	return DBI->connect("dbi:Pg:dbname=$db", undef, undef,
						{ RaiseError => 1, AutoCommit => 1, PrintError => 0 });
}

my $admin = connect_db('postgres');
$admin->do("DROP DATABASE IF EXISTS $_") for ($OLD, $NEW);
$admin->do("CREATE DATABASE $_") for ($OLD, $NEW);

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
my $CONFIG = q{
	SELECT array_to_string(ARRAY(SELECT c::regclass::text FROM unnest(extconfig) c ORDER BY 1), ',')
		   || ' | ' || array_to_string(extcondition, ',')
	  FROM pg_extension WHERE extname = 'gate_bridge'
};

################################################################ install 1.0 and fill it

my $old = connect_db($OLD);
$old->do(q{SET client_min_messages = warning});
$old->do(q{CREATE EXTENSION gate_bridge VERSION '1.0'});
$old->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('up.a', 'quality', 0.9, 0.8, 0.5), ('up.*', 'latency', 100, 200, 300), ('*', 'cost', 1, 2, 3)});
$old->do(q{UPDATE gate_bridge.playbook_rules SET playbooks = '{rerun_eval,page_owner}'
			WHERE violation_type = 'cost' AND agent_pattern = '*'});
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd, invariants_failed)
		   SELECT 'up.' || chr(97 + g % 3), 0.1 * (g % 10), 50 * (g % 8), g % 4, CASE WHEN g % 7 = 0 THEN '{no_pii}'::text[] END
			 FROM generate_series(1, 300) g});
$old->do(q{SELECT gate_bridge.ack(1, 'alice')});
$old->do(q{SELECT gate_bridge.resolve(2, 'bob', 'fixed')});
$old->do(q{SELECT gate_bridge.on_planner_regression('v9', '{}', '{}', '{"severity": "critical"}')});

my %SNAP = (
	eval_results => 'id', budgets => 'agent_pattern, budget_type', incidents => 'id',
	incident_events => 'id', incident_keys => 'kind, key',
	playbook_rules => 'violation_type, agent_pattern',
);
sub snapshot
{
	my ($dbh) = @_;
	my %s;
	for my $t (sort keys %SNAP)
	{
		($s{$t}) = $dbh->selectrow_array(
			"SELECT count(*) || ':' || md5(COALESCE(string_agg(t::text, E'\\n' ORDER BY $SNAP{$t}), ''))"
			. " FROM gate_bridge.$t t");
	}
	return \%s;
}
my $before = snapshot($old);
my ($incidents_before) = $old->selectrow_array('SELECT count(*) FROM gate_bridge.incidents');
cmp_ok($incidents_before, '>', 3, "1.0 opened incidents ($incidents_before)");

################################################################ update

$old->do('ALTER EXTENSION gate_bridge UPDATE');
my ($ver) = $old->selectrow_array(q{SELECT extversion FROM pg_extension WHERE extname = 'gate_bridge'});
is($ver, $default, "ALTER EXTENSION gate_bridge UPDATE reaches $default");
is_deeply(snapshot($old), $before, 'every row of every table survives the update');

################################################################ compare with a fresh install

my $new = connect_db($NEW);
$new->do(q{SET client_min_messages = warning});
$new->do(q{CREATE EXTENSION gate_bridge});
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

################################################################ it goes on deciding

my ($occ) = $old->selectrow_array(q{SELECT occurrences FROM gate_bridge.incidents
									  WHERE key = 'BUDGET_up.a_quality' AND status <> 'resolved'});
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('up.a', 0.1)});
my ($occ2) = $old->selectrow_array(q{SELECT occurrences FROM gate_bridge.incidents
									   WHERE key = 'BUDGET_up.a_quality' AND status <> 'resolved'});
is($occ2, $occ + 1, 'a violation after the update folds into the open incident');
$old->do(q{INSERT INTO gate_bridge.eval_results (agent, cost_usd) VALUES ('up.z', 9)});
my ($pb) = $old->selectrow_array(q{SELECT playbooks::text FROM gate_bridge.incidents WHERE key = 'BUDGET_up.z_cost'});
is($pb, '{rerun_eval,page_owner}', 'a new incident after the update uses the edited playbook rule');

$old->disconnect;
$new->disconnect;
$admin->do("DROP DATABASE $_") for ($OLD, $NEW);
done_testing();
