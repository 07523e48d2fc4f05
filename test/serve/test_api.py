"""The HTTP API of gate-bridge serve: routes, filters, the lifecycle moves,
every status code of the contract, tokens and the command line's exits."""

import datetime
import json
import os
import re
import socket
import time

import pytest

from conftest import (OPERATOR2_TOKEN, OPERATOR_NAME, OPERATOR_TOKEN, RUN_TAG, SECRET_STRINGS,
                      VIEWER_TOKEN, WORK, WRONG_TOKEN, Serve, agent_name, events_head,
                      new_incident, pg_start, pg_stop, role_dsn, run_serve_exit, sql, sql1,
                      tokens_text, wait_until)

ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
INCIDENT_FIELDS = {"id", "kind", "key", "agent", "violation_type", "severity", "status",
                   "summary", "occurrences", "first_seen_at", "last_seen_at", "acked_at",
                   "acked_by", "resolved_at", "resolved_by", "snoozed_until", "silence_id",
                   "silenced", "flapping", "playbooks", "external_refs"}
TIME_FIELDS = ("first_seen_at", "last_seen_at", "acked_at", "resolved_at", "snoozed_until")

MISSING = object()


def describe(r):
    return "%s %s -> %s %s" % (r.request.method, r.request.url, r.status_code, r.text[:400])


def assert_json(r, status=200):
    assert r.status_code == status, describe(r)
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("application/json"), "Content-Type %r: %s" % (ct, describe(r))
    return r.json()


def assert_error(r, status, sqlstate=MISSING):
    body = assert_json(r, status)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), describe(r)
    err = body["error"]
    assert err.get("status") == status, "error.status: %s" % describe(r)
    assert isinstance(err.get("message"), str) and err["message"], describe(r)
    assert "sqlstate" in err, "error without sqlstate: %s" % describe(r)
    if sqlstate is not MISSING:
        assert err["sqlstate"] == sqlstate, "sqlstate: %s" % describe(r)
    return err


def incident_row(iid):
    rows = sql("SELECT id, kind, key, agent, severity, status, summary, occurrences, acked_by, "
               "resolved_by, resolution_note, snoozed_until, acked_at, resolved_at "
               "FROM gate_bridge.incidents WHERE id = %s", (iid,))
    assert rows, "no incident %s" % iid
    cols = ("id", "kind", "key", "agent", "severity", "status", "summary", "occurrences",
            "acked_by", "resolved_by", "resolution_note", "snoozed_until", "acked_at",
            "resolved_at")
    return dict(zip(cols, rows[0]))


def check_incident_shape(inc):
    missing = INCIDENT_FIELDS - set(inc)
    assert not missing, "INCIDENT lacks %s: %r" % (sorted(missing), inc)
    for f in TIME_FIELDS:
        assert inc[f] is None or ISO_RE.match(inc[f]), "%s: %r is not ISO 8601 with an offset" \
            % (f, inc[f])
    assert isinstance(inc["silenced"], bool) and isinstance(inc["flapping"], bool), inc
    assert isinstance(inc["playbooks"], list), inc
    assert isinstance(inc["external_refs"], dict), inc
    assert isinstance(inc["id"], int) and isinstance(inc["occurrences"], int), inc


def check_incident_against_sql(inc):
    row = incident_row(inc["id"])
    for k in ("kind", "key", "agent", "severity", "status", "summary", "occurrences",
              "acked_by", "resolved_by"):
        assert inc[k] == row[k], "%s of incident %s: API %r, SQL %r" % (k, inc["id"], inc[k],
                                                                       row[k])


# ---------------------------------------------------------------- static, session

STATIC = ["/", "/app.js", "/app.css", "/favicon.svg"]


