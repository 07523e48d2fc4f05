# Throw-away PostgreSQL clusters of their own, for the tests of test/t that
# need server settings the shared test cluster cannot have (wal_level =
# logical, a streaming standby, a promotion, a crash).
#
#   use FindBin;
#   use lib $FindBin::Bin;
#   use GBCluster;
#
#   my $pub = GBCluster->new('pub', settings => {wal_level => 'logical'});
#   $pub->start;
#   $pub->create_database('gb_x', extension => 'gate_bridge');
#   my $dbh = $pub->connect('gb_x');                 # DBI, errors raise
#   my $n = $pub->query('gb_x', 'SELECT count(*) FROM gate_bridge.incidents');
#
#   my $standby = $pub->backup_standby('standby');   # pg_basebackup -R
#   $standby->start;
#   $pub->wait_for_replay($standby) or BAIL_OUT('standby did not replay');
#   $pub->wait_for_catchup('subname');               # a logical subscriber
#   $sub->wait_for_subscription_sync('gb_x');
#   $standby->promote;  $pub->stop('immediate');     # failover, crash
#
# Each cluster lives in a directory of its own under TMPDIR (data directory,
# unix socket, server log), listens only on that socket, on a port no other
# server of this machine uses, and runs with fsync off unless its settings
# say otherwise.  As root the servers run as the postgres user, as any other
# user as that user.  A cluster is stopped (immediate) and its directory
# removed when its object goes away or the test file ends, also when it
# dies half way; not by forked children.  When the test file has failed,
# the end of every server log is printed first.  GB_KEEP_CLUSTERS=1 keeps
# the directories (the path is printed).
#
# Every wait is bounded (GB_CLUSTER_TIMEOUT seconds, default 30) and says
# what it waited for when it gives up.
#
# Needs the PostgreSQL server binaries (PG_CONFIG, else the version in
# GB_PGVERSION or 15 under /usr/lib/postgresql) and DBD::Pg.
#
# test/t/GBCluster.pm

package GBCluster;

use strict;
use warnings;

use Carp qw(croak);
use DBI;
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken);
use Test::More ();
use Time::HiRes qw(sleep time);

our $TIMEOUT = $ENV{GB_CLUSTER_TIMEOUT} || 30;

my $PG_CONFIG = $ENV{PG_CONFIG}
  || '/usr/lib/postgresql/' . ($ENV{GB_PGVERSION} || 15) . '/bin/pg_config';
my $BINDIR;

my $creator_pid = $$;
my @live;		# weak references to every cluster not yet cleaned up
my %ports_taken;

sub bindir
{
	unless (defined $BINDIR)
	{
		$BINDIR = `$PG_CONFIG --bindir`;
		croak "$PG_CONFIG --bindir failed" if $? != 0;
		chomp $BINDIR;
	}
	return $BINDIR;
}

sub as_server_user { return $< == 0 ? ('runuser', '-u', 'postgres', '--', @_) : @_ }

sub server_user { return $< == 0 ? 'postgres' : scalar getpwuid($<) }

sub give_to_server_user
{
	my (@paths) = @_;

	return unless $< == 0;
	my (undef, undef, $uid, $gid) = getpwnam('postgres')
	  or croak 'there is no postgres user to run the server as';
	chown $uid, $gid, @paths or croak "chown @paths: $!";
}

# A port no server on this machine listens on (TCP on loopback or a socket
# in the usual directories), and none that this process handed out before.
sub free_port
{
	for (1 .. 100)
	{
		my $p = 55000 + int(rand(5000));
		next if $ports_taken{$p};
		next if -e "/var/run/postgresql/.s.PGSQL.$p" || -e "/tmp/.s.PGSQL.$p";
		require IO::Socket::INET;
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $p,
									  Proto => 'tcp', Timeout => 1);
		if ($s)
		{
			close $s;
			next;
		}
		$ports_taken{$p} = 1;
		return $p;
	}
	croak 'no free port found';
}

# run_command LOGFILE TIMEOUT COMMAND...: 1 when it exits with status 0
# within TIMEOUT seconds, else 0 (killed on timeout).  Output goes to
# LOGFILE.  libpq variables of the caller's environment (pg_virtualenv's)
# are not passed on: every connection here names its server.
sub run_command
{
	my ($log, $timeout, @cmd) = @_;

	my $pid = fork;
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		delete @ENV{grep { /^PG/ } keys %ENV};
		chdir '/';		# the server user may not enter the caller's directory
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log or POSIX::_exit(127);
		open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
		exec { $cmd[0] } @cmd or POSIX::_exit(127);
	}
	my $deadline = time + $timeout;
	while (time < $deadline)
	{
		my $r = waitpid($pid, WNOHANG);
		return $? == 0 ? 1 : 0 if $r == $pid;
		sleep 0.05;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	open my $fh, '>>', $log;
	print $fh "\n*** killed after ${timeout}s: @cmd\n" if $fh;
	return 0;
}

