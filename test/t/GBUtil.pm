# Small helpers that the prove tests of test/t share.
#
#   use FindBin;
#   use lib $FindBin::Bin;
#   use GBUtil qw(run_cmd slurp wait_until);
#
#   my $text = slurp($path);          # '' when the file cannot be read
#   wait_until('the listener', 10, sub { ... }) or fail(...);
#   my ($rc, $out, $err) = run_cmd({dir => $tmp, env => {PGOPTIONS => undef}}, @cmd);
#
# wait_until WHAT, SECONDS, CONDITION polls CONDITION every 50 ms until it
# returns true (then returns 1) or SECONDS have passed (then says what it
# was waiting for with diag() and returns 0).
#
# run_cmd {dir => DIR, env => {NAME => VALUE, or undef to unset},
# timeout => SECONDS (30)}, COMMAND... runs COMMAND with stdin from
# /dev/null and its output in files under DIR, and returns (its exit
# status, or minus the signal that ended it; stdout; stderr).  Killed at
# the timeout: then (-1, stdout, stderr and a line that says so).
#
# test/t/GBUtil.pm

package GBUtil;

use strict;
use warnings;

use Exporter qw(import);
use POSIX ();
use Test::More ();
use Time::HiRes ();

our @EXPORT_OK = qw(run_cmd slurp wait_until);

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

my $runs = 0;

sub run_cmd
{
	my ($opts, @cmd) = @_;
	my $n = $runs++;
	my ($out, $err) = ("$opts->{dir}/out.$$.$n", "$opts->{dir}/err.$$.$n");
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		while (my ($k, $v) = each %{ $opts->{env} || {} })
		{
			if (defined $v) { $ENV{$k} = $v } else { delete $ENV{$k} }
		}
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', $out or die;
		open STDERR, '>', $err or die;
		exec @cmd or POSIX::_exit(127);
	}
	my $deadline = Time::HiRes::time() + ($opts->{timeout} // 30);
	while (waitpid($pid, POSIX::WNOHANG()) == 0)
	{
		if (Time::HiRes::time() > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			return (-1, slurp($out), slurp($err) . "\n(killed: timeout)");
		}
		Time::HiRes::sleep(0.02);
	}
	my $status = $?;
	my $rc = ($status & 127) ? -($status & 127) : ($status >> 8);
	return ($rc, slurp($out), slurp($err));
}

1;
