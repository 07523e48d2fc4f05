# Small helpers that the prove tests of test/t share.
#
#   use FindBin;
#   use lib $FindBin::Bin;
#   use GBUtil qw(slurp wait_until);
#
#   my $text = slurp($path);          # '' when the file cannot be read
#   wait_until('the listener', 10, sub { ... }) or fail(...);
#
# wait_until WHAT, SECONDS, CONDITION polls CONDITION every 50 ms until it
# returns true (then returns 1) or SECONDS have passed (then says what it
# was waiting for with diag() and returns 0).
#
# test/t/GBUtil.pm

package GBUtil;

use strict;
use warnings;

use Exporter qw(import);
use Test::More ();
use Time::HiRes ();

our @EXPORT_OK = qw(slurp wait_until);

sub slurp
{
	my ($path) = @_;
	open my $fh, '<', $path or return '';
	local $/;
	my $text = <$fh>;
	close $fh;
	return $text;
}

sub wait_until
{
	my ($what, $timeout, $cond) = @_;
	my $deadline = Time::HiRes::time() + $timeout;
	while (Time::HiRes::time() < $deadline)
	{
		return 1 if $cond->();
		Time::HiRes::sleep(0.05);
	}
	Test::More::diag("timed out waiting for $what");
	return 0;
}

1;