def test_static_files_without_tokens(serve_open):
    types = {"/": "text/html", "/app.js": "javascript", "/app.css": "text/css",
             "/favicon.svg": "image/svg+xml"}
    for path in STATIC:
        r = serve_open.get(path)
        assert r.status_code == 200, describe(r)
        assert types[path] in r.headers.get("Content-Type", ""), (path, r.headers)
        assert "no-cache" in r.headers.get("Cache-Control", ""), (path, r.headers)
        assert len(r.content) > 0, path


def test_public_routes_need_no_token(serve_auth):
    for path in STATIC + ["/healthz"]:
        r = serve_auth.get(path)
        assert r.status_code == 200, describe(r)
    assert assert_json(serve_auth.get("/healthz")) == {"database": "up"}


def test_healthz(serve_open):
    assert assert_json(serve_open.get("/healthz")) == {"database": "up"}


def test_session_without_tokens(serve_open):
    body = assert_json(serve_open.get("/api/session"))
    assert body == {"role": "viewer", "read_only": True, "auth": False, "name": None,
                    "version": "1.2"}, body


def test_session_with_tokens(serve_auth):
    assert assert_json(serve_auth.get("/api/session", token=OPERATOR_TOKEN)) == {
        "role": "operator", "read_only": False, "auth": True, "name": OPERATOR_NAME,
        "version": "1.2"}
    assert assert_json(serve_auth.get("/api/session", token=OPERATOR2_TOKEN)) == {
        "role": "operator", "read_only": False, "auth": True, "name": None, "version": "1.2"}
    assert assert_json(serve_auth.get("/api/session", token=VIEWER_TOKEN)) == {
        "role": "viewer", "read_only": True, "auth": True, "name": "bob", "version": "1.2"}


# ---------------------------------------------------------------- reads

def test_counts_match_sql(serve_open):
    new_incident("sev1")
    new_incident("sev2")
    iid, _ = new_incident("sev3")
    sql("SELECT gate_bridge.ack(%s, 'tester')", (iid,))
    body = assert_json(serve_open.get("/api/counts"))
    row = sql("SELECT sev1, sev2, sev3, open, ack FROM gate_bridge.incident_counts")[0]
    assert set(body) == {"sev1", "sev2", "sev3", "open", "ack", "position"}, body
    assert [body[k] for k in ("sev1", "sev2", "sev3", "open", "ack")] == list(row), (body, row)
    assert body["position"] == events_head(), body


@pytest.fixture(scope="module")
def listed():
    """Five incidents of agents under one prefix: sev3 open, sev1 open,
    sev2 acked, sev1 acked, sev2 resolved (created in that order)."""
    prefix = "serve.list%s" % RUN_TAG
    made = {}
    made["sev3_open"], _ = new_incident("sev3", prefix + ".c")
    made["sev1_open"], _ = new_incident("sev1", prefix + ".a")
    made["sev2_ack"], _ = new_incident("sev2", prefix + ".b")
    made["sev1_ack"], _ = new_incident("sev1", prefix + ".d")
    made["sev2_res"], _ = new_incident("sev2", prefix + ".e")
    sql("SELECT gate_bridge.ack(%s, 'tester')", (made["sev2_ack"],))
    sql("SELECT gate_bridge.ack(%s, 'tester')", (made["sev1_ack"],))
    sql("SELECT gate_bridge.resolve(%s, 'tester', 'done')", (made["sev2_res"],))
    return prefix, made


def ids_of(body):
    assert set(body) == {"incidents"} and isinstance(body["incidents"], list), body
    return [i["id"] for i in body["incidents"]]


def test_incidents_default_is_unresolved_in_order(serve_open, listed):
    prefix, m = listed
    body = assert_json(serve_open.get("/api/incidents", params={"agent": prefix + ".*"}))
    for inc in body["incidents"]:
        check_incident_shape(inc)
        check_incident_against_sql(inc)
    # sev1 first, then by last_seen_at descending within a severity
    assert ids_of(body) == [m["sev1_ack"], m["sev1_open"], m["sev2_ack"], m["sev3_open"]], body


