"""gate-bridge deliver: what reaches each destination, and how often."""

import collections
import hashlib
import hmac
import json
import os
import signal
import time

import jsonschema

from conftest import (HERE, MAX_ATTEMPTS_GUC, add_destination, db_connect, pg_ctl, role_dsn,
                      deliveries, new_incident, run_once, sql, sql1, unique, wait_until)

with open(os.path.join(HERE, "pagerduty-events-v2.schema.json")) as f:
    PD_SCHEMA = json.load(f)


def group(prefix):
    """A prefix of agent names only this test uses, and its pattern."""
    p = unique("dlv.")
    return p, p + ".*"


def event_ids(agent_prefix, rolled_back_ok=False):
    return {r[0] for r in sql("SELECT e.id FROM gate_bridge.incident_events e"
                              " JOIN gate_bridge.incidents i ON i.id = e.incident_id"
                              " WHERE i.agent LIKE %s", (agent_prefix + ".%",))}


def webhook_event(req):
    return json.loads(req.body)["event"]


def three_destinations(receiver, pattern, mode="ok", pd_mode="accept", secret=None):
    names = {k: unique("d" + k[0]) for k in ("webhook", "slack", "pagerduty")}
    add_destination(names["webhook"], "webhook", receiver.url(mode, names["webhook"]),
                    secret=secret or ("whsec-" + unique("")), agent_pattern=pattern)
    add_destination(names["slack"], "slack",
                    receiver.url(mode, names["slack"]).replace(names["slack"], "T0/B0/" + names["slack"]),
                    agent_pattern=pattern)
    add_destination(names["pagerduty"], "pagerduty", receiver.url(pd_mode, names["pagerduty"]),
                    secret="pdkey-" + unique(""), agent_pattern=pattern)
    return names


def test_committed_events_reach_every_destination(receiver):
    prefix, pattern = group("commit")
    names = three_destinations(receiver, pattern)
    committed = [new_incident("%s.a%d" % (prefix, i)) for i in range(5)]
    # a rolled-back transaction: its event, and so its deliveries, never were
    with db_connect() as c:
        c.autocommit = False
        new_incident(prefix + ".rolledback", conn=c)
        assert c.execute("SELECT count(*) FROM gate_bridge.deliveries d JOIN gate_bridge.incidents i"
                         " ON i.id = d.incident_id WHERE i.agent = %s",
                         (prefix + ".rolledback",)).fetchone()[0] == 3   # written, then rolled back
        c.rollback()
    sql("SELECT gate_bridge.resolve(%s)", (committed[0],))
    expected = event_ids(prefix)
    assert len(expected) == 6
    run_once()
    got = collections.Counter(webhook_event(r)["id"] for r in receiver.received(names["webhook"]))
    assert set(got) == expected
    assert all(n == 1 for n in got.values()), got
    assert len(receiver.received(names["slack"])) == 6
    assert len(receiver.received(names["pagerduty"])) == 6
    for r in receiver.received(names["webhook"]):
        assert json.loads(r.body)["incident"]["agent"] != prefix + ".rolledback"
        assert r.header("Gate-Bridge-Event-Id") == str(webhook_event(r)["id"])
        assert r.header("Content-Type") == "application/json"
        assert r.header("User-Agent").startswith("gate-bridge/")
    for name in names.values():
        assert {d[4] for d in deliveries(name)} == {"delivered"}


def test_webhook_signature_verifies(receiver):
    prefix, pattern = group("sig")
    name = unique("sig")
    secret = "s3cr3t-" + unique("")
    add_destination(name, "webhook", receiver.url("ok", name), secret=secret, agent_pattern=pattern)
    nosig = unique("nosig")
    add_destination(nosig, "webhook", receiver.url("ok", nosig), agent_pattern=pattern)
    new_incident(prefix + ".a")
    run_once()
    (req,) = receiver.received(name)
    sig = req.header("Gate-Bridge-Signature")
    assert sig is not None and sig.startswith("sha256=")
    want = hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(sig[len("sha256="):], want)
    (req2,) = receiver.received(nosig)
    assert req2.header("Gate-Bridge-Signature") is None
    assert req2.header("Gate-Bridge-Event-Id") is not None


