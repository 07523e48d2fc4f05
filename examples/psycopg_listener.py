#!/usr/bin/env python3
"""Follow gate_bridge's event stream with psycopg 3: print every incident
event (created, acked, resolved, ...) once, in commit order, and carry on
where it stopped after a lost connection, a server restart or a restart
of this program.

    PGUSER=dashboard python3 examples/psycopg_listener.py listener.pos
    {"position": 7, "id": 7, "incident_id": 3, "event": "created", ...}
    ...
    {"events": 12, "reconnects": 1, "rewinds": 0, "position": 18}

Connects with the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD) or DATABASE_URL, as the README's reader role, directly or
through a session pool (LISTEN needs its own server connection).
The file named on the command line holds the last position processed;
without it the stream is read from its start (--from-now: from its head).

How it works:
- gate_bridge.events_after(position) returns the committed events after
  a position in commit order, and no event can later appear at or below
  the last one it returned.  So storing the last position processed is all
  the state a consumer needs, and nothing is missed or repeated.
- NOTIFY on incident_events only says "something new committed".  It can
  be lost (while disconnected; gate_bridge skips it while PostgreSQL's
  notification queue is half full), so it is only a wake-up: the events are always read with
  events_after(), after every notification, every POLL_SECONDS anyway,
  and after every reconnect.
- A position the server no longer holds (a failover to a standby that was
  behind, a restore of an older backup) fails with SQLSTATE SR001; the
  listener says so on stderr and resumes from events_resume_point().

Events are printed, stdout flushed, and only then is the position saved,
so a crash between the two prints the last batch again after a restart;
a consumer that must not see an event twice skips positions at or below
the last one it has.  SIGTERM or SIGINT stop it after the batch at hand:
it prints a summary line and exits 0.  --idle-exit N also stops it after
N seconds without a new event.  After MAX_FAILURES failed attempts in a
row to reach the server it gives up and exits 1.
"""

import argparse
import json
import os
import select
import signal
import sys
import time

import psycopg

from runner_common import backoff

PROGRAM = "psycopg_listener"
CHANNEL = "incident_events"     # gate_bridge.events_channel
BATCH = 500                     # events per call of events_after()
POLL_SECONDS = 5.0              # read anyway when no notification came
MAX_FAILURES = 10               # failed attempts in a row before giving up

# Worth another try on a new connection: the connection was lost or could
# not be made (psycopg gives no SQLSTATE then), the server is shutting down
# or starting up or was told to end this session (57P01,
# pg_terminate_backend), a query was cancelled or timed out, a lock or
# serialization conflict, too many connections.  Anything else (a missing
# grant) is fatal.  libpq reports no SQLSTATE for a failed connection
# attempt, so a wrong password too is tried MAX_FAILURES times.
TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03", "57014", "57P01", "57P02",
                       "57P03")
TRANSIENT_CLASSES = ("08", "53")

READ_SQL = ("SELECT position, id, incident_id, event, at, actor, detail"
            "  FROM gate_bridge.events_after(%s, %s)")


class Stop(Exception):
    """SIGTERM or SIGINT arrived while waiting."""


