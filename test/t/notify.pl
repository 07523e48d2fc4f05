#!/usr/bin/perl
#
# Notifications and decisions under concurrent writers.
#
# A listener LISTENs on incident_created while several writer processes,
# each with its own connection, insert violating and clean rows for a few
# keys: in autocommit, in transactions that commit or roll back, behind
# savepoints that are rolled back, through the SQL function, and in
# multi-row INSERTs, while they also ack and resolve incidents so that each
# key gets several incidents and hits its rate limit.  When all have
# finished, the listener's notifications must match the incidents exactly:
# one per created incident, none for anything rolled back, every payload
# valid JSON with the documented keys in the documented order and under
# 8000 bytes.  The trigger's violations are decided as their transaction
# commits; in half of the transactions (and savepoints) the writer decides
# them beforehand with decide_pending(), so that incidents are also created
# in flight, and then rolled back or committed.  The decisions must add up:
# never two unresolved incidents for a key, never more than
# gate_bridge.rate_limit created for a key in any window of
# gate_bridge.rate_window, and every committed violation either counted in
# an incident's occurrences or counted as rate limited.
#
# The storm runs twice: with every writer at READ COMMITTED, where no
# writer may get an error at all (operators losing an ack/resolve race
# aside), then with writers at REPEATABLE READ and SERIALIZABLE, where the
# only error allowed is SQLSTATE 40001, which the writer retries.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own database.
#
# test/t/notify.pl

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use JSON::PP;
use POSIX qw(_exit);
use Time::HiRes qw(time sleep);
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(create_scratch_database drop_scratch_database);

my $DBNAME = 'gb_tap_notify';
my $WRITERS = 8;
my $RUN_SECONDS = 5;			# per storm
my $RATE_LIMIT = 3;
my $RATE_WINDOW = 2;			# seconds; several windows pass in a storm
my $CHANNEL = 'incident_created';
my $MAX_ATTEMPTS = 50;			# per operation, on SQLSTATE 40001

# Agents with a quality budget.  The last name needs JSON escaping (quotes,
# a backslash, a tab, non-ASCII) in every key, summary and payload.
my @AGENTS = ('tap.alpha', 'tap.beta',
			  "tap.odd \"q\" \\ \t \x{e9}\x{2713}");
my $INVARIANT = 'drift';

# An agent whose violations are only ever written in transactions that roll
# back: each of them that is decided before the rollback (decide_pending(),
# the SQL function) creates an incident (nothing is ever committed for its
# keys to fold into or to count against the limit), and none may survive.
my $GHOST = 'tap.ghost';

my @DATA_KEYS = qw(id kind key severity summary status created_at agent event_id position);

# names and payloads are compared as Perl strings
sub connect_db
{
	my ($dbname) = @_;

	return GBScratch::connect_db($dbname, pg_enable_utf8 => 1);
}

################################################################ setup

create_scratch_database($DBNAME, "TEMPLATE template0 ENCODING 'UTF8'"
						. " LC_COLLATE 'C' LC_CTYPE 'C'");

my $dbh = connect_db($DBNAME);
$dbh->do('CREATE EXTENSION gate_bridge');
for my $agent (@AGENTS, $GHOST)
{
	$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)"
			 . " VALUES (?, 'quality', 0.9, 0.8, 0.5)", undef, $agent);
}

my $listener = connect_db($DBNAME);
$listener->do("LISTEN $CHANNEL");

################################################################ writers