def test_pagerduty_and_slack_bodies(receiver):
    prefix, pattern = group("bodies")
    names = three_destinations(receiver, pattern)
    i1 = new_incident(prefix + ".a1", sev="sev1")
    new_incident(prefix + ".a2", sev="sev2")
    new_incident(prefix + ".a3", sev="sev3")
    sql("SELECT gate_bridge.resolve(%s)", (i1,))
    run_once(["--dashboard-url", "https://dash.example/gb"])
    pd = [json.loads(r.body) for r in receiver.received(names["pagerduty"])]
    assert len(pd) == 4
    for body in pd:
        jsonschema.validate(body, PD_SCHEMA)
    assert sorted(b["event_action"] for b in pd) == ["resolve", "trigger", "trigger", "trigger"]
    assert {b["payload"]["severity"] for b in pd if "payload" in b} >= {"critical", "error", "warning"}
    for r in receiver.received(names["pagerduty"]):
        assert r.header("Gate-Bridge-Signature") is None   # the routing key is in the body
    slack = [json.loads(r.body) for r in receiver.received(names["slack"])]
    assert len(slack) == 4
    for body in slack:
        assert isinstance(body, dict)
        assert "text" in body or "blocks" in body
        if "text" in body:
            assert isinstance(body["text"], str) and body["text"]
        if "blocks" in body:
            assert isinstance(body["blocks"], list) and body["blocks"]
            for b in body["blocks"]:
                assert isinstance(b, dict) and isinstance(b.get("type"), str)
    assert any("https://dash.example/gb/?incident=%d" % i1 in json.dumps(b) for b in slack)


def test_order_per_incident(receiver):
    prefix, pattern = group("order")
    names = three_destinations(receiver, pattern)
    ids = [new_incident("%s.a%d" % (prefix, i)) for i in range(20)]
    for i in ids:
        sql("SELECT gate_bridge.resolve(%s)", (i,))
    run_once(["--workers", "4"])
    seen = collections.defaultdict(list)
    for r in receiver.received(names["webhook"]):
        b = json.loads(r.body)
        seen[b["incident"]["id"]].append(b["event"]["event"])
    assert set(seen) == set(ids)
    for i in ids:
        assert seen[i] == ["created", "resolved"], (i, seen[i])
    keys = {}
    for r in receiver.received(names["pagerduty"]):
        b = json.loads(r.body)
        keys.setdefault(b["dedup_key"], []).append(b["event_action"])
    assert len(keys) == 20 and all(v == ["trigger", "resolve"] for v in keys.values()), keys
    texts = collections.defaultdict(list)
    for r in receiver.received(names["slack"]):
        texts[r.route].append(json.loads(r.body)["text"])
    (msgs,) = texts.values()
    assert len(msgs) == 40


def test_three_workers_never_deliver_a_row_twice(receiver, workers):
    prefix, pattern = group("three")
    name = unique("three")
    add_destination(name, "webhook", receiver.url("slow", name, "ms=20"), agent_pattern=pattern)
    ws = [workers(["--workers", "1"]) for _ in range(2)] + [workers(["--workers", "3"])]
    ids = [new_incident("%s.a%d" % (prefix, i)) for i in range(60)]
    expected = event_ids(prefix)
    wait_until(lambda: len(receiver.received(name)) >= len(expected), 60, "60 deliveries")
    time.sleep(1)
    got = collections.Counter(r.header("Gate-Bridge-Event-Id") for r in receiver.received(name))
    assert set(got) == {str(e) for e in expected}
    assert max(got.values()) == 1, [k for k, v in got.items() if v > 1]
    workers_seen = {r[0] for r in sql("SELECT DISTINCT split_part(claimed_by, ':', 2)"
                                      " FROM gate_bridge.deliveries WHERE destination = %s", (name,))}
    assert len(workers_seen) >= 2, "one process did all the work"
    for w in ws:
        assert w.stop() == 0
    assert len(ids) == 60


