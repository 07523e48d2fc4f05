#!/usr/bin/perl
#
# Releases are frozen: every script listed in sql/SHIPPED still has the
# checksum it was released with, every update script of the chain starts
# with the guard that refuses psql, the chain reaches the default version,
# and the default version's full script is built from sql/gate_bridge.sql.
#
# Needs no server.
#
# test/t/releases.pl

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use Test::More;

my $root = dirname(__FILE__) . '/../..';
my $sql = "$root/sql";

sub slurp
{
	my ($path) = @_;
	open(my $fh, '<:raw', $path) or die "cannot read $path: $!";
	local $/;
	return scalar <$fh>;
}

my %shipped;
for my $line (split /\n/, slurp("$sql/SHIPPED"))
{
	next if $line =~ /^\s*(#|$)/;
	my ($sum, $file) = $line =~ /^([0-9a-f]{64})  (\S+)$/
	  or BAIL_OUT("malformed line in sql/SHIPPED: $line");
	$shipped{$file} = $sum;
}
ok(exists $shipped{'gate_bridge--1.0.sql'}, 'sql/SHIPPED lists the 1.0 install script');
ok(exists $shipped{'gate_bridge--1.0--1.1.sql'}, 'sql/SHIPPED lists the 1.0--1.1 update script');
for my $file (sort keys %shipped)
{
	ok(-f "$sql/$file", "$file exists");
	is(sha256_hex(slurp("$sql/$file")), $shipped{$file},
	   "$file is byte for byte the released script");
}

my ($default) = slurp("$root/gate_bridge.control") =~ /^default_version\s*=\s*'([^']+)'/m;
ok(defined $default, "the control file names the default version ($default)");

# the update chain from 1.0 reaches the default version, one step at a time
my %step;
opendir(my $dh, $sql) or die;
for my $f (readdir $dh)
{
	next unless $f =~ /^gate_bridge--([0-9.]+)--([0-9.]+)\.sql$/;
	$step{$1} = $2;
	like(slurp("$sql/$f"), qr/\A[^\n]*\n\n\\echo Use "ALTER EXTENSION gate_bridge UPDATE TO '\Q$2\E'" to load this file\. \\quit\n/,
		 "$f starts with the guard against running it in psql");
}
closedir $dh;
my @chain = ('1.0');
push @chain, $step{$chain[-1]} while exists $step{$chain[-1]} && @chain < 100;
is($chain[-1], $default, 'the update chain ' . join(' -> ', @chain) . ' reaches the default version');

# the newest full script is the built copy of sql/gate_bridge.sql, never a
# second hand-kept file; scripts that are not shipped yet are not in SHIPPED
ok(!exists $shipped{"gate_bridge--$default.sql"} || $default eq '1.0',
   "gate_bridge--$default.sql is built, not kept");
ok(-f "$sql/gate_bridge.sql", 'sql/gate_bridge.sql holds the newest full script');
if (-f "$sql/gate_bridge--$default.sql")
{
	is(slurp("$sql/gate_bridge--$default.sql"), slurp("$sql/gate_bridge.sql"),
	   "the built gate_bridge--$default.sql is sql/gate_bridge.sql");
}
my $tracked = `git -C '$root' ls-files -- 'sql/gate_bridge--$default.sql' 2>/dev/null`;
is($tracked, '', "gate_bridge--$default.sql is not tracked by git") if -d "$root/.git";

done_testing();
