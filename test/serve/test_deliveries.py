"""Delivery in serve: GET /api/incidents/{id}'s "deliveries" (from the view
gate_bridge.delivery_status, never a URL or a secret; null for a role that
may not read that view) and the /metrics families gate_bridge_deliveries
and gate_bridge_delivery_oldest_pending_seconds, against SQL.  Each test
makes its own destination (as the superuser) and drops it at the end."""

import datetime
import secrets

import pytest

from conftest import RUN_TAG, SUPER_DSN, Serve, agent_name, db_connect, new_incident, sql, sql1

STATUSES = ("held", "pending", "sending", "delivered", "dead", "skipped")
DELIVERY_KEYS = {"id", "destination", "kind", "event", "status", "attempts", "next_attempt_at",
                 "last_status", "last_error", "created_at", "delivered_at", "request"}
NO_DELIVERY_ROLE = "serve_nodelivery"


@pytest.fixture(scope="module")
def srv():
    s = Serve(name="deliveries")
    yield s
    s.stop()


@pytest.fixture
def destination():
    """A webhook with a secret for this test's agents (serve.dlv.*), and
    its URL and secret (which no answer may show)."""
    name = "serve_dlv_%s_%s" % (RUN_TAG, secrets.token_hex(3))
    url = "https://hook-%s.test/in" % secrets.token_hex(4)
    secret = "dlv-secret-" + secrets.token_hex(8)
    sql("INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern, events) "
        "VALUES (%s, 'webhook', %s, %s, 'serve.dlv.*', "
        "'{created,acked,escalated,reopened,snooze_expired,silence_ended,resolved,auto_resolved}')",
        (name, url, secret), dsn=SUPER_DSN)
    yield name, url, secret
    sql("DELETE FROM gate_bridge.destinations WHERE name = %s", (name,), dsn=SUPER_DSN)


@pytest.fixture(scope="module")
def no_delivery_role():
    """A reader of incidents and events without any grant of delivery."""
    sql("""DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN
               CREATE ROLE %s LOGIN;
             END IF;
           END $$""" % (NO_DELIVERY_ROLE, NO_DELIVERY_ROLE))
    sql("GRANT USAGE ON SCHEMA gate_bridge TO %s" % NO_DELIVERY_ROLE)
    sql("GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events, "
        "gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats, "
        "gate_bridge.stream_status TO %s" % NO_DELIVERY_ROLE)
    sql("GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer), "
        "gate_bridge.events_head(), gate_bridge.events_resume_point(bigint) TO %s"
        % NO_DELIVERY_ROLE)
    assert not sql1("SELECT has_table_privilege(%s, 'gate_bridge.delivery_status', 'SELECT')",
                    (NO_DELIVERY_ROLE,))
    return NO_DELIVERY_ROLE


def ts(text):
    return datetime.datetime.fromisoformat(text) if text is not None else None


def deliveries_in_sql(iid):
    with db_connect() as c:
        cur = c.execute(
            "SELECT id, destination, kind, event, status, attempts, next_attempt_at, "
            "last_status, last_error, created_at, delivered_at, request "
            "FROM gate_bridge.delivery_status WHERE incident_id = %s ORDER BY id", (iid,))
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def same_as_sql(got, want):
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert set(g) == DELIVERY_KEYS, g
        for k in ("id", "destination", "kind", "event", "status", "attempts", "last_status",
                  "last_error", "request"):
            assert g[k] == w[k], (k, g, w)
        for k in ("next_attempt_at", "created_at", "delivered_at"):
            assert ts(g[k]) == w[k], (k, g, w)


def test_an_incident_shows_its_pending_delivery(srv, destination):
    name, url, secret = destination
    iid, _ = new_incident("sev2", agent=agent_name("dlv"))
    r = srv.get("/api/incidents/%d" % iid)
    assert r.status_code == 200, r.text
    got = r.json()["deliveries"]
    assert isinstance(got, list) and len(got) == 1, got
    d = got[0]
    assert d["destination"] == name and d["kind"] == "webhook", d
    assert d["event"] == "created" and d["status"] == "pending" and d["attempts"] == 0, d
    assert d["last_status"] is None and d["last_error"] is None and d["delivered_at"] is None, d
    same_as_sql(got, deliveries_in_sql(iid))
    assert url not in r.text and secret not in r.text, r.text


