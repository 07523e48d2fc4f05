"""GET /events: the frames, resuming with Last-Event-ID and ?after=, from
now, and exactly once across a restart of the database server."""

import datetime
import json
import re
import threading
import time

import psycopg
import pytest

from conftest import (OPERATOR_TOKEN, VIEWER_TOKEN, db_connect, event_positions, events_head,
                      new_incident, pg_start, pg_stop, sql)
from sse import SSEClient

AT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DATA_FIELDS = {"id", "position", "event", "incident_id", "at", "actor", "kind", "key", "agent",
               "severity", "summary", "status", "silenced"}


@pytest.fixture(scope="module")
def srv(request):
    from conftest import Serve
    s = Serve(name="sse")
    yield s
    s.stop()


def connect(srv, path="/events", headers=None, **kw):
    c = SSEClient(srv.host, srv.port, path, headers=headers, **kw)
    assert c.status == 200, "GET %s -> %s %r" % (path, c.status, c.body[:300])
    return c


def wait_started(c, timeout=15):
    """Until the first status frame (the stream has started)."""
    c.wait_for(lambda c: any(f.kind == "event" and f.event == "status" for f in c.frames),
               timeout, "the first status frame")


def wait_positions(c, want, timeout=30):
    """Until C has received as many events as WANT holds; returns its positions."""
    c.wait_for(lambda c: len(c.data_events()) >= len(want), timeout,
               "%d events (positions %s..%s)" % (len(want), want[:1], want[-1:]))
    return c.positions()


def test_headers_retry_and_status_frame(srv):
    c = connect(srv)
    try:
        assert c.headers.get("content-type", "").startswith("text/event-stream"), c.headers
        assert "no-cache" in c.headers.get("cache-control", ""), c.headers
        wait_started(c)
        assert c.frames[0].kind == "retry" and c.frames[0].value == "2000", c.frames[:3]
        status = [f for f in c.frames if f.kind == "event"][0]
        assert status.event == "status" and status.id is None, status
        data = status.json()
        assert set(data) == {"database", "position"} and data["database"] == "up", data
        assert isinstance(data["position"], int), data
    finally:
        c.close()


def test_first_status_frame_of_a_fresh_server_has_the_head():
    """A client that connects as soon as the server listens is told the
    head, not a position the server has not read yet."""
    from conftest import Serve
    new_incident("sev3")
    head = events_head()
    for _ in range(3):
        s = Serve(name="fresh")
        try:
            c = connect(s)
            try:
                wait_started(c)
                d = c.events("status")[0].json()
                assert d == {"database": "up", "position": head}, d
            finally:
                c.close()
        finally:
            s.stop()


def check_frame(f, row):
    d = f.json()
    assert DATA_FIELDS <= set(d), "data lacks %s: %r" % (sorted(DATA_FIELDS - set(d)), d)
    assert int(f.id) == d["position"] == row["position"], (f, row)
    assert f.event == d["event"] == row["event"], (f, row)
    for k in ("id", "incident_id", "actor", "kind", "key", "agent", "severity", "summary"):
        assert d[k] == row[k], "%s: SSE %r, SQL %r" % (k, d[k], row[k])
    assert AT_RE.match(d["at"]), d
    gap = abs((datetime.datetime.strptime(d["at"], "%Y-%m-%dT%H:%M:%SZ") -
               datetime.datetime.strptime(row["at"], "%Y-%m-%dT%H:%M:%SZ")).total_seconds())
    assert gap <= 1, (d["at"], row["at"])
    assert d["silenced"] is False, d
    return d


def event_rows(iid):
    rows = sql("SELECT e.id, e.position, e.event, e.incident_id, "
               "to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), e.actor, "
               "i.kind, i.key, i.agent, i.severity, i.summary "
               "FROM gate_bridge.incident_events e JOIN gate_bridge.incidents i "
               "ON i.id = e.incident_id WHERE e.incident_id = %s ORDER BY e.position", (iid,))
    cols = ("id", "position", "event", "incident_id", "at", "actor", "kind", "key", "agent",
            "severity", "summary")
    return [dict(zip(cols, r)) for r in rows]


