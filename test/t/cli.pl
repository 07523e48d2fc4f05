# The gate-bridge command line against a throw-away cluster.
#
# Run inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGVERSION
# set), from the top of the tree, after "make install":
#
#   pg_virtualenv -t -v 15 prove --ext .pl test/t/cli.pl
#
# Builds the binary with the Makefile (make gate-bridge) and checks: its
# version is the control file's, the installed one is found on PATH, "make
# install" links it there and "make uninstall" removes the link; --help of
# every command, bad options and environment (exit 64, also for a
# DATABASE_URL that is not a PostgreSQL URL), connection failures (exit 3),
# a database without the extension, the warning when the extension is of
# another version (a database with CREATE EXTENSION gate_bridge VERSION
# '1.1'); incidents, ack and resolve; snooze, silence, unsilence, silences
# and what incidents shows of them (see "Lifecycle" below: those cases need
# gate_bridge.snooze(), silence(), unsilence(), the table silences and the
# incidents' snoozed_until, silence_id and flapping); deliveries (table,
# filters, JSON lines) and redeliver (see "Delivery" below); each exit code
# of run-gates and its report, JSON lines, samples and per-violation
# incident ids,
# INTERVENTIONS_ENABLED=false; and that "listen", as a role with only the
# grants it needs, prints every incident event exactly once and in position
# (commit) order: a committed event is not held back by one still in flight,
# nor by a rolled-back one, through a burst of concurrent writers (pgbench)
# and a server restart (pg_ctlcluster) reported with one line, ending with
# exit status 0 on SIGTERM and SIGINT; on an extension without the event
# stream (1.1) it exits 1 and says so.  test/t/listen.pl tries it harder.
# Takes about 25 s.
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use FindBin;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database drop_scratch_database);
use GBUtil qw(slurp wait_until);

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = tempdir('gb_cli_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $dbname = 'gb_cli_test';
my $old_dbname = 'gb_cli_v11';
my $listener_role = 'regress_cli_listener';
my $listener_password = 'regress_cli_' . $$;
my $json = JSON::PP->new->utf8->canonical;

die "run this test inside pg_virtualenv (PGHOST/PGPORT/PGVERSION are not set)\n"
  unless defined $ENV{PGPORT} && defined $ENV{PGVERSION};

delete $ENV{DATABASE_URL};
delete $ENV{INTERVENTIONS_ENABLED};

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

my $bin = "$root/gate-bridge";

# Background listeners started here; stopped whatever happens to the test.
my @background;
my $test_pid = $$;
END
{
	for my $pid ($$ == $test_pid ? @background : ())
	{
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
}

# Run a command; returns (exit status, stdout, stderr).  Options: env =>
# {NAME => value or undef to unset}, timeout => seconds.
sub run_cmd
{
	my ($opts, @cmd) = @_;
	return GBUtil::run_cmd({ dir => $tmp, %$opts }, @cmd);
}

# gate-bridge with the test database as the default
sub gb
{
	my $opts = ref $_[0] eq 'HASH' ? shift : {};
	return run_cmd($opts, $bin, @_);
}

sub db
{
	my ($name) = @_;
	return connect_db($name, PrintWarn => 0);
}

sub json_lines
{
	my ($text) = @_;
	my @objs;
	for my $line (split /\n/, $text)
	{
		my $obj = eval { $json->decode($line) };
		push @objs, $obj // { _unparsable => $line };
	}
	return @objs;
}

my ($rc, $out, $err);

# ---------------------------------------------------------------------------
# Build, version, installation
# ---------------------------------------------------------------------------

my $pg_config = $ENV{PG_CONFIG} // "/usr/lib/postgresql/$ENV{PGVERSION}/bin/pg_config";
chomp(my $bindir = `$pg_config --bindir`);
my @make = ('make', '-s', '-C', $root, "PG_CONFIG=$pg_config");

($rc, $out, $err) = run_cmd({ timeout => 120 }, @make, 'gate-bridge');
is($rc, 0, 'make gate-bridge builds it (with -Wall -Wextra -Werror)') or diag($out, $err);
BAIL_OUT('the command line does not build') if $rc != 0 || !-x $bin;

my ($version) = slurp("$root/gate_bridge.control") =~ /^default_version\s*=\s*'([^']+)'/m;
ok(defined $version, "the control file's default_version ($version)");

# Without any connection setting --version asks no server.
my %no_connection = map { $_ => undef } qw(DATABASE_URL PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE);
($rc, $out, $err) = gb({ env => \%no_connection }, '--version');
is($rc, 0, '--version exits 0');
is($out, "gate-bridge $version\n", "--version is the control file's default_version");
is($err, '', '--version without a connection setting asks no server');
($rc, $out) = gb({ env => \%no_connection }, '-V');
is($out, "gate-bridge $version\n", '-V is --version');

# The installed binary, as the README types it.
($rc, $out, $err) = run_cmd({}, 'sh', '-c', 'command -v gate-bridge');
chomp(my $on_path = $out);
is($rc, 0, 'after make install, gate-bridge is found on PATH') or diag("PATH=$ENV{PATH}");
is(abs_path($on_path || '/nonexistent'), abs_path("$bindir/gate-bridge"),
	"it is the binary installed into pg_config --bindir ($bindir)");
($rc, $out, $err) = run_cmd({ env => \%no_connection }, 'sh', '-c', 'gate-bridge --version');
is($rc, 0, 'gate-bridge runs by its name') or diag($err);
is($out, "gate-bridge $version\n", 'and is this version');

# make install / uninstall into a staging directory: the link and its options
{
	my $dest = "$tmp/dest";
	my $link = "$dest/usr/local/bin/gate-bridge";
	($rc, $out, $err) = run_cmd({ timeout => 120 }, @make, 'install', "DESTDIR=$dest");
	is($rc, 0, 'make install DESTDIR=...') or diag($out, $err);
	ok(-x "$dest$bindir/gate-bridge", 'make install installs the binary into pg_config --bindir');
	ok(-l $link, 'make install links it into /usr/local/bin (CLI_LINK_DIR)');
	is(readlink($link), "$bindir/gate-bridge", 'the link points to the installed binary');
	($rc, $out, $err) = run_cmd({ timeout => 60 }, @make, 'uninstall', "DESTDIR=$dest");
	is($rc, 0, 'make uninstall DESTDIR=...') or diag($out, $err);
	ok(!-e "$dest$bindir/gate-bridge", 'make uninstall removes the binary');
	ok(!-l $link, 'make uninstall removes the link');

	# a link that another installation owns stays
	symlink('/opt/other/gate-bridge', $link) or die "symlink: $!";
	($rc, $out, $err) = run_cmd({ timeout => 60 }, @make, 'uninstall', "DESTDIR=$dest");
	is(readlink($link), '/opt/other/gate-bridge', 'make uninstall leaves a link to another binary alone');
	unlink $link;

	# a file that is not a link is not replaced
	open my $fh, '>', $link or die "$link: $!";
	print $fh "#!/bin/sh\n";
	close $fh;
	($rc, $out, $err) = run_cmd({ timeout => 120 }, @make, 'install', "DESTDIR=$dest");
	isnt($rc, 0, 'make install refuses to replace a file that is not a link');
	like($err, qr/\Q$link\E is a file, not a link: not replacing it/, 'and says why');
	ok(-f $link && !-l $link, 'the file is still there');
	unlink $link;

	my $dest2 = "$tmp/dest2";
	($rc, $out, $err) = run_cmd({ timeout => 120 }, @make, 'install', "DESTDIR=$dest2", 'CLI_LINK_DIR=');
	is($rc, 0, 'make install CLI_LINK_DIR= ...') or diag($out, $err);
	ok(-x "$dest2$bindir/gate-bridge", 'CLI_LINK_DIR=: the binary is installed');
	ok(!-e "$dest2/usr/local/bin", 'CLI_LINK_DIR=: no link');
	($rc, $out, $err) = run_cmd({ timeout => 120 }, @make, 'install', "DESTDIR=$dest2", 'CLI_LINK_DIR=/opt/gb/bin');
	is(readlink("$dest2/opt/gb/bin/gate-bridge"), "$bindir/gate-bridge", 'CLI_LINK_DIR=DIR: the link goes into DIR');
}

# ---------------------------------------------------------------------------
# An extension of another version: a warning, once, with both numbers
# ---------------------------------------------------------------------------

{
	isnt($version, '1.1', 'the client is not version 1.1');
	create_scratch_database($old_dbname);
	my $old = db($old_dbname);
	$old->do(q{CREATE EXTENSION gate_bridge VERSION '1.1'});
	my ($v) = $old->selectrow_array(q{SELECT extversion FROM pg_extension WHERE extname = 'gate_bridge'});
	is($v, '1.1', 'a database with gate_bridge 1.1');
	$old->disconnect;

	my $warning = qr/^gate-bridge: warning: this gate-bridge is version \Q$version\E, but the gate_bridge extension in database "\Q$old_dbname\E" on \S+ "[^"]*" port \d+ is version 1\.1\n/m;
	($rc, $out, $err) = gb('-d', "dbname=$old_dbname", 'incidents');
	is($rc, 0, 'an older extension: incidents still runs') or diag($err);
	like($out, qr/^\(0 incidents\)$/m, 'and lists');
	like($out, qr/^ID\s+SEV\s+STATUS\s+OCC\s+FIRST SEEN \(UTC\)\s+KEY$/m,
		'an extension without snoozes and silences: the table has no FLAGS');
	like($err, $warning, 'a warning names both versions and the database');
	like($err, qr/^HINT:  .*ALTER EXTENSION gate_bridge UPDATE/m, 'and says how to match them');
	is(scalar(() = $err =~ /warning:/g), 1, 'the warning comes once');

	($rc, $out, $err) = gb('listen', '--since', '0', '--once', '-d', "dbname=$old_dbname");
	is($rc, 1, 'an extension without the event stream: listen exits 1') or diag($err);
	like($err, $warning, 'listen warns too');
	like($err, qr/^gate-bridge: the gate_bridge extension in database "\Q$old_dbname\E" .* has no event stream \(function gate_bridge\.events_after\(bigint, integer\) does not exist\)\nHINT:  .*ALTER EXTENSION gate_bridge UPDATE\.$/m,
		'and says it needs the event stream, and how to get it');

	($rc, $out, $err) = gb('-d', "dbname=$old_dbname", '--version');
	is($rc, 0, '--version with a connection exits 0');
	like($out, qr/\Agate-bridge \Q$version\E\nextension gate_bridge 1\.1 in database "\Q$old_dbname\E" on \S+ "[^"]*" port \d+\n\z/,
		'--version with a connection also prints the installed extension\'s version');
	like($err, $warning, '--version warns about the difference');
	is(scalar(() = $err =~ /warning:/g), 1, '--version: the warning comes once');

	drop_scratch_database();
}

# ---------------------------------------------------------------------------
# The database
# ---------------------------------------------------------------------------

create_scratch_database($dbname);
my $admin = db('postgres');
$admin->do('SET client_min_messages = warning');
$admin->do("DROP ROLE IF EXISTS $listener_role");
$admin->do("CREATE ROLE $listener_role LOGIN PASSWORD '$listener_password'");
$admin->do("GRANT CONNECT ON DATABASE $dbname TO $listener_role");
$admin->do("REVOKE CONNECT ON DATABASE $dbname FROM PUBLIC");