def test_incidents_filters(serve_open, listed):
    prefix, m = listed
    glob = prefix + ".*"

    def ids(**params):
        params.setdefault("agent", glob)
        return ids_of(assert_json(serve_open.get("/api/incidents", params=params)))

    assert ids(status="ack") == [m["sev1_ack"], m["sev2_ack"]]
    assert ids(status="open") == [m["sev1_open"], m["sev3_open"]]
    assert ids(status="resolved") == [m["sev2_res"]]
    assert ids(status="unresolved") == [m["sev1_ack"], m["sev1_open"], m["sev2_ack"],
                                        m["sev3_open"]]
    assert ids(status="open,resolved") == [m["sev1_open"], m["sev3_open"], m["sev2_res"]]
    assert ids(status="all") == [m["sev1_ack"], m["sev1_open"], m["sev2_ack"], m["sev3_open"],
                                 m["sev2_res"]]
    assert ids(severity="sev2") == [m["sev2_ack"]]
    assert ids(severity="sev2", status="all") == [m["sev2_ack"], m["sev2_res"]]
    assert ids(severity="sev1,sev3") == [m["sev1_ack"], m["sev1_open"], m["sev3_open"]]
    assert ids(agent=prefix + ".b", status="all") == [m["sev2_ack"]]
    assert ids(agent=prefix + ".zz") == []
    assert ids(limit="2") == [m["sev1_ack"], m["sev1_open"]]
    assert ids(limit="1000") == ids()
    # the default limit is 200
    allof = ids_of(assert_json(serve_open.get("/api/incidents", params={"status": "all"})))
    total = sql1("SELECT count(*) FROM gate_bridge.incidents")
    assert len(allof) == min(total, 200), (len(allof), total)


def test_incident_detail_and_timeline(serve_open, listed):
    _, m = listed
    iid = m["sev2_res"]
    body = assert_json(serve_open.get("/api/incidents/%d" % iid))
    assert {"incident", "timeline", "deliveries"} <= set(body), body
    inc = body["incident"]
    check_incident_shape(inc)
    check_incident_against_sql(inc)
    assert {"details", "resolution_note", "subject"} <= set(inc), inc
    assert isinstance(inc["details"], dict), inc
    assert inc["resolution_note"] == "done", inc
    assert inc["status"] == "resolved" and inc["resolved_by"] == "tester", inc
    assert isinstance(body["deliveries"], list), body
    want = sql("SELECT id, position, event, actor FROM gate_bridge.incident_events "
               "WHERE incident_id = %s ORDER BY position", (iid,))
    got = body["timeline"]
    assert [(e["id"], e["position"], e["event"], e["actor"]) for e in got] == \
        [tuple(r) for r in want], (got, want)
    assert [e["event"] for e in got] == ["created", "resolved"], got
    for e in got:
        assert {"id", "position", "event", "at", "actor", "detail", "silenced"} <= set(e), e
        assert isinstance(e["detail"], dict) and isinstance(e["silenced"], bool), e
        assert ISO_RE.match(e["at"]), e


# ---------------------------------------------------------------- moves and actors

def test_ack_actor_is_the_tokens_name(serve_auth):
    iid, _ = new_incident("sev2")
    body = assert_json(serve_auth.post("/api/incidents/%d/ack" % iid, {"actor": "mallory"},
                                       token=OPERATOR_TOKEN))
    check_incident_shape(body["incident"])
    assert body["incident"]["id"] == iid and body["incident"]["status"] == "ack", body
    assert body["incident"]["acked_by"] == OPERATOR_NAME, body
    row = incident_row(iid)
    assert row["status"] == "ack" and row["acked_by"] == OPERATOR_NAME, row


