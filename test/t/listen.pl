#!/usr/bin/perl
#
# gate-bridge listen on the event stream (gate_bridge.events_after), on
# clusters of its own (GBCluster): a primary, later a standby that takes
# over.  Every listener's output is checked against the server's timeline:
# each event exactly once, in position order.
#
#	- Without --since it starts at events_head(): an event in flight when it
#	  starts is printed, one committed before is not.
#	- With the event id sequence at CACHE 10 and two writer sessions (ids
#	  out of commit order) nothing is skipped.
#	- A writer idle in a transaction after creating an incident holds back
#	  no other event (they print within 5 s); its event, the lower id,
#	  prints once it commits, after the others.  (A violation is decided
#	  when its transaction commits; these writers call decide_pending() to
#	  have their incident, and its event, created while still in flight.)
#	- A notification wakes it up (an acked event with --interval 60), and
#	  polling finds an event that was not announced.
#	- It survives, printing every event once and in order, and reporting
#	  each outage with one line: pg_terminate_backend of its connection,
#	  pg_cancel_backend and statement_timeout (SQLSTATE 57014) while a lock
#	  it needs is held, a deadlock it is the victim of (40P01), a fast
#	  restart and a crash (a new history of positions each time).  Its
#	  reconnects back off 0.25 s doubling, and start at 0.25 s again after
#	  a success (the attempts, refused while the database accepts no
#	  connections, are timed in the server log).
#	- TRUNCATE ... RESTART IDENTITY of the incident tables while it runs:
#	  the SR001 warning names its position and the resume point, and the
#	  new events follow.
#	- Permission denied and a missing function end it with exit status 1
#	  and say what it needs; with the grants the README lists it runs.
#	- Failover: one listener points at the standby (LISTEN is refused in
#	  recovery: one line, then retries; --once reads a standby), one has
#	  both hosts with target_session_attrs=read-write.  The standby falls
#	  behind, the primary crashes, the standby is promoted: both go on on
#	  the new primary, the second after the SR001 warning.
#	- Every line printed validates against schema/listen-line.schema.json
#	  (python3-jsonschema), which rejects lines with a key too many, one
#	  missing or of the wrong type.
#
# test/t/listen.pl

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use FindBin;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);

use lib $FindBin::Bin;
use GBCluster;
use GBUtil qw(slurp wait_until);

