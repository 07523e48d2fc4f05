#!/usr/bin/perl
#
# The NOTIFY payloads against their JSON Schemas (schema/).
#
#   pg_virtualenv -t -v 15 prove test/t/event_payloads.pl
#
# A session LISTENs on both channels (incident_created and incident_events)
# while incidents are created, acked and resolved for agents whose names
# need every kind of JSON escaping: quotes, backslashes, every control
# character, non-ASCII (accents, CJK, emoji, U+2028), names of exactly 128
# bytes (ASCII, multibyte, all control characters), invariants that make
# the key 255 bytes long, and a planner version that makes the agent
# "planner.{version}" 255 bytes long; some of it in a transaction that is
# rolled back.  Then:
# - one incident_created payload per incident created and one
#   incident_events payload per event, in position order, none for what
#   was rolled back, each under 8000 bytes and without a raw control
#   character;
# - every payload is valid against its schema (Debian's python3-jsonschema,
#   test/t/validate_json.py), and the schemas are valid draft 2020-12;
# - decoded, each payload says what the database holds: the agent, key and
#   summary character for character, the ids and positions;
# - broken payloads (a key missing or added, a wrong type, a value out of
#   its set) are rejected, so that the schemas are not vacuous.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set, as a
# superuser); creates and drops its own database.  Takes a few seconds.
#
# test/t/event_payloads.pl

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use FindBin;
use JSON::PP;
use POSIX ();
use Test::More;

use lib $FindBin::Bin;
use GBScratch qw(connect_db create_scratch_database);
use GBUtil qw(slurp wait_until);

die "run this test inside pg_virtualenv (PGPORT is not set)\n"
  unless defined $ENV{PGPORT};