sub tail_file
{
	my ($path, $lines) = @_;

	open my $fh, '<', $path or return "($path: $!)";
	my @all = <$fh>;
	close $fh;
	splice @all, 0, @all - $lines if @all > $lines;
	return join '', @all;
}

# GBCluster->new(NAME, settings => {NAME => VALUE}, initdb => 1)
#
# Makes the directory and, unless initdb => 0 (a cluster whose data
# directory comes from elsewhere, as backup_standby's), the data directory
# with the settings appended to postgresql.conf.  Values are written as
# given: quote strings yourself ("'C'").
sub new
{
	my ($class, $name, %opt) = @_;

	croak 'a cluster needs a name of letters, digits and _'
	  unless defined $name && $name =~ /^\w+$/;
	my $base = tempdir("gb_cluster_${name}_XXXXXX", TMPDIR => 1);
	chmod 0755, $base;
	my $self = bless {
		name => $name,
		base => $base,
		data => "$base/data",
		socket => "$base/socket",
		log => "$base/server.log",
		cmdlog => "$base/commands.log",
		port => free_port(),
		running => 0,
		owner_pid => $$,
		dbh => {},
	}, $class;
	# a unix socket's path has room for about 100 bytes
	croak "$self->{socket}: too long a path for a unix socket; set TMPDIR to a shorter one"
	  if length("$self->{socket}/.s.PGSQL.$self->{port}") > 100;
	mkdir $self->{socket} or croak "mkdir $self->{socket}: $!";
	give_to_server_user($base, $self->{socket});
	push @live, $self;
	weaken($live[-1]);

	return $self if defined $opt{initdb} && !$opt{initdb};

	$self->run_or_die(60, as_server_user(bindir() . '/initdb', '-D', $self->{data},
										 '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
										 '--locale=C.UTF-8', '--no-sync'));
	$self->append_conf(
		"# written by GBCluster for $name\n",
		"fsync = off\n",
		"max_connections = 30\n",
		"shared_buffers = 16MB\n",
		"log_line_prefix = '%m [%p] %q%a '\n",
		"lc_messages = 'C'\n",
		map { "$_ = $opt{settings}{$_}\n" } sort keys %{$opt{settings} || {}});
	$self->set_address;
	return $self;
}

# the directory's own socket and port, last in postgresql.conf so they win
sub set_address
{
	my ($self) = @_;

	$self->append_conf("listen_addresses = ''\n",
					   "unix_socket_directories = '$self->{socket}'\n",
					   "port = $self->{port}\n");
}

sub append_conf
{
	my ($self, @lines) = @_;
	my $file = "$self->{data}/postgresql.conf";

	open my $fh, '>>', $file or croak "$file: $!";
	print $fh @lines;
	close $fh or croak "$file: $!";
}

sub name { return $_[0]{name} }
sub port { return $_[0]{port} }
sub host { return $_[0]{socket} }
sub data_dir { return $_[0]{data} }
sub log_file { return $_[0]{log} }