def test_kill9_mid_flight_then_restart(receiver, workers):
    prefix, pattern = group("kill")
    name = unique("kill")
    add_destination(name, "webhook", receiver.url("slow", name, "ms=1500"), agent_pattern=pattern)
    for i in range(4):
        new_incident("%s.a%d" % (prefix, i))
    expected = {str(e) for e in event_ids(prefix)}
    w = workers()
    wait_until(lambda: len(receiver.received(name)) >= 2, 30, "the second request in flight")
    in_flight = {r.header("Gate-Bridge-Event-Id") for r in receiver.received(name) if not r.done}
    w.stop(signal.SIGKILL)
    assert len(in_flight) == 1
    # the leases of what it had claimed run out (30 s): shortened here
    sql("UPDATE gate_bridge.deliveries SET lease_until = now() - interval '1 s'"
        " WHERE destination = %s AND status = 'sending'", (name,))
    run_once()
    got = collections.Counter(r.header("Gate-Bridge-Event-Id") for r in receiver.received(name))
    assert set(got) == expected
    dups = {k for k, v in got.items() if v > 1}
    assert dups <= in_flight, (dups, in_flight)
    assert {d[4] for d in deliveries(name)} == {"delivered"}


def test_sigterm_finishes_the_request_in_flight(receiver, workers):
    prefix, pattern = group("term")
    name = unique("term")
    add_destination(name, "webhook", receiver.url("slow", name, "ms=1500"), agent_pattern=pattern)
    for i in range(5):
        new_incident("%s.a%d" % (prefix, i))
    w = workers()
    wait_until(lambda: len(receiver.received(name)) >= 1, 30, "a request in flight")
    assert w.stop(signal.SIGTERM) == 0
    rows = deliveries(name)
    status = collections.Counter(d[4] for d in rows)
    # the one in flight was completed; the others given back, not left leased
    assert status["delivered"] >= 1 and status["sending"] == 0, rows
    assert all(d[5] == 0 for d in rows if d[4] == "pending"), rows
    assert len(receiver.received(name)) == status["delivered"]


def test_retry_outcomes(receiver):
    prefix, pattern = group("retry")
    modes = {"e500": ("e500", ""), "e503": ("e503", ""), "r429": ("r429", "after=120"),
             "r429d": ("r429", "after=300&date=1"), "hang": ("hang", "s=5"),
             "reset": ("reset", ""), "e400": ("e400", "")}
    names = {}
    for m, (mode, q) in modes.items():
        names[m] = unique(m)
        add_destination(names[m], "webhook", receiver.url(mode, names[m], q), agent_pattern=pattern)
    new_incident(prefix + ".a")
    started = time.time()
    run_once(["--timeout", "1", "--workers", "4"])
    elapsed = time.time() - started     # the waits count from before the run
    d = {m: deliveries(n)[0] for m, n in names.items()}
    assert d["e500"][4] == "pending" and d["e500"][6] == 500
    assert d["e503"][4] == "pending" and d["e503"][6] == 503
    assert d["r429"][4] == "pending" and d["r429"][6] == 429
    assert d["r429"][8].total_seconds() + elapsed > 110, d["r429"]
    assert d["r429d"][8].total_seconds() + elapsed > 280, d["r429d"]
    assert d["hang"][4] == "pending" and d["hang"][6] is None and "timed out" in d["hang"][7].lower(), d["hang"]
    assert d["reset"][4] == "pending" and d["reset"][6] is None and d["reset"][7], d["reset"]
    assert d["e400"][4] == "dead" and d["e400"][6] == 400
    for m in names:
        assert names[m] not in (d[m][7] or "")