def test_from_now_and_the_frames_of_a_lifecycle(srv):
    new_incident("sev3")  # history: not sent to a client that starts from now
    c = connect(srv)
    try:
        wait_started(c)
        c.poll(0.5)
        assert c.data_events() == [], "a client from now got history: %r" % c.data_events()
        iid, agent = new_incident("sev1")
        sql("SELECT gate_bridge.ack(%s, 'sse-tester')", (iid,))
        sql("SELECT gate_bridge.resolve(%s, 'sse-tester', 'it was the cache')", (iid,))
        rows = event_rows(iid)
        assert [r["event"] for r in rows] == ["created", "acked", "resolved"], rows
        wait_positions(c, rows)
        got = c.data_events()
        assert [int(f.id) for f in got] == [r["position"] for r in rows], (got, rows)
        statuses = [check_frame(f, r)["status"] for f, r in zip(got, rows)]
        assert statuses == ["open", "ack", "resolved"], statuses
        note = got[2].json().get("note")
        assert note in (None, "it was the cache"), got[2]
    finally:
        c.close()


def make_events(n):
    """N events (incidents created, every third one acked); their positions."""
    start = events_head()
    ids = []
    for i in range(n):
        if i % 3 == 2:
            sql("SELECT gate_bridge.ack(%s, 'sse-tester')", (ids[-1],))
        else:
            ids.append(new_incident("sev2")[0])
    pos = event_positions(start)
    assert len(pos) == n, pos
    return pos


@pytest.mark.parametrize("how", ["last-event-id", "after"])
def test_resume_gets_exactly_the_events_after(srv, how):
    pos = make_events(9)
    for k in (0, 4, 8):
        headers, path = None, "/events"
        if how == "last-event-id":
            headers = {"Last-Event-ID": str(pos[k])}
        else:
            path = "/events?after=%d" % pos[k]
        c = connect(srv, path, headers)
        try:
            want = event_positions(pos[k])
            if want:
                got = wait_positions(c, want)
            else:
                wait_started(c)
                c.poll(0.5)
                got = c.positions()
            assert got == want, "%s %s: got %s, want %s" % (how, pos[k], got, want)
            # and it goes on with what comes next, once
            more = make_events(2)
            got = wait_positions(c, want + more)
            c.poll(0.3)
            assert c.positions() == want + more, (c.positions(), want + more)
        finally:
            c.close()


def test_resume_from_a_position_that_is_not_an_event(srv):
    pos = make_events(3)
    # a position between two events' (positions are not dense after a
    # restart) or just below the first: exactly the events above it
    c = connect(srv, "/events?after=%d" % (pos[0] - 1))
    try:
        assert wait_positions(c, pos) == pos
    finally:
        c.close()


def test_resume_with_a_bad_position_is_400(srv):
    for path, headers in (("/events?after=abc", None), ("/events", {"Last-Event-ID": "x1"})):
        c = SSEClient(srv.host, srv.port, path, headers=headers)
        try:
            assert c.status == 400, (path, headers, c.status)
        finally:
            c.close()


def test_events_with_tokens(serve_auth):
    pos = make_events(2)
    for path, headers in (("/events?after=%d&token=%s" % (pos[0] - 1, VIEWER_TOKEN), None),
                          ("/events?after=%d" % (pos[0] - 1),
                           {"Authorization": "Bearer " + OPERATOR_TOKEN})):
        c = connect(serve_auth, path, headers)
        try:
            assert wait_positions(c, pos) == pos
        finally:
            c.close()


def test_keep_alive_is_a_comment(srv):
    """: keep-alive every 15 s of silence (slow: waits up to 20 s)."""
    c = connect(srv)
    try:
        wait_started(c)
        c.wait_for(lambda c: any(f.kind == "comment" and f.value.startswith("keep-alive")
                                 for f in c.frames), 20, "a ': keep-alive' comment")
    finally:
        c.close()


class Writer(threading.Thread):
    """Opens incidents, one transaction each, every PAUSE seconds, riding
    out the database's absence; counts what committed."""

    def __init__(self, pause=0.03):
        super().__init__(daemon=True)
        self.pause = pause
        self.stop_flag = threading.Event()
        self.committed = 0
        self.failed = 0

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = db_connect()
                new_incident("sev2", conn=conn)
                self.committed += 1
            except (psycopg.Error, OSError):
                self.failed += 1
                try:
                    conn and conn.close()
                except psycopg.Error:
                    pass
                conn = None
                time.sleep(0.1)
            time.sleep(self.pause)
        if conn is not None:
            conn.close()


def status_frames(c):
    return [f.json()["database"] for f in c.events("status")]


