#!/usr/bin/perl
#
# Memory across rows: one large INSERT must not make the backend grow with
# the number of rows, whatever the rows do.
#
# A probe trigger, named to fire after the extension's, records the
# backend's total memory (pg_backend_memory_contexts) every SAMPLE_EVERY
# rows while the statement's AFTER triggers run.  The trigger queue itself
# is allocated before the first trigger fires, so what changes between
# samples is what the checks of the rows in between left behind.  Growth
# is measured from the second sample to the largest, for
#   - clean rows of agents that have budgets (the common path);
#   - an alert storm: every row violates one key, folded in memory;
#   - clean rows of more distinct agents than the per-backend budget memo
#     keeps (it is emptied when full);
#   - repeats of 3,000 distinct keys in one transaction, in turn;
#   - repeats of 2,000 keys in a savepoint while the table of pending counts
#     is full of the transaction's own (which the savepoint must not write).
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set) as a
# superuser, who may read pg_backend_memory_contexts; creates and drops its
# own database.
#
# test/t/memory.pl

use strict;
use warnings;

use FindBin;
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database);

my $DBNAME = 'gb_tap_memory';
my $SAMPLE_EVERY = 2000;
create_scratch_database($DBNAME);

my $db = connect_db($DBNAME);
$db->do('SET client_min_messages = warning');
$db->do('CREATE EXTENSION gate_bridge');
$db->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
	VALUES ('mem.*', 'quality', 0.9, 0.8, 0.5),
		   ('mem.*', 'latency', 2000, 3000, 10000),
		   ('*', 'cost', NULL, 1, 5)
});
$db->do('CREATE UNLOGGED TABLE public.mem_samples (id bigint, bytes bigint)');
$db->do(qq{
	CREATE FUNCTION public.mem_probe() RETURNS trigger LANGUAGE plpgsql AS \$fn\$
	BEGIN
		IF NEW.id % $SAMPLE_EVERY = 0 THEN
			INSERT INTO public.mem_samples
			SELECT NEW.id, sum(total_bytes) FROM pg_catalog.pg_backend_memory_contexts;
		END IF;
		RETURN NULL;
	END
	\$fn\$
});
$db->do(q{
	CREATE TRIGGER zz_mem_probe AFTER INSERT ON gate_bridge.eval_results
		FOR EACH ROW EXECUTE FUNCTION public.mem_probe()
});
is($db->selectrow_array(q{
	SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger
	 WHERE tgrelid = 'gate_bridge.eval_results'::regclass AND NOT tgisinternal}),
   'gate_bridge_gate,zz_mem_probe', 'the probe fires after the gate');

# run NAME LIMIT SQL: one INSERT; the growth it showed, in bytes
sub run
{
	my ($name, $limit, $sql) = @_;

	$db->do('TRUNCATE public.mem_samples');
	$db->do($sql);
	my $samples = $db->selectall_arrayref(
		'SELECT bytes FROM public.mem_samples ORDER BY id');
	my @bytes = map { $_->[0] } @$samples;
	cmp_ok(scalar(@bytes), '>=', 10, "$name: samples taken");
	my $first = $bytes[1];
	my $max = $first;
	$max = ($_ > $max ? $_ : $max) for @bytes[1 .. $#bytes];
	my $growth = $max - $first;
	diag(sprintf('%-40s %2d samples, %9d bytes at the 2nd, growth %8d bytes',
				 $name, scalar(@bytes), $first, $growth));
	cmp_ok($growth, '<=', $limit, "$name: grows by at most $limit bytes");
	return $growth;
}

# The common path: 100,000 clean rows.  Nothing is kept per row.
run('100,000 clean rows', 64 * 1024, q{
	INSERT INTO gate_bridge.eval_results (agent, quality, latency_p95_ms, cost_usd,
										  invariants_failed, context)
	SELECT 'mem.clean.' || (g % 8), 0.95, 500, 0.01, '{}', '{"suite": "memory"}'
	  FROM generate_series(1, 100000) g
});
is($db->selectrow_array('SELECT count(*) FROM gate_bridge.incidents'), 0,
   'clean rows opened nothing');

# The storm: 100,000 violations of one key, folded in memory.
run('100,000 storm rows, one key', 64 * 1024, q{
	INSERT INTO gate_bridge.eval_results (agent, quality)
	SELECT 'mem.storm', 0.7 FROM generate_series(1, 100000)
});
is($db->selectrow_array(q{
	SELECT occurrences FROM gate_bridge.incidents WHERE key = 'BUDGET_mem.storm_quality'}),
   100000, 'the storm folded into one incident');

# 60,000 distinct agents, each matched against the budgets once.  The memo
# keeps at most 10,000 agents (about 2 MB), so it is emptied five times;
# without that bound it would grow by more than 10 MB here.
run('60,000 distinct agents, clean', 4 * 1024 * 1024, q{
	INSERT INTO gate_bridge.eval_results (agent, quality, cost_usd)
	SELECT 'mem.agent.' || g, 0.95, 0.01 FROM generate_series(1, 60000) g
});

# 3,000 distinct keys in one transaction: the first statement opens their
# incidents (and holds a notification for each until commit); the second
# repeats each key nine more times, cycling through all of them, which
# must be counted in memory: no UPDATE per repeat, so no row versions and
# no memory per row.
$db->begin_work;
$db->do(q{
	INSERT INTO gate_bridge.eval_results (agent, cost_usd)
	SELECT 'mem.keys.' || g, 2 FROM generate_series(1, 3000) g
});
run('3,000 keys x 9 repeats, in turn', 64 * 1024, q{
	INSERT INTO gate_bridge.eval_results (agent, cost_usd)
	SELECT 'mem.keys.' || (g % 3000 + 1), 2 FROM generate_series(1, 27000) g
});
$db->commit;
is_deeply($db->selectrow_arrayref(q{
	SELECT count(*), sum(occurrences), max(occurrences) FROM gate_bridge.incidents
	 WHERE agent LIKE 'mem.keys.%'}),
   [3000, 30000, 10], '3,000 incidents with 10 occurrences each');

# A savepoint under a full table: the transaction's top level has counts
# pending for 10,000 keys, which a savepoint may not write out (its
# rollback would take them along), so it folds no new keys: each of its
# repeats is decided in full, and it keeps nothing per key or row.  Its
# rollback leaves the top level's counts to the commit.
$db->do(q{
	INSERT INTO gate_bridge.eval_results (agent, cost_usd)
	SELECT 'mem.sub.' || g, 2 FROM generate_series(1, 12000) g
});
$db->begin_work;
$db->do(q{
	INSERT INTO gate_bridge.eval_results (agent, cost_usd)
	SELECT 'mem.sub.' || g, 2 FROM generate_series(1, 10000) g, generate_series(1, 2)
});
$db->do('SAVEPOINT s');
run('2,000 keys x 12 in a savepoint, table full', 64 * 1024, q{
	INSERT INTO gate_bridge.eval_results (agent, cost_usd)
	SELECT 'mem.sub.' || (g % 2000 + 10001), 2 FROM generate_series(1, 24000) g
});
$db->do('ROLLBACK TO SAVEPOINT s');
$db->commit;
is_deeply($db->selectrow_arrayref(q{
	SELECT count(*), sum(occurrences),
		   sum(occurrences) FILTER (WHERE substr(agent, 9)::int <= 10000)
	  FROM gate_bridge.incidents WHERE agent LIKE 'mem.sub.%'}),
   [12000, 32000, 30000], "the top level's 20,000 violations counted, the savepoint's none");

$db->disconnect;
done_testing();