my $root = abs_path("$FindBin::Bin/../..");
my $bin = "$root/gate-bridge";
my $schema = "$root/schema/listen-line.schema.json";
my $python = '/usr/bin/python3';	# Debian's, with python3-jsonschema
my $db = 'gb_listen';
my $tmp = tempdir('gb_listen_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;
my $pg_config = $ENV{PG_CONFIG} // '/usr/lib/postgresql/' . ($ENV{GB_PGVERSION} || 15) . '/bin/pg_config';

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

my @listeners;
my $test_pid = $$;
END
{
	if ($$ == $test_pid)
	{
		for my $l (grep { !defined $_->{status} } @listeners)
		{
			kill 'TERM', $l->{pid};
			waitpid($l->{pid}, 0);
		}
	}
}

# run a command without the caller's libpq settings: (exit status, stdout,
# stderr); killed after 60 s
sub run_cmd
{
	my ($env, @cmd) = @_;
	my %unset = map { $_ => undef } 'DATABASE_URL', grep { /^PG/ } keys %ENV;
	return GBUtil::run_cmd({ dir => $tmp, timeout => 60, env => { %unset, %{$env || {}} } }, @cmd);
}

# the complete lines of a file, as JSON (a line that is not: {_unparsable})
sub json_lines
{
	my ($text) = @_;
	$text =~ s/[^\n]*\z//;	# a line still being written
	return map { my $l = $_; eval { $json->decode($l) } // { _unparsable => $l } }
	  split /\n/, $text;
}

# start_listener NAME, node => N, conn => CONNINFO, args => [...],
# pgoptions => '-c ...': gate-bridge listen in the background
sub start_listener
{
	my ($name, %opt) = @_;
	my $node = $opt{node};
	my $l = {
		name => $name,
		app => "lt_$name",
		node => $node,
		out => "$tmp/$name.out",
		err => "$tmp/$name.err",
		checked => [],
		start => $opt{start} // 0,
	};
	my $conn = $opt{conn} // ($node->connstr($db) . " application_name=$l->{app}");
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		delete @ENV{grep { /^PG/ } keys %ENV};
		delete $ENV{DATABASE_URL};
		$ENV{PGOPTIONS} = $opt{pgoptions} if $opt{pgoptions};
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', $l->{out} or die;
		open STDERR, '>', $l->{err} or die;
		exec $bin, 'listen', '-d', $conn, @{$opt{args} || []} or POSIX::_exit(127);
	}
	$l->{pid} = $pid;
	push @listeners, $l;
	return $l;
}

sub lines_of { return json_lines(slurp($_[0]{out})) }
sub positions_of { return map { $_->{position} // -1 } lines_of($_[0]) }
sub err_lines { return split /\n/, slurp($_[0]{err}) }

sub running
{
	my ($l) = @_;
	return 0 if defined $l->{status};
	my $r = waitpid($l->{pid}, WNOHANG);
	return 1 if $r == 0;
	$l->{status} = $?;
	return 0;
}

# SIGTERM, and its exit status
sub stop_listener
{
	my ($l) = @_;
	kill 'TERM', $l->{pid} if running($l);
	wait_until("$l->{name} to exit", 10, sub { !running($l) });
	return $l->{status};
}

# its backend on NODE (default: its own), and what it is doing
sub backend
{
	my ($l, $node) = @_;
	my @row = eval {
		($node // $l->{node})->query('postgres',
			q{SELECT pid, state, wait_event_type, query FROM pg_catalog.pg_stat_activity
			   WHERE application_name = $1 AND backend_type = 'client backend'}, $l->{app})
	};
	return @row;
}

# up: idle after reading the stream
sub wait_up
{
	my ($l, $node) = @_;
	return wait_until("$l->{name} to read the stream", 20, sub {
		my (undef, $state, undef, $query) = backend($l, $node);
		return $state && $state eq 'idle' && ($query // '') =~ /events_after/;
	});
}

sub wait_lock_wait
{
	my ($l) = @_;
	return wait_until("$l->{name} to wait for a lock", 10, sub {
		my (undef, undef, $wait) = backend($l);
		return ($wait // '') eq 'Lock';
	});
}

# the positions on NODE after AFTER
sub db_positions
{
	my ($node, $after) = @_;
	return map { $_->[0] } @{$node->rows($db,
		'SELECT position FROM gate_bridge.incident_events WHERE position > $1 ORDER BY position',
		$after)};
}

# The listener has printed what it had printed at the last check, then
# every event NODE holds after that, each once, in position order (within
# 15 s).
sub check_listener
{
	my ($l, $label, $node) = @_;
	my @checked = @{$l->{checked}};
	my @want = (@checked, db_positions($node // $l->{node}, @checked ? $checked[-1] : $l->{start}));
	wait_until("$l->{name} to print up to position " . ($want[-1] // 'none'), 15, sub {
		my @p = positions_of($l);
		return @p >= @want;
	});
	my @got = positions_of($l);
	my $ok = is_deeply(\@got, \@want, "$label: $l->{name} printed every event exactly once, in position order");
	diag("got @got\nwant @want") unless $ok;
	$l->{checked} = \@got;
	return $ok;
}

my $agents = 0;
sub violate
{
	my ($h, $tag) = @_;
	my $agent = "lt.$tag." . ++$agents;
	$h->do('INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ($1, 0.1)', undef, $agent);
	return $agent;
}

sub incident_of
{
	my ($node, $agent) = @_;
	return $node->query($db, 'SELECT id FROM gate_bridge.incidents WHERE agent = $1', $agent);
}

# the times (epoch seconds) of the server log's lines after OFFSET that match RE
sub log_times
{
	my ($node, $offset, $re) = @_;
	my $text = substr(slurp($node->log_file), $offset);
	my @t;
	for my $line (split /\n/, $text)
	{
		next unless $line =~ $re;
		next unless $line =~ /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3}) UTC/;
		push @t, timegm($6, $5, $4, $3, $2 - 1, $1) + $7 / 1000;
	}
	return @t;
}

# ---------------------------------------------------------------------------
# The binary, the validator, the cluster
# ---------------------------------------------------------------------------

my ($rc, $out, $err) = run_cmd({}, 'make', '-s', '-C', $root, "PG_CONFIG=$pg_config", 'gate-bridge');
is($rc, 0, 'make gate-bridge') or BAIL_OUT("gate-bridge does not build: $err");

($rc, $out, $err) = run_cmd({}, $python, '-c', 'import jsonschema');
is($rc, 0, "$python has jsonschema (Debian's python3-jsonschema)")
  or BAIL_OUT('install python3-jsonschema (tools/common.sh lists it)');

my $node = GBCluster->new('listen');
$node->start;
$node->create_database($db, extension => 'gate_bridge');
$node->sql($db, q{INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, critical)
				   VALUES ('lt.*', 'quality', 0.5)});
my $before = violate($node->dbh($db), 'before');

# ---------------------------------------------------------------------------
# Starting "from now": an event in flight is printed, an older one is not
# ---------------------------------------------------------------------------

my $wa = $node->connect($db);
my $wb = $node->connect($db);
$wa->begin_work;
my $inflight = violate($wa, 'inflight');
# decided at commit otherwise: create the incident now, uncommitted
$wa->do('SELECT gate_bridge.decide_pending()');
my $committed = violate($wb, 'committed');
my ($inflight_id) = $wa->selectrow_array(
	'SELECT max(e.id) FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1',
	undef, $inflight);
my ($committed_id, $committed_pos) = $wb->selectrow_array(
	'SELECT e.id, e.position FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1',
	undef, $committed);
ok($committed_id > $inflight_id, 'the committed event has the higher id');

# deadlock_timeout: it, not the session it deadlocks with, is the victim
my $main = start_listener('main', node => $node, args => ['--interval', '0.3'],
						  pgoptions => '-c deadlock_timeout=4s');
ok(wait_up($main), 'main listener: up');
$main->{start} = $node->query($db, 'SELECT gate_bridge.events_head()');
is($main->{start}, $committed_pos, 'the head is the newest committed event');
sleep 0.5;
is(scalar(positions_of($main)), 0, 'without --since nothing committed before the start is printed');
$wa->commit;
ok(wait_until('the event that was in flight', 10, sub { scalar(positions_of($main)) >= 1 }),
   'an event in flight when listen started is printed once it commits');
my ($first) = lines_of($main);
is($first->{id}, $inflight_id, 'it is that event');
ok($first->{position} > $main->{start}, 'its position is above the head');
check_listener($main, 'from now');
is(slurp($main->{err}), '', 'nothing on stderr');

# ---------------------------------------------------------------------------
# Ids out of commit order: CACHE 10 and two writers
# ---------------------------------------------------------------------------

$node->sql($db, 'ALTER SEQUENCE gate_bridge.incident_events_id_seq CACHE 10');
$wa->disconnect;
$wb->disconnect;
$wa = $node->connect($db);
$wb = $node->connect($db);
my $cached_from = scalar(positions_of($main));
for my $round (1 .. 3)
{
	for my $w ($wa, $wb)
	{
		my $agent = violate($w, 'cache');
		my ($pos) = $w->selectrow_array(
			'SELECT e.position FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1',
			undef, $agent);
		wait_until("position $pos", 10, sub { grep { $_ == $pos } positions_of($main) });
	}
}
my @cached = (lines_of($main))[$cached_from .. scalar(positions_of($main)) - 1];
is(scalar(@cached), 6, 'CACHE 10: six events printed');
ok((grep { $cached[$_]{id} < $cached[$_ - 1]{id} } 1 .. $#cached),
   'CACHE 10: ids were handed out of commit order (' . join(' ', map { $_->{id} } @cached) . ')');
check_listener($main, 'CACHE 10, two writers');
$node->sql($db, 'ALTER SEQUENCE gate_bridge.incident_events_id_seq CACHE 1');

# ---------------------------------------------------------------------------
# A writer idle in a transaction holds back nobody; its lower id comes later
# ---------------------------------------------------------------------------

$wa->disconnect;
$wb->disconnect;
$wa = $node->connect($db);
$wb = $node->connect($db);
$wa->begin_work;
my $idle = violate($wa, 'idle');
# decided at commit otherwise: create the incident now, uncommitted
$wa->do('SELECT gate_bridge.decide_pending()');
my ($idle_id) = $wa->selectrow_array(
	'SELECT max(e.id) FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1',
	undef, $idle);
my $busy = violate($wb, 'busy');
$wb->do('SELECT gate_bridge.ack($1)', undef, incident_of($node, $busy));
$wb->do('SELECT gate_bridge.resolve($1, current_user, $2)', undef, incident_of($node, $busy), 'fixed it');
my @busy = $node->query($db, q{SELECT min(e.id), max(e.position) FROM gate_bridge.incident_events e
								JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1}, $busy);
ok($busy[0] > $idle_id, 'the committed events have higher ids than the idle writer\'s');
is($node->query($db, q{SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = $1}, $db),
   1, 'a writer is idle in a transaction, its incident uncommitted');
my $t0 = time;
ok(wait_until('the events behind the idle writer', 5, sub { grep { $_ == $busy[1] } positions_of($main) }),
   'events committed after an idle writer\'s insert print within 5 s');
diag(sprintf('they printed after %.2f s', time - $t0));
my @lines = lines_of($main);
is(scalar(grep { $_->{id} == $idle_id } @lines), 0, 'the idle writer\'s event is not printed before it commits');
my ($resolved) = grep { $_->{event} eq 'resolved' && $_->{agent} eq $busy } @lines;
is($resolved->{note}, 'fixed it', 'a resolved event carries its note');
is($resolved->{status}, 'resolved', 'and the status after it');
$wa->commit;
ok(wait_until('the idle writer\'s event', 10, sub { grep { $_->{id} == $idle_id } lines_of($main) }),
   'its event prints once it commits');
@lines = lines_of($main);
my ($late) = grep { $_->{id} == $idle_id } @lines;
ok($late->{position} > $busy[1], 'the lower id committed later: it comes after, by position');
is($lines[-1]{id}, $idle_id, 'it is the last line');
check_listener($main, 'an idle writer');
$wa->disconnect;
$wb->disconnect;

# ---------------------------------------------------------------------------
# Wake-ups and polling
# ---------------------------------------------------------------------------

my $sleepy = start_listener('sleepy', node => $node, args => ['--interval', '60']);
ok(wait_up($sleepy), 'a listener with --interval 60: up');
$sleepy->{start} = $node->query($db, 'SELECT gate_bridge.events_head()');
$node->query($db, 'SELECT gate_bridge.ack($1)', incident_of($node, $before));
ok(wait_until('the acked event', 5, sub { scalar(positions_of($sleepy)) >= 1 }),
   'a notification on the events channel wakes it up: an acked event prints within 5 s');
is(((lines_of($sleepy))[0] // {})->{event}, 'acked', 'the acked event');
{
	my $h = $node->connect($db);
	$h->do(q{SET gate_bridge.events_channel = 'lt_nobody_listens'});
	my $quiet = violate($h, 'quiet');
	$h->disconnect;
	my ($pos) = $node->query($db, q{SELECT e.position FROM gate_bridge.incident_events e
									 JOIN gate_bridge.incidents i ON i.id = e.incident_id WHERE i.agent = $1}, $quiet);
	ok(wait_until('the unannounced event', 5, sub { grep { $_ == $pos } positions_of($main) }),
	   'an event announced elsewhere is found by polling (--interval 0.3)');
	is(scalar(positions_of($sleepy)), 1, 'the listener polling once a minute has not seen it');
	violate($node->dbh($db), 'announced');
	check_listener($sleepy, 'the next notification');
}
is(stop_listener($sleepy), 0, 'SIGTERM: exit status 0');

# ---------------------------------------------------------------------------
# Transient errors: one line each, nothing lost or repeated
# ---------------------------------------------------------------------------

sub outage_lines
{
	my ($l, $from) = @_;
	my @e = err_lines($l);
	return @e[$from .. $#e];
}

my $errs = scalar(err_lines($main));

# After an outage of the main listener: two more events, and then every
# event printed once and in order, the listener still running, and one
# line on stderr for the outage, matching RE.
sub after_outage
{
	my ($label, $re) = @_;
	violate($node->dbh($db), 'after') for 1 .. 2;
	check_listener($main, $label);
	ok(running($main), "$label: still running");
	my @o = outage_lines($main, $errs);
	is(scalar(@o), 1, "$label: one line on stderr");
	like($o[0] // '', $re, "$label: it says what happened");
	$errs = scalar(err_lines($main));
}

# a session holding incident_events, which every read of the stream needs
sub lock_stream
{
	my (@settings) = @_;
	my $x = $node->connect($db);
	$x->begin_work;
	$x->do("SET LOCAL $_") for @settings;
	$x->do('LOCK TABLE gate_bridge.incident_events IN ACCESS EXCLUSIVE MODE');
	return $x;
}

# pg_terminate_backend, while it waits for a wake-up
my ($pid) = backend($main);
$node->query('postgres', 'SELECT pg_terminate_backend($1)', $pid);
violate($node->dbh($db), 'terminated');
ok(wait_until('a new backend', 10, sub { my ($p) = backend($main); $p && $p != $pid }), 'terminated: it reconnects');
after_outage('pg_terminate_backend',
			 qr/^gate-bridge: lost the connection to database "$db" on socket "[^"]+" port \d+: terminating connection due to administrator command( \(SQLSTATE 57P01\))?; reconnecting with backoff \(0\.25 s doubling to 10 s\)$/);

# pg_cancel_backend, while it waits for a lock
{
	my $x = lock_stream();
	ok(wait_lock_wait($main), 'a query of the listener waits for a lock');
	($pid) = backend($main);
	$node->query('postgres', 'SELECT pg_cancel_backend($1)', $pid);
	ok(wait_until('the cancel to be reported', 10, sub { scalar(err_lines($main)) > $errs }), 'cancelled');
	$x->rollback;
	$x->disconnect;
}
after_outage('pg_cancel_backend',
			 qr/^gate-bridge: reading the event stream from database "$db" .* failed: canceling statement due to user request \(SQLSTATE 57014\); retrying with backoff/);
is((backend($main))[0], $pid, 'pg_cancel_backend: it kept its connection');

# A deadlock: it holds incidents and waits for incident_events, which x
# holds; x then asks for incidents.  Its deadlock_timeout (4 s) is the
# shorter one, so it is the victim.
{
	my $x = lock_stream(q{deadlock_timeout = '60s'});
	ok(wait_lock_wait($main), 'deadlock: the listener waits for incident_events');
	is($node->query($db, q{SELECT count(*) FROM pg_locks WHERE pid = $1 AND granted
							 AND relation = 'gate_bridge.incidents'::regclass}, (backend($main))[0]),
	   1, 'deadlock: holding its lock on incidents');
	my $t = time;
	$x->do('LOCK TABLE gate_bridge.incident_rows IN ACCESS EXCLUSIVE MODE');
	diag(sprintf('the deadlock was broken after %.1f s', time - $t));
	$x->rollback;
	$x->disconnect;
}
after_outage('deadlock', qr/failed: deadlock detected \(SQLSTATE 40P01\); retrying with backoff/);

# statement_timeout, on a listener of its own
{
	my $head = $node->query($db, 'SELECT gate_bridge.events_head()');
	my $timed = start_listener('timed', node => $node, start => $head,
							   args => ['--interval', '0.3', '--since', $head],
							   pgoptions => '-c statement_timeout=1s');
	ok(wait_up($timed), 'a listener with statement_timeout = 1s: up');
	my $x = lock_stream();
	ok(wait_until('the timeout', 10, sub { scalar(err_lines($timed)) > 0 }), 'statement_timeout: it times out');
	sleep 1.5;	# and again, while the lock is held: the same outage
	$x->rollback;
	$x->disconnect;
	violate($node->dbh($db), 'timeout') for 1 .. 2;
	check_listener($timed, 'statement_timeout');
	my @e = err_lines($timed);
	is(scalar(@e), 1, 'statement_timeout: one line for the outage, however many retries');
	like($e[0] // '', qr/failed: canceling statement due to statement timeout \(SQLSTATE 57014\); retrying with backoff/,
		 'it names the timeout');
	is(stop_listener($timed), 0, 'statement_timeout: SIGTERM, exit status 0');
}
check_listener($main, 'a lock held for a while');
is(scalar(err_lines($main)), $errs, 'a lock that only makes it wait is no outage');

# Backoff: reconnects refused while the database accepts no connections,
# timed in the server log.
sub refused_outage
{
	my ($attempts) = @_;
	my $offset = -s $node->log_file;
	my $errs = scalar(err_lines($main));
	$node->sql('postgres', "ALTER DATABASE $db ALLOW_CONNECTIONS false");
	my ($p) = backend($main);
	my $t0 = time;
	$node->query('postgres', 'SELECT pg_terminate_backend($1)', $p);
	my $refused = qr/FATAL:  database "$db" is not currently accepting connections/;
	wait_until("$attempts refused attempts", 20, sub { log_times($node, $offset, $refused) >= $attempts });
	$node->sql('postgres', "ALTER DATABASE $db ALLOW_CONNECTIONS true");
	my @t = (log_times($node, $offset, $refused))[0 .. $attempts - 1];
	violate($node->dbh($db), 'backoff');
	check_listener($main, "$attempts refused reconnects");
	is(scalar(err_lines($main)) - $errs, 1, "$attempts refused reconnects: one line on stderr");
	return map { $t[$_] - ($_ ? $t[$_ - 1] : $t0) } 0 .. $#t;
}
my @gaps = refused_outage(5);
diag('waits between attempts: ' . join(' ', map { sprintf '%.2f', $_ } @gaps));
ok($gaps[0] >= 0.2 && $gaps[0] <= 0.6, 'backoff: the first attempt 0.25 s after the connection was lost');
ok(!(grep { $gaps[$_] < 1.6 * $gaps[$_ - 1] || $gaps[$_] > 2.4 * $gaps[$_ - 1] } 1 .. $#gaps),
   'backoff: each wait doubles');
@gaps = refused_outage(3);
diag('after a success: ' . join(' ', map { sprintf '%.2f', $_ } @gaps));
ok($gaps[0] <= 0.6 && $gaps[1] <= 1.0, 'backoff: a success starts it over at 0.25 s');
$errs = scalar(err_lines($main));

# A fast restart and a crash: a new history each time
for my $mode ('fast', 'immediate')
{
	my $head = $node->query($db, 'SELECT gate_bridge.events_head()');
	$node->restart($mode);
	after_outage("restart ($mode)",
				 qr/^gate-bridge: lost the connection to database "$db" .*: (terminating connection due to (administrator|immediate shutdown) command( \(SQLSTATE 57P01\))?|server closed the connection unexpectedly); reconnecting/);
	my @p = positions_of($main);
	ok($p[-1] > (int($head / 1_000_000_000) + 1) * 1_000_000_000,
	   "restart ($mode): the positions after it start a new history ($p[-1])");
}

# ---------------------------------------------------------------------------
# History rewound: TRUNCATE ... RESTART IDENTITY
# ---------------------------------------------------------------------------

my $stored = (positions_of($main))[-1];
$node->sql($db, 'TRUNCATE gate_bridge.incident_rows, gate_bridge.incident_events RESTART IDENTITY CASCADE');
violate($node->dbh($db), 'truncated') for 1 .. 3;
check_listener($main, 'TRUNCATE ... RESTART IDENTITY');
my @o = outage_lines($main, $errs);
is(scalar(@o), 1, 'TRUNCATE: one line on stderr');
like($o[0] // '', qr/^gate-bridge: warning: the event stream has no position $stored any more: it was rewound .*; continuing after position 0, the last one the server holds before it$/,
	 'TRUNCATE: the SR001 warning names the stored position and where it resumes');
my @new = lines_of($main);
is_deeply([map { $_->{id} } grep { defined } @new[-3 .. -1]], [1, 2, 3], 'TRUNCATE: the new events, ids from 1');
$errs = scalar(err_lines($main));

# ---------------------------------------------------------------------------
# What ends it: permission denied, a missing function; the grants it needs
# ---------------------------------------------------------------------------

$node->sql('postgres', 'CREATE ROLE lt_reader LOGIN');
$node->sql($db, 'GRANT USAGE ON SCHEMA gate_bridge TO lt_reader');
$node->sql($db, 'GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events TO lt_reader');
my $reader = $node->connstr($db) =~ s/user=postgres/user=lt_reader/r;
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader);
is($rc, 1, 'without EXECUTE on the stream\'s functions: exit status 1') or diag($err);
like($err, qr/^gate-bridge: permission denied for function events_head$/m, 'it prints the server\'s refusal');
like($err, qr/^HINT:  listen needs USAGE on schema gate_bridge, SELECT on gate_bridge\.incidents and gate_bridge\.incident_events, and EXECUTE on gate_bridge\.events_after\(bigint, integer\), gate_bridge\.events_head\(\) and gate_bridge\.events_resume_point\(bigint\)\.$/m,
	 'and what it needs');
is($out, '', 'and prints nothing');
$node->sql($db, 'GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer), gate_bridge.events_head(),
				 gate_bridge.events_resume_point(bigint) TO lt_reader');
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader, '--since', '0', '--once');
is($rc, 0, 'with those grants: listen --since 0 --once runs') or diag($err);
is_deeply([map { $_->{position} } json_lines($out)], [db_positions($node, 0)], 'and prints every event');
my @all = db_positions($node, 0);
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader, '--since', $all[0], '--once');
is_deeply([map { $_->{position} } json_lines($out)], [@all[1 .. $#all]], '--since P: only what follows position P');
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader, '--once');
is($rc . $out, '0', 'without --since, --once starts after the head: nothing');
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader, '--since', $all[-1] + 5, '--once');
is($rc, 0, '--since a position the server does not hold: --once still runs');
like($err, qr/warning: the event stream has no position @{[$all[-1] + 5]} any more: .* continuing after position $all[-1],/,
	 'with the SR001 warning');
$node->sql($db, 'REVOKE EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer) FROM lt_reader');
($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $reader, '--once');
is($rc, 1, 'without EXECUTE on events_after: exit status 1');
like($err, qr/permission denied for function events_after/, 'it says so');

# A version without the stream: the function is missing
{
	my $h = $node->connect($db);
	$h->do('ALTER FUNCTION gate_bridge.events_head() RENAME TO events_head_hidden');
	($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $node->connstr($db));
	is($rc, 1, 'no events_head(): exit status 1');
	like($err, qr/^gate-bridge: the gate_bridge extension in database "$db" .* has no event stream \(function gate_bridge\.events_head\(\) does not exist\)\nHINT:  .*ALTER EXTENSION gate_bridge UPDATE/m,
		 'it says the extension has no event stream and how to get it');
	$h->do('ALTER FUNCTION gate_bridge.events_head_hidden() RENAME TO events_head');
	$h->disconnect;
}
check_listener($main, 'the fatal cases of others');
is(scalar(err_lines($main)), $errs, 'the main listener had nothing to report meanwhile');

# ---------------------------------------------------------------------------
# Failover: a standby that falls behind, a crash, a promotion
# ---------------------------------------------------------------------------

is(stop_listener($main), 0, 'the main listener: SIGTERM, exit status 0');

my $standby = $node->backup_standby('listen_sb');
$standby->start;
ok($node->wait_for_replay($standby), 'the standby replays') or BAIL_OUT('no standby');

# a listener on the standby: LISTEN is refused there
my $on_standby = start_listener('on_standby', node => $standby, args => ['--interval', '0.3']);
ok(wait_until('the standby refusal', 10, sub { scalar(err_lines($on_standby)) > 0 }), 'on a standby: it says so');
like((err_lines($on_standby))[0], qr/^gate-bridge: database "$db" on socket "[^"]+" port \d+ is read-only \(a standby\): cannot execute LISTEN during recovery \(SQLSTATE 25006\); looking for a primary \(with several hosts, target_session_attrs=read-write picks it\); reconnecting with backoff/,
	 'on a standby: read-only, LISTEN refused, how to find the primary');
sleep 1;
ok(running($on_standby), 'on a standby: it keeps trying');
is(scalar(err_lines($on_standby)), 1, 'on a standby: one line');

($rc, $out, $err) = run_cmd({}, $bin, 'listen', '-d', $standby->connstr($db), '--since', '0', '--once');
is($rc, 0, '--once reads a standby') or diag($err);
is_deeply([map { $_->{position} } json_lines($out)], [db_positions($node, 0)], '--once on the standby: every event');

# both servers, the primary wanted
my $multi_conn = sprintf('host=%s,%s port=%d,%d user=postgres dbname=%s target_session_attrs=read-write application_name=lt_multi',
						 $standby->host, $node->host, $standby->port, $node->port, $db);
my $multi = start_listener('multi', node => $node, conn => $multi_conn, args => ['--interval', '0.3']);
ok(wait_up($multi), 'two hosts, target_session_attrs=read-write: up, on the primary');
$multi->{start} = $node->query($db, 'SELECT gate_bridge.events_head()');
violate($node->dbh($db), 'multi') for 1 .. 2;
check_listener($multi, 'two hosts');

# the standby falls behind: stopped while the primary goes on
ok($node->wait_for_replay($standby), 'the standby caught up');
$standby->stop('fast');
violate($node->dbh($db), 'lost') for 1 .. 2;
check_listener($multi, 'events the standby will not have');
my $lost = (positions_of($multi))[-1];
my $held = (db_positions($node, 0))[-3];

$node->stop('immediate');
$standby->start;
$standby->promote;
ok($standby->poll_until('the promoted standby', sub { !$standby->query('postgres', 'SELECT pg_is_in_recovery()') }),
   'the standby is the primary now');
ok(wait_up($on_standby, $standby), 'the listener that was on the standby: up on the new primary');
ok(wait_up($multi, $standby), 'the two-host listener: up on the new primary');
$on_standby->{start} = $standby->query($db, 'SELECT gate_bridge.events_head()');
violate($standby->dbh($db), 'promoted') for 1 .. 3;
$standby->query($db, 'SELECT gate_bridge.ack($1)', incident_of($standby, "lt.promoted.$agents"));
check_listener($multi, 'failover', $standby);
check_listener($on_standby, 'promotion', $standby);
my @e = err_lines($multi);
is(scalar(@e), 2, 'failover: two lines on stderr, the outage and the rewound position');
like($e[0] // '', qr/^gate-bridge: lost the connection to /, 'failover: the outage');
like($e[1] // '', qr/^gate-bridge: warning: the event stream has no position $lost any more: .* continuing after position $held,/,
	 'failover to a standby that was behind: the SR001 warning, and it resumes at the standby\'s last event');
is(scalar(err_lines($on_standby)), 1, 'the listener on the standby: still the one line, the outage lasted until the promotion');
is(stop_listener($multi), 0, 'two-host listener: SIGTERM, exit status 0');
is(stop_listener($on_standby), 0, 'listener on the standby: SIGTERM, exit status 0');
my @outputs = map { slurp($_->{out}) } @listeners;

# ---------------------------------------------------------------------------
# Every line against the schema
# ---------------------------------------------------------------------------

my $validate = <<'PY';
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1], encoding="utf-8"))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
validator = cls(schema)
bad = 0
with open(sys.argv[2], encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        for e in validator.iter_errors(json.loads(line)):
            print("line %d: %s" % (n, e.message))
            bad += 1
sys.exit(1 if bad else 0)
PY

my $checks = 0;
sub schema_check
{
	my (@lines) = @_;
	my $file = "$tmp/lines." . $checks++;
	open my $fh, '>', $file or die "$file: $!";
	print $fh map { "$_\n" } @lines;
	close $fh;
	return run_cmd({}, $python, '-c', $validate, $schema, $file);
}

my @real = map { split /\n/ } @outputs;
ok(@real >= 40, 'lines to validate: ' . scalar(@real));
ok((grep { /"note":/ } @real), 'some of them with a note');
($rc, $out) = schema_check(@real);
is($rc, 0, 'every line listen printed validates against schema/listen-line.schema.json') or diag($out);

my $sample = @real ? $json->decode($real[0]) : {};
my %broken = (
	'a key too many' => sub { $_[0]{extra} = 1 },
	'no position' => sub { delete $_[0]{position} },
	'a position as text' => sub { $_[0]{position} = "$_[0]{position}" },
	'an unknown status' => sub { $_[0]{status} = 'closed' },
	'a time that is not UTC' => sub { $_[0]{at} =~ s/Z$/+01:00/ },
);
for my $what (sort keys %broken)
{
	my %line = %$sample;
	$broken{$what}->(\%line);
	($rc, $out) = schema_check($json->encode(\%line));
	is($rc, 1, "the schema rejects a line with $what") or diag($out);
}

done_testing();