# libpq connection string for DBNAME, for subscriptions and clients
sub connstr
{
	my ($self, $dbname) = @_;

	return "host=$self->{socket} port=$self->{port} user=postgres dbname="
	  . ($dbname // 'postgres');
}

sub run_or_die
{
	my ($self, $timeout, @cmd) = @_;

	return if run_command($self->{cmdlog}, $timeout, @cmd);
	croak "$self->{name}: failed: @cmd\n" . tail_file($self->{cmdlog}, 30)
	  . (-e $self->{log} ? "--- server log:\n" . tail_file($self->{log}, 30) : '');
}

sub pg_ctl
{
	my ($self, @args) = @_;

	return run_command($self->{cmdlog}, $TIMEOUT + 10,
					   as_server_user(bindir() . '/pg_ctl', '-D', $self->{data}, @args));
}

# pg_ctl ACTION, waiting for it (bounded); dies with the server log's end
# when it does not finish
sub pg_ctl_wait
{
	my ($self, $action, @args) = @_;

	$self->pg_ctl(@args, '-w', '-t', $TIMEOUT, $action)
	  or croak "$self->{name}: pg_ctl $action did not finish within ${TIMEOUT}s\n"
	  . tail_file($self->{cmdlog}, 5) . "--- server log:\n" . tail_file($self->{log}, 30);
}

sub start
{
	my ($self) = @_;

	$self->pg_ctl_wait('start', '-l', $self->{log});
	$self->{running} = 1;
	return $self;
}

# stop [MODE]: fast by default; 'immediate' is a crash (recovery at the
# next start)
sub stop
{
	my ($self, $mode) = @_;

	$self->disconnect_all;
	return $self unless $self->{running};
	$self->pg_ctl_wait('stop', '-m', $mode // 'fast');
	$self->{running} = 0;
	return $self;
}

sub restart
{
	my ($self, $mode) = @_;

	return $self->stop($mode)->start;
}

# promote a standby and wait until it accepts writes
sub promote
{
	my ($self) = @_;

	$self->pg_ctl_wait('promote');
	$self->disconnect_all;
	return $self;
}

# connect DBNAME [ATTR => VALUE ...]: a new DBI handle, errors raise
sub connect
{
	my ($self, $dbname, %attr) = @_;

	return DBI->connect("dbi:Pg:host=$self->{socket};port=$self->{port};dbname="
						  . ($dbname // 'postgres'),
						'postgres', undef,
						{RaiseError => 1, PrintError => 0, AutoCommit => 1,
						 AutoInactiveDestroy => 1, %attr});
}

# a handle kept per database for query(), rows() and sql()
sub dbh
{
	my ($self, $dbname) = @_;

	$dbname //= 'postgres';
	my $h = $self->{dbh}{$dbname};
	return $h if $h && $h->ping;
	return $self->{dbh}{$dbname} = $self->connect($dbname);
}

sub disconnect_all
{
	my ($self) = @_;

	for my $h (values %{$self->{dbh}})
	{
		eval { $h->disconnect };
	}
	$self->{dbh} = {};
}

# query DBNAME SQL [BIND ...]: the first column of the first row (undef
# when there is none); in list context the first row
sub query
{
	my ($self, $dbname, $sql, @bind) = @_;
	my @row = $self->dbh($dbname)->selectrow_array($sql, undef, @bind);

	return wantarray ? @row : $row[0];
}

# rows DBNAME SQL [BIND ...]: every row, as array references
sub rows
{
	my ($self, $dbname, $sql, @bind) = @_;

	return $self->dbh($dbname)->selectall_arrayref($sql, undef, @bind);
}

# sql DBNAME SQL [BIND ...]: run a statement (or several, without binds)
sub sql
{
	my ($self, $dbname, $sql, @bind) = @_;

	return $self->dbh($dbname)->do($sql, undef, @bind);
}

# create_database NAME [extension => EXT]
sub create_database
{
	my ($self, $name, %opt) = @_;

	$self->sql('postgres', "CREATE DATABASE $name");
	$self->sql($name, "CREATE EXTENSION $opt{extension}") if $opt{extension};
	return $name;
}

# poll_until DESCRIPTION CODE [DIAGNOSE]: CODE returns true when done;
# 1 on success, 0 after TIMEOUT seconds, with a diagnostic: what was
# awaited, CODE's last error (errors count as not done yet), what DIAGNOSE
# returns (a line of state), and the end of this cluster's server log.
sub poll_until
{
	my ($self, $what, $code, $diagnose) = @_;
	my $deadline = time + $TIMEOUT;
	my $last_error = '';

	while (1)
	{
		my $done = eval { $code->() };
		return 1 if $done;
		$last_error = $@ if $@;
		last if time >= $deadline;
		sleep 0.1;
	}
	Test::More::diag("$self->{name}: gave up after ${TIMEOUT}s waiting for $what"
					 . ($last_error ? "\nlast error: $last_error" : '')
					 . ($diagnose ? "\n" . $diagnose->() : '')
					 . "\n--- end of the server log of $self->{name}:\n"
					 . tail_file($self->{log}, 20));
	return 0;
}

# backup_standby NAME: a streaming standby of this cluster, made with
# pg_basebackup -R (standby.signal, primary_conninfo), not yet started
sub backup_standby
{
	my ($self, $name, %opt) = @_;
	my $standby = (ref $self)->new($name, initdb => 0);

	$self->run_or_die($TIMEOUT + 30,
					  as_server_user(bindir() . '/pg_basebackup', '-d', $self->connstr,
									 '-D', $standby->{data}, '-R', '-X', 'stream',
									 '-c', 'fast', '--no-sync',
									 ($opt{slot} ? ('-S', $opt{slot}, '-C') : ())));
	$standby->append_conf("# standby of $self->{name}\n");
	$standby->set_address;
	return $standby;
}

sub current_lsn
{
	my ($self) = @_;

	return $self->query('postgres', 'SELECT pg_catalog.pg_current_wal_lsn()');
}

sub walsenders
{
	my ($self) = @_;

	return "walsenders of $self->{name}: "
	  . $self->describe('SELECT application_name, state, sent_lsn, write_lsn, flush_lsn,'
						. ' replay_lsn FROM pg_catalog.pg_stat_replication');
}

# wait_for_replay STANDBY: 1 once STANDBY has replayed everything this
# primary had written when called
sub wait_for_replay
{
	my ($self, $standby) = @_;
	my $target = $self->current_lsn;

	return $standby->poll_until(
		"replay of $self->{name} up to $target",
		sub {
			return $standby->query('postgres', 'SELECT pg_catalog.pg_last_wal_replay_lsn() >= $1',
								   $target);
		},
		sub {
			return "$standby->{name} replayed up to "
			  . ($standby->describe('SELECT pg_catalog.pg_last_wal_replay_lsn()'))
			  . '; ' . $self->walsenders;
		});
}

# wait_for_catchup APPLICATION_NAME: 1 once the walsender serving
# APPLICATION_NAME (a subscription's name, or a standby's
# cluster_name/application_name) has had everything this cluster had
# written when called applied on the other side
sub wait_for_catchup
{
	my ($self, $appname) = @_;
	my $target = $self->current_lsn;

	return $self->poll_until(
		"\"$appname\" to apply up to $target",
		sub {
			return $self->query('postgres',
								'SELECT replay_lsn >= $1::pg_lsn FROM pg_catalog.pg_stat_replication'
								  . ' WHERE application_name = $2',
								$target, $appname);
		},
		sub {
			return $self->walsenders . '; slots: '
			  . $self->describe('SELECT slot_name, active, confirmed_flush_lsn'
								. ' FROM pg_catalog.pg_replication_slots');
		});
}

# wait_for_subscription_sync DBNAME: 1 once every table of every
# subscription of DBNAME has finished its initial synchronisation
sub wait_for_subscription_sync
{
	my ($self, $dbname) = @_;
	my $pending = "FROM pg_catalog.pg_subscription_rel WHERE srsubstate NOT IN ('r', 's')";

	return $self->poll_until(
		"the initial synchronisation of the subscriptions of $dbname",
		sub { return $self->query($dbname, "SELECT count(*) = 0 $pending") },
		sub {
			return 'tables not synchronised: '
			  . $self->describe("SELECT srrelid::regclass, srsubstate $pending", $dbname);
		});
}

# rows of a query as one line of text, for diagnostics
sub describe
{
	my ($self, $sql, $dbname) = @_;
	my $rows = eval { $self->rows($dbname // 'postgres', $sql) };

	return "($@)" unless $rows;
	return '(none)' unless @$rows;
	return join '; ', map { join ' ', map { $_ // 'NULL' } @$_ } @$rows;
}

sub cleanup
{
	my ($self) = @_;

	return if $self->{cleaned} || $self->{owner_pid} != $$;
	$self->{cleaned} = 1;
	$self->disconnect_all;
	if ($self->{running} || -e "$self->{data}/postmaster.pid")
	{
		$self->pg_ctl('-m', 'immediate', '-w', '-t', $TIMEOUT, 'stop');
		$self->{running} = 0;
	}
	if ($ENV{GB_KEEP_CLUSTERS})
	{
		Test::More::diag("kept $self->{name} in $self->{base}");
		return;
	}
	remove_tree($self->{base});
}

sub DESTROY
{
	my ($self) = @_;

	local ($?, $@, $!);
	$self->cleanup;
}

END
{
	local $?;
	if ($$ == $creator_pid)
	{
		my @clusters = grep { defined } @live;
		my $builder = Test::More->builder;
		unless ($builder->is_passing)
		{
			for my $c (@clusters)
			{
				next unless -e $c->{log};
				$builder->diag("--- end of the server log of $c->{name}:\n"
							   . tail_file($c->{log}, 40));
			}
		}
		$_->cleanup for @clusters;
	}
}

1;