my $dbh = db($dbname);
$dbh->do('CREATE EXTENSION gate_bridge');
$dbh->do("GRANT USAGE ON SCHEMA gate_bridge TO $listener_role");
$dbh->do("GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events TO $listener_role");
$dbh->do("GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer), gate_bridge.events_head(),
		  gate_bridge.events_resume_point(bigint) TO $listener_role");

# Eval rows first, budgets after: the trigger checks rows against the
# budgets in force when they are inserted, so these rows open nothing and
# run-gates is the one to find the violations.
my @gate_agents = qw(regress.pass regress.crit regress.err regress.warn regress.old);
$dbh->do(q{
	INSERT INTO gate_bridge.eval_results (agent, quality, cost_usd, created_at) VALUES
		('regress.pass', 0.9, 0.5, now()),
		('regress.crit', 0.25, 0.5, now()),
		('regress.err', 0.45, 0.5, now()),
		('regress.warn', 0.9, 1.5, now()),
		('regress.warn', 0.9, 1.5, now()),
		('regress.old', 0.25, 0.5, now() - interval '2 days')});
$dbh->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('regress.pass', 'quality', 0.8, 0.5, 0.3),
		('regress.crit', 'quality', 0.8, 0.5, 0.3),
		('regress.err', 'quality', 0.8, 0.5, 0.3),
		('regress.warn', 'quality', 0.8, 0.5, 0.3),
		('regress.warn', 'cost', 1.0, 2.0, 4.0),
		('regress.old', 'quality', 0.8, 0.5, 0.3)});

sub gate_incidents
{
	my ($n) = $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.incidents WHERE agent = ANY (?)',
		undef, \@gate_agents);
	return $n;
}

$ENV{PGDATABASE} = $dbname;

($rc, $out, $err) = gb('--version');
is($rc, 0, '--version in a database of this version exits 0');
like($out, qr/\Agate-bridge \Q$version\E\nextension gate_bridge \Q$version\E in database "\Q$dbname\E" on \S+ "[^"]*" port \d+\n\z/,
	'--version: both versions');
is($err, '', '--version: the same version, no warning');
($rc, $out, $err) = gb('incidents');
is($err, '', 'a command against the same version warns about nothing');
($rc, $out, $err) = gb('-d', 'dbname=postgres', '--version');
is($rc, 0, '--version, a database without the extension: exit 0');
like($out, qr/\Agate-bridge \Q$version\E\nextension gate_bridge is not installed in database "postgres" /,
	'--version: says the extension is not installed there');
($rc, $out, $err) = gb('-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5', '--version');
is($rc, 0, '--version, a server that cannot be reached: still exit 0');
is($out, "gate-bridge $version\n", '--version: the client\'s version');
like($err, qr/could not connect to database "regress_nodb" on host "127\.0\.0\.1" port 1: /,
	'--version: and why the server\'s is missing');
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'mysql://u:secret@h/db' } }, '--version');
is($rc, 0, '--version, DATABASE_URL is not a PostgreSQL URL: exit 0');
is($out, "gate-bridge $version\n", '--version: the client\'s version only');
like($err, qr/not asking a server for its version: DATABASE_URL is a "mysql:\/\/" URL/, '--version: and why');
($rc, $out, $err) = gb('--version', 'incidents');
is($rc, 64, '--version takes no command');

# ---------------------------------------------------------------------------
# --help and usage errors
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('--help');
is($rc, 0, '--help exits 0');
like($out, qr/^Usage:\n  gate-bridge \[-d CONNINFO\] COMMAND/m, '--help shows the usage');
like($out, qr/^  $_ /m, "--help lists $_")
  for qw(run-gates listen incidents ack resolve snooze silence unsilence silences deliveries redeliver serve deliver);
like($out, qr/^  64 /m, '--help documents the exit status of usage errors');
like($out, qr/^  3 /m, '--help documents the exit status of connection failures');
like($out, qr/^  -V, --version /m, '--help documents --version');
is($err, '', '--help writes nothing to stderr');

for my $cmd (qw(run-gates listen incidents ack resolve snooze silence unsilence silences deliveries redeliver serve deliver))
{
	($rc, $out, $err) = gb($cmd, '--help');
	is($rc, 0, "$cmd --help exits 0");
	like($out, qr/^Usage:\n  gate-bridge $cmd /m, "$cmd --help shows its usage");
	like($out, qr/^  -d, --dbname=CONNINFO +connection string or URI$/m, "$cmd --help lists -d");
	like($out, qr/^  -h, --help +show this help, then exit$/m, "$cmd --help lists -h");
	like($out, qr/Exit status/, "$cmd --help documents its exit status");
	is($err, '', "$cmd --help writes nothing to stderr");
	my ($rc2, $out2) = gb('help', $cmd);
	is($out2, $out, "help $cmd is $cmd --help");
	my ($rc3, $out3) = gb($cmd, '-h');
	is($out3, $out, "$cmd -h is $cmd --help");
	# --help wins wherever it stands, and connects nowhere
	my ($rc4, $out4) = gb($cmd, '-d', 'host=127.0.0.1 port=1', '--help');
	is($rc4, 0, "$cmd --help does not connect");
}
($rc, $out) = gb('run-gates', '--help');
like($out, qr/--fail-on-warning/, 'run-gates --help names --fail-on-warning');
like($out, qr/INTERVENTIONS_ENABLED/, 'run-gates --help documents INTERVENTIONS_ENABLED');
like($out, qr/folded\/rate limited/, 'run-gates --help documents the per-violation incidents');
like($out, qr/--require-samples/, 'run-gates --help names --require-samples');
like($out, qr/^  4   no failure, but a gate could not be judged/m, 'run-gates --help documents exit status 4');
($rc, $out) = gb('resolve', '--help');
like($out, qr/^  -n, --note=TEXT +resolution note$/m, 'resolve --help lists --note');
($rc, $out) = gb('ack', '--help');
unlike($out, qr/--note/, 'ack --help does not list --note');
($rc, $out) = gb('snooze', '--help');
like($out, qr/^Usage:\n  gate-bridge snooze \[OPTIONS\] ID DURATION$/m, 'snooze --help: ID and DURATION');
like($out, qr/^  -n, --note=TEXT /m, 'snooze --help lists --note');
like($out, qr/^      --actor=NAME /m, 'snooze --help lists --actor');
($rc, $out) = gb('silence', '--help');
like($out, qr/^Usage:\n  gate-bridge silence \[OPTIONS\] PATTERN DURATION --comment TEXT$/m,
	'silence --help: PATTERN, DURATION and --comment');
like($out, qr/^  -k, --kind=KIND /m, 'silence --help lists --kind');
like($out, qr/^  -t, --type=VIOLATION_TYPE\n/m, 'silence --help lists --type');
($rc, $out) = gb('silences', '--help');
like($out, qr/^  -a, --all /m, 'silences --help lists --all');
like($out, qr/^  -j, --json /m, 'silences --help lists --json');
($rc, $out) = gb('deliveries', '--help');
like($out, qr/^  -i, --incident=ID /m, 'deliveries --help lists --incident');
like($out, qr/^  -s, --status=STATUS /m, 'deliveries --help lists --status');
like($out, qr/^      --destination=NAME /m, 'deliveries --help lists --destination');
like($out, qr/^  -l, --limit=N /m, 'deliveries --help lists --limit');
like($out, qr/^  -j, --json /m, 'deliveries --help lists --json');
($rc, $out) = gb('redeliver', '--help');
like($out, qr/^Usage:\n  gate-bridge redeliver \[OPTIONS\] ID$/m, 'redeliver --help: ID');
($rc, $out) = gb('incidents', '--help');
like($out, qr/FLAGS shows "snoozed until TIME"/, 'incidents --help explains FLAGS');
($rc, $out) = gb('listen', '--help');
like($out, qr/^      --since=POSITION +start after stream position POSITION/m, 'listen --help lists its long-only options');
like($out, qr/target_session_attrs=read-write/, 'listen --help shows a connection string for failover');