# One writer process.  What it did is counted only when its transaction
# committed.
sub writer
{
	my ($n, $level, $deadline) = @_;
	my $w = connect_db($DBNAME);
	my %r = (rows => 0, violations => 0, rolled_back_rows => 0,
			 rolled_back_ids => [], created_ids => [], ops => 0,
			 resolved => 0, acked => 0, lost_races => 0, retries => 0,
			 gave_up => 0, errors => []);
	my $insert = $w->prepare(
		'INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)'
		. ' VALUES (?, ?, ?)');
	my $insert3 = $w->prepare(
		'INSERT INTO gate_bridge.eval_results (agent, quality)'
		. ' VALUES (?, 0.1), (?, 0.6), (?, 0.85)');
	my $function = $w->prepare(
		"SELECT gate_bridge.on_budget_violation(jsonb_build_object("
		. "'agent', ?::text, 'budget_type', 'quality', 'severity', 'critical',"
		. " 'actual', 0.2, 'threshold', 0.5))");
	my $pick = $w->prepare(
		"SELECT id FROM gate_bridge.incidents"
		. " WHERE (?::boolean OR key IN (?, ?)) AND status <> 'resolved'"
		. " ORDER BY random() LIMIT 1");

	$w->do("SET gate_bridge.rate_limit = $RATE_LIMIT");
	$w->do("SET gate_bridge.rate_window = '${RATE_WINDOW}s'");
	# every creation is to be announced: keys that are resolved and re-fire
	# again and again here would otherwise be held back as flapping
	$w->do("SET gate_bridge.flap_threshold = 0");
	$w->do("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL $level");
	srand($$ ^ int(time * 1000));

	# a violating row: the quality budget, and the invariant every third time
	my $violating = sub {
		my ($agent) = @_;
		my @q = (0.1, 0.6, 0.85);
		my $inv = rand() < 0.33 ? [$INVARIANT] : undef;

		$insert->execute($agent, $q[int(rand(3))], $inv);
		return 1 + ($inv ? 1 : 0);
	};

	my $operation = sub {
		my ($agent, $r) = @_;

		if ($r < 0.35)
		{
			# autocommit violation
			$r{violations} += $violating->($agent);
			$r{rows}++;
		}
		elsif ($r < 0.45)
		{
			# a clean row: no decision at all
			$insert->execute($agent, 0.95, undef);
			$r{rows}++;
		}
		elsif ($r < 0.62)
		{
			# a transaction that commits or rolls back
			my $ghost = rand() < 0.25;

			$agent = $GHOST if $ghost;
			$w->begin_work;
			my $v = $violating->($agent);

			# decided at commit, or now, in flight
			$w->do('SELECT gate_bridge.decide_pending()') if rand() < 0.5;
			$insert->execute($agent, 0.95, undef);
			if ($ghost || rand() < 0.3)
			{
				$w->rollback;
				$r{rolled_back_rows} += 2;
			}
			else
			{
				$w->commit;
				$r{violations} += $v;
				$r{rows} += 2;
			}
		}
		elsif ($r < 0.70)
		{
			# a violation behind a savepoint that is rolled back
			$w->begin_work;
			$w->do('SAVEPOINT sp');
			$violating->($agent);
			# discarded undecided, or decided in the savepoint and undone
			$w->do('SELECT gate_bridge.decide_pending()') if rand() < 0.5;
			$w->do('ROLLBACK TO SAVEPOINT sp');
			$insert->execute($agent, 0.95, undef);
			$w->commit;
			$r{rows}++;
			$r{rolled_back_rows}++;
		}
		elsif ($r < 0.83)
		{
			# the SQL function, whose result says whether it created
			my $ghost = rand() < 0.5;

			$agent = $GHOST if $ghost;
			$w->begin_work;
			$function->execute($agent);
			my ($id) = $function->fetchrow_array;

			$function->finish;
			if ($ghost || rand() < 0.3)
			{
				$w->rollback;
				push @{$r{rolled_back_ids}}, $id if defined $id;
			}
			else
			{
				$w->commit;
				$r{violations}++;
				push @{$r{created_ids}}, $id if defined $id;
			}
		}
		elsif ($r < 0.98)
		{
			# three violations for one key in one statement
			$insert3->execute($agent, $agent, $agent);
			$r{violations} += 3;
			$r{rows} += 3;
		}
		else
		{
			# ack or resolve one of the agent's incidents (or, for the
			# operator, of anyone's), racing the operator
			$pick->execute($agent eq '*' ? 1 : 0, "BUDGET_${agent}_quality",
						   "INVARIANT_${agent}_$INVARIANT");
			my ($id) = $pick->fetchrow_array;

			$pick->finish;
			if (defined $id)
			{
				my $ack = rand() < 0.2;

				$w->do($ack ? 'SELECT gate_bridge.ack(?, ?)'
					   : 'SELECT gate_bridge.resolve(?, ?)',
					   undef, $id, "regress_writer_$n");
				$r{$ack ? 'acked' : 'resolved'}++;
			}
		}
	};

	while (time < $deadline)
	{
		# writer 1 is the operator: every 0.1 s it acks or resolves an
		# incident, so that keys have open incidents to fold into for a
		# while and still reach the rate limit
		my $operator = $n == 1;
		my $agent = $operator ? '*' : $AGENTS[int(rand(@AGENTS))];
		my $r = $operator ? 1 : rand();

		$r{ops}++;
		for (my $attempt = 1;; $attempt++)
		{
			last if eval { $operation->($agent, $r); 1 };

			my $state = $w->state // '';
			my $msg = $w->errstr // $@;

			$w->rollback unless $w->{AutoCommit};
			if ($state eq '40001' && $level ne 'READ COMMITTED')
			{
				# a clear, retryable error: do it again
				$r{retries}++;
				if ($attempt >= $MAX_ATTEMPTS)
				{
					$r{gave_up}++;
					last;
				}
				next;
			}
			if ($state eq '55000' && $msg =~ /is already (resolved|acknowledged)/)
			{
				# another operator moved the incident first
				$r{lost_races}++;
			}
			else
			{
				push @{$r{errors}}, "$state $msg";
			}
			last;
		}
		# leave other processes on the machine some CPU
		sleep($operator ? 0.1 : rand(0.002));
	}
	$w->disconnect;
	return \%r;
}