class Listener:
    def __init__(self, state_file, from_now, idle_exit):
        self.state_file = state_file
        self.from_now = from_now
        self.idle_exit = idle_exit      # seconds, or None: never
        self.position = None            # None: not known yet
        self.events = self.reconnects = self.rewinds = 0
        self.woken = False              # a notification came during a query
        self.stopping = False
        self.waiting = False            # a signal now interrupts the wait

    # ------------------------------------------------------------ the position

    def load_position(self):
        try:
            with open(self.state_file) as f:
                self.position = int(f.read())
        except FileNotFoundError:
            self.position = None

    def save_position(self):
        # written to a new file and renamed over the old one: a crash leaves
        # the old position or the new one, never half a number
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % self.position)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------ signals

    def on_signal(self, signum, frame):
        self.stopping = True
        if self.waiting:
            raise Stop()

    def sleep(self, seconds, conn=None):
        """Wait up to `seconds`, for data on `conn`'s socket if given;
        raise Stop if asked to stop meanwhile."""
        self.waiting = True
        try:
            if self.stopping:
                raise Stop()
            if conn is None:
                time.sleep(seconds)
            else:
                select.select([conn.fileno()], [], [], seconds)
        finally:
            self.waiting = False

    # ------------------------------------------------------------ the stream

    def read_batch(self, conn):
        """Print the events after self.position; return how many."""
        try:
            rows = conn.execute(READ_SQL, (self.position, BATCH)).fetchall()
        except psycopg.Error as error:
            if error.sqlstate != "SR001":
                raise
            # The server does not hold our position: history was rewound
            # under us.  Resume after the last position it holds before
            # ours; whatever it holds beyond that is read as new.
            resume = conn.execute(
                "SELECT gate_bridge.events_resume_point(%s)",
                (self.position,)).fetchone()[0]
            print("%s: position %d is not in the stream (SQLSTATE SR001:"
                  " the history was rewound); resuming after position %d"
                  % (PROGRAM, self.position, resume), file=sys.stderr)
            self.position = resume
            self.rewinds += 1
            self.save_position()
            return 0
        for position, id_, incident_id, event, at, actor, detail in rows:
            print(json.dumps({"position": position, "id": id_,
                              "incident_id": incident_id, "event": event,
                              "at": at.isoformat(), "actor": actor,
                              "detail": detail}))
        if rows:
            # printed first, saved second: see the docstring
            sys.stdout.flush()
            self.position = rows[-1][0]
            self.events += len(rows)
            self.save_position()
        return len(rows)

    def follow(self, conn):
        """LISTEN, then read until asked to stop or idle for too long."""
        # LISTEN before the first read: an event that commits after the
        # read is then sure to wake us.
        conn.execute("LISTEN " + CHANNEL)
        if self.position is None:
            self.position = (conn.execute("SELECT gate_bridge.events_head()")
                             .fetchone()[0] if self.from_now else 0)
        idle_since = time.monotonic()
        while not self.stopping:
            self.woken = False
            if self.read_batch(conn) > 0:
                idle_since = time.monotonic()
                continue                # there may be more: read again
            if self.woken:
                continue                # a notification came with the rows
            if (self.idle_exit is not None
                    and time.monotonic() - idle_since >= self.idle_exit):
                return
            # Wait for a notification (or a broken connection: the socket
            # is readable then too).  psycopg reads it during the next
            # query; we need no more than the wake-up.
            self.sleep(POLL_SECONDS, conn)

    def run(self):
        self.load_position()
        failures = 0
        while not self.stopping:
            try:
                # autocommit: a listener must not sit in a transaction;
                # notifications are delivered only between transactions,
                # and an open one keeps PostgreSQL from emptying its queue.
                with psycopg.connect(
                        os.environ.get("DATABASE_URL", ""), autocommit=True,
                        fallback_application_name=PROGRAM) as conn:
                    conn.add_notify_handler(self.on_notify)
                    failures = 0
                    self.follow(conn)
                    return
            except psycopg.Error as error:
                if not transient(error):
                    raise
                failures += 1
                if failures >= MAX_FAILURES:
                    sys.exit("%s: giving up after %d failed attempts: %s"
                             % (PROGRAM, failures, describe(error)))
                self.reconnects += 1
                delay = backoff(failures, cap=5.0)
                print("%s: %s; reconnecting in %.2f s"
                      % (PROGRAM, describe(error), delay), file=sys.stderr)
                self.sleep(delay)

    def on_notify(self, notify):
        self.woken = True

    def summary(self):
        return {"events": self.events, "reconnects": self.reconnects,
                "rewinds": self.rewinds, "position": self.position}


def transient(error):
    state = error.sqlstate
    if state is None:
        # no SQLSTATE: the connection broke, or could not be made
        return isinstance(error, psycopg.OperationalError)
    return state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_CLASSES


def describe(error):
    first = (str(error).strip().splitlines() or ["(no message)"])[0]
    return "SQLSTATE %s: %s" % (error.sqlstate, first) if error.sqlstate else first


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state_file",
                        help="file that keeps the last position processed")
    parser.add_argument("--from-now", action="store_true",
                        help="without a state file, start at the stream's head")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="stop after this long without a new event")
    args = parser.parse_args()

    listener = Listener(args.state_file, args.from_now, args.idle_exit)
    signal.signal(signal.SIGTERM, listener.on_signal)
    signal.signal(signal.SIGINT, listener.on_signal)
    try:
        listener.run()
    except Stop:
        pass
    except psycopg.Error as error:
        sys.exit("%s: %s" % (PROGRAM, describe(error)))
    print(json.dumps(listener.summary()))


if __name__ == "__main__":
    main()