def test_ack_actor_from_body_then_default(serve_auth):
    iid, _ = new_incident("sev3")
    body = assert_json(serve_auth.post("/api/incidents/%d/ack" % iid, {"actor": "carol"},
                                       token=OPERATOR2_TOKEN))
    assert body["incident"]["acked_by"] == "carol", body
    assert incident_row(iid)["acked_by"] == "carol"
    iid, _ = new_incident("sev3")
    body = assert_json(serve_auth.post("/api/incidents/%d/ack" % iid, {}, token=OPERATOR2_TOKEN))
    assert body["incident"]["acked_by"] == "dashboard", body
    assert incident_row(iid)["acked_by"] == "dashboard"


def test_resolve_with_note(serve_auth):
    iid, _ = new_incident("sev1")
    body = assert_json(serve_auth.post("/api/incidents/%d/resolve" % iid,
                                       {"note": "rolled back the prompt"}, token=OPERATOR_TOKEN))
    assert body["incident"]["status"] == "resolved", body
    assert body["incident"]["resolved_by"] == OPERATOR_NAME, body
    assert body["incident"]["resolved_at"] is not None, body
    row = incident_row(iid)
    assert row["status"] == "resolved" and row["resolution_note"] == "rolled back the prompt", row
    # resolve without a body note
    iid, _ = new_incident("sev1")
    body = assert_json(serve_auth.post("/api/incidents/%d/resolve" % iid, {},
                                       token=OPERATOR2_TOKEN))
    assert body["incident"]["status"] == "resolved", body


def test_snooze(serve_auth):
    iid, _ = new_incident("sev2")
    body = assert_json(serve_auth.post("/api/incidents/%d/snooze" % iid,
                                       {"duration": "2 hours", "note": "deploy window"},
                                       token=OPERATOR_TOKEN))
    inc = body["incident"]
    assert inc["snoozed_until"] is not None, body
    until = datetime.datetime.fromisoformat(inc["snoozed_until"])
    left = until - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=1, minutes=55) < left < datetime.timedelta(hours=2, minutes=5),\
        inc
    row = incident_row(iid)
    assert row["snoozed_until"] is not None and row["status"] == "ack", row
    assert row["acked_by"] == OPERATOR_NAME, row


# ---------------------------------------------------------------- status codes

class Soft:
    """Collects every failed check of a test, so that one report names them all."""

    def __init__(self):
        self.problems = []

    def __call__(self, r, status, sqlstate=MISSING):
        try:
            assert_error(r, status, sqlstate)
        except AssertionError as e:
            self.problems.append(str(e).split("\n")[0])

    def done(self):
        assert not self.problems, "%d problems:\n%s" % (len(self.problems),
                                                         "\n".join(self.problems))


def test_400(serve_auth):
    iid, _ = new_incident("sev3")
    t = OPERATOR_TOKEN
    assert_error = Soft()
    for path in ("/api/incidents/abc", "/api/incidents/12x", "/api/incidents/-1x"):
        assert_error(serve_auth.get(path, token=t), 400)
    for params in ({"status": "bogus"}, {"status": "open,nope"}, {"severity": "sev4"},
                   {"severity": "critical"}, {"limit": "0"}, {"limit": "1001"},
                   {"limit": "ten"}):
        assert_error(serve_auth.get("/api/incidents", token=t, params=params), 400)
    assert_error(serve_auth.post("/api/incidents/abc/ack", {}, token=t), 400)
    assert_error(serve_auth.post("/api/incidents/%d/ack" % iid, data='{"actor":', token=t), 400)
    assert_error(serve_auth.post("/api/incidents/%d/resolve" % iid, data="not json", token=t),
                 400)
    assert_error(serve_auth.post("/api/incidents/%d/snooze" % iid, {}, token=t), 400)
    assert_error(serve_auth.post("/api/incidents/%d/snooze" % iid, {"note": "x"}, token=t), 400)
    assert_error(serve_auth.post("/api/incidents/%d/snooze" % iid,
                                 {"duration": "about a fortnight"}, token=t), 400)
    row = incident_row(iid)
    assert row["status"] == "open" and row["snoozed_until"] is None, row
    assert_error.done()


