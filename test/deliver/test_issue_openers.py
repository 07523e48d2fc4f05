"""gate-bridge deliver with github and jira destinations: against stand-ins
of their REST APIs (trackers.py) that check every request as the vendors
describe them, the issue is opened once, commented on when the incident
escalates and closed when it is resolved; its id and URL are stored on the
incident; an answer lost never opens a second issue; refusals and rate
limits are handled as documented."""

import json
import subprocess
import time

import psycopg
import pytest

from conftest import (BIN, SECRETS, SUPER_DSN, db_connect, deliveries, new_incident, run_once,
                      sql, sql1, unique, wait_until)

DASH = "https://dash.example/gb"


def group():
    p = unique("dlv.iss")
    return p, p + ".*"


def tracker_destination(receiver, kind, pattern, secret=None, options=None, site=None, **kw):
    """A github or jira destination at a stand-in of its own; site: what
    the Jira stand-in is, cloud or data_center (the default)."""
    name = unique("gh" if kind == "github" else "jr")
    if secret is None:
        secret = ("ghp_" if kind == "github" else "ops@acme.test:") + unique("tok")
    SECRETS.append(secret)
    if kind == "jira" and ":" in secret:
        SECRETS.append(secret.split(":", 1)[1])
    t, url = receiver.tracker(kind, name, secret, **({"deployment": site} if site else {}))
    if options is None:
        options = {"resolve_transition": "31"} if kind == "jira" else {}
    cols = {"name": name, "kind": kind, "url": url, "secret": secret, "agent_pattern": pattern,
            "options": json.dumps(options)}
    cols.update(kw)
    keys = list(cols)
    sql("INSERT INTO gate_bridge.destinations (%s) VALUES (%s)" %
        (", ".join(keys), ", ".join(["%s"] * len(keys))), [cols[k] for k in keys])
    return name, t


def escalate(agent):
    """A sev1 violation that folds into agent's sev2 incident: escalated."""
    with db_connect() as c:
        c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, 0.3)", (agent,))


def refs(incident_id):
    return sql1("SELECT external_refs FROM gate_bridge.incidents WHERE id = %s", (incident_id,))


def due_now(name):
    sql("UPDATE gate_bridge.deliveries SET next_attempt_at = now() WHERE destination = %s"
        " AND status = 'pending'", (name,))


def by_event(name):
    return {d[3]: d for d in deliveries(name)}


def test_github_opens_comments_closes(receiver):
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    agent = prefix + ".a"
    iid = new_incident(agent, sev="sev2")
    run_once(["--dashboard-url", DASH])
    assert gh.problems == []
    (issue_no,) = gh.issues
    issue = gh.issues[issue_no]
    assert issue["title"] == "[SEV2] Budget violation: %s quality" % agent
    assert issue["labels"] == ["gate-bridge", "sev2", "budget"]
    assert "%s/?incident=%d" % (DASH, iid) in issue["body"]
    assert "(gate-bridge incident %d, destination %s)" % (iid, name) in issue["body"]
    assert '"budget_type": "quality"' in issue["body"]
    assert refs(iid) == {name: {"kind": "github", "id": str(issue_no),
                                "url": "https://github.com/acme/ops/issues/%d" % issue_no}}
    (create,) = gh.requests
    assert create[0] == "POST" and create[1] == "/repos/acme/ops/issues"
    assert create[3]["authorization"].startswith("Bearer ghp_")
    assert create[3]["accept"] == "application/vnd.github+json"
    assert create[3]["x-github-api-version"] == "2022-11-28"

    escalate(agent)
    run_once(["--dashboard-url", DASH])
    assert gh.comments and gh.comments[-1][0] == issue_no
    assert "Escalated from SEV2 to SEV1." in gh.comments[-1][1]
    assert gh.issues[issue_no]["state"] == "open"

    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    assert gh.issues[issue_no]["state"] == "closed"
    assert gh.issues[issue_no]["state_reason"] == "completed"
    assert gh.count("PATCH", r"/issues/%d$" % issue_no) == 1
    assert len(gh.issues) == 1 and gh.count("POST", r"/issues$") == 1
    assert {d[3]: d[4] for d in deliveries(name)} == {"created": "delivered", "escalated": "delivered",
                                                     "resolved": "delivered"}
    assert gh.problems == []