def test_deliveries_in_id_order_as_a_worker_leaves_them(srv, destination):
    name, url, secret = destination
    iid, _ = new_incident("sev1", agent=agent_name("dlv"))
    sql("UPDATE gate_bridge.deliveries SET status = 'delivered', attempts = 2, last_status = 200, "
        "last_error = 'first try: timeout', delivered_at = now() "
        "WHERE incident_id = %s AND destination = %s", (iid, name))
    sql("SELECT gate_bridge.ack(%s, 'dlv')", (iid,))
    sql("SELECT gate_bridge.resolve(%s, 'dlv', 'done')", (iid,))
    sql("UPDATE gate_bridge.deliveries SET status = 'dead', attempts = 1, last_status = 410, "
        "last_error = 'gone' WHERE incident_id = %s AND event = 'acked'", (iid,))
    r = srv.get("/api/incidents/%d" % iid)
    assert r.status_code == 200, r.text
    got = r.json()["deliveries"]
    assert [d["event"] for d in got] == ["created", "acked", "resolved"], got
    assert [d["status"] for d in got] == ["delivered", "dead", "pending"], got
    assert [d["id"] for d in got] == sorted(d["id"] for d in got), got
    same_as_sql(got, deliveries_in_sql(iid))
    assert url not in r.text and secret not in r.text, r.text


def test_an_incident_without_deliveries_has_an_empty_list(srv):
    iid, _ = new_incident("sev3")
    r = srv.get("/api/incidents/%d" % iid)
    assert r.status_code == 200, r.text
    assert r.json()["deliveries"] == [], r.text


def test_a_role_without_the_delivery_grant_gets_null(serve_factory, no_delivery_role,
                                                     destination):
    s = serve_factory(name="nodelivery", role=no_delivery_role)
    iid, _ = new_incident("sev2", agent=agent_name("dlv"))
    assert len(deliveries_in_sql(iid)) == 1
    r = s.get("/api/incidents/%d" % iid)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deliveries"] is None, body
    assert body["incident"]["id"] == iid and [e["event"] for e in body["timeline"]] == ["created"]
    assert s.get("/api/incidents/987654321").status_code == 404
    # and its metrics have no delivery families, the others as before
    m = s.metrics()
    names = m.names()
    assert "gate_bridge_unresolved_incidents" in names and "gate_bridge_database_up" in names
    assert m.value("gate_bridge_database_up") == 1
    assert not any(n.startswith("gate_bridge_deliver") for n in names), names
    assert not [line for line in s.lines if "failed" in line], s.lines


def test_delivery_metrics_match_sql(srv, destination):
    name, _, _ = destination
    ids = [new_incident("sev2", agent=agent_name("dlv"))[0] for _ in range(5)]
    rows = sql("SELECT id FROM gate_bridge.deliveries WHERE incident_id = ANY(%s) ORDER BY id",
               (ids,))
    assert len(rows) == 5
    d = [r[0] for r in rows]
    sql("UPDATE gate_bridge.deliveries SET status = 'dead', attempts = 10 WHERE id = %s", (d[0],))
    sql("UPDATE gate_bridge.deliveries SET status = 'delivered', delivered_at = now() "
        "WHERE id = %s", (d[1],))
    # the oldest due: written 2 minutes ago, due a second ago
    sql("UPDATE gate_bridge.deliveries SET created_at = now() - interval '120 s', "
        "next_attempt_at = now() - interval '1 s' WHERE id = %s", (d[2],))
    # older, but not due yet (a retry later): not counted in the age
    sql("UPDATE gate_bridge.deliveries SET created_at = now() - interval '1 hour', "
        "next_attempt_at = now() + interval '1 hour', attempts = 3 WHERE id = %s", (d[3],))

    def oldest_sql():
        return float(sql1("SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
                          "FROM gate_bridge.deliveries "
                          "WHERE status = 'pending' AND next_attempt_at <= now()"))

    before = oldest_sql()
    r = srv.get("/metrics")
    after = oldest_sql()
    assert r.status_code == 200, r.text
    from conftest import parse_metrics
    m = parse_metrics(r.text)
    assert m.type_of("gate_bridge_deliveries") == "gauge"
    assert m.type_of("gate_bridge_delivery_oldest_pending_seconds") == "gauge"
    counts = dict(sql("SELECT status, count(*) FROM gate_bridge.deliveries GROUP BY status"))
    for st in STATUSES:
        got = m.value("gate_bridge_deliveries", status=st)
        assert got is not None, "no gate_bridge_deliveries{status=%s} in:\n%s" % (st, r.text)
        assert got == counts.get(st, 0), (st, got, counts)
    assert counts.get("pending", 0) >= 3 and counts.get("dead", 0) >= 1, counts
    assert counts.get("held", 0) == 0 and m.value("gate_bridge_deliveries", status="held") == 0
    age = m.value("gate_bridge_delivery_oldest_pending_seconds")
    assert before <= age <= after, (before, age, after)
    assert 119 <= age < 600, age


def test_oldest_pending_is_zero_when_none_is_due(srv, destination):
    name, _, _ = destination
    sql("UPDATE gate_bridge.deliveries SET next_attempt_at = now() + interval '1 hour' "
        "WHERE status = 'pending'")
    m = srv.metrics()
    assert m.value("gate_bridge_delivery_oldest_pending_seconds") == 0
    assert m.value("gate_bridge_deliveries", status="pending") == \
        sql1("SELECT count(*) FROM gate_bridge.deliveries WHERE status = 'pending'")