def test_401(serve_auth):
    for path in ("/api/session", "/api/counts", "/api/incidents", "/api/incidents/1",
                 "/metrics", "/events"):
        for token in (None, WRONG_TOKEN):
            r = serve_auth.get(path, token=token, stream=(path == "/events"))
            assert_error(r, 401)
            assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), describe(r)
            r.close()
    r = serve_auth.get("/events", params={"token": WRONG_TOKEN}, stream=True)
    assert_error(r, 401)
    r.close()
    # a token in the query string is for /events only
    assert_error(serve_auth.get("/api/counts", params={"token": OPERATOR_TOKEN}), 401)
    iid, _ = new_incident("sev3")
    assert_error(serve_auth.post("/api/incidents/%d/ack" % iid, {}), 401)
    assert_error(serve_auth.post("/api/incidents/%d/ack" % iid, {}, token=WRONG_TOKEN), 401)
    assert incident_row(iid)["status"] == "open"
    # a well-formed header with another scheme is no token either
    assert_error(serve_auth.get("/api/counts",
                                headers={"Authorization": "Basic " + OPERATOR_TOKEN}), 401)
    # /events accepts ?token=
    r = serve_auth.get("/events", params={"token": VIEWER_TOKEN}, stream=True, timeout=10)
    assert r.status_code == 200, describe(r)
    assert r.headers.get("Content-Type", "").startswith("text/event-stream"), r.headers
    r.close()


def test_403(serve_auth, serve_open):
    iid, _ = new_incident("sev1")
    for action, body in (("ack", {}), ("resolve", {}), ("snooze", {"duration": "1 hour"})):
        assert_error(serve_auth.post("/api/incidents/%d/%s" % (iid, action), body,
                                     token=VIEWER_TOKEN), 403)
        assert_error(serve_open.post("/api/incidents/%d/%s" % (iid, action), body), 403)
    row = incident_row(iid)
    assert row["status"] == "open" and row["acked_at"] is None, row
    assert sql1("SELECT count(*) FROM gate_bridge.incident_events WHERE incident_id = %s",
                (iid,)) == 1


def test_404(serve_auth, serve_open):
    t = OPERATOR_TOKEN
    assert_error = Soft()
    missing = sql1("SELECT coalesce(max(id), 0) + 1000000 FROM gate_bridge.incidents")
    assert_error(serve_auth.get("/api/incidents/%d" % missing, token=t), 404, "P0002")
    assert_error(serve_open.get("/api/incidents/%d" % missing), 404, "P0002")
    for action, body in (("ack", {}), ("resolve", {}), ("snooze", {"duration": "1 hour"})):
        assert_error(serve_auth.post("/api/incidents/%d/%s" % (missing, action), body, token=t),
                     404, "P0002")
    for path in ("/api/nothing", "/nothing", "/api/incidents/1/nothing", "/app.js.map"):
        assert_error(serve_auth.get(path, token=t), 404)
        assert_error(serve_open.get(path), 404)
    assert_error.done()


def test_405(serve_auth):
    t = OPERATOR_TOKEN
    iid, _ = new_incident("sev3")
    assert_error(serve_auth.post("/api/counts", {}, token=t), 405)
    assert_error(serve_auth.post("/api/incidents", {}, token=t), 405)
    assert_error(serve_auth.request("DELETE", "/api/incidents/%d" % iid, token=t), 405)
    assert_error(serve_auth.get("/api/incidents/%d/ack" % iid, token=t), 405)
    assert_error(serve_auth.request("PUT", "/api/incidents/%d/resolve" % iid, token=t,
                                    data="{}"), 405)
    assert incident_row(iid)["status"] == "open"