def test_jira_opens_comments_transitions(receiver):
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern,
                                   options={"resolve_transition": "31", "issue_type": "Task"})
    agent = prefix + ".a"
    iid = new_incident(agent, sev="sev2")
    run_once(["--dashboard-url", DASH])
    assert jr.problems == []
    (jid,) = jr.issues
    issue = jr.issues[jid]
    assert issue["summary"] == "[SEV2] Budget violation: %s quality" % agent
    assert issue["issuetype"] == {"name": "Task"} and issue["project"] == {"key": "OPS"}
    assert issue["labels"] == ["gate-bridge", "sev2", "budget"]
    assert "[incident %d|%s/?incident=%d]" % (iid, DASH, iid) in issue["description"]
    base = "http://127.0.0.1:%d/jira/%s" % (receiver.port, name)
    assert refs(iid) == {name: {"kind": "jira", "id": jid, "key": issue["key"],
                                "url": "%s/browse/%s" % (base, issue["key"])}}
    (create,) = jr.requests
    assert create[3]["authorization"].startswith("Basic ")

    escalate(agent)
    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    assert [c[0] for c in jr.comments] == [jid]
    assert "Escalated from SEV2 to SEV1." in jr.comments[0][1]
    assert jr.transitions == [(jid, "31")] and jr.issues[jid]["status"] == "Done"
    assert len(jr.issues) == 1
    assert jr.problems == []


def test_jira_data_center_token_is_a_bearer(receiver):
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern, secret="PAT" + unique("x"))
    new_incident(prefix + ".a")
    run_once()
    assert len(jr.issues) == 1 and jr.problems == []
    assert jr.requests[0][3]["authorization"].startswith("Bearer PAT")


def test_a_lost_answer_never_opens_a_second_issue(receiver):
    """GitHub opens the issue but its answer never arrives (the worker times
    out); Jira opens it and answers 502.  The next attempt looks for the
    issue by its marker, finds it, and creates nothing."""
    prefix, pattern = group()
    gname, gh = tracker_destination(receiver, "github", pattern)
    jname, jr = tracker_destination(receiver, "jira", pattern)
    gh.fault("create", 201, apply=True, hang=3)
    jr.fault("create", 502, {"errorMessages": ["Bad gateway"], "errors": {}}, apply=True)
    agent = prefix + ".a"
    iid = new_incident(agent, sev="sev2")
    started = time.time()
    run_once(["--timeout", "1", "--workers", "2"])
    elapsed = time.time() - started
    assert len(gh.issues) == 1 and len(jr.issues) == 1
    for name in (gname, jname):
        d = by_event(name)["created"]
        assert d[4] == "pending", d
        # at least 30 s after the attempt: the search must see it
        assert d[8].total_seconds() + elapsed >= 29, (d, elapsed)
    assert sql1("SELECT bool_and(unconfirmed) FROM gate_bridge.deliveries WHERE destination IN (%s, %s)",
                (gname, jname))
    assert refs(iid) == {}
    escalate(agent)
    for name in (gname, jname):
        due_now(name)
    run_once(["--timeout", "5"])
    assert gh.count("GET", r"/issues$") == 1
    assert jr.count("GET", r"/rest/api/2/search$") == 1      # Jira Data Center's search
    assert gh.count("POST", r"/issues$") == 1 and jr.count("POST", r"/rest/api/2/issue$") == 1
    (gno,) = gh.issues
    (jid,) = jr.issues
    assert refs(iid)[gname]["id"] == str(gno) and refs(iid)[jname]["id"] == jid
    # the escalation went to the issues found
    assert [c[0] for c in gh.comments] == [gno] and [c[0] for c in jr.comments] == [jid]
    g = by_event(gname)["created"]
    assert g[4] == "delivered" and "found the issue an earlier attempt opened" in g[7], g
    assert gh.problems == [] and jr.problems == []


