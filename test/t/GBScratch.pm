# A throw-away database for one test file of test/t.
#
#   use FindBin;
#   use lib $FindBin::Bin;
#   use GBScratch qw(connect_db create_scratch_database drop_scratch_database);
#
#   create_scratch_database('gb_tap_x', "TEMPLATE template0 ...");
#   my $dbh = connect_db('gb_tap_x');
#
# create_scratch_database() drops what an earlier run left under that name,
# then creates it.  The database is dropped again when the test file ends,
# also when it dies half way; not by forked children, which end with
# POSIX::_exit or whose process is not the one that created it.
# drop_scratch_database() drops it at once.
#
# Runs inside pg_virtualenv (PGHOST, PGPORT, PGUSER, PGPASSWORD set).
#
# test/t/GBScratch.pm

package GBScratch;

use strict;
use warnings;

use DBI;
use Exporter qw(import);

our @EXPORT_OK = qw(connect_db create_scratch_database drop_scratch_database);

my $scratch;
my $creator_pid;

# connect_db DBNAME [ATTR => VALUE ...]: errors raise, autocommit
sub connect_db
{
	my ($dbname, %attr) = @_;

	return DBI->connect("dbi:Pg:dbname=$dbname", undef, undef,
						{RaiseError => 1, PrintError => 0, AutoCommit => 1,
						 AutoInactiveDestroy => 1, %attr});
}

sub drop_named
{
	my ($name) = @_;
	my $admin = connect_db('postgres');

	$admin->do('SET client_min_messages = warning');
	$admin->do("DROP DATABASE IF EXISTS $name WITH (FORCE)");
	$admin->disconnect;
}

# create_scratch_database NAME [OPTIONS]: OPTIONS follow CREATE DATABASE NAME
sub create_scratch_database
{
	my ($name, $options) = @_;

	drop_named($name);
	$scratch = $name;
	$creator_pid = $$;
	my $admin = connect_db('postgres');
	$admin->do("CREATE DATABASE $name" . (defined $options ? " $options" : ''));
	$admin->disconnect;
	return $name;
}

sub drop_scratch_database
{
	return unless defined $scratch;
	drop_named($scratch);
	$scratch = undef;
}

END
{
	local $?;
	drop_scratch_database() if defined $creator_pid && $$ == $creator_pid;
}

1;
