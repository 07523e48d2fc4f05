"""Playbooks and runbooks through serve: an incident's suggested playbooks
with what the registry says of them (or null for a role that may not read
it), POST /api/incidents/{id}/run, and the runbooks and README that serve
carries, with every link between them landing on a page and a heading."""

import html.parser
import json
import secrets
import urllib.parse

import pytest

from conftest import (OPERATOR_NAME, OPERATOR_TOKEN, RUN_TAG, VIEWER_TOKEN, Serve, new_incident,
                      sql, sql1)
from test_api import assert_error, assert_json, describe

RUNBOOKS = ["README", "adjust_canary_split", "clear_cache", "escalation", "refresh_synonyms",
            "rerun_dbt", "rerun_eval", "rollback_planner", "severity-tiers"]
DOCS = ["/README.md"] + ["/docs/runbooks/%s.md" % n for n in RUNBOOKS]
PLAYBOOK_KEYS = {"name", "registered", "title", "risk", "runbook_url", "auto_run", "action"}
NO_REGISTRY_ROLE = "serve_no_registry_%s" % RUN_TAG


def registry(name):
    rows = sql("SELECT name, title, risk, runbook_url, auto_run, action IS NOT NULL "
               "FROM gate_bridge.playbooks WHERE name = %s", (name,))
    assert rows, name
    return dict(zip(("name", "title", "risk", "runbook_url", "auto_run", "action"), rows[0]),
                registered=True)


@pytest.fixture(scope="module")
def action():
    """rerun_eval runs a function as a role of its own while the module runs."""
    role = "serve_pb_runner_%s" % RUN_TAG
    sql("CREATE ROLE %s NOLOGIN" % role)
    sql("CREATE FUNCTION public.serve_pb_action(incident jsonb) RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'rerun of ' || (incident->>'agent') || ' as ' || current_user $$")
    sql("CREATE FUNCTION public.serve_pb_fails(incident jsonb) RETURNS text LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'the eval runner is down'; END $$")
    sql("GRANT EXECUTE ON FUNCTION public.serve_pb_action(jsonb), public.serve_pb_fails(jsonb) "
        "TO %s" % role)
    sql("UPDATE gate_bridge.playbooks SET action = 'public.serve_pb_action', action_role = %s "
        "WHERE name = 'rerun_eval'", (role,))
    yield role
    sql("UPDATE gate_bridge.playbooks SET action = NULL, action_role = NULL, auto_run = false "
        "WHERE name IN ('rerun_eval', 'clear_cache')")
    sql("DROP FUNCTION public.serve_pb_action(jsonb), public.serve_pb_fails(jsonb)")
    sql("DROP ROLE %s" % role)


@pytest.fixture(scope="module")
def serve_no_registry():
    """A server whose role reads incidents and events but not the registry."""
    sql("CREATE ROLE %s LOGIN" % NO_REGISTRY_ROLE)
    sql("GRANT USAGE ON SCHEMA gate_bridge TO %s" % NO_REGISTRY_ROLE)
    sql("GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events, "
        "gate_bridge.open_incidents, gate_bridge.incident_counts, gate_bridge.stats, "
        "gate_bridge.stream_status, gate_bridge.delivery_status TO %s" % NO_REGISTRY_ROLE)
    sql("GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer), "
        "gate_bridge.events_head(), gate_bridge.events_resume_point(bigint) TO %s"
        % NO_REGISTRY_ROLE)
    s = Serve(name="noregistry", role=NO_REGISTRY_ROLE)
    yield s
    s.stop()
    sql("DROP OWNED BY %s" % NO_REGISTRY_ROLE)
    sql("DROP ROLE %s" % NO_REGISTRY_ROLE)


def timeline(iid):
    return sql("SELECT event, actor, detail FROM gate_bridge.incident_events "
               "WHERE incident_id = %s ORDER BY position NULLS LAST, id", (iid,))


# ---------------------------------------------------------------- the API

def test_detail_has_the_registrys_word_on_each_playbook(serve_open):
    iid, _ = new_incident("sev2")
    sql("UPDATE gate_bridge.incident_rows SET playbooks = '{rerun_eval,clear_cache,gone_now}' "
        "WHERE id = %s", (iid,))
    body = assert_json(serve_open.get("/api/incidents/%d" % iid))
    got = body["playbooks"]
    assert [p["name"] for p in got] == ["rerun_eval", "clear_cache", "gone_now"], got
    for p in got:
        assert set(p) == PLAYBOOK_KEYS, p
    assert got[0] == registry("rerun_eval"), got[0]
    assert got[1] == registry("clear_cache"), got[1]
    assert got[0]["runbook_url"] == "docs/runbooks/rerun_eval.md", got[0]
    assert got[1]["risk"] == "low", got[1]
    # a name the registry does not have (an incident opened under 1.1's rules)
    assert got[2] == {"name": "gone_now", "registered": False, "title": None, "risk": None,
                      "runbook_url": None, "auto_run": None, "action": False}, got[2]
    # the action itself (a function's name, a destination) is not shown
    assert "public.serve_pb_action" not in json.dumps(body)
    assert body["incident"]["playbooks"] == ["rerun_eval", "clear_cache", "gone_now"]