my $root = abs_path(dirname(__FILE__) . '/../..');
my $tmp = tempdir('gb_payloads_XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $DBNAME = 'gb_tap_payloads';
my $PYTHON = $ENV{GB_PYTHON} // '/usr/bin/python3';
my %SCHEMA = (incident_created => "$root/schema/incident-created.schema.json",
			  incident_events => "$root/schema/incident-event.schema.json");
my $json = JSON::PP->new->utf8->canonical;	# bytes in, characters out

# Agents that need escaping; each is at most 128 bytes (UTF-8).
my $controls = join('', map { chr } 1 .. 31, 127);
my @AGENTS = (
	'pl.plain',
	'pl."quoted" \'single\'',
	'pl.back\\slash\\\\double\\"escaped',
	"pl.ctl $controls",
	"pl.newline\nand\r\ttab",
	"pl.\x{e9}t\x{e9} \x{4e2d}\x{6587} \x{1f600} \x{2028}\x{2029} \x{200f}rtl",
	'pl.' . ('x' x 125),								# 128 bytes of ASCII
	'pl.' . ("\x{2713}" x 41) . 'ab',					# 3 + 123 + 2 = 128 bytes
	'pl.' . join('', map { chr(1 + $_ % 31) } 1 .. 125),	# 128 bytes, each escaped as \u00XX
	'pl.</script><b>&amp;',
);

sub utf8_length
{
	my ($s) = @_;
	utf8::encode(my $b = $s);
	return length $b;
}

# run_validator SCHEMA, LINES: the validator's verdict on each line
sub run_validator
{
	my ($schema, @lines) = @_;
	my $in = "$tmp/in.jsonl";
	open my $fh, '>:raw', $in or die "$in: $!";
	print $fh map { "$_\n" } @lines;
	close $fh or die "$in: $!";
	my $pid = open(my $from, '-|') // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', $in or POSIX::_exit(127);
		exec($PYTHON, "$FindBin::Bin/validate_json.py", $schema) or POSIX::_exit(127);
	}
	my @out = <$from>;
	close $from;
	my $status = $? >> 8;
	return {status => $status, results => [map { $json->decode($_) } grep { /^\{/ } @out],
			output => join('', @out)};
}

################################################################ setup

create_scratch_database($DBNAME, "TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
my $dbh = connect_db($DBNAME, pg_enable_utf8 => 1);	# characters
$dbh->do('CREATE EXTENSION gate_bridge');
$dbh->do("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)"
		 . " VALUES ('*', 'latency', 1500, 3000, 8000), ('*', 'quality', 0.9, 0.8, 0.5)");

is(utf8_length($_), 128, 'a 128-byte agent name') for @AGENTS[6 .. 8];

my $listener = connect_db($DBNAME, pg_enable_utf8 => 0);	# payloads as bytes
$listener->do('LISTEN incident_created');
$listener->do('LISTEN incident_events');
my $head = $dbh->selectrow_array('SELECT gate_bridge.events_head()');

################################################################ the events

my $insert = $dbh->prepare('INSERT INTO gate_bridge.eval_results'
						   . ' (agent, latency_p95_ms, quality, invariants_failed) VALUES (?, ?, ?, ?)');
for my $agent (@AGENTS)
{
	# a budget incident (sev1), a second budget (sev2), and an invariant
	# whose name makes the key exactly 255 bytes
	my $invariant_len = 255 - utf8_length("INVARIANT_${agent}_");
	my $invariant = "inv \"\x{e9}\" " . ('i' x ($invariant_len - 9));
	$insert->execute($agent, 9000, 0.85, [$invariant]);
}
# a planner regression whose agent, planner.{version}, is 255 bytes
my $version = "v2 \"\\\t\x{2713}" . ('9' x (247 - utf8_length("v2 \"\\\t\x{2713}")));
$dbh->do("SELECT gate_bridge.on_planner_regression(?, '{}', '{}', '{\"severity\": \"warning\"}')",
		 undef, $version);
# rolled back: none of it is announced (the violation decided in flight,
# which otherwise happens at commit)
$dbh->begin_work;
$insert->execute('pl.rolled.back', 9000, undef, undef);
$dbh->do('SELECT gate_bridge.decide_pending()');
$dbh->do("SELECT gate_bridge.ack(id) FROM gate_bridge.incidents WHERE agent = 'pl.plain'");
$dbh->rollback;
# acks and resolutions, some in one transaction
my $ids = $dbh->selectcol_arrayref('SELECT id FROM gate_bridge.incidents ORDER BY id');
$dbh->do('SELECT gate_bridge.ack(?, ?)', undef, $_, "ops \"\x{e9}\"\n") for @$ids[grep { $_ % 2 == 0 } 0 .. $#$ids];
$dbh->begin_work;
$dbh->do('SELECT gate_bridge.resolve(?, ?, ?)', undef, $_, 'ops', "fixed \\ \"ok\"")
  for @$ids[grep { $_ % 3 == 0 } 0 .. $#$ids];
$dbh->commit;

my $incidents = $dbh->selectall_hashref(
	'SELECT i.id, i.kind, i.key, i.agent, i.severity, i.summary, e.id AS event_id, e.position'
	. ' FROM gate_bridge.incidents i JOIN gate_bridge.incident_events e'
	. " ON e.incident_id = i.id AND e.event = 'created'", 'id');
my $events = $dbh->selectall_arrayref(
	'SELECT position, id, incident_id, event FROM gate_bridge.incident_events'
	. ' WHERE position > ? ORDER BY position', undef, $head);
ok(keys(%$incidents) >= 3 * @AGENTS + 1, 'incidents created: ' . scalar(keys %$incidents));
is($dbh->selectrow_array("SELECT count(*) FROM gate_bridge.incidents WHERE agent = 'pl.rolled.back'"),
   0, 'nothing of the rolled-back transaction is stored');
my %kinds = map { $_->[3] => 1 } @$events;
is_deeply([sort keys %kinds], [qw(acked created resolved)], 'events created, acked and resolved');

################################################################ the payloads

my %got = (incident_created => [], incident_events => []);
ok(wait_until('every notification', 20, sub {
		while (my $n = $listener->pg_notifies)
		{
			push @{$got{$n->[0]}}, $n->[2];
		}
		return @{$got{incident_events}} >= @$events
		  && @{$got{incident_created}} >= keys %$incidents;
	}), 'the notifications arrive');
$listener->do('SELECT 1');
while (my $n = $listener->pg_notifies) { push @{$got{$n->[0]}}, $n->[2] }

is(scalar @{$got{incident_created}}, scalar(keys %$incidents),
   'one incident_created payload per incident created (' . scalar(keys %$incidents) . ')');
is(scalar @{$got{incident_events}}, scalar(@$events),
   'one incident_events payload per event (' . scalar(@$events) . ')');

for my $channel (sort keys %got)
{
	my @p = @{$got{$channel}};
	is_deeply([grep { length($_) >= 8000 } @p], [], "$channel: every payload is under 8000 bytes");
	# JSON must escape U+0000 to U+001F (DEL may stay as it is)
	is_deeply([grep { /[\x00-\x1f]/ } @p], [],
			  "$channel: no payload holds a raw control character (one payload a line)");

	my $v = run_validator($SCHEMA{$channel}, @p);
	is($v->{status}, 0, "$channel: the validator ran and the schema is valid draft 2020-12")
	  or diag($v->{output});
	is(scalar @{$v->{results}}, scalar(@p), "$channel: every payload was checked");
	my @invalid = grep { !$_->{valid} } @{$v->{results}};
	is_deeply(\@invalid, [], "$channel: every payload is valid against "
			  . File::Basename::basename($SCHEMA{$channel}));
}

# Decoded, the payloads say what the database holds.
{
	my @decoded = map { $json->decode($_) } @{$got{incident_events}};
	is_deeply([map { [@$_{qw(position id incident_id event)}] } @decoded], $events,
			  'incident_events: position, id, incident and kind of every event, in position order');

	my (%seen, @differ);
	my @fields = qw(kind key agent severity summary event_id position);
	for my $payload (@{$got{incident_created}})
	{
		my $d = $json->decode($payload)->{data};
		my $i = $incidents->{$d->{id}} // {};
		$seen{$d->{id}}++;
		push @differ, $payload
		  if join("\0", map { $_ // '' } @$d{@fields}) ne join("\0", map { $_ // '' } @$i{@fields});
	}
	is_deeply(\@differ, [],
			  'incident_created: kind, key, agent, severity, summary, event id and position'
			  . ' as stored, character for character');
	is_deeply([grep { ($seen{$_} // 0) != 1 } sort keys %$incidents], [],
			  'incident_created: each incident once');
	my @long = grep { utf8_length($_->{agent}) == 255 } values %$incidents;
	is(scalar @long, 1, 'the planner incident has a 255-byte agent');
	is(scalar(grep { utf8_length($_->{key}) == 255 } values %$incidents), @AGENTS + 1,
	   'each agent, and the planner version, has an incident with a 255-byte key');
}

################################################################ broken payloads

# Each must be rejected; they are made from real payloads.
{
	my $created = $json->decode($got{incident_created}[0]);
	my $event = $json->decode($got{incident_events}[0]);
	my $with = sub {
		my ($base, $change) = @_;
		my $copy = $json->decode($json->encode($base));
		$change->($copy);
		return $json->encode($copy);
	};
	my %broken = (
		incident_created => [
			$with->($created, sub { delete $_[0]{data}{position} }),
			$with->($created, sub { delete $_[0]{data}{agent} }),
			$with->($created, sub { $_[0]{data}{extra} = 1 }),
			$with->($created, sub { $_[0]{extra} = 1 }),
			$with->($created, sub { $_[0]{event} = 'incident_updated' }),
			$with->($created, sub { $_[0]{data}{position} = "$_[0]{data}{position}" }),
			$with->($created, sub { $_[0]{data}{id} = 0 }),
			$with->($created, sub { $_[0]{data}{severity} = 'sev4' }),
			$with->($created, sub { $_[0]{data}{status} = 'ack' }),
			$with->($created, sub { $_[0]{data}{kind} = 'other' }),
			$with->($created, sub { $_[0]{data}{key} = '' }),
			$with->($created, sub { $_[0]{data}{key} = 'k' x 256 }),
			$with->($created, sub { $_[0]{data}{agent} = undef }),
			$with->($created, sub { $_[0]{data}{created_at} = '2024-01-15 10:30:00+00' }),
			$with->($created, sub { $_[0]{data}{created_at} = '2024-13-15T10:30:00Z' }),
			$with->($created, sub { $_[0]{data} = [] }),
			'{"event":"incident_created","data":{"id":1}',		# not JSON
		],
		incident_events => [
			$with->($event, sub { delete $_[0]{position} }),
			$with->($event, sub { delete $_[0]{incident_id} }),
			$with->($event, sub { $_[0]{detail} = {} }),
			$with->($event, sub { $_[0]{position} = 1.5 }),
			$with->($event, sub { $_[0]{id} = "$_[0]{id}" }),
			$with->($event, sub { $_[0]{incident_id} = -1 }),
			$with->($event, sub { $_[0]{event} = 'Acked' }),
			$with->($event, sub { $_[0]{event} = '' }),
			$with->($event, sub { $_[0]{event} = undef }),
			'[]',
		],
	);
	for my $channel (sort keys %broken)
	{
		my $v = run_validator($SCHEMA{$channel}, @{$broken{$channel}});
		is(scalar @{$v->{results}}, scalar @{$broken{$channel}},
		   "$channel: every broken payload was checked");
		my @accepted = map { $broken{$channel}[$_->{line} - 1] } grep { $_->{valid} } @{$v->{results}};
		is_deeply(\@accepted, [], "$channel: the schema rejects every broken payload ("
				  . scalar(@{$broken{$channel}}) . ')');
	}
}

done_testing();
