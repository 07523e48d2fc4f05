#!/usr/bin/env perl
# Print every notification on a channel, one line each, until killed.
#   perl tools/listen.pl [channel]     (connection from the PG* variables)
use strict;
use warnings;
use DBI;
use IO::Select;

$| = 1;
my $channel = shift // 'incident_created';
my $dbh = DBI->connect('dbi:Pg:', undef, undef,
	{ RaiseError => 1, AutoCommit => 1, PrintError => 0 });
$dbh->do('LISTEN ' . $dbh->quote_identifier($channel));
my $sel = IO::Select->new($dbh->{pg_socket});
$SIG{TERM} = $SIG{INT} = sub { exit 0 };
while (1) {
	$sel->can_read(1);
	while (my $n = $dbh->pg_notifies) {
		my ($name, $pid, $payload) = @$n;
		print "$name: $payload\n";
	}
}