def test_detail_without_the_registry_is_null(serve_no_registry):
    iid, _ = new_incident("sev3")
    assert not sql1("SELECT has_table_privilege(%s, 'gate_bridge.playbooks', 'SELECT')",
                    (NO_REGISTRY_ROLE,))
    body = assert_json(serve_no_registry.get("/api/incidents/%d" % iid))
    assert body["playbooks"] is None, body
    assert body["incident"]["playbooks"] == ["rerun_eval"], body
    assert isinstance(body["deliveries"], list), body


def test_run_a_function_action(serve_auth, action):
    iid, agent = new_incident("sev2")
    body = assert_json(serve_auth.post("/api/incidents/%d/run" % iid,
                                       {"playbook": "rerun_eval", "actor": "mallory"},
                                       token=OPERATOR_TOKEN))
    assert body["outcome"] == "succeeded", body
    assert body["incident"]["id"] == iid and body["incident"]["status"] == "open", body
    tl = timeline(iid)
    assert [(e, a) for e, a, _ in tl[1:]] == [("playbook_started", OPERATOR_NAME),
                                              ("playbook_succeeded", OPERATOR_NAME)], tl
    assert tl[0][0] == "created", tl
    assert tl[1][2]["playbook"] == "rerun_eval", tl
    assert tl[2][2]["result"] == "rerun of %s as %s" % (agent, action), tl


def test_run_a_failing_action_keeps_the_incident(serve_auth, action):
    sql("UPDATE gate_bridge.playbooks SET action = 'public.serve_pb_fails' WHERE name = 'rerun_eval'")
    try:
        iid, _ = new_incident("sev1")
        body = assert_json(serve_auth.post("/api/incidents/%d/run" % iid,
                                           {"playbook": "rerun_eval"}, token=OPERATOR_TOKEN))
    finally:
        sql("UPDATE gate_bridge.playbooks SET action = 'public.serve_pb_action' "
            "WHERE name = 'rerun_eval'")
    assert body["outcome"] == "failed", body
    assert body["incident"]["status"] == "open", body
    tl = timeline(iid)
    assert [e for e, _, _ in tl] == ["created", "playbook_started", "playbook_failed"], tl
    assert "the eval runner is down" in json.dumps(tl[2][2]), tl
    assert sql1("SELECT count(*) FROM gate_bridge.incidents WHERE id = %s", (iid,)) == 1


def test_run_errors(serve_auth, serve_open, action):
    iid, _ = new_incident("sev3")
    path = "/api/incidents/%d/run" % iid
    # a viewer may not; serve without tokens is read-only
    assert_error(serve_auth.post(path, {"playbook": "rerun_eval"}, token=VIEWER_TOKEN), 403)
    assert_error(serve_open.post(path, {"playbook": "rerun_eval"}), 403)
    assert_error(serve_auth.post(path, {"playbook": "rerun_eval"}), 401)
    # GET is not a run
    r = serve_auth.get(path, token=OPERATOR_TOKEN)
    assert r.status_code == 405, describe(r)
    # the body
    err = assert_error(serve_auth.post(path, {}, token=OPERATOR_TOKEN), 400)
    assert "playbook" in err["message"], err
    assert_error(serve_auth.post(path, {"playbook": 7}, token=OPERATOR_TOKEN), 400)
    assert_error(serve_auth.post(path, data="not json", token=OPERATOR_TOKEN), 400)
    # what run_playbook says, with its SQLSTATE
    err = assert_error(serve_auth.post(path, {"playbook": "no_such_%s" % secrets.token_hex(2)},
                                       token=OPERATOR_TOKEN), 400, "22023")
    assert "does not exist" in err["message"], err
    err = assert_error(serve_auth.post(path, {"playbook": "rollback_planner"},
                                       token=OPERATOR_TOKEN), 409, "55000")
    assert "no action" in err["message"], err
    assert_error(serve_auth.post("/api/incidents/999999999/run", {"playbook": "rerun_eval"},
                                 token=OPERATOR_TOKEN), 404, "P0002")
    sql("SELECT gate_bridge.resolve(%s, 'tester', NULL)", (iid,))
    assert_error(serve_auth.post(path, {"playbook": "rerun_eval"}, token=OPERATOR_TOKEN),
                 409, "55000")
    # nothing ran
    assert [e for e, _, _ in timeline(iid)] == ["created", "resolved"]