def test_exactly_once_across_a_database_restart(srv):
    start = events_head()
    c = connect(srv)
    late = None
    try:
        wait_started(c)
        w = Writer()
        w.start()
        try:
            time.sleep(1.5)
            before = w.committed
            pg_stop("fast")
            c.wait_for(lambda c: "down" in status_frames(c), 30, "a status frame 'down'")
            time.sleep(1)
            pg_start()
            c.wait_for(lambda c: status_frames(c)[-1:] == ["up"] and
                       status_frames(c).count("up") >= 2, 60, "a status frame 'up' again")
            after_restart = w.committed
            deadline = time.time() + 30
            while w.committed < after_restart + 20 and time.time() < deadline:
                time.sleep(0.1)
        finally:
            w.stop_flag.set()
            w.join(30)
        assert before > 10 and w.committed > after_restart, (before, after_restart, w.committed)
        want = event_positions(start)
        # a commit whose acknowledgement the shutdown cut off committed all
        # the same: the stream holds every acknowledged one, and at most
        # the writer's failed attempts more
        assert w.committed <= len(want) <= w.committed + w.failed, \
            (len(want), w.committed, w.failed)
        got = wait_positions(c, want, 60)
        c.poll(0.5)
        got = c.positions()
        assert len(got) == len(set(got)), "a repeated event: %s" % \
            sorted({p for p in got if got.count(p) > 1})
        assert got == want, "missing %s, extra %s" % (sorted(set(want) - set(got))[:20],
                                                     sorted(set(got) - set(want))[:20])
        assert status_frames(c)[0] == "up" and "down" in status_frames(c), status_frames(c)
        # a status frame never carries an id (Last-Event-ID must not move)
        assert all(f.id is None for f in c.events("status"))
        # the new history starts above the old one
        assert max(want) >= 1000000000, want[-3:]
        # a client resuming from before the restart gets the same, once
        late = connect(srv, headers={"Last-Event-ID": str(start)})
        assert wait_positions(late, want, 60) == want
    finally:
        c.close()
        if late:
            late.close()


def test_status_frame_data_matches_head_after_restart(srv):
    """A client that connects after the restart is told the new head."""
    start = events_head()
    new_incident("sev3")
    head = events_head()
    c = connect(srv)
    try:
        wait_started(c)
        d = c.events("status")[0].json()
        # the position the server has read: the new event's, or the one
        # before if it has not read it yet (then it sends it next)
        assert d["database"] == "up" and d["position"] in (start, head), (d, start, head)
        assert start > 1000000000, start
        new_incident("sev3")
        want = event_positions(d["position"])
        assert wait_positions(c, want) == want
    finally:
        c.close()


def test_data_is_one_json_line(srv):
    start = events_head()
    agent = 'serve.sse."quoted\\agent".x'
    iid, _ = new_incident("sev1", agent=agent)
    c = connect(srv, "/events?after=%d" % start)
    try:
        wait_positions(c, [1])
        f = c.data_events()[0]
        assert "\n" not in f.data
        assert json.loads(f.data)["agent"] == agent, f.data
    finally:
        c.close()


def test_sigterm_with_clients_connected_exits_0():
    from conftest import Serve
    s = Serve(name="termsse")
    clients = [connect(s) for _ in range(5)]
    try:
        for c in clients:
            wait_started(c)
        t0 = time.time()
        rc = s.stop()
        assert rc == 0, "exit %s on SIGTERM with 5 SSE clients; stderr: %r" % (rc, s.lines[-5:])
        assert time.time() - t0 < 10, "took %.1fs to stop" % (time.time() - t0)
        for c in clients:
            deadline = time.time() + 10
            while not c.closed and time.time() < deadline:
                c.poll(0.5)
            assert c.closed, "an SSE connection outlived the server"
    finally:
        for c in clients:
            c.close()


def test_a_client_moves_to_another_server_with_last_event_id(srv, serve_factory):
    """Two serve processes on one database: a client that read part of the
    stream from one and reconnects to the other with its Last-Event-ID gets
    exactly the events after it there, once."""
    other = serve_factory(name="sse-other")
    start = events_head()
    first = make_events(6)
    a = connect(srv, "/events?after=%d" % start)
    try:
        got_a = wait_positions(a, first)
        assert got_a == first, (got_a, first)
    finally:
        a.close()
    later = make_events(5)
    b = connect(other, headers={"Last-Event-ID": str(got_a[2])})
    try:
        want = first[3:] + later
        got = wait_positions(b, want)
        b.poll(0.3)
        assert b.positions() == want, (b.positions(), want)
    finally:
        b.close()