def test_a_create_that_died_in_doubt_is_looked_for_again(receiver):
    """GitHub opens the issue but answers 502; the search after it is
    refused (422), so that delivery dies not knowing whether the issue is
    there.  The incident's next event looks for it again before anything
    else: it is found, the escalation is commented on it, no second issue
    is opened, and the resolution closes it."""
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    gh.fault("create", 502, {"message": "Bad gateway"}, apply=True)
    gh.fault("list", 422, {"message": "Validation Failed",
                           "documentation_url": "https://docs.github.com/rest/issues/issues#list-repository-issues",
                           "status": "422"})
    agent = prefix + ".a"
    iid = new_incident(agent, sev="sev2")
    run_once()
    due_now(name)
    run_once()
    created = by_event(name)["created"]
    assert created[4] == "dead" and created[6] == 422, created
    assert len(gh.issues) == 1 and refs(iid) == {}
    assert sql1("SELECT unconfirmed FROM gate_bridge.deliveries WHERE id = %s", (created[0],))
    escalate(agent)
    run_once(["--timeout", "5"])
    run_once(["--timeout", "5"])
    (gno,) = gh.issues
    assert refs(iid)[name]["id"] == str(gno)
    assert gh.count("POST", r"/issues$") == 1, gh.requests
    assert gh.count("GET", r"/issues$") == 2, gh.requests
    esc = by_event(name)["escalated"]
    assert esc[4] == "delivered", esc
    assert [c[0] for c in gh.comments] == [gno], gh.comments
    # the doubt is settled: the dead create no longer says it may have opened it
    assert not sql1("SELECT unconfirmed FROM gate_bridge.deliveries WHERE id = %s", (created[0],))
    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    assert by_event(name)["resolved"][4] == "delivered"
    assert gh.issues[gno]["state"] == "closed", gh.issues[gno]
    assert gh.count("POST", r"/issues$") == 1 and gh.problems == []


def test_a_resolution_after_a_doubt_looks_first(receiver):
    """Jira opens the issue and answers 502, and the search after it is
    refused: the resolution that follows finds the issue and closes it
    (it would otherwise have had nothing to close)."""
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern)
    jr.fault("create", 502, {"errorMessages": ["Bad gateway"], "errors": {}}, apply=True)
    jr.fault("search", 400, {"errorMessages": ["The value 'x' does not exist."], "errors": {}})
    iid = new_incident(prefix + ".a")
    run_once()
    due_now(name)
    run_once()
    assert by_event(name)["created"][4] == "dead"
    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    run_once()
    (jid,) = jr.issues
    r = by_event(name)["resolved"]
    assert r[4] == "delivered", r
    assert refs(iid)[name]["id"] == jid
    assert jr.count("POST", r"/transitions$") == 1, jr.requests
    assert jr.count("POST", r"/rest/api/2/issue$") == 1 and jr.problems == []


@pytest.mark.parametrize("deployment", ["cloud", "data_center"])
def test_jira_deployment_picks_the_search(receiver, deployment):
    """A Jira site that is not on atlassian.net (here a loopback address):
    the option deployment says which search looks for a create whose answer
    was lost.  Cloud's /search/jql and Data Center's /search answer in
    their own shapes; either way the issue is found, not opened twice."""
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern, site=deployment,
                                   options={"resolve_transition": "31", "deployment": deployment})
    jr.fault("create", 502, {"errorMessages": ["Bad gateway"], "errors": {}}, apply=True)
    iid = new_incident(prefix + ".a")
    run_once()
    assert len(jr.issues) == 1 and by_event(name)["created"][4] == "pending"
    assert refs(iid) == {}
    due_now(name)
    run_once()
    search = "/rest/api/2/search/jql" if deployment == "cloud" else "/rest/api/2/search"
    assert [(r[0], r[1]) for r in jr.requests] == [("POST", "/rest/api/2/issue"), ("GET", search)]
    (jid,) = jr.issues
    assert refs(iid)[name]["id"] == jid
    d = by_event(name)["created"]
    assert d[4] == "delivered" and "found the issue an earlier attempt opened" in d[7], d
    assert jr.problems == []