def test_unreachable_destination_goes_dead_and_opens_its_incident(receiver):
    prefix, pattern = group("dead")
    name = unique("dead")
    # nothing listens on port 9 (discard) of loopback here
    add_destination(name, "webhook", "http://127.0.0.1:9/" + name, agent_pattern=pattern)
    new_incident(prefix + ".a")
    env = {"PGOPTIONS": "-c %s=3" % MAX_ATTEMPTS_GUC}
    for attempt in range(3):
        run_once(env=env)
        sql("UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE destination = %s"
            " AND status = 'pending'", (name,))
    (row,) = deliveries(name)
    assert row[4] == "dead" and row[5] == 3 and row[6] is None, row
    inc = sql("SELECT kind, severity, status FROM gate_bridge.incidents WHERE key LIKE %s",
              ("%DELIVERY_" + name + "%",))
    assert inc and inc[0][0] == "delivery" and inc[0][1] == "sev2", inc


def test_database_restart_is_ridden_out(receiver, workers):
    prefix, pattern = group("restart")
    name = unique("restart")
    add_destination(name, "webhook", receiver.url("ok", name), agent_pattern=pattern)
    new_incident(prefix + ".a0")
    w = workers(["--workers", "2"])
    wait_until(lambda: len(receiver.received(name)) == 1, 30, "the first delivery")
    pg_ctl("stop", "fast")
    time.sleep(1.5)
    pg_ctl("start")
    wait_until(lambda: sql1("SELECT 1"), 30, "the database")
    for i in range(1, 4):
        new_incident("%s.a%d" % (prefix, i))
    wait_until(lambda: len(receiver.received(name)) >= 4, 60, "the deliveries after the restart")
    assert w.proc.poll() is None, w.text()
    assert w.stop() == 0
    text = w.text()
    assert "reconnecting with backoff (0.25 s doubling to 10 s)" in text, text
    assert "the database is back" in text, text
    got = collections.Counter(r.header("Gate-Bridge-Event-Id") for r in receiver.received(name))
    assert set(got) == {str(e) for e in event_ids(prefix)} and max(got.values()) == 1


def test_a_delivery_role_with_the_grants_only(receiver, workers):
    """The worker's role as the README grants it: no tick() (42501, said once)."""
    role = unique("dlvrole")
    sql("CREATE ROLE %s LOGIN" % role)
    sql("GRANT USAGE ON SCHEMA gate_bridge TO %s" % role)
    sql("GRANT EXECUTE ON FUNCTION gate_bridge.claim_deliveries(text, integer, interval, text),"
        " gate_bridge.complete_delivery(bigint, integer, text, interval, bytea),"
        " gate_bridge.release_deliveries(text) TO %s" % role)
    sql("REVOKE EXECUTE ON FUNCTION gate_bridge.tick() FROM PUBLIC")
    prefix, pattern = group("role")
    name = unique("role")
    add_destination(name, "webhook", receiver.url("ok", name), secret="k-" + unique(""),
                    agent_pattern=pattern)
    w = workers(dsn=role_dsn(role), tick="1")
    for i in range(3):
        new_incident("%s.a%d" % (prefix, i))
    wait_until(lambda: len(receiver.received(name)) >= 3, 30, "three deliveries")
    time.sleep(2.5)
    assert w.stop() == 0
    text = w.text()
    assert text.count("gate_bridge.tick() is not allowed for this role") == 1, text
    assert {d[4] for d in deliveries(name)} == {"delivered"}


def test_sigterm_during_a_hanging_request(receiver, workers):
    prefix, pattern = group("hangterm")
    name = unique("hangterm")
    add_destination(name, "webhook", receiver.url("hang", name, "s=30"), agent_pattern=pattern)
    new_incident(prefix + ".a")
    w = workers(["--timeout", "2"])
    wait_until(lambda: len(receiver.received(name)) >= 1, 30, "the request in flight")
    t0 = time.time()
    assert w.stop() == 0
    assert time.time() - t0 < 5
    (row,) = deliveries(name)
    assert row[4] == "pending" and row[6] is None and "timed out" in row[7].lower(), row