my @usage = (
	[[], qr/no command given/, 'no command'],
	[['frobnicate'], qr/unknown command "frobnicate"/, 'unknown command'],
	[['help', 'frobnicate'], qr/unknown command "frobnicate"/, 'help of an unknown command'],
	[['--frob'], qr/unrecognized option/, 'unknown global option'],
	[['run-gates', '--frob'], qr/run-gates: unrecognized option '--frob'/, 'unknown run-gates option'],
	[['listen', '-x'], qr/listen: invalid option -- 'x'/, 'unknown short option'],
	[['run-gates', '--lookback'], qr/requires an argument/, 'missing option value'],
	[['run-gates', '--lookback', ''], qr/invalid --lookback ""/, 'empty lookback'],
	[['run-gates', '--lookback', 'seven days'], qr/invalid --lookback "seven days": invalid input syntax/, 'unparsable lookback'],
	[['run-gates', '--lookback', '-1 day'], qr/window must be longer than zero/, 'negative lookback'],
	[['run-gates', 'extra'], qr/unexpected argument "extra"/, 'stray argument'],
	[['run-gates', '--agent', ''], qr/--agent must not be empty/, 'empty agent'],
	[['incidents', '--status', 'closed'], qr/invalid --status "closed"/, 'bad --status'],
	[['incidents', '--severity', 'sev9'], qr/invalid --severity "sev9"/, 'bad --severity'],
	[['ack'], qr/missing incident ID/, 'ack without an id'],
	[['ack', '12abc'], qr/invalid incident ID "12abc"/, 'ack with a bad id'],
	[['ack', '0'], qr/invalid incident ID "0"/, 'ack with id 0'],
	[['ack', '--note', 'x', '1'], qr/--note is only for resolve and snooze/, 'ack --note'],
	[['ack', '--actor', '', '1'], qr/--actor must not be empty/, 'ack with an empty actor'],
	[['resolve'], qr/resolve: missing incident ID/, 'resolve without an id'],
	[['resolve', '1', '2'], qr/unexpected argument "2"/, 'resolve with two ids'],
	[['listen', '--since', '-5'], qr/invalid --since "-5"/, 'bad --since'],
	[['listen', '--interval', '0'], qr/invalid --interval "0"/, 'bad --interval'],
	[['listen', 'now'], qr/listen: unexpected argument "now"/, 'listen with an argument'],
	[['snooze'], qr/snooze: missing incident ID/, 'snooze without an id'],
	[['snooze', '12'], qr/snooze: missing DURATION/, 'snooze without a duration'],
	[['snooze', '12abc', '1h'], qr/snooze: invalid incident ID "12abc"/, 'snooze with a bad id'],
	[['snooze', '0', '1h'], qr/snooze: invalid incident ID "0"/, 'snooze with id 0'],
	[['snooze', '12', ''], qr/snooze: invalid DURATION ""/, 'snooze with an empty duration'],
	[['snooze', '12', '1h', '2h'], qr/snooze: unexpected argument "2h"/, 'snooze with two durations'],
	[['snooze', '--actor', '', '12', '1h'], qr/snooze: --actor must not be empty/, 'snooze with an empty actor'],
	[['snooze', '--frob', '12', '1h'], qr/snooze: unrecognized option '--frob'/, 'unknown snooze option'],
	[['silence'], qr/silence: missing PATTERN/, 'silence without a pattern'],
	[['silence', 'inbox.*'], qr/silence: missing DURATION/, 'silence without a duration'],
	[['silence', 'inbox.*', '2h'], qr/silence: --comment is required/, 'silence without --comment'],
	[['silence', 'inbox.*', '2h', '--comment', ''], qr/silence: --comment must not be empty/,
		'silence with an empty comment'],
	[['silence', '', '2h', '--comment', 'x'], qr/silence: PATTERN must not be empty/, 'silence with an empty pattern'],
	[['silence', 'inbox.*', '', '--comment', 'x'], qr/silence: invalid DURATION ""/, 'silence with an empty duration'],
	[['silence', 'inbox.*', '2h', '-c', 'x', '--kind', ''], qr/silence: --kind must not be empty/,
		'silence with an empty kind'],
	[['silence', 'inbox.*', '2h', '-c', 'x', '--type', ''], qr/silence: --type must not be empty/,
		'silence with an empty type'],
	[['silence', 'inbox.*', '2h', 'x'], qr/silence: unexpected argument "x"/, 'silence with a third argument'],
	[['unsilence'], qr/unsilence: missing silence ID/, 'unsilence without an id'],
	[['unsilence', 'x'], qr/unsilence: invalid silence ID "x"/, 'unsilence with a bad id'],
	[['unsilence', '-1'], qr/unsilence: invalid option -- '1'/, 'unsilence with a negative id'],
	[['unsilence', '1', '2'], qr/unsilence: unexpected argument "2"/, 'unsilence with two ids'],
	[['silences', 'now'], qr/silences: unexpected argument "now"/, 'silences with an argument'],
	[['silences', '--frob'], qr/silences: unrecognized option '--frob'/, 'unknown silences option'],
	[['deliveries', 'now'], qr/deliveries: unexpected argument "now"/, 'deliveries with an argument'],
	[['deliveries', '--status', 'lost'], qr/deliveries: invalid --status "lost": expected held, pending/, 'deliveries with a bad status'],
	[['deliveries', '--incident', 'x'], qr/deliveries: invalid --incident "x"/, 'deliveries with a bad incident id'],
	[['deliveries', '--incident', '0'], qr/deliveries: invalid --incident "0"/, 'deliveries with incident 0'],
	[['deliveries', '--destination', ''], qr/deliveries: --destination must not be empty/, 'deliveries with an empty destination'],
	[['deliveries', '--limit', '0'], qr/deliveries: invalid --limit "0": expected 1 to 10000/, 'deliveries --limit 0'],
	[['deliveries', '--limit', '10001'], qr/deliveries: invalid --limit "10001"/, 'deliveries --limit too large'],
	[['deliveries', '--limit', 'ten'], qr/deliveries: invalid --limit "ten"/, 'deliveries --limit not a number'],
	[['deliveries', '--limit'], qr/deliveries: option '--limit' requires an argument/, 'deliveries --limit without a value'],
	[['redeliver'], qr/redeliver: missing delivery ID/, 'redeliver without an id'],
	[['redeliver', 'x'], qr/redeliver: invalid delivery ID "x"/, 'redeliver with a bad id'],
	[['redeliver', '0'], qr/redeliver: invalid delivery ID "0"/, 'redeliver with id 0'],
	[['redeliver', '1', '2'], qr/redeliver: unexpected argument "2"/, 'redeliver with two ids'],
	[['redeliver', '--frob', '1'], qr/redeliver: unrecognized option '--frob'/, 'unknown redeliver option'],
);
for my $u (@usage)
{
	my ($args, $re, $name) = @$u;
	($rc, $out, $err) = gb(@$args);
	is($rc, 64, "usage error exits 64: $name");
	like($err, $re, "usage error message: $name");
	like($err, qr/Try "gate-bridge.*--help"/, "usage error points at --help: $name");
	is($out, '', "usage error prints nothing on stdout: $name");
}

($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'maybe' } }, 'run-gates');
is($rc, 64, 'INTERVENTIONS_ENABLED=maybe is a usage error');
like($err, qr/INTERVENTIONS_ENABLED must be true or false.*"maybe"/, 'and says which value is wrong');

# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------

($rc, $out, $err) = gb('-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5', 'incidents');
is($rc, 3, 'a connection failure exits 3');
like($err, qr/could not connect to database "regress_nodb" on host "127\.0\.0\.1" port 1: /,
	'a connection failure names the database, host and port');

($rc, $out, $err) = gb('listen', '-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5');
is($rc, 3, 'listen: a failed first connection exits 3 (only later ones are retried)');
like($err, qr/could not connect to database "regress_nodb" on host "127\.0\.0\.1" port 1: /,
	'listen: and names the server');

for my $cmd (['run-gates'], ['ack', '1'], ['resolve', '1'], ['snooze', '1', '1h'],
	['silence', 'inbox.*', '2h', '--comment', 'x'], ['unsilence', '1'], ['silences'],
	['deliveries'], ['redeliver', '1'])
{
	($rc, $out, $err) = gb('-d', 'host=127.0.0.1 port=1 dbname=regress_nodb connect_timeout=5', @$cmd);
	is($rc, 3, "$cmd->[0]: a connection failure exits 3");
}

($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb?connect_timeout=5' } },
	'run-gates');
is($rc, 3, 'a bad DATABASE_URL exits 3');
like($err, qr/database "regress_urldb" on host "127\.0\.0\.1" port 1/, 'and names the server from DATABASE_URL');

($rc, $out, $err) = gb({ env => { DATABASE_URL => "postgresql:///$dbname", PGDATABASE => 'postgres' } },
	'incidents', '--status', 'all');
is($rc, 0, 'DATABASE_URL is used when there is no -d') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => "postgres:///$dbname", PGDATABASE => 'postgres' } },
	'incidents');
is($rc, 0, 'DATABASE_URL: a postgres:// URL') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => "dbname=$dbname", PGDATABASE => 'postgres' } },
	'incidents');
is($rc, 0, 'DATABASE_URL: key=value settings') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb' } },
	'-d', "dbname=$dbname", 'incidents');
is($rc, 0, '-d before the command wins over DATABASE_URL') or diag($err);
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'postgresql://127.0.0.1:1/regress_urldb' } },
	'incidents', '-d', "dbname=$dbname");
is($rc, 0, '-d after the command wins over DATABASE_URL') or diag($err);