################################################################ a storm

my $json = JSON::PP->new->utf8;
my $string = qr/"(?:[^"\\]|\\.)*"/s;
my $scalar = qr/(?:$string|-?\d+|null|true|false)/;
my $tmp = tempdir(CLEANUP => 1);

sub storm
{
	my ($title, @levels) = @_;
	my $deadline = time + $RUN_SECONDS;
	my (%children, @notes);
	my $failed_writers = 0;

	my $drain = sub {
		my $got = 0;

		while (my $note = $listener->pg_notifies)
		{
			push @notes, $note;
			$got++;
		}
		return $got;
	};

	$dbh->do('TRUNCATE gate_bridge.eval_results, gate_bridge.incident_rows,'
			 . ' gate_bridge.incident_events, gate_bridge.incident_keys'
			 . ' RESTART IDENTITY CASCADE');
	$listener->do('SELECT 1');
	$drain->();
	@notes = ();

	for my $n (1 .. $WRITERS)
	{
		my $level = $levels[($n - 1) % @levels];
		my $pid = fork;

		die "fork: $!" unless defined $pid;
		if ($pid == 0)
		{
			my $code = 0;

			eval {
				my $r = writer($n, $level, $deadline);

				open(my $fh, '>', "$tmp/writer$n.json") or die "$tmp: $!";
				print $fh $json->encode($r);
				close($fh) or die "$tmp: $!";
				1;
			} or do {
				print STDERR "writer $n: $@";
				$code = 1;
			};
			_exit($code);
		}
		$children{$pid} = $n;
	}

	# Drain notifications while the writers run, so that nothing backs up.
	while (%children)
	{
		my $pid = waitpid(-1, POSIX::WNOHANG());

		if ($pid > 0)
		{
			$failed_writers++ if $? != 0;
			delete $children{$pid};
			next;
		}
		$drain->();
		sleep(0.05);
	}

	# Every writer has committed; collect what is still on its way.
	{
		my $quiet_since = time;
		my $give_up = time + 15;

		while (time < $give_up && time - $quiet_since < 1.0)
		{
			$listener->do('SELECT 1');
			$quiet_since = time if $drain->();
			sleep(0.05);
		}
	}

	is($failed_writers, 0, "$title: all $WRITERS writers ran to the end");

	my %sum = (rows => 0, violations => 0, rolled_back_rows => 0, ops => 0,
			   resolved => 0, acked => 0, lost_races => 0, retries => 0,
			   gave_up => 0);
	my (@rolled_back_ids, @created_ids, @errors);

	for my $n (1 .. $WRITERS)
	{
		my $file = "$tmp/writer$n.json";

		next unless -f $file;
		open(my $fh, '<', $file) or die "$file: $!";
		my $r = $json->decode(do { local $/; <$fh> });

		close($fh);
		unlink($file);
		$sum{$_} += $r->{$_} for keys %sum;
		push @rolled_back_ids, @{$r->{rolled_back_ids}};
		push @created_ids, @{$r->{created_ids}};
		push @errors, @{$r->{errors}};
	}

	is_deeply(\@errors, [],
			  "$title: no writer got an error "
			  . (grep({ $_ ne 'READ COMMITTED' } @levels)
				 ? 'but SQLSTATE 40001' : 'at all')
			  . ' (operators losing an ack/resolve race aside)')
		or diag(join("\n", @errors[0 .. ($#errors < 9 ? $#errors : 9)]));
	if (grep { $_ ne 'READ COMMITTED' } @levels)
	{
		ok($sum{retries} > 0, "$title: writers got SQLSTATE 40001 and retried ($sum{retries})");
	}

	############################################################ payloads

	my (@bad_json, @bad_order, @too_long, @bad_values, %notified, %payload_data);

	for my $note (@notes)
	{
		my ($channel, $pid, $payload) = @$note;
		my $bytes = $payload;
		my $doc;

		utf8::encode($bytes) if utf8::is_utf8($bytes);
		push @too_long, length($bytes) if length($bytes) >= 8000;

		unless (eval { $doc = $json->decode($bytes); 1 })
		{
			push @bad_json, $payload;
			next;
		}

		# the keys, in order, as they appear in the text
		if ($bytes !~ /^\{"event":$string,"data":\{((?:$string:$scalar,?)*)\}\}$/)
		{
			push @bad_order, $payload;
		}
		else
		{
			my @keys = ($1 =~ /($string):$scalar/g);

			push @bad_order, $payload
				unless join(',', @keys) eq join(',', map { "\"$_\"" } @DATA_KEYS);
		}

		my $d = $doc->{data};

		if ($channel ne $CHANNEL
			|| ref($d) ne 'HASH'
			|| ($doc->{event} // '') ne 'incident_created'
			|| ($d->{status} // '') ne 'open'
			|| ($d->{id} // '') !~ /^\d+$/
			|| ($d->{created_at} // '') !~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
		{
			push @bad_values, $payload;
			next;
		}
		$notified{$d->{id}}++;
		$payload_data{$d->{id}} = $d;
	}

	ok(scalar(@notes) > 0, "$title: the listener received notifications (" . scalar(@notes) . ')');
	is_deeply(\@bad_json, [], "$title: every payload parses as JSON");
	is_deeply(\@bad_order, [], "$title: every payload has exactly the keys event, data{"
			  . join(', ', @DATA_KEYS) . '} in that order');
	is_deeply(\@too_long, [], "$title: every payload is under 8000 bytes");
	is_deeply(\@bad_values, [], "$title: every payload announces an open incident on $CHANNEL");

	############################################################ notifications = incidents

	my $incidents = $dbh->selectall_hashref(
		"SELECT i.id, i.kind, i.key, i.severity, i.summary,"
		. "       to_char(i.first_seen_at AT TIME ZONE 'UTC',"
		. "               'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at,"
		. "       e.detail::text AS detail, e.id AS event_id, e.position"
		. "  FROM gate_bridge.incidents i"
		. "  LEFT JOIN gate_bridge.incident_events e"
		. "         ON e.incident_id = i.id AND e.event = 'created'", 'id');
	my $n_incidents = scalar(keys %$incidents);

	my @dups = grep { $notified{$_} > 1 } sort { $a <=> $b } keys %notified;
	my @missing = grep { !$notified{$_} } sort { $a <=> $b } keys %$incidents;
	my @extra = grep { !$incidents->{$_} } sort { $a <=> $b } keys %notified;

	is_deeply(\@dups, [], "$title: no incident was notified twice");
	is_deeply(\@missing, [], "$title: every incident created was notified");
	is_deeply(\@extra, [], "$title: every notification names an incident that exists");
	is(scalar(@notes), $n_incidents,
	   "$title: exactly one notification per incident ($n_incidents incidents)");

	my @mismatch;
	for my $id (sort { $a <=> $b } keys %payload_data)
	{
		my $row = $incidents->{$id} or next;
		my $d = $payload_data{$id};

		# the severity is the creation's (the timeline row below): a worse
		# violation may have escalated the incident since
		push @mismatch, $id
			if grep { ($d->{$_} // '') ne ($row->{$_} // '') }
			qw(kind key summary created_at);
		# the timeline's "created" row is the consumers' copy of the data,
		# which the notification completes with the event's id and position
		my %d = %$d;
		my ($event_id, $position) = delete @d{qw(event_id position)};
		push @mismatch, "$id (timeline)"
			unless defined $row->{detail}
			&& eq_hash(JSON::PP->new->decode($row->{detail}), \%d)
			&& defined $event_id && defined $position
			&& $event_id == $row->{event_id} && $position == $row->{position};
	}
	is_deeply(\@mismatch, [], "$title: each payload matches its incident and its \"created\" timeline row");

	ok(scalar(@rolled_back_ids) > 0,
	   "$title: incidents were created in transactions that rolled back (" . scalar(@rolled_back_ids) . ')');
	is_deeply([grep { $notified{$_} || $incidents->{$_} } @rolled_back_ids], [],
			  "$title: none of them exists or was notified");
	my ($ghosts) = $dbh->selectrow_array(
		'SELECT count(*) FROM gate_bridge.incidents WHERE agent = ?', undef, $GHOST);
	is($ghosts, 0, "$title: no incident survives for the agent written only in rolled-back transactions");
	is_deeply([grep { index($_->[2], $GHOST) >= 0 } @notes], [],
			  "$title: no notification names that agent");
	is_deeply([grep { !$notified{$_} } @created_ids], [],
			  "$title: every committed incident the SQL function returned was notified");

	############################################################ decisions

	my ($two_unresolved) = $dbh->selectrow_array(
		"SELECT count(*) FROM (SELECT kind, key FROM gate_bridge.incidents"
		. " WHERE status <> 'resolved' GROUP BY kind, key HAVING count(*) > 1) d");
	is($two_unresolved, 0, "$title: no key has two unresolved incidents");

	my ($over_limit) = $dbh->selectrow_array(
		"SELECT count(*) FROM gate_bridge.incidents a"
		. " WHERE (SELECT count(*) FROM gate_bridge.incidents b"
		. "         WHERE b.kind = a.kind AND b.key = a.key"
		. "           AND b.first_seen_at > a.first_seen_at - make_interval(secs => ?)"
		. "           AND b.first_seen_at <= a.first_seen_at) > ?",
		undef, $RATE_WINDOW, $RATE_LIMIT);
	is($over_limit, 0,
	   "$title: no key had more than $RATE_LIMIT incidents created in any ${RATE_WINDOW} s window");

	my ($keys, $max_per_key, $rate_limited, $occurrences) = $dbh->selectrow_array(
		"SELECT count(*), max(i.n), sum(k.rate_limited), sum(i.o)"
		. "  FROM gate_bridge.incident_keys k,"
		. "  LATERAL (SELECT count(*) AS n, coalesce(sum(i.occurrences), 0) AS o"
		. "             FROM gate_bridge.incidents i"
		. "            WHERE i.kind = k.kind AND i.key = k.key) i");
	ok($rate_limited > 0, "$title: the rate limit was reached ($rate_limited violations rate limited)");
	ok($max_per_key > $RATE_LIMIT,
	   "$title: a key got more incidents than the limit over several windows ($max_per_key)");
	is($occurrences + $rate_limited, $sum{violations},
	   "$title: every committed violation ($sum{violations}) is an occurrence ($occurrences) or rate limited ($rate_limited)");

	my ($bad_counters) = $dbh->selectrow_array(
		"SELECT count(*) FROM gate_bridge.incident_keys k"
		. " WHERE k.created <> (SELECT count(*) FROM gate_bridge.incidents i"
		. "                      WHERE i.kind = k.kind AND i.key = k.key)");
	is($bad_counters, 0, "$title: each key counted exactly the incidents it created");

	my ($stats_created) = $dbh->selectrow_array('SELECT sum(created) FROM gate_bridge.stats');
	is($stats_created, $n_incidents, "$title: gate_bridge.stats counts every created incident once");

	my ($bad_timeline) = $dbh->selectrow_array(
		"SELECT count(*) FROM gate_bridge.incidents i,"
		. " LATERAL (SELECT count(*) FILTER (WHERE e.event = 'created') AS c,"
		. "                 count(*) FILTER (WHERE e.event = 'acked') AS a,"
		. "                 count(*) FILTER (WHERE e.event = 'resolved') AS r"
		. "            FROM gate_bridge.incident_events e WHERE e.incident_id = i.id) e"
		. " WHERE e.c <> 1 OR e.a <> (i.acked_at IS NOT NULL)::int"
		. "    OR e.r <> (i.status = 'resolved')::int");
	is($bad_timeline, 0, "$title: each incident has one \"created\" row and one per ack and resolve");

	my ($stored_rows) = $dbh->selectrow_array('SELECT count(*) FROM gate_bridge.eval_results');
	is($stored_rows, $sum{rows},
	   "$title: every committed eval row was stored ($sum{rows}), no rolled-back one ($sum{rolled_back_rows})");
	ok($sum{resolved} > 0,
	   "$title: incidents were resolved during the storm ($sum{resolved}; $sum{acked} acked, $sum{lost_races} races lost)");

	diag(sprintf('%s: %d writers, %d operations in %d s: %d incidents over %d keys, '
				 . '%d notifications, %d violations committed, %d rate limited, '
				 . '%d rolled-back creations, %d retries on 40001, %d given up',
				 $title, $WRITERS, $sum{ops}, $RUN_SECONDS, $n_incidents, $keys,
				 scalar(@notes), $sum{violations}, $rate_limited,
				 scalar(@rolled_back_ids), $sum{retries}, $sum{gave_up}));
}

################################################################ run

my ($unique_index) = $dbh->selectrow_array(
	"SELECT count(*) FROM pg_catalog.pg_index x"
	. " WHERE x.indrelid = 'gate_bridge.incident_rows'::regclass AND x.indisunique"
	. "   AND pg_catalog.pg_get_indexdef(x.indexrelid)"
	. "       ~ '\\(kind, agent, subject\\) WHERE \\(status <> ''resolved''::text\\)\$'");
is($unique_index, 1, 'a unique partial index enforces one unresolved incident per key');

storm('read committed', 'READ COMMITTED');
storm('repeatable read/serializable', 'REPEATABLE READ', 'SERIALIZABLE');

$listener->disconnect;
$dbh->disconnect;
drop_scratch_database();
{
	my $admin = connect_db('postgres');
	my ($left) = $admin->selectrow_array(
		'SELECT count(*) FROM pg_database WHERE datname = ?', undef, $DBNAME);

	is($left, 0, 'the test database is dropped');
	$admin->disconnect;
}

done_testing();