def test_409_ack_of_a_resolved_incident(serve_auth):
    iid, _ = new_incident("sev2")
    sql("SELECT gate_bridge.resolve(%s, 'tester', 'fixed')", (iid,))
    before = sql1("SELECT count(*) FROM gate_bridge.incident_events WHERE incident_id = %s",
                  (iid,))
    assert_error(serve_auth.post("/api/incidents/%d/ack" % iid, {}, token=OPERATOR_TOKEN), 409,
                 "55000")
    row = incident_row(iid)
    assert row["status"] == "resolved" and row["acked_at"] is None, row
    assert sql1("SELECT count(*) FROM gate_bridge.incident_events WHERE incident_id = %s",
                (iid,)) == before


def test_413_body_over_16_kib(serve_auth):
    iid, _ = new_incident("sev2")
    big = json.dumps({"note": "x" * (17 * 1024)})
    assert_error(serve_auth.post("/api/incidents/%d/resolve" % iid, data=big,
                                 token=OPERATOR_TOKEN), 413)
    assert incident_row(iid)["status"] == "open"
    # just under the limit is accepted (padded with JSON whitespace)
    ok = '{"note": "fits"' + " " * (15 * 1024) + "}"
    body = assert_json(serve_auth.post("/api/incidents/%d/resolve" % iid, data=ok,
                                       token=OPERATOR_TOKEN))
    assert body["incident"]["status"] == "resolved", body


def test_413_chunked_body(serve_auth):
    """A body over the limit without a Content-Length (chunked)."""
    iid, _ = new_incident("sev2")

    def gen():
        yield b'{"note": "'
        for _ in range(40):
            yield b"z" * 1024
        yield b'"}'

    assert_error(serve_auth.post("/api/incidents/%d/resolve" % iid, data=gen(),
                                 token=OPERATOR_TOKEN), 413)
    assert incident_row(iid)["status"] == "open"


def test_503_while_the_database_is_away(serve_auth):
    t = OPERATOR_TOKEN
    iid, _ = new_incident("sev1")
    assert_json(serve_auth.get("/api/counts", token=t))
    pg_stop("fast")
    try:
        r = wait_until(lambda: (lambda r: [r] if r.status_code == 503 else None)(
            serve_auth.get("/healthz", timeout=15)), 30, "/healthz to answer 503")[0]
        assert assert_json(r, 503) == {"database": "down"}, describe(r)
        assert_error(serve_auth.get("/api/counts", token=t), 503)
        assert_error(serve_auth.get("/api/incidents", token=t), 503)
        assert_error(serve_auth.get("/api/incidents/%d" % iid, token=t), 503)
        assert_error(serve_auth.post("/api/incidents/%d/ack" % iid, {}, token=t), 503)
        # the token still works while the database is away, and bad ones are still refused
        assert_error(serve_auth.get("/api/counts", token=WRONG_TOKEN), 401)
    finally:
        pg_start()
    serve_auth.wait_db_up(60)
    # the pool comes back: reads and writes work again
    wait_until(lambda: serve_auth.get("/api/counts", token=t).status_code == 200, 60,
               "/api/counts to answer 200 again")
    body = assert_json(serve_auth.post("/api/incidents/%d/ack" % iid, {}, token=t))
    assert body["incident"]["status"] == "ack", body


# ---------------------------------------------------------------- the command line

def test_non_loopback_listen_without_tokens_exits_64():
    for listen in ("0.0.0.0:0", "[::]:0"):
        rc, err = run_serve_exit(["-d", role_dsn("serve_oncall"), "--listen", listen,
                                  "--tick", "0"])
        assert rc == 64, "--listen %s without --tokens: exit %s, stderr %r" % (listen, rc, err)
    # with tokens it binds (exit 0 on SIGTERM)
    path = os.path.join(WORK, "any.tokens")
    with open(path, "w") as f:
        f.write(tokens_text())
    s = Serve(name="anyaddr", listen="0.0.0.0:0", args=["--tokens", path])
    try:
        assert s.port and s.port > 0
        with socket.create_connection(("127.0.0.1", s.port), timeout=5):
            pass
    finally:
        assert s.stop() == 0, "\n".join(s.lines)