# Not a PostgreSQL URL: libpq would take it for a database name, or for
# broken key=value settings.
for my $url ('mysql://u:secret@h/db', 'http://x', 'http://x?a=b', 'sqlite:///tmp/x.db')
{
	my ($scheme) = $url =~ m{^([a-z]+)://};
	for my $cmd (['incidents'], ['run-gates'], ['listen'], ['ack', '1'])
	{
		($rc, $out, $err) = gb({ env => { DATABASE_URL => $url } }, @$cmd);
		is($rc, 64, "DATABASE_URL=$url, $cmd->[0]: a usage error");
		like($err, qr/^gate-bridge \Q$cmd->[0]\E: DATABASE_URL is a "\Q$scheme\E:\/\/" URL, not a PostgreSQL one: expected a postgresql:\/\/ or postgres:\/\/ URL, or key=value settings/m,
			"DATABASE_URL=$url, $cmd->[0]: says what is wrong");
		unlike($err, qr/secret|u\@h/, "DATABASE_URL=$url, $cmd->[0]: the message does not repeat the rest of the URL");
	}
}
($rc, $out, $err) = gb('-d', 'mysql://u@h/db', 'incidents');
is($rc, 64, '-d mysql://...: a usage error');
like($err, qr/-d is a "mysql:\/\/" URL, not a PostgreSQL one/, '-d mysql://...: names -d');
($rc, $out, $err) = gb({ env => { DATABASE_URL => "PostgreSQL:///$dbname" } }, 'incidents');
is($rc, 64, 'DATABASE_URL=PostgreSQL://...: a usage error (libpq reads only lower case)');
like($err, qr/write the scheme in lower case/, 'and says so');
($rc, $out, $err) = gb({ env => { DATABASE_URL => 'mysql://u@h/db' } }, '-d', "dbname=$dbname", 'incidents');
is($rc, 0, '-d wins over a DATABASE_URL for another program') or diag($err);

($rc, $out, $err) = gb({ env => { PGDATABASE => 'postgres' } }, 'incidents');
is($rc, 1, 'a database without the extension: exit 1');
like($err, qr/^gate-bridge: extension "gate_bridge" does not exist in database "postgres" on /m,
	'says that the extension is missing, and where');
like($err, qr/^HINT:  .*CREATE EXTENSION gate_bridge/m, 'and how to fix it');

# ---------------------------------------------------------------------------
# incidents, ack, resolve
# ---------------------------------------------------------------------------

# Incidents of their own, opened by the trigger; their budgets go again so
# that run-gates below does not see these agents.
$dbh->do(q{
	INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
		('regress.inc.crit', 'quality', 0.8, 0.5, 0.3),
		('regress.inc.err', 'quality', 0.8, 0.5, 0.3)});
$dbh->do(q{INSERT INTO gate_bridge.eval_results (agent, quality) VALUES
		('regress.inc.crit', 0.25), ('regress.inc.err', 0.45)});
$dbh->do(q{DELETE FROM gate_bridge.budgets WHERE agent_pattern LIKE 'regress.inc.%'});
my ($crit_id) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.inc.crit_quality' AND status = 'open'});
my ($err_id) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.inc.err_quality' AND status = 'open'});
ok(defined $crit_id && defined $err_id, 'two incidents to work with (sev1 and sev2)');
$crit_id //= 0;
$err_id //= 0;

($rc, $out, $err) = gb('incidents');
is($rc, 0, 'incidents exits 0');
like($out, qr/^ID\s+SEV\s+STATUS\s+OCC\s+FIRST SEEN \(UTC\)\s+FLAGS\s+KEY\s+ISSUES$/m, 'incidents: table header');
like($out, qr/^\Q$crit_id\E\s+sev1\s+open\s+1\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+-\s+BUDGET_regress\.inc\.crit_quality\s+-$/m,
	'incidents: the sev1 row, no flags, no issues');
like($out, qr/^\(2 incidents\)$/m, 'incidents: count line');

($rc, $out, $err) = gb('incidents', '--json');
is($rc, 0, 'incidents --json exits 0');
my @inc = json_lines($out);
my ($ids_db) = $dbh->selectcol_arrayref(
	q{SELECT id FROM gate_bridge.incidents WHERE status <> 'resolved' ORDER BY severity, first_seen_at, id});
is_deeply([map { $_->{id} } @inc], $ids_db, 'incidents --json: the unresolved incidents, most severe first');
my ($crit) = grep { $_->{id} == $crit_id } @inc;
is_deeply([sort keys %{ $crit || {} }],
	[sort qw(id kind key agent violation_type severity status summary playbooks occurrences
		first_seen_at last_seen_at acked_at acked_by resolved_at resolved_by resolution_note
		snoozed_until silence_id flapping external_refs)],
	'incidents --json: every field');
like($out, qr/^\{"id":\Q$crit_id\E,.*,"resolution_note":null,"snoozed_until":null,"silence_id":null,"flapping":false,"external_refs":\{\}\}$/m,
	'incidents --json: the lifecycle fields and the issues come last, null, false and {} for an incident left alone');
is($crit->{severity}, 'sev1', 'incidents --json: severity');
is($crit->{status}, 'open', 'incidents --json: status');
is($crit->{summary}, 'Budget violation: regress.inc.crit quality', 'incidents --json: summary');
is_deeply($crit->{playbooks}, ['rerun_eval'], 'incidents --json: playbooks is an array');
is($crit->{occurrences}, 1, 'incidents --json: occurrences');
like($crit->{first_seen_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'incidents --json: times in UTC');
ok(exists $crit->{acked_at} && !defined $crit->{acked_at}, 'incidents --json: null timestamps are null');
like($out, qr/^\{"id":\Q$crit_id\E,"kind":"budget",/m, 'incidents --json: numbers are numbers, in column order');

# the issues opened for an incident (as complete_delivery() stores them)
$dbh->do(q{UPDATE gate_bridge.incident_rows
			  SET external_refs = '{"gh": {"kind": "github", "id": "42", "url": "https://github.com/o/r/issues/42"},
									"jira": {"kind": "jira", "id": "10001", "key": "OPS-7", "url": "https://x.atlassian.net/browse/OPS-7"}}'
			WHERE id = ?}, undef, $crit_id);
($rc, $out, $err) = gb('incidents');
like($out, qr{^\Q$crit_id\E\s+sev1\s.*\sBUDGET_regress\.inc\.crit_quality\s+https://github\.com/o/r/issues/42 https://x\.atlassian\.net/browse/OPS-7$}m,
	'incidents: ISSUES shows the issues\' URLs, by destination name');
($rc, $out, $err) = gb('incidents', '--json');
($crit) = grep { $_->{id} == $crit_id } json_lines($out);
is_deeply($crit->{external_refs},
	{ gh => { kind => 'github', id => '42', url => 'https://github.com/o/r/issues/42' },
	  jira => { kind => 'jira', id => '10001', key => 'OPS-7', url => 'https://x.atlassian.net/browse/OPS-7' } },
	'incidents --json: external_refs, by destination');
$dbh->do(q{UPDATE gate_bridge.incident_rows SET external_refs = '{}' WHERE id = ?}, undef, $crit_id);

($rc, $out) = gb('incidents', '--json', '--severity', 'sev2');
is_deeply([map { $_->{id} } json_lines($out)], [$err_id], 'incidents --severity sev2');
($rc, $out) = gb('incidents', '--status', 'resolved');
like($out, qr/^\(0 incidents\)$/m, 'incidents --status resolved: none yet');

($rc, $out, $err) = gb('ack', $crit_id);
is($rc, 0, 'ack exits 0') or diag($err);
is($out, "Incident $crit_id acknowledged (BUDGET_regress.inc.crit_quality).\n", 'ack confirms');
my ($st, $by) = $dbh->selectrow_array('SELECT status, acked_by FROM gate_bridge.incidents WHERE id = ?',
	undef, $crit_id);
is($st, 'ack', 'ack: the incident is acknowledged');
($rc, $out, $err) = gb('ack', $crit_id);
is($rc, 1, 'ack twice exits 1');
like($err, qr/^gate-bridge: incident \Q$crit_id\E is already acknowledged$/m, 'with the server\'s message');

($rc, $out, $err) = gb('ack', '--actor', 'alice', $err_id);
is($rc, 0, 'ack --actor exits 0') or diag($err);
($by) = $dbh->selectrow_array('SELECT acked_by FROM gate_bridge.incidents WHERE id = ?', undef, $err_id);
is($by, 'alice', 'ack --actor: the actor is recorded');

($rc, $out, $err) = gb('incidents', '--json', '--status', 'ack');
is_deeply([map { $_->{id} } json_lines($out)], [$crit_id, $err_id], 'incidents --status ack');

my $note = qq{rolled back "v2" \\ see runbook};
($rc, $out, $err) = gb('resolve', $crit_id, '--note', $note);
is($rc, 0, 'resolve exits 0') or diag($err);
is($out, "Incident $crit_id resolved (BUDGET_regress.inc.crit_quality).\n", 'resolve confirms');
my ($rnote) = $dbh->selectrow_array('SELECT resolution_note FROM gate_bridge.incidents WHERE id = ?',
	undef, $crit_id);
is($rnote, $note, 'resolve: the note is stored as given');
($rc, $out, $err) = gb('resolve', $crit_id);
is($rc, 1, 'resolve twice exits 1');
like($err, qr/is already resolved\nDETAIL:  A resolved incident is final/, 'with the server\'s message and detail');
($rc, $out, $err) = gb('ack', '987654321');
is($rc, 1, 'ack of an unknown id exits 1');
like($err, qr/incident 987654321 does not exist/, 'and says so');

($rc, $out) = gb('incidents', '--json', '--status', 'resolved');
my ($resolved) = json_lines($out);
is($resolved->{resolution_note}, $note, 'incidents --json: the note, escaped and read back');

# ---------------------------------------------------------------------------
# Lifecycle: snooze, silence, unsilence, silences, and incidents' FLAGS
#
# These need gate_bridge.snooze(incident_id, duration, actor, note),
# gate_bridge.silence(agent_pattern, duration, comment, kind,
# violation_type), gate_bridge.unsilence(id), the table gate_bridge.silences
# and the columns snoozed_until, silence_id and flapping at the end of
# gate_bridge.incidents.  A refusal is compared with what the server says
# to the same call: the command prints its message and exits 1.
# ---------------------------------------------------------------------------

# Open an incident for an agent: a budget for it only while its row goes in.
sub open_incident
{
	my ($h, $agent, $quality) = @_;
	$h->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
			 VALUES (?, 'quality', 0.8, 0.5, 0.3)}, undef, $agent);
	$h->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (?, ?)', undef, $agent, $quality // 0.25);
	$h->do('DELETE FROM gate_bridge.budgets WHERE agent_pattern = ?', undef, $agent);
	my ($id) = $h->selectrow_array(
		q{SELECT max(id) FROM gate_bridge.incidents WHERE agent = ? AND status <> 'resolved'}, undef, $agent);
	return $id;
}

# The server's message and SQLSTATE for a statement that it refuses.
sub server_refusal
{
	my ($sql, @bind) = @_;
	my $h = db($dbname);
	$h->{PrintError} = 0;
	$h->{RaiseError} = 0;
	$h->do($sql, undef, @bind);
	my ($msg, $state) = ($h->errstr // '', $h->state // '');
	$h->disconnect;
	$msg =~ s/^ERROR:\s+//;
	$msg =~ s/\n.*//s;
	return ($msg, $state);
}

# the same instant? (the command prints times as the server's TimeZone has them)
sub same_instant
{
	my ($a, $b) = @_;
	my ($same) = $dbh->selectrow_array('SELECT ?::timestamptz = ?::timestamptz', undef, $a, $b);
	return $same;
}

my (undef, $lc_position) = max_event($dbh);
my $snz_id = open_incident($dbh, 'regress.lc.snooze');
ok(defined $snz_id, 'an incident to snooze');
$snz_id //= 0;

# snooze
($rc, $out, $err) = gb('snooze', $snz_id, '24h', '--note', 'waiting on the vendor', '--actor', 'carol');
is($rc, 0, 'snooze exits 0') or diag($err);
my ($until_text) = $out =~ /\AIncident \Q$snz_id\E snoozed until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d(?::\d\d)?)\.\n\z/;
ok(defined $until_text, 'snooze prints "Incident ID snoozed until TIME."') or diag($out);
my ($db_until, $db_status, $until_utc, $off_by) = $dbh->selectrow_array(q{
	SELECT snoozed_until, status,
		   to_char(snoozed_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
		   abs(extract(epoch FROM snoozed_until - (now() + interval '24 hours')))
	  FROM gate_bridge.incidents WHERE id = ?}, undef, $snz_id);
ok(defined $db_until && same_instant($until_text // 'infinity', $db_until),
	'snooze: the time printed is the incident\'s snoozed_until');
ok(defined $off_by && $off_by < 60, 'snooze 24h: snoozed until now plus 24 hours');
is($db_status, 'ack', 'snooze: the incident is acknowledged');
($rc, $out) = gb('listen', '--since', $lc_position, '--once');
my ($snooze_ev) = grep { ($_->{incident_id} // 0) == $snz_id && ($_->{note} // '') eq 'waiting on the vendor' }
  json_lines($out);
ok($snooze_ev, 'snooze --note: the timeline has the note');
is($snooze_ev->{actor}, 'carol', 'snooze --actor: and the actor');

($rc, $out, $err) = gb('snooze', $snz_id, '2 hours');
is($rc, 0, 'snooze an acknowledged incident again, "2 hours"') or diag($err);
($db_until) = $dbh->selectrow_array('SELECT snoozed_until FROM gate_bridge.incidents WHERE id = ?', undef, $snz_id);
like($out, qr/\AIncident \Q$snz_id\E snoozed until /, 'and confirms');
my ($printed) = $out =~ /snoozed until (.*)\.\n/;
ok(same_instant($printed // 'infinity', $db_until), 'the second snooze sets the new time');
($rc, $out, $err) = gb({ env => { PGTZ => 'Asia/Kolkata' } }, 'snooze', $snz_id, '30min');
like($out, qr/\AIncident \Q$snz_id\E snoozed until \S+ \S+\+05:30\.\n\z/, 'snooze: the time in the session\'s time zone (PGTZ)');
($until_utc) = $dbh->selectrow_array(
	q{SELECT to_char(snoozed_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM gate_bridge.incidents WHERE id = ?},
	undef, $snz_id);

for my $case (
	[[$snz_id, '31 days'], 'SELECT gate_bridge.snooze(?, ?)', '22023', 'a snooze longer than the server allows'],
	[['987654321', '1h'], 'SELECT gate_bridge.snooze(?, ?)', 'P0002', 'an unknown incident'],
	[[$crit_id, '1h'], 'SELECT gate_bridge.snooze(?, ?)', '55000', 'a resolved incident'])
{
	my ($args, $sql, $want_state, $name) = @$case;
	my ($msg, $state) = server_refusal($sql, @$args);
	is($state, $want_state, "gate_bridge.snooze refuses $name with $want_state");
	($rc, $out, $err) = gb('snooze', @$args);
	is($rc, 1, "snooze: $name exits 1");
	like($err, qr/^gate-bridge: \Q$msg\E$/m, "snooze: $name, the server's message");
	is($out, '', "snooze: $name prints nothing on stdout");
}
($rc, $out, $err) = gb('snooze', $snz_id, '--', '-1h');
is($rc, 64, 'snooze: a negative duration is a usage error');
like($err, qr/snooze: invalid DURATION "-1h": the duration must be longer than zero/, 'and says so');
($rc, $out, $err) = gb('snooze', $snz_id, 'a fortnight');
is($rc, 64, 'snooze: a duration that is no interval is a usage error');
like($err, qr/snooze: invalid DURATION "a fortnight": invalid input syntax for type interval/, 'with the server\'s reason');

# silence
my ($me) = $dbh->selectrow_array('SELECT current_user');
($rc, $out, $err) = gb('silence', 'regress.lc.sil.*', '2h', '--comment', 'maintenance: "sil" agents',
	'--kind', 'budget', '--type', 'quality');
is($rc, 0, 'silence exits 0') or diag($err);
my ($sil_id, $sil_until) = $out =~ /\ASilence (\d+) created: regress\.lc\.sil\.\* until (.+)\.\n\z/;
ok(defined $sil_id, 'silence prints "Silence ID created: PATTERN until TIME."') or diag($out);
$sil_id //= 0;
my $sil = $dbh->selectrow_hashref(q{
	SELECT s.*, abs(extract(epoch FROM s.ends_at - (now() + interval '2 hours'))) AS off_by,
		   s.starts_at <= now() AS started
	  FROM gate_bridge.silences s WHERE id = ?}, undef, $sil_id) // {};
is_deeply([@$sil{qw(agent_pattern kind violation_type key created_by comment)}],
	['regress.lc.sil.*', 'budget', 'quality', undef, $me, 'maintenance: "sil" agents'],
	'silence: the row has the pattern, kind, type, creator and comment');
ok($sil->{started} && defined $sil->{off_by} && $sil->{off_by} < 60, 'silence 2h: from now for 2 hours');
ok(same_instant($sil_until // 'infinity', $sil->{ends_at} // '-infinity'), 'silence: the time printed is its ends_at');

($rc, $out, $err) = gb('silence', 'regress.lc.other.*', '30min', '-c', 'second');
is($rc, 0, 'silence of any kind and type exits 0') or diag($err);
my ($sil2_id) = $out =~ /\ASilence (\d+) created: regress\.lc\.other\.\* until /;
ok(defined $sil2_id, 'and confirms') or diag($out);
$sil2_id //= 0;

{
	my ($msg, $state) = server_refusal(
		'SELECT gate_bridge.silence(?, ?, ?, ?)', 'regress.lc.sil.*', '1h', 'x', 'no-such-kind');
	is($state, '22023', 'gate_bridge.silence refuses an unknown kind with 22023');
	($rc, $out, $err) = gb('silence', 'regress.lc.sil.*', '1h', '-c', 'x', '--kind', 'no-such-kind');
	is($rc, 1, 'silence: an unknown kind exits 1');
	like($err, qr/^gate-bridge: \Q$msg\E$/m, 'silence: the server\'s message');
}
($rc, $out, $err) = gb('silence', '-c', 'x', 'regress.lc.sil.*', '--', '-5min');
is($rc, 64, 'silence: a negative duration is a usage error');
like($err, qr/silence: invalid DURATION "-5min": the duration must be longer than zero/, 'and says so');

# an incident under the silence
my $silenced_id = open_incident($dbh, 'regress.lc.sil.a');
ok(defined $silenced_id, 'an incident for an agent under the silence');
$silenced_id //= 0;
my ($db_sil) = $dbh->selectrow_array('SELECT silence_id FROM gate_bridge.incidents WHERE id = ?', undef, $silenced_id);
is($db_sil, $sil_id, 'the incident is under the silence');

# an incident that flaps: opened and resolved again and again
{
	my $h = db($dbname);
	$h->do('SET gate_bridge.rate_limit = 100');
	for (1 .. 6)
	{
		my $id = open_incident($h, 'regress.lc.flap');
		$h->do('SELECT gate_bridge.resolve(?)', undef, $id) if $_ < 6 && defined $id;
	}
	$h->disconnect;
}
my ($flap_id, $flapping) = $dbh->selectrow_array(
	q{SELECT id, flapping FROM gate_bridge.incidents WHERE agent = 'regress.lc.flap' AND status = 'open'});
ok($flapping, 'an incident opened and resolved six times in a row is flapping');
$flap_id //= 0;

# incidents: FLAGS and the JSON fields, as the view has them
($rc, $out, $err) = gb('incidents');
is($rc, 0, 'incidents with snoozed, silenced and flapping incidents exits 0') or diag($err);
like($out, qr/^\Q$snz_id\E\s+sev1\s+ack\s+1\s+\S+\s+snoozed until \Q$until_utc\E\s+BUDGET_regress\.lc\.snooze_quality\s+-$/m,
	'incidents: FLAGS of a snoozed incident, in UTC');
like($out, qr/^\Q$silenced_id\E\s+sev1\s+open\s+1\s+\S+\s+silence \Q$sil_id\E\s+BUDGET_regress\.lc\.sil\.a_quality\s+-$/m,
	'incidents: FLAGS of a silenced incident');
like($out, qr/^\Q$flap_id\E\s+sev1\s+open\s+1\s+\S+\s+flapping\s+BUDGET_regress\.lc\.flap_quality\s+-$/m,
	'incidents: FLAGS of a flapping incident');
my $view = $dbh->selectall_hashref(q{
	SELECT id, to_char(snoozed_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS snoozed_until,
		   silence_id, flapping
	  FROM gate_bridge.incidents WHERE status <> 'resolved'}, 'id');
my %flags_want = map {
	my $v = $view->{$_};
	my @f = ((defined $v->{snoozed_until} ? "snoozed until $v->{snoozed_until}" : ()),
		(defined $v->{silence_id} ? "silence $v->{silence_id}" : ()), ($v->{flapping} ? 'flapping' : ()));
	$_ => (@f ? join(', ', @f) : '-')
} keys %$view;
my %flags_got = map { /^(\d+)\s+sev\d\s+\S+\s+\d+\s+\S+\s+(.*?)\s+\S+\s+-$/ ? ($1 => $2) : () } split /\n/, $out;
is_deeply(\%flags_got, \%flags_want, 'incidents: every row\'s FLAGS is what the view says');

($rc, $out) = gb('incidents', '--json');
my %inc = map { $_->{id} => $_ } json_lines($out);
is_deeply({ map { $_ => [@{ $inc{$_} }{qw(snoozed_until silence_id)}, $inc{$_}{flapping} ? 1 : 0] } keys %inc },
	{ map { $_ => [@{ $view->{$_} }{qw(snoozed_until silence_id)}, $view->{$_}{flapping} ? 1 : 0] } keys %$view },
	'incidents --json: snoozed_until (UTC), silence_id and flapping of every incident, as the view has them');
ok(JSON::PP::is_bool($inc{$flap_id}{flapping}) && $inc{$flap_id}{flapping}, 'incidents --json: flapping is a JSON boolean');
is($inc{$silenced_id}{silence_id}, $sil_id, 'incidents --json: silence_id is a number');

# silences
($rc, $out, $err) = gb('silences');
is($rc, 0, 'silences exits 0') or diag($err);
like($out, qr/\AID\s+PATTERN\s+KIND\s+TYPE\s+STARTS \(UTC\)\s+ENDS \(UTC\)\s+BY\s+COMMENT\n/, 'silences: table header');
my $iso = qr/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/;
like($out, qr/^\Q$sil_id\E\s+regress\.lc\.sil\.\*\s+budget\s+quality\s+$iso\s+$iso\s+\Q$me\E\s+maintenance: "sil" agents$/m,
	'silences: a row with its kind, type, times, creator and comment');
like($out, qr/^\Q$sil2_id\E\s+regress\.lc\.other\.\*\s+\*\s+\*\s+$iso\s+$iso\s+\Q$me\E\s+second$/m,
	'silences: any kind or type shows "*"');
my @listed = $out =~ /^(\d+)\s/mg;
my $active = $dbh->selectcol_arrayref('SELECT id FROM gate_bridge.silences WHERE ends_at > now() ORDER BY created_at DESC, id DESC');
is_deeply(\@listed, $active, 'silences: those in force or to come, newest first');
like($out, qr/^\(\d+ silences?\)$/m, 'silences: count line');

($rc, $out) = gb('silences', '--json');
my @sil_lines = json_lines($out);
is_deeply([map { $_->{id} } @sil_lines], $active, 'silences --json: the same silences, newest first');
my ($sil_json) = grep { $_->{id} == $sil_id } @sil_lines;
is_deeply([sort keys %{ $sil_json || {} }],
	[sort qw(id agent_pattern kind violation_type key starts_at ends_at created_by comment created_at)],
	'silences --json: every field');
my ($sil2_json) = grep { $_->{id} == $sil2_id } @sil_lines;
ok($sil2_json && !defined $sil2_json->{kind} && !defined $sil2_json->{violation_type},
	'silences --json: any kind or type is null');
like($sil_json->{ends_at} // '', qr/^$iso$/, 'silences --json: times in UTC');

# unsilence
($rc, $out, $err) = gb('unsilence', $sil2_id);
is($rc, 0, 'unsilence exits 0') or diag($err);
is($out, "Silence $sil2_id ended.\n", 'unsilence confirms');
my ($ended) = $dbh->selectrow_array('SELECT ends_at <= now() FROM gate_bridge.silences WHERE id = ?', undef, $sil2_id);
ok($ended, 'unsilence: the silence has ended');
($rc, $out) = gb('silences');
unlike($out, qr/^\Q$sil2_id\E\s/m, 'silences: an ended silence is not listed');
($rc, $out) = gb('silences', '--all');
like($out, qr/^\Q$sil2_id\E\s+regress\.lc\.other\.\*\s/m, 'silences --all: it is');
my $every = $dbh->selectcol_arrayref('SELECT id FROM gate_bridge.silences ORDER BY created_at DESC, id DESC');
is_deeply([$out =~ /^(\d+)\s/mg], $every, 'silences --all: every silence, newest first');
($rc, $out) = gb('silences', '--all', '--json');
is_deeply([map { $_->{id} } json_lines($out)], $every, 'silences --all --json: every silence');

for my $case ([$sil2_id, '55000', 'a silence that has ended'], ['987654321', 'P0002', 'an unknown silence'])
{
	my ($id, $want_state, $name) = @$case;
	my ($msg, $state) = server_refusal('SELECT gate_bridge.unsilence(?)', $id);
	is($state, $want_state, "gate_bridge.unsilence refuses $name with $want_state");
	($rc, $out, $err) = gb('unsilence', $id);
	is($rc, 1, "unsilence: $name exits 1");
	like($err, qr/^gate-bridge: \Q$msg\E$/m, "unsilence: $name, the server's message");
}
($rc, $out, $err) = gb('unsilence', $sil_id);
is($rc, 0, 'unsilence the other silence too') or diag($err);

# ---------------------------------------------------------------------------
# Delivery: deliveries and redeliver
#
# These need the view gate_bridge.delivery_status and
# gate_bridge.redeliver(id).  Two destinations; each incident created
# after them writes one delivery to each; statuses are set as a worker
# would leave them.  The destinations go again at the end (their
# deliveries with them).
# ---------------------------------------------------------------------------

$dbh->do(q{INSERT INTO gate_bridge.destinations (name, kind, url, secret)
		   VALUES ('regress_cli_hook', 'webhook', 'https://hook.test/cli', 'regress-cli-secret'),
				  ('regress_cli_slack', 'slack', 'https://hooks.slack.test/T/B/CLI', NULL)});
my $dlv_inc1 = open_incident($dbh, 'regress.dlv.one');
my $dlv_inc2 = open_incident($dbh, 'regress.dlv.two');
ok(defined $dlv_inc1 && defined $dlv_inc2, 'two incidents for the deliveries');
my %dlv = map { ("$_->[1]/$_->[2]" => $_->[0]) } @{ $dbh->selectall_arrayref(
	q{SELECT id, incident_id, destination FROM gate_bridge.deliveries
	   WHERE incident_id IN (?, ?) AND event = 'created'}, undef, $dlv_inc1, $dlv_inc2) };
is(scalar(keys %dlv), 4, 'each incident has a delivery to each destination');
my $dlv_dead = $dlv{"$dlv_inc1/regress_cli_hook"} // 0;
my $dlv_done = $dlv{"$dlv_inc1/regress_cli_slack"} // 0;
my $dlv_pending = $dlv{"$dlv_inc2/regress_cli_hook"} // 0;
my $dlv_skipped = $dlv{"$dlv_inc2/regress_cli_slack"} // 0;
$dbh->do(q{UPDATE gate_bridge.deliveries SET status = 'dead', attempts = 3, last_status = 503,
		   last_error = 'upstream down' WHERE id = ?}, undef, $dlv_dead);
$dbh->do(q{UPDATE gate_bridge.deliveries SET status = 'delivered', attempts = 1, last_status = 200,
		   delivered_at = now() WHERE id = ?}, undef, $dlv_done);
$dbh->do(q{UPDATE gate_bridge.deliveries SET attempts = 2, last_status = NULL,
		   last_error = ? , next_attempt_at = now() + interval '5 minutes' WHERE id = ?},
	undef, 'timeout: ' . ('x' x 100), $dlv_pending);
$dbh->do(q{UPDATE gate_bridge.deliveries SET status = 'skipped' WHERE id = ?}, undef, $dlv_skipped);

my $dlv_all = $dbh->selectcol_arrayref('SELECT id FROM gate_bridge.delivery_status ORDER BY id DESC LIMIT 50');
($rc, $out, $err) = gb('deliveries');
is($rc, 0, 'deliveries exits 0') or diag($err);
like($out, qr/\AID\s+INCIDENT\s+DESTINATION\s+EVENT\s+STATUS\s+ATTEMPTS\s+LAST\s+NEXT\/DELIVERED\n/,
	'deliveries: table header');
is_deeply([$out =~ /^(\d+)\s/mg], $dlv_all, 'deliveries: every delivery, newest first');
my $n_dlv = scalar(@$dlv_all);
like($out, qr/^\(\Q$n_dlv\E deliveries\)$/m, 'deliveries: count line');
like($out, qr/^\Q$dlv_dead\E\s+\Q$dlv_inc1\E\s+regress_cli_hook\s+created\s+dead\s+3\s+503 upstream down\s+-$/m,
	'deliveries: a dead delivery with its last status and error');
like($out, qr/^\Q$dlv_done\E\s+\Q$dlv_inc1\E\s+regress_cli_slack\s+created\s+delivered\s+1\s+200\s+$iso$/m,
	'deliveries: a delivered one with when it was delivered');
like($out, qr/^\Q$dlv_pending\E\s+\Q$dlv_inc2\E\s+regress_cli_hook\s+created\s+pending\s+2\s+timeout: x+\.\.\.\s+$iso$/m,
	'deliveries: a pending one with its error cut short and when it is due');
like($out, qr/^\Q$dlv_skipped\E\s+\Q$dlv_inc2\E\s+regress_cli_slack\s+created\s+skipped\s+0\s+-\s+-$/m,
	'deliveries: a skipped one');
unlike($out, qr/hook\.test|regress-cli-secret/, 'deliveries: no URL, no secret');
my ($due_text) = $out =~ /^\Q$dlv_pending\E\s.*\s($iso)$/m;
my ($due_db) = $dbh->selectrow_array(
	q{SELECT to_char(next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
		FROM gate_bridge.deliveries WHERE id = ?}, undef, $dlv_pending);
is($due_text, $due_db, 'deliveries: NEXT is next_attempt_at in UTC');

# filters
for my $case ([['--incident', $dlv_inc1], [$dlv_done, $dlv_dead], '--incident'],
	[['--status', 'dead'], $dbh->selectcol_arrayref(q{SELECT id FROM gate_bridge.deliveries WHERE status = 'dead' ORDER BY id DESC}), '--status'],
	[['--destination', 'regress_cli_slack'], [$dlv_skipped, $dlv_done], '--destination'],
	[['--destination', 'regress_cli_hook', '--incident', $dlv_inc2], [$dlv_pending], '--destination and --incident'],
	[['--status', 'held', '--destination', 'regress_cli_hook'], [], '--status held: none'],
	[['--limit', '1'], [$dlv_all->[0]], '--limit 1: the newest'],
	[['-l', '2', '-i', $dlv_inc2], [$dlv_skipped, $dlv_pending], 'short options'])
{
	my ($args, $want, $name) = @$case;
	($rc, $out, $err) = gb('deliveries', @$args);
	is($rc, 0, "deliveries $name exits 0") or diag($err);
	is_deeply([$out =~ /^(\d+)\s/mg], [sort { $b <=> $a } @$want], "deliveries $name");
}
($rc, $out) = gb('deliveries', '--destination', 'regress_cli_nowhere');
like($out, qr/^\(0 deliveries\)$/m, 'deliveries: none, and says so');
($rc, $out) = gb('deliveries', '--incident', $dlv_inc2, '--destination', 'regress_cli_hook');
like($out, qr/^\(1 delivery\)$/m, 'deliveries: one, singular');

# --json
($rc, $out, $err) = gb('deliveries', '--json', '--incident', $dlv_inc1);
is($rc, 0, 'deliveries --json exits 0') or diag($err);
my @dlv_lines = json_lines($out);
is_deeply([map { $_->{id} } @dlv_lines], [$dlv_done, $dlv_dead], 'deliveries --json: newest first');
is_deeply([sort keys %{ $dlv_lines[0] || {} }],
	[sort qw(id destination kind incident_id event_id event status attempts next_attempt_at
			 last_status last_error created_at delivered_at request)],
	'deliveries --json: every field, no url or secret');
my ($dead_json) = grep { $_->{id} == $dlv_dead } @dlv_lines;
is_deeply([@{ $dead_json || {} }{qw(destination kind incident_id event status attempts last_status last_error delivered_at)}],
	['regress_cli_hook', 'webhook', $dlv_inc1, 'created', 'dead', 3, 503, 'upstream down', undef],
	'deliveries --json: the dead delivery as the table has it');
like($dead_json->{created_at} // '', qr/^$iso$/, 'deliveries --json: times in UTC');
($rc, $out) = gb('deliveries', '--json', '--destination', 'regress_cli_nowhere');
is($out, '', 'deliveries --json: nothing when there is none');

# redeliver
($rc, $out, $err) = gb('redeliver', $dlv_dead);
is($rc, 0, 'redeliver exits 0') or diag($err);
is($out, "Delivery $dlv_dead queued again.\n", 'redeliver confirms');
my ($re_status, $re_attempts, $re_due) = $dbh->selectrow_array(
	'SELECT status, attempts, next_attempt_at <= now() FROM gate_bridge.deliveries WHERE id = ?', undef, $dlv_dead);
is_deeply([$re_status, $re_attempts, $re_due], ['pending', 0, 1], 'redeliver: pending, attempts 0, due now');
($rc, $out, $err) = gb('redeliver', $dlv_done);
is($rc, 0, 'redeliver: a delivered one too') or diag($err);
for my $case ([$dlv_dead, '55000', 'a pending delivery'], ['987654321', 'P0002', 'an unknown delivery'])
{
	my ($id, $want_state, $name) = @$case;
	my ($msg, $state) = server_refusal('SELECT gate_bridge.redeliver(?)', $id);
	is($state, $want_state, "gate_bridge.redeliver refuses $name with $want_state");
	($rc, $out, $err) = gb('redeliver', $id);
	is($rc, 1, "redeliver: $name exits 1");
	like($err, qr/^gate-bridge: \Q$msg\E$/m, "redeliver: $name, the server's message");
	is($out, '', "redeliver: $name prints nothing on stdout");
}

$dbh->do(q{DELETE FROM gate_bridge.destinations WHERE name IN ('regress_cli_hook', 'regress_cli_slack')});

# ---------------------------------------------------------------------------
# run-gates: exit codes and report
#
# These need gate_bridge.run_gates() to return (agent, status, passed,
# samples, violations, insufficient, incident_ids) with incident_ids one
# element per violation.
# ---------------------------------------------------------------------------

my ($gate_columns) = $dbh->selectrow_array(q{
	SELECT string_agg(n, ',' ORDER BY o)
	  FROM pg_proc p,
		   unnest(p.proargnames, p.proargmodes) WITH ORDINALITY AS a (n, m, o)
	 WHERE p.oid = 'gate_bridge.run_gates(text,interval,boolean,integer)'::regprocedure AND a.m = 't'});
is($gate_columns, 'agent,status,passed,samples,violations,insufficient,incident_ids',
	'gate_bridge.run_gates returns agent, status, passed, samples, violations, insufficient, incident_ids');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.pass');
is($rc, 0, 'run-gates: a passing gate exits 0') or diag($err);
like($out, qr/^PASS  regress\.pass \(1 sample\)$/m, 'run-gates: PASS for the passing agent, with its samples');
like($out, qr/^1 passed, 0 with warnings, 0 not judged, 0 failed: PASS$/m, 'run-gates: summary line');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.warn');
is($rc, 0, 'run-gates: warnings only exit 0 without --fail-on-warning') or diag($err);
like($out, qr/^WARN  regress\.warn \(2 samples\)\n\s+warning\s+cost\s+actual 1\.5 vs threshold 1$/m,
	'run-gates: the warning with actual and threshold');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.warn', '--fail-on-warning');
is($rc, 2, 'run-gates: warnings only exit 2 with --fail-on-warning') or diag($err);
like($out, qr/FAIL \(warnings, --fail-on-warning\)/, 'run-gates: the summary says why');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.crit', '--fail-on-warning');
is($rc, 1, 'run-gates: a critical violation exits 1') or diag($err);
like($out, qr/^FAIL  regress\.crit \(1 sample\)\n\s+critical\s+quality\s+actual 0\.25 vs threshold 0\.3$/m,
	'run-gates: the critical violation with actual and threshold');

($rc, $out, $err) = gb('run-gates', '--agent', 'regress.err');
is($rc, 1, 'run-gates: an error violation exits 1') or diag($err);
like($out, qr/^\s+error\s+quality\s+actual 0\.45 vs threshold 0\.5$/m, 'run-gates: the error violation');

($rc, $out, $err) = gb('run-gates');
is($rc, 1, 'run-gates over every agent: the worst one decides, exit 1') or diag($err);
like($out, qr/^Gates over each budget's lookback:$/m,
	 'run-gates: without --lookback each budget\'s own lookback (7 days by default) applies');
for my $want (['PASS', 'regress.pass'], ['WARN', 'regress.warn'], ['FAIL', 'regress.crit'],
	['FAIL', 'regress.err'], ['FAIL', 'regress.old'])
{
	like($out, qr/^$want->[0]  \Q$want->[1]\E \(\d+ samples?\)$/m, "run-gates over every agent: $want->[0] $want->[1]");
}
like($out, qr/^1 passed, 1 with warnings, 0 not judged, 3 failed: FAIL$/m, 'run-gates over every agent: the summary counts');

# the window: regress.old's only row is two days old
($rc, $out) = gb('run-gates', '--agent', 'regress.old', '--lookback', '1d');
is($rc, 4, 'lookback 1d: a row two days old is outside the window: nothing to judge, exit 4');
like($out, qr/^NODATA  regress\.old \(0 samples\)\n\s+too few\s+quality\s+0 of 1 samples needed$/m,
	'lookback 1d: no samples, said per metric');
like($out, qr/^0 passed, 0 with warnings, 1 not judged, 0 failed: FAIL \(not enough data to judge\)$/m,
	'lookback 1d: the summary says why it fails');
# without --lookback, the budget's own lookback is the window
$dbh->do(q{UPDATE gate_bridge.budgets SET lookback = '1 day' WHERE agent_pattern = 'regress.old'});
($rc, $out) = gb('run-gates', '--agent', 'regress.old');
is($rc, 4, 'no --lookback: the budget\'s lookback of 1 day leaves the two-day-old row out');
like($out, qr/^NODATA  regress\.old \(0 samples\)$/m, 'no --lookback: no samples in the budget\'s window');
$dbh->do(q{UPDATE gate_bridge.budgets SET lookback = '7 days' WHERE agent_pattern = 'regress.old'});
($rc, $out) = gb('run-gates', '--agent', 'regress.old', '--lookback', '3d');
is($rc, 1, 'lookback 3d: it is inside');
for my $lb ('72h', '4320m', '259200s', '1w', '2 days 23 hours')
{
	($rc, $out, $err) = gb('run-gates', '--agent', 'regress.old', '--lookback', $lb);
	is($rc, 1, "lookback $lb is accepted and reaches the row") or diag($err);
}
for my $lb ('47h', '2820m', '1 day')
{
	($rc, $out, $err) = gb('run-gates', '--agent', 'regress.old', '--lookback', $lb);
	is($rc, 4, "lookback $lb does not reach the row: nothing to judge") or diag($err);
}

# JSON
($rc, $out, $err) = gb('run-gates', '--json');
is($rc, 1, 'run-gates --json: same exit status') or diag($err);
my %gates = map { $_->{agent} => $_ } json_lines($out);
is_deeply([sort keys %gates], [sort @gate_agents], 'run-gates --json: one line per agent');
is_deeply([sort keys %{ $gates{'regress.pass'} || {} }],
	[sort qw(agent status passed samples violations insufficient incident_ids)], 'run-gates --json: its fields');
is($gates{'regress.pass'}{status}, 'passed', 'run-gates --json: passed');
ok($gates{'regress.pass'}{passed} && JSON::PP::is_bool($gates{'regress.pass'}{passed}),
	'run-gates --json: "passed" is a JSON boolean');
is($gates{'regress.pass'}{samples}, 1, 'run-gates --json: samples');
is($gates{'regress.warn'}{samples}, 2, 'run-gates --json: samples of an agent with two rows');
like($out, qr/^\{"agent":"regress\.pass","status":"passed","passed":true,"samples":1,/m,
	'run-gates --json: samples is a number');
is_deeply($gates{'regress.pass'}{violations}, [], 'run-gates --json: no violations for a pass');
is($gates{'regress.warn'}{status}, 'warning', 'run-gates --json: warning');
is($gates{'regress.crit'}{status}, 'failed', 'run-gates --json: failed');
is_deeply($gates{'regress.pass'}{insufficient}, [], 'run-gates --json: nothing insufficient for a pass');

# Not judged: too few samples, or no budget.  Never a silent pass.
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.typo');
is($rc, 4, 'run-gates --agent for an agent no budget covers exits 4') or diag($err);
like($out, qr/^NOGATE  regress\.typo \(0 samples\)\n\s+no enabled budget applies to this agent: nothing was judged$/m,
	'run-gates: an agent no budget covers is reported as such');
like($err, qr/WARNING:  no enabled budget applies to agent "regress\.typo"/, 'and the server warns on stderr');
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.typo', '--json');
is($rc, 4, 'run-gates --json for it: exit 4') or diag($err);
my ($typo) = json_lines($out);
is($typo->{status}, 'no_budget', 'run-gates --json: status no_budget');
ok(exists $typo->{passed} && !defined $typo->{passed}, 'run-gates --json: passed is null when nothing was judged');
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.pass', '--require-samples', '2');
is($rc, 4, 'run-gates --require-samples 2 with one sample: exit 4') or diag($err);
like($out, qr/^NODATA  regress\.pass \(1 sample\)\n\s+too few\s+quality\s+1 of 2 samples needed$/m,
	'run-gates --require-samples: the metric and its samples');
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.pass', '--require-samples', '1');
is($rc, 0, 'run-gates --require-samples 1: passes') or diag($err);
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.crit', '--require-samples', '5');
is($rc, 4, 'run-gates: a violation in a window with too few samples is not judged either') or diag($err);
($rc, $out, $err) = gb('run-gates', '--agent', 'regress.pass', '--require-samples', '2', '--json');
my ($few) = json_lines($out);
is_deeply($few->{insufficient}, [{ budget_type => 'quality', reason => 'samples', samples => 1, min_samples => 2 }],
	'run-gates --json: insufficient names the metric, its samples and the minimum');
is($few->{status}, 'insufficient_data', 'run-gates --json: status insufficient_data');
for my $bad ('0', '-1', 'x', '1.5', '1000001', '')
{
	($rc, $out, $err) = gb('run-gates', '--require-samples', $bad);
	is($rc, 64, "run-gates --require-samples '$bad' is a usage error");
	like($err, qr/invalid --require-samples/, "run-gates --require-samples '$bad': says so");
}
my ($v) = @{ $gates{'regress.crit'}{violations} || [] };
is_deeply($v, { agent => 'regress.crit', budget_type => 'quality', severity => 'critical',
		actual => 0.25, threshold => 0.3 }, 'run-gates --json: the violation, numbers as numbers');
is_deeply($gates{'regress.crit'}{incident_ids}, [], 'run-gates --json: no incidents without --create-incidents');
is(gate_incidents(), 0, 'run-gates without --create-incidents creates nothing');

# INTERVENTIONS_ENABLED=false and its spellings
for my $off ('false', 'FALSE', '0', 'no', 'Off')
{
	($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => $off } },
		'run-gates', '--create-incidents', '--agent', 'regress.crit');
	is($rc, 1, "INTERVENTIONS_ENABLED=$off: the gate still fails") or diag($err);
	like($out, qr/^Interventions are disabled \(INTERVENTIONS_ENABLED=\Q$off\E\): no incidents will be created\.$/m,
		"INTERVENTIONS_ENABLED=$off: the report says so");
}
unlike($out, qr/->/, 'INTERVENTIONS_ENABLED=false: no incident per violation in the report');
($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'false' } },
	'run-gates', '--create-incidents', '--json', '--agent', 'regress.crit');
like($err, qr/Interventions are disabled/, 'INTERVENTIONS_ENABLED=false with --json: said on stderr');
my @lines = json_lines($out);
ok(@lines == 1 && !$lines[0]{_unparsable}, 'and stdout stays JSON');
is_deeply($lines[0]{incident_ids}, [], 'INTERVENTIONS_ENABLED=false: incident_ids is empty');
is(gate_incidents(), 0, 'INTERVENTIONS_ENABLED=false: no incident was created');

# --create-incidents
($rc, $out, $err) = gb({ env => { INTERVENTIONS_ENABLED => 'true' } },
	'run-gates', '--create-incidents', '--agent', 'regress.crit');
is($rc, 1, 'run-gates --create-incidents: exit 1') or diag($err);
my ($gate_crit_id) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE key = 'BUDGET_regress.crit_quality' AND status = 'open'});
ok(defined $gate_crit_id, 'run-gates --create-incidents opened the incident');
my $gate_crit_text = $gate_crit_id // 'none';
like($out, qr/^\s+critical\s+quality\s+actual 0\.25 vs threshold 0\.3 -> incident \Q$gate_crit_text\E$/m,
	'and the report names it at its violation');

($rc, $out, $err) = gb('run-gates', '--create-incidents', '--json');
%gates = map { $_->{agent} => $_ } json_lines($out);
is_deeply($gates{'regress.crit'}{incident_ids}, [undef],
	'a second run: folded into the open incident, null at its violation');
my $by_key = $dbh->selectall_hashref(
	q{SELECT key, id FROM gate_bridge.incidents WHERE agent = ANY (?) AND status = 'open'}, 'key', undef,
	\@gate_agents);
is_deeply($gates{'regress.err'}{incident_ids}, [$by_key->{'BUDGET_regress.err_quality'}{id}],
	'run-gates --json --create-incidents lists the incident it created');
is_deeply($gates{'regress.warn'}{incident_ids}, [$by_key->{'BUDGET_regress.warn_cost'}{id}],
	'a warning opens an incident too');
is_deeply($gates{'regress.pass'}{incident_ids}, [], 'a passing gate: none');
my @misaligned = grep { !$_->{violations} || scalar(@{ $_->{incident_ids} || [] }) != scalar(@{ $_->{violations} }) }
  values %gates;
ok(%gates && !@misaligned, '--create-incidents: one incident id (or null) per violation, for every agent');

($rc, $out) = gb('run-gates', '--create-incidents', '--agent', 'regress.crit');
like($out, qr/^\s+critical\s+quality\s+actual 0\.25 vs threshold 0\.3 -> folded\/rate limited$/m,
	'the text report says when a violation created nothing');

# ---------------------------------------------------------------------------
# listen
# ---------------------------------------------------------------------------

# Every agent under regress.live. violates its quality budget with each row.
$dbh->do(q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
		   VALUES ('regress.live.*', 'quality', 0.5)});
my $live = 0;
sub violate
{
	my ($h, $agent) = @_;
	$agent //= 'regress.live.' . ++$live;
	$h->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (?, 0.1)', undef, $agent);
}

# the newest committed event's id, and its position
sub max_event
{
	my ($h) = @_;
	my ($id, $position) = $h->selectrow_array(
		'SELECT id, position FROM gate_bridge.incident_events ORDER BY position DESC NULLS LAST LIMIT 1');
	return wantarray ? ($id // 0, $position // 0) : $id // 0;
}

# --once --since: what is there, then exit
($rc, $out, $err) = gb('listen', '--since', '0', '--once');
is($rc, 0, 'listen --since 0 --once exits 0') or diag($err);
my @once = json_lines($out);
my $events_db = $dbh->selectcol_arrayref('SELECT position FROM gate_bridge.incident_events ORDER BY position');
is_deeply([map { $_->{position} } @once], $events_db, 'listen --once: every event, in position order');
my ($acked) = grep { $_->{event} eq 'acked' } @once;
is($acked->{status}, 'ack', 'listen: an acked event says status ack');
my ($res_ev) = grep { $_->{event} eq 'resolved' } @once;
is($res_ev->{note}, $note, 'listen: a resolved event carries its note');
is($res_ev->{key}, 'BUDGET_regress.inc.crit_quality', 'listen: events carry the incident key');

($rc, $out) = gb('listen', '--since', $events_db->[-2], '--once');
is_deeply([map { $_->{position} } json_lines($out)], [$events_db->[-1]],
	'listen --since POSITION: only what follows POSITION');

# A listener as a role that may only read incidents and their timeline.
my (undef, $start) = max_event($dbh);
my $lconn = "dbname=$dbname user=$listener_role password=$listener_password";
my ($lout, $lerr) = ("$tmp/listen.out", "$tmp/listen.err");
my $lpid = fork() // die "fork: $!";
if ($lpid == 0)
{
	open STDIN, '<', '/dev/null' or die;
	open STDOUT, '>', $lout or die;
	open STDERR, '>', $lerr or die;
	exec $bin, 'listen', '-d', $lconn, '--interval', '0.2' or POSIX::_exit(127);
}
push @background, $lpid;

sub listener_ids
{
	return map { $_->{id} // -1 } json_lines(slurp($lout));
}

sub listener_has
{
	my ($id) = @_;
	return grep { $_ == $id } listener_ids();
}

# ready once it has read where the timeline ends (its first query of it)
ok(wait_until('the listener', 10, sub {
	my ($n) = $dbh->selectrow_array(
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE usename = ? AND application_name = 'gate-bridge' AND state = 'idle'
			 AND query LIKE '%gate_bridge.events_after%'},
		undef, $listener_role);
	return $n > 0;
}), 'listen: the listener is up');

# live: created (trigger), acked, resolved, created again for the same key
my $weird = "regress.live.q\"uote\\back\x01ctl\nnl \x{fc}ber \x{2603}";
violate($dbh);
violate($dbh);
violate($dbh, $weird);
my ($first_live) = $dbh->selectrow_array(
	q{SELECT id FROM gate_bridge.incidents WHERE agent = 'regress.live.1' AND status = 'open'});
$dbh->do('SELECT gate_bridge.ack(?)', undef, $first_live);
$dbh->do('SELECT gate_bridge.resolve(?, current_user, ?)', undef, $first_live, 'live note');
violate($dbh, 'regress.live.1');
my $phase1 = max_event($dbh);
ok(wait_until('phase 1 events', 10, sub { listener_has($phase1) }), 'listen: live events arrive');
my ($weird_ev) = grep { ($_->{agent} // '') eq $weird } json_lines(slurp($lout));
ok($weird_ev, 'listen: quotes, backslashes, control characters and UTF-8 survive the JSON round trip');

# An event id taken by a transaction still in flight: the events committed
# after it are not held back, and it is printed when it commits, after them.
# A violation is decided when its transaction commits: decide_pending()
# creates the incident, and takes its event id, while still in flight.
my $dba = db($dbname);
my $dbb = db($dbname);
$dba->begin_work;
violate($dba);
$dba->do('SELECT gate_bridge.decide_pending()');
my ($held) = $dba->selectrow_array('SELECT max(id) FROM gate_bridge.incident_events');
violate($dbb);
my $after = max_event($dbb);
ok($after > $held, 'the second transaction took the later event id');
ok(wait_until('the committed event', 10, sub { listener_has($after) }),
	'listen: an event is not held back by one still in flight');
ok(!listener_has($held), 'listen: the one in flight is not printed before it commits');
$dba->commit;
ok(wait_until('the held event', 10, sub { listener_has($held) }), 'listen: it is printed once it commits');
my @ids = listener_ids();
my ($at_held) = grep { $ids[$_] == $held } 0 .. $#ids;
my ($at_after) = grep { $ids[$_] == $after } 0 .. $#ids;
ok(defined $at_held && defined $at_after && $at_held > $at_after,
	'listen: the lower id, committed later, comes after it (position order)');

# A rolled-back transaction, that had taken an event id
$dba->begin_work;
violate($dba);
$dba->do('SELECT gate_bridge.decide_pending()');
violate($dbb);
my $after_rb = max_event($dbb);
$dba->rollback;
ok(wait_until('the event after a rollback', 10, sub { listener_has($after_rb) }),
	'listen: an id left by a rollback does not stop the listener');
$dba->disconnect;
$dbb->disconnect;

# A burst of concurrent writers: violations (a quarter rolled back) and
# acks and resolves, racing each other and the listener.  The writers
# decide their violations before they sleep, so that their events are in
# flight meanwhile and those rolled back leave gaps in the ids.
{
	my $violate = "$tmp/violate.pgb";
	my $move = "$tmp/move.pgb";
	open my $fh, '>', $violate or die;
	print $fh <<'PGB';
\set a random(1, 1000000000)
\set r random(0, 3)
BEGIN;
INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.live.burst.' || :a, 0.1);
SELECT gate_bridge.decide_pending();
SELECT pg_sleep(random() * 0.01);
\if :r = 0
ROLLBACK;
\else
COMMIT;
\endif
PGB
	close $fh;
	open $fh, '>', $move or die;
	print $fh <<'PGB';
DO $$
DECLARE
	i bigint;
BEGIN
	SELECT id INTO i FROM gate_bridge.incidents
	 WHERE status <> 'resolved' ORDER BY id DESC LIMIT 1;
	IF i IS NOT NULL THEN
		BEGIN
			IF random() < 0.5 THEN PERFORM gate_bridge.ack(i);
			ELSE PERFORM gate_bridge.resolve(i); END IF;
		EXCEPTION WHEN object_not_in_prerequisite_state THEN
			NULL;			-- another client moved it first
		END;
	END IF;
END
$$;
PGB
	close $fh;
	my ($prc, $pout, $perr) = run_cmd({ timeout => 60 }, 'pgbench', '-n', '-c', '6', '-j', '2', '-T', '3',
		'-f', "$violate\@3", '-f', "$move\@1", $dbname);
	is($prc, 0, 'a burst of concurrent writers ran') or diag($pout, $perr);
	my ($done) = $pout =~ /number of transactions actually processed: (\d+)/;
	diag('burst: ' . ($done // '?') . ' transactions');
}

# A server restart.  While the server is down and just after, the
# listener's role may not connect, so what happens then can only reach it
# by catching up from the timeline.
my $before_restart = max_event($dbh);
ok(wait_until('events before the restart', 10, sub { listener_has($before_restart) }),
	'listen: caught up before the restart');
$dbh->disconnect;
$admin->do("REVOKE CONNECT ON DATABASE $dbname FROM $listener_role");
$admin->disconnect;
my $t0 = time;
system('pg_ctlcluster', $ENV{PGVERSION}, 'regress', 'stop', '-m', 'fast') == 0
  or BAIL_OUT('pg_ctlcluster stop failed');
ok(wait_until('the listener to notice', 10, sub { slurp($lerr) =~ /lost the connection/ }),
	'listen: reports the lost connection');
system('pg_ctlcluster', $ENV{PGVERSION}, 'regress', 'start') == 0
  or BAIL_OUT('pg_ctlcluster start failed');
$dbh = db($dbname);
$admin = db('postgres');
my ($connected) = $dbh->selectrow_array(
	q{SELECT count(*) FROM pg_stat_activity WHERE usename = ?}, undef, $listener_role);
is($connected, 0, 'listen: the listener is not connected after the restart');
for (1 .. 3) { violate($dbh) }
my ($open_one) = $dbh->selectrow_array(
	q{SELECT min(id) FROM gate_bridge.incidents WHERE agent LIKE 'regress.live.%' AND status = 'open'});
$dbh->do('SELECT gate_bridge.resolve(?)', undef, $open_one);
my $missed = max_event($dbh);
ok(!listener_has($missed), 'listen: nothing printed while disconnected');
$admin->do("GRANT CONNECT ON DATABASE $dbname TO $listener_role");
ok(wait_until('the missed events', 30, sub { listener_has($missed) }),
	'listen: after reconnecting it prints what it missed');
my @outage = split /\n/, slurp($lerr);
is(scalar(@outage), 1, 'listen: the restart is one outage, one line on stderr, however many attempts')
  or diag(slurp($lerr));
like($outage[0] // '', qr/^gate-bridge: lost the connection to database "\Q$dbname\E" on host ".*" port \d+: terminating connection due to administrator command( \(SQLSTATE 57P01\))?; reconnecting with backoff \(0\.25 s doubling to 10 s\)$/,
	'listen: the line names the server and why, and says it reconnects with backoff');
diag(sprintf('listener was disconnected for %.1f s', time - $t0));

# and it keeps listening
violate($dbh);
my $last = max_event($dbh);
ok(wait_until('events after the reconnect', 10, sub { listener_has($last) }), 'listen: live again after the reconnect');

kill 'TERM', $lpid;
my $lstatus;
wait_until('the listener to exit', 10, sub { my $r = waitpid($lpid, WNOHANG); $lstatus = $?; $r == $lpid });
is($lstatus, 0, 'listen: SIGTERM ends it with exit status 0') or diag(slurp($lerr));
@background = grep { $_ != $lpid } @background;

# SIGINT, on a listener with nothing to print
{
	my $ipid = fork() // die "fork: $!";
	if ($ipid == 0)
	{
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', "$tmp/int.out" or die;
		open STDERR, '>', "$tmp/int.err" or die;
		exec $bin, 'listen' or POSIX::_exit(127);
	}
	push @background, $ipid;
	sleep 0.5;
	kill 'INT', $ipid;
	my $istatus;
	wait_until('the second listener to exit', 10,
		sub { my $r = waitpid($ipid, WNOHANG); $istatus = $?; $r == $ipid });
	is($istatus, 0, 'listen: SIGINT ends it with exit status 0') or diag(slurp("$tmp/int.err"));
	@background = grep { $_ != $ipid } @background;
	is(slurp("$tmp/int.out"), '', 'listen: without --since it starts after the newest event');
}

my @got = json_lines(slurp($lout));
my $want = $dbh->selectall_arrayref(
	'SELECT id, event, incident_id, position FROM gate_bridge.incident_events WHERE position > ? ORDER BY position',
	undef, $start);
is_deeply([map { $_->{position} } @got], [map { $_->[3] } @$want],
	'listen: every event after the start, each exactly once, in position order');
is_deeply([map { $_->{id} } @got], [map { $_->[0] } @$want], 'listen: each line has its event\'s id');
is_deeply([map { [$_->{event}, $_->{incident_id}] } @got], [map { [$_->[1], $_->[2]] } @$want],
	'listen: each line names its event and incident');
ok(@$want >= 12, 'listen: a meaningful number of events (' . scalar(@$want) . ')');
is(scalar(grep { $_->{_unparsable} } @got), 0, 'listen: every line is JSON');

# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# Clean up
# ---------------------------------------------------------------------------

$dbh->disconnect;
drop_scratch_database();
$admin->do("DROP ROLE $listener_role");
$admin->disconnect;

done_testing();