def test_run_needs_execute_on_run_playbook(serve_factory, action):
    """serve's role without EXECUTE on run_playbook: 403 with 42501."""
    role = "serve_no_run_%s" % RUN_TAG
    sql("CREATE ROLE %s LOGIN" % role)
    try:
        sql("GRANT USAGE ON SCHEMA gate_bridge TO %s" % role)
        sql("GRANT SELECT ON gate_bridge.incidents, gate_bridge.incident_events, "
            "gate_bridge.playbooks TO %s" % role)
        sql("GRANT EXECUTE ON FUNCTION gate_bridge.events_after(bigint, integer), "
            "gate_bridge.events_head(), gate_bridge.events_resume_point(bigint) TO %s" % role)
        from conftest import tokens_text
        srv = serve_factory(name="norun", role=role, tokens=tokens_text())
        iid, _ = new_incident("sev3")
        assert_error(srv.post("/api/incidents/%d/run" % iid, {"playbook": "rerun_eval"},
                              token=OPERATOR_TOKEN), 403, "42501")
        assert [e for e, _, _ in timeline(iid)] == ["created"]
        srv.stop()
    finally:
        sql("DROP OWNED BY %s" % role)
        sql("DROP ROLE %s" % role)


# ---------------------------------------------------------------- the documents

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()
        self.links = []
        self.h1 = None
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("link", "img", "script"):
            for k in ("href", "src"):
                if k in a:
                    self.links.append(a[k])
        if tag == "h1" and self.h1 is None:
            self._in_h1 = True
            self.h1 = ""

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1 += data


def fetch_page(srv, path):
    r = srv.get(path)
    assert r.status_code == 200, describe(r)
    assert r.headers["Content-Type"].startswith("text/html"), (path, r.headers)
    p = Page()
    p.feed(r.text)
    return p


def test_docs_are_served_without_a_token(serve_auth):
    for path in DOCS:
        p = fetch_page(serve_auth, path)
        assert p.h1 and p.h1.strip("# "), (path, p.h1)
    p = fetch_page(serve_auth, "/docs/runbooks/rerun_eval.md")
    assert p.h1.strip("# ") == "rerun_eval: re-run the evaluation", p.h1
    r = serve_auth.get("/docs/dashboard.png")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n", describe(r)


def test_every_link_of_the_docs_lands(serve_open):
    """Each relative link of each page is a page serve carries, and its
    #fragment a heading (or other id) of that page."""
    pages = {}
    for path in DOCS:
        pages[path] = fetch_page(serve_open, path)
    checked = 0
    for path, page in pages.items():
        base = serve_open.url + path
        for href in page.links:
            u = urllib.parse.urlsplit(urllib.parse.urljoin(base, href))
            if not u.geturl().startswith(serve_open.url):
                assert u.scheme in ("http", "https", "mailto"), (path, href)
                continue
            target = u.path
            if target.endswith(".md"):
                if target not in pages:
                    pages[target] = fetch_page(serve_open, target)
                if u.fragment:
                    assert u.fragment in pages[target].ids, \
                        "%s links to %s, which has no id %r" % (path, href, u.fragment)
            else:
                r = serve_open.get(target)
                assert r.status_code == 200, "%s links to %s: %s" % (path, href, describe(r))
            checked += 1
    assert checked > 100, checked
    assert set(pages) == set(DOCS), set(pages) - set(DOCS)


def test_registry_runbooks_are_served(serve_open):
    # the built-ins (an edited one is no longer marked builtin)
    urls = sql("SELECT name, runbook_url FROM gate_bridge.playbooks WHERE name = ANY (%s) "
               "ORDER BY name", (["rerun_eval", "rerun_dbt", "clear_cache", "refresh_synonyms",
                                   "adjust_canary_split", "rollback_planner"],))
    assert len(urls) == 6, urls
    for name, url in urls:
        assert url == "docs/runbooks/%s.md" % name, (name, url)
        p = fetch_page(serve_open, "/" + url)
        assert name in p.h1, (name, p.h1)


def test_an_unknown_document_is_404(serve_open):
    r = serve_open.get("/docs/runbooks/not_there.md")
    err = assert_error(r, 404, None)
    assert "docs/runbooks" in err["message"], err