def test_a_cloud_site_taken_for_data_center_is_told_410(receiver):
    """Without deployment, a site that is not on atlassian.net is taken for
    Data Center: a Cloud site on a domain of its own answers the search it
    removed with 410 Gone, and the find is dead with Atlassian's message."""
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern, site="cloud")
    jr.fault("create", 502, {"errorMessages": ["Bad gateway"], "errors": {}}, apply=True)
    new_incident(prefix + ".a")
    run_once()
    due_now(name)
    run_once()
    d = by_event(name)["created"]
    assert d[4] == "dead" and d[6] == 410, d
    assert d[7].startswith("HTTP 410: The requested API has been removed."), d
    assert jr.problems == ["GET /rest/api/2/search: not a search of Jira Cloud"]


def test_an_error_before_the_create_creates_once(receiver):
    """A 500 that did not open the issue: the search finds nothing, the
    issue is created then, once."""
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    gh.fault("create", 500, {"message": "Server Error"})
    iid = new_incident(prefix + ".a")
    run_once()
    assert gh.issues == {}
    due_now(name)
    run_once()
    assert gh.count("GET", r"/issues$") == 1 and gh.count("POST", r"/issues$") == 2
    assert len(gh.issues) == 1 and refs(iid)[name]["id"] == str(list(gh.issues)[0])
    assert by_event(name)["created"][4] == "delivered"
    assert gh.problems == []


def test_the_comment_and_the_close_wait_for_the_create(receiver):
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    gh.fault("create", 503, {"message": "Service Unavailable"})
    agent = prefix + ".a"
    iid = new_incident(agent, sev="sev2")
    escalate(agent)
    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    assert gh.count("POST", r"/comments$") == 0 and gh.count("PATCH", r"") == 0
    status = {d[3]: d[4] for d in deliveries(name)}
    assert status == {"created": "pending", "escalated": "pending", "resolved": "pending"}, status
    due_now(name)
    run_once()
    (no,) = gh.issues
    assert [c[0] for c in gh.comments] == [no] and gh.issues[no]["state"] == "closed"
    methods = [(r[0], r[1]) for r in gh.requests]
    assert methods == [("POST", "/repos/acme/ops/issues"), ("GET", "/repos/acme/ops/issues"),
                       ("POST", "/repos/acme/ops/issues"),
                       ("POST", "/repos/acme/ops/issues/%d/comments" % no),
                       ("PATCH", "/repos/acme/ops/issues/%d" % no)], methods
    assert gh.problems == []


def test_422_is_dead_with_the_message(receiver):
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    gh.fault("create", 422, {"message": "Validation Failed",
                             "errors": [{"resource": "Issue", "code": "invalid", "field": "labels"}],
                             "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
                             "status": "422"})
    iid = new_incident(prefix + ".a")
    run_once()
    d = by_event(name)["created"]
    assert d[4] == "dead" and d[6] == 422, d
    assert d[7] == "HTTP 422: Validation Failed: Issue labels invalid", d
    assert sql1("SELECT status FROM gate_bridge.incidents WHERE key = %s", ("DELIVERY_" + name,)) == "open"
    sql("SELECT gate_bridge.resolve(%s)", (iid,))
    run_once()
    r = by_event(name)["resolved"]
    assert r[4] == "skipped" and "nothing to close" in r[7], r
    assert gh.issues == {} and gh.problems == []


def test_jira_400_is_dead_with_its_errors(receiver):
    prefix, pattern = group()
    name, jr = tracker_destination(receiver, "jira", pattern, options={"resolve_transition": "31",
                                                                       "issue_type": "Bug"})
    jr.project = "OTHER"          # the site has no project OPS: Jira refuses
    new_incident(prefix + ".a")
    run_once()
    d = by_event(name)["created"]
    assert d[4] == "dead" and d[6] == 400 and d[7] == "HTTP 400: project: valid project is required", d