def test_usage_errors():
    import subprocess
    from conftest import BIN
    for args in (["--workers", "0"], ["--workers", "65"], ["--tick", "-1"],
                 ["--timeout", "0"], ["--dashboard-url", "ftp://x"], ["--bogus"]):
        p = subprocess.run([BIN, "deliver"] + args, capture_output=True, text=True, timeout=10)
        assert p.returncode == 64, (args, p.stderr)


def test_a_lock_timeout_on_completion_is_retried(receiver, workers):
    """55P03 (and 40001, 40P01, 57014, sorted the same way) on
    complete_delivery(): the same statement again, with backoff."""
    prefix, pattern = group("lock")
    name = unique("lock")
    add_destination(name, "webhook", receiver.url("slow", name, "ms=700"), agent_pattern=pattern)
    new_incident(prefix + ".a")
    w = workers(env={"PGOPTIONS": "-c lock_timeout=100ms"})
    wait_until(lambda: len(receiver.received(name)) >= 1, 30, "the request in flight")
    with db_connect() as c:
        c.autocommit = False
        c.execute("SELECT 1 FROM gate_bridge.deliveries WHERE destination = %s FOR UPDATE", (name,))
        time.sleep(1.5)   # the request ends, its completion waits and times out
        c.rollback()
    wait_until(lambda: deliveries(name)[0][4] == "delivered", 30, "the delivery recorded")
    assert w.stop() == 0
    text = w.text()
    assert "lock_not_available" in text or "55P03" in text, text
    assert "retrying with backoff (0.25 s doubling to 10 s)" in text, text
    assert len(receiver.received(name)) == 1


def test_a_playbook_sent_to_a_webhook_carries_the_incident_and_the_playbook(receiver):
    """run_playbook() for a playbook whose action is a webhook: the body is
    the incident's whole row (details included), as a function action gets
    it, with the playbook; its delivery is the outcome on the timeline."""
    prefix, pattern = group("playbook")
    name = unique("dpb")
    add_destination(name, "webhook", receiver.url("ok", name), agent_pattern=pattern,
                    events="{resolved}")
    playbook = unique("pb")
    sql("INSERT INTO gate_bridge.playbooks (name, title, runbook_url, action) VALUES (%s, %s, %s, %s)",
        (playbook, "Restart the worker", "https://runbooks.example/restart-worker", name))
    iid = new_incident(prefix + ".a", sev="sev2")
    assert sql1("SELECT gate_bridge.run_playbook(%s, %s, 'alice')", (iid, playbook)) == "queued"
    run_once()
    (req,) = receiver.received(name)
    body = json.loads(req.body)
    assert body["event"]["event"] == "playbook_started"
    assert body["event"]["detail"]["playbook"] == playbook and body["event"]["actor"] == "alice"
    assert body["playbook"] == {"name": playbook, "title": "Restart the worker", "risk": "high",
                                "runbook_url": "https://runbooks.example/restart-worker"}
    assert body["incident"]["id"] == iid
    details = sql1("SELECT details FROM gate_bridge.incidents WHERE id = %s", (iid,))
    assert body["incident"]["details"] == details and "budget" in details, body["incident"]
    assert set(body["incident"]) == set(sql1("SELECT to_jsonb(i) FROM gate_bridge.incidents i"
                                             " WHERE id = %s", (iid,)))
    assert req.header("Gate-Bridge-Event-Id") == str(body["event"]["id"])
    assert sql1("SELECT detail ->> 'http_status' FROM gate_bridge.incident_events"
                " WHERE incident_id = %s AND event = 'playbook_succeeded'", (iid,)) == "200"
    assert [d[3:5] for d in deliveries(name)] == [("playbook_started", "delivered")]
