"""GET /metrics, parsed with prometheus_client's parser, against SQL."""

import time

import pytest

from conftest import (OPERATOR_TOKEN, Serve, events_head, new_incident, parse_metrics, sql,
                      wait_until)
from sse import SSEClient

TYPES = {
    "gate_bridge_decisions_total": "counter",
    "gate_bridge_unresolved_incidents": "gauge",
    "gate_bridge_events_total": "counter",
    "gate_bridge_stream_position": "gauge",
    "gate_bridge_sse_clients": "gauge",
    "gate_bridge_sse_dropped_total": "counter",
    "gate_bridge_database_up": "gauge",
    "gate_bridge_http_requests_total": "counter",
}


@pytest.fixture(scope="module")
def srv():
    s = Serve(name="metrics")
    yield s
    s.stop()


def test_content_type_and_families(srv):
    new_incident("sev1")
    r = srv.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r.headers
    m = parse_metrics(r.text)
    for name, typ in TYPES.items():
        assert name in m.names(), "no sample %s in:\n%s" % (name, r.text)
        assert m.type_of(name) == typ, "%s is a %s, not a %s" % (name, m.type_of(name), typ)
    assert m.value("gate_bridge_database_up") == 1


def test_decisions_match_stats(srv):
    # one of each: a created incident and a deduplicated violation
    _, agent = new_incident("sev2")
    sql("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, 0.7)", (agent,))
    m = srv.metrics()
    rows = sql("SELECT kind, created, deduplicated, rate_limited FROM gate_bridge.stats")
    assert rows
    for kind, created, dedup, limited in rows:
        for outcome, want in (("created", created), ("deduplicated", dedup),
                              ("rate_limited", limited)):
            got = m.value("gate_bridge_decisions_total", kind=kind, outcome=outcome)
            assert got == want, "decisions_total{kind=%s,outcome=%s}: %r, stats says %r" \
                % (kind, outcome, got, want)
    budget = sql("SELECT created, deduplicated FROM gate_bridge.stats WHERE kind = 'budget'")[0]
    assert m.value("gate_bridge_decisions_total", kind="budget", outcome="created") == budget[0]
    assert budget[0] > 0 and budget[1] > 0


def test_unresolved_gauges_match_sql(srv):
    iid, _ = new_incident("sev3")
    sql("SELECT gate_bridge.ack(%s, 'metrics')", (iid,))
    new_incident("sev1")
    m = srv.metrics()
    counts = {(s, st): n for s, st, n in sql(
        "SELECT severity, status, count(*) FROM gate_bridge.incidents "
        "WHERE status IN ('open', 'ack') GROUP BY 1, 2")}
    for sev in ("sev1", "sev2", "sev3"):
        for st in ("open", "ack"):
            got = m.value("gate_bridge_unresolved_incidents", severity=sev, status=st)
            assert got is not None, "no gate_bridge_unresolved_incidents{%s,%s}" % (sev, st)
            assert got == counts.get((sev, st), 0), (sev, st, got, counts)
    assert counts.get(("sev3", "ack"), 0) > 0 and counts.get(("sev1", "open"), 0) > 0


def test_events_total_and_position_follow_the_stream(srv):
    m0 = srv.metrics()
    e0 = m0.value("gate_bridge_events_total")
    ids = [new_incident(s)[0] for s in ("sev1", "sev2", "sev3")]
    sql("SELECT gate_bridge.ack(%s, 'metrics')", (ids[0],))
    head = events_head()
    m = wait_until(lambda: (lambda m: m if m.value("gate_bridge_stream_position") == head
                            else None)(srv.metrics()), 15,
                   "gate_bridge_stream_position to reach %d" % head)
    assert m.value("gate_bridge_events_total") >= e0 + 4, (e0, m.value("gate_bridge_events_total"))
    assert m.value("gate_bridge_events_total") - e0 == 4, \
        "events_total moved by %r for 4 events" % (m.value("gate_bridge_events_total") - e0)


def test_http_requests_by_code(srv):
    m0 = srv.metrics()
    ok0 = m0.value("gate_bridge_http_requests_total", code="200") or 0
    nf0 = m0.value("gate_bridge_http_requests_total", code="404") or 0
    for _ in range(3):
        assert srv.get("/api/nothing").status_code == 404
        assert srv.get("/api/counts").status_code == 200
    m = srv.metrics()
    assert m.value("gate_bridge_http_requests_total", code="404") >= nf0 + 3, m.samples
    assert m.value("gate_bridge_http_requests_total", code="200") >= ok0 + 3, m.samples


def test_sse_clients_gauge(srv):
    base = srv.metrics().value("gate_bridge_sse_clients")
    clients = [SSEClient(srv.host, srv.port, "/events") for _ in range(3)]
    try:
        wait_until(lambda: srv.metrics().value("gate_bridge_sse_clients") == base + 3, 15,
                   "gate_bridge_sse_clients to be %d" % (base + 3))
    finally:
        for c in clients:
            c.close()

    # a closed connection is noticed when something is written to it: an
    # event, at the latest a keep-alive
    last = [0.0]

    def back():
        if time.time() - last[0] > 1:
            new_incident("sev3")
            last[0] = time.time()
        return srv.metrics().value("gate_bridge_sse_clients") == base

    wait_until(back, 40, "gate_bridge_sse_clients back to %d" % base)


def test_metrics_need_a_token_with_tokens(serve_auth):
    assert serve_auth.get("/metrics").status_code == 401
    m = serve_auth.metrics(token=OPERATOR_TOKEN)
    assert m.value("gate_bridge_database_up") == 1