def test_rate_limits_and_server_errors_are_retried(receiver):
    """429 with Retry-After; a 403 with x-ratelimit-remaining 0 waits for
    x-ratelimit-reset; a 403 that says it is a secondary rate limit waits a
    minute; 502 and 503 back off; a plain 403 is dead."""
    prefix, pattern = group()
    cases = {
        "r429": ("create", 429, {"message": "rate limited"}, {"Retry-After": "120"}, 110),
        "reset": ("create", 403, {"message": "API rate limit exceeded for user ID 1."},
                  {"x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000",
                   "x-ratelimit-reset": str(int(time.time()) + 300)}, 280),
        "second": ("create", 403, {"message": "You have exceeded a secondary rate limit. "
                                   "Please wait a few minutes before you try again."}, {}, 55),
        "e502": ("create", 502, {"message": "Bad Gateway"}, {}, None),
        "e503": ("create", 503, {"message": "Service Unavailable"}, {}, None),
        "forbidden": ("create", 403, {"message": "Resource not accessible by personal access token"},
                      {"x-ratelimit-remaining": "4999"}, "dead"),
    }
    names = {}
    for case, (op, status, body, headers, _) in cases.items():
        names[case], t = tracker_destination(receiver, "github", pattern)
        t.fault(op, status, body, headers)
    new_incident(prefix + ".a")
    started = time.time()
    run_once(["--workers", "3"])
    # the waits are counted from before the run, however long it took
    elapsed = time.time() - started
    for case, (op, status, body, headers, want) in cases.items():
        d = by_event(names[case])["created"]
        assert d[6] == status, (case, d)
        if want == "dead":
            assert d[4] == "dead", (case, d)
            assert d[7] == "HTTP 403: Resource not accessible by personal access token", (case, d)
        else:
            assert d[4] == "pending", (case, d)
            if want is not None:
                assert d[8].total_seconds() + elapsed > want, (case, d, elapsed)
            assert body["message"] in d[7], (case, d)
    # once the tracker answers, each opens its issue, once
    for case in ("r429", "reset", "second", "e502", "e503"):
        due_now(names[case])
    run_once(["--workers", "3"])
    for case in ("r429", "reset", "second", "e502", "e503"):
        t = receiver.trackers[("github", names[case])]
        assert len(t.issues) == 1 and t.problems == [], (case, t.issues, t.problems)
        assert by_event(names[case])["created"][4] == "delivered", case


def test_incidents_command_and_view_show_the_issue(receiver):
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    iid = new_incident(prefix + ".a")
    run_once()
    (no,) = gh.issues
    url = "https://github.com/acme/ops/issues/%d" % no
    out = subprocess.run([BIN, "incidents", "-d", SUPER_DSN, "--json"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    (line,) = [json.loads(x) for x in out.splitlines() if json.loads(x)["id"] == iid]
    assert line["external_refs"] == {name: {"kind": "github", "id": str(no), "url": url}}
    out = subprocess.run([BIN, "incidents", "-d", SUPER_DSN], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    (row,) = [x for x in out.splitlines() if x.split()[:1] == [str(iid)]]
    assert row.split()[-1] == url, row


def test_a_reader_sees_the_issue_but_not_the_token(receiver):
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    iid = new_incident(prefix + ".a")
    run_once()
    role = unique("issreader")
    sql("CREATE ROLE %s" % role)
    sql("GRANT USAGE ON SCHEMA gate_bridge TO %s" % role)
    sql("GRANT SELECT ON gate_bridge.incidents TO %s" % role)
    sql("GRANT SELECT (name, kind, url, min_severity, agent_pattern, events, enabled, created_at, options)"
        " ON gate_bridge.destinations TO %s" % role)
    with db_connect() as c:
        c.execute("SET ROLE %s" % role)
        assert c.execute("SELECT external_refs -> %s ->> 'id' FROM gate_bridge.incidents WHERE id = %s",
                         (name, iid)).fetchone()[0] == str(list(gh.issues)[0])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT secret FROM gate_bridge.destinations WHERE name = %s", (name,))


def test_a_running_worker_opens_the_issue_once_the_tracker_answers(receiver, workers):
    """A worker left running opens the issue when the tracker lets it (the
    retry after a 429 is due), once, and logs the refusal."""
    prefix, pattern = group()
    name, gh = tracker_destination(receiver, "github", pattern)
    gh.fault("create", 429, {"message": "slow down"}, {"Retry-After": "1"})
    iid = new_incident(prefix + ".a")
    w = workers()
    wait_until(lambda: refs(iid), 60, "the issue stored on the incident")
    assert w.stop() == 0
    assert len(gh.issues) == 1 and gh.problems == []
    text = w.text()
    assert "(github create)" in text and "HTTP 429" in text, text
