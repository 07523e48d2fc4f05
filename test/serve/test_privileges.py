"""The database role bounds what serve can do, whatever the token says."""

import pytest

from conftest import OPERATOR_TOKEN, Serve, new_incident, sql, tokens_text


@pytest.fixture(scope="module")
def viewer_srv():
    s = Serve(name="dbviewer", role="serve_viewer", tokens=tokens_text())
    yield s
    s.stop()


def timeline(iid):
    return sql("SELECT event FROM gate_bridge.incident_events WHERE incident_id = %s "
               "ORDER BY position", (iid,))


def test_operator_token_on_a_viewer_role_gets_403_from_42501(viewer_srv):
    iid, _ = new_incident("sev1")
    r = viewer_srv.get("/api/session", token=OPERATOR_TOKEN)
    assert r.status_code == 200 and r.json()["role"] == "operator", r.text
    # reads work with the reader's grants
    assert viewer_srv.get("/api/counts", token=OPERATOR_TOKEN).status_code == 200
    r = viewer_srv.get("/api/incidents/%d" % iid, token=OPERATOR_TOKEN)
    assert r.status_code == 200, r.text
    before = sql("SELECT status, acked_at, acked_by, snoozed_until, resolved_at "
                 "FROM gate_bridge.incidents WHERE id = %s", (iid,))
    for action, body in (("ack", {}), ("resolve", {"note": "x"}),
                         ("snooze", {"duration": "1 hour"})):
        r = viewer_srv.post("/api/incidents/%d/%s" % (iid, action), body, token=OPERATOR_TOKEN)
        assert r.status_code == 403, "%s: %s %s" % (action, r.status_code, r.text)
        assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
        err = r.json()["error"]
        assert err["status"] == 403 and err["sqlstate"] == "42501", err
    after = sql("SELECT status, acked_at, acked_by, snoozed_until, resolved_at "
                "FROM gate_bridge.incidents WHERE id = %s", (iid,))
    assert after == before and after[0][0] == "open", (before, after)
    assert timeline(iid) == [("created",)]