def test_bad_tokens_line_is_a_usage_error_naming_the_line():
    secret = "badline-" + os.urandom(8).hex()
    SECRET_STRINGS.append(secret)
    path = os.path.join(WORK, "bad.tokens")
    with open(path, "w") as f:
        f.write("# comment\n\n%s operator alice\n%s superuser\n" % (OPERATOR_TOKEN, secret))
    rc, err = run_serve_exit(["-d", role_dsn("serve_oncall"), "--listen", "127.0.0.1:0",
                              "--tokens", path, "--tick", "0"])
    assert rc == 64, (rc, err)
    assert re.search(r"\b4\b", err), "the message does not name line 4: %r" % err
    assert secret not in err and OPERATOR_TOKEN not in err, "a token is echoed: %r" % err
    rc, err = run_serve_exit(["-d", role_dsn("serve_oncall"), "--listen", "127.0.0.1:0",
                              "--tokens", os.path.join(WORK, "no-such.tokens")])
    assert rc != 0, (rc, err)


def test_unreachable_database_exits_3():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, err = run_serve_exit(["-d", "host=127.0.0.1 port=%d dbname=postgres user=x "
                                    "connect_timeout=5" % port,
                              "--listen", "127.0.0.1:0"], timeout=30)
    assert rc == 3, (rc, err)


def test_usage_errors_exit_64():
    for args in (["--listen", "127.0.0.1:notaport"], ["--tick", "-1"], ["--no-such-option"]):
        rc, err = run_serve_exit(["-d", role_dsn("serve_oncall")] + args)
        assert rc == 64, (args, rc, err)


def test_sigterm_exits_0(serve_factory):
    s = serve_factory(name="term")
    assert s.get("/healthz").status_code == 200
    assert s.port != 0
    assert s.stop() == 0, "\n".join(s.lines)


def test_connections_set_timezone_and_application_name(serve_factory):
    s = serve_factory(name="appname")
    s.get("/api/counts")
    rows = wait_until(lambda: sql("SELECT usename FROM pg_stat_activity WHERE "
                                  "application_name = 'gate-bridge serve' AND usename = "
                                  "'serve_oncall'"), 10,
                      "a connection with application_name 'gate-bridge serve'")
    assert rows
    body = assert_json(s.get("/api/incidents", params={"status": "all", "limit": "5"}))
    for inc in body["incidents"]:
        assert inc["first_seen_at"].endswith("+00:00"), inc


def test_no_503_once_the_database_is_back(serve_factory):
    """After a restart of the database, with the database up, API requests
    are answered: a pooled connection the restart broke is replaced, not
    reported as "database away"."""
    s = serve_factory(name="poolback")
    for _ in range(8):
        assert s.get("/api/counts").status_code == 200
    pg_stop("fast")
    pg_start()  # returns once a new connection is accepted
    codes = []
    for path in ("/api/counts", "/api/incidents", "/api/counts", "/api/session",
                 "/api/incidents", "/api/counts", "/api/incidents", "/api/counts"):
        r = s.get(path)
        codes.append((path, r.status_code, r.text[:120] if r.status_code != 200 else ""))
    assert all(c == 200 for _, c, _ in codes), \
        "requests right after the database came back: %r" % codes


def test_tick_without_the_privilege_is_logged_once_and_stops(serve_factory):
    """serve_oncall may not execute gate_bridge.tick(): one log line, and
    the server goes on serving."""
    s = Serve(name="tick", args=["--tick", "1"])
    try:
        time.sleep(4.5)
        assert s.get("/api/counts").status_code == 200
        assert s.get("/healthz").status_code == 200
    finally:
        assert s.stop() == 0
    tick_lines = [l for l in s.lines if "tick" in l.lower() and "listening on" not in l]
    assert len(tick_lines) == 1, "lines about tick(): %r" % tick_lines
