"""The dashboard in a real headless browser (chromium through selenium):
live updates without reload, counters, an operator's ack, the links to an
incident's issues, its playbooks' runbooks and an operator's run, the live badge across a stop and a restart of the
database, the token form, and a screenshot (GB_SCREENSHOT)."""

import json
import os
import shutil
import struct
import time

import pytest

from conftest import (OPERATOR_NAME, OPERATOR_TOKEN, VIEWER_TOKEN, WORK, Serve, db_connect,
                      pg_start, pg_stop, sql, tokens_text)

APPEAR_DEADLINE = float(os.environ.get("GB_BROWSER_DEADLINE", "2"))
CHROMIUM = os.environ.get("GB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GB_CHROMEDRIVER", "/usr/bin/chromedriver")

webdriver = pytest.importorskip("selenium.webdriver")


def make_driver():
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,900", "--hide-scrollbars", "--force-device-scale-factor=1",
              "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = os.path.join(WORK, "chromedriver.log")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER, log_path=log), options=opts)
    drv.set_window_size(1400, 900)
    # the page's viewport itself is 1400x900 (the window has chrome around it)
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    drv.set_page_load_timeout(30)
    return drv


class UI:
    def __init__(self, drv, srv):
        self.drv = drv
        self.srv = srv

    def js(self, script, *args):
        return self.drv.execute_script(script, *args)

    def attr(self, selector, name):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.getAttribute(arguments[1]) : null;", selector, name)

    def text(self, selector):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent.trim() : null;", selector)

    def exists(self, selector):
        return self.js("return document.querySelector(arguments[0]) !== null;", selector)

    def visible(self, selector):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "if (!e || e.hidden) return false;"
                       "const r = e.getBoundingClientRect();"
                       "return r.width > 0 && r.height > 0 &&"
                       " getComputedStyle(e).visibility !== 'hidden';", selector)

    def wait(self, pred, timeout, what, step=0.05):
        deadline = time.time() + timeout
        last = None
        while True:
            last = pred()
            if last:
                return last
            if time.time() > deadline:
                raise AssertionError("browser: timed out after %.1fs waiting for %s (last %r)"
                                     % (timeout, what, last))
            time.sleep(step)

    def badge(self):
        return self.attr("#live-badge", "data-state")

    def row(self, iid):
        return '#incident-rows [data-incident-id="%d"]' % iid

    def count(self, name):
        t = self.text("#count-" + name)
        return int(t) if t is not None and t.isdigit() else t

    def counts(self):
        return {k: self.count(k) for k in ("sev1", "sev2", "sev3", "open", "ack")}

    def click(self, selector):
        from selenium.webdriver.common.by import By
        el = self.drv.find_element(By.CSS_SELECTOR, selector)
        self.js("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()


def sql_counts():
    r = sql("SELECT sev1, sev2, sev3, open, ack FROM gate_bridge.incident_counts")[0]
    return dict(zip(("sev1", "sev2", "sev3", "open", "ack"), r))


SEED = [  # agent, kind of row, severity
    ("support.triage", "quality", 0.31, "sev1"),
    ("billing.refunds", "latency", 12500, "sev1"),
    ("search.ranker", "quality", 0.72, "sev2"),
    ("inbox.summarizer", "latency", 6100, "sev2"),
    ("sales.outreach", "quality", 0.86, "sev3"),
    ("docs.qa", "quality", 0.88, "sev3"),
    ("travel.booking", "latency", 2600, "sev3"),
]


def open_row(kind, value, agent):
    with db_connect() as c:
        if kind == "quality":
            c.execute("INSERT INTO gate_bridge.eval_results (agent, quality, triggered_by) "
                      "VALUES (%s, %s, 'ci')", (agent, value))
        else:
            c.execute("INSERT INTO gate_bridge.eval_results (agent, latency_p95_ms, triggered_by) "
                      "VALUES (%s, %s, 'ci')", (agent, value))
        return c.execute("SELECT id FROM gate_bridge.incidents WHERE agent = %s AND "
                         "status <> 'resolved' ORDER BY id DESC LIMIT 1", (agent,)).fetchone()[0]


@pytest.fixture(scope="module")
def ui():
    # a clean board for the screenshot: what the other tests left is resolved
    sql("SELECT gate_bridge.resolve(id, 'test-cleanup', NULL) FROM gate_bridge.incidents "
        "WHERE status <> 'resolved'")
    sql("INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) "
        "VALUES ('*', 'latency', 2000, 5000, 10000) ON CONFLICT DO NOTHING")
    seeded = {}
    for agent, kind, value, sev in SEED:
        seeded[agent] = open_row(kind, value, agent)
    sql("SELECT gate_bridge.ack(%s, 'dana')", (seeded["inbox.summarizer"],))
    srv = Serve(name="browser", tokens=tokens_text())
    try:
        drv = make_driver()
    except Exception as e:  # noqa: BLE001
        srv.stop()
        pytest.fail("could not start chromium through chromedriver: %r" % e)
    u = UI(drv, srv)
    u.seeded = seeded
    try:
        yield u
    finally:
        try:
            logs = drv.get_log("browser")
            with open(os.path.join(WORK, "browser-console.log"), "w") as f:
                for e in logs:
                    f.write("%s %s\n" % (e.get("level"), e.get("message")))
        except Exception:  # noqa: BLE001
            pass
        drv.quit()
        srv.stop()


def test_page_loads_live_with_the_open_incidents(ui):
    ui.drv.get(ui.srv.url + "/?token=" + OPERATOR_TOKEN)
    ui.wait(lambda: ui.badge() == "live", 20, "#live-badge[data-state=live]")
    for agent, iid in ui.seeded.items():
        ui.wait(lambda: ui.exists(ui.row(iid)), 10, "the row of %s (incident %d)" % (agent, iid))
        assert ui.attr(ui.row(iid), "data-severity") == \
            sql("SELECT severity FROM gate_bridge.incidents WHERE id = %s", (iid,))[0][0]
    assert ui.attr(ui.row(ui.seeded["inbox.summarizer"]), "data-status") == "ack"
    assert ui.attr(ui.row(ui.seeded["support.triage"]), "data-status") == "open"
    ui.wait(lambda: ui.counts() == sql_counts(), 10, "the counters to match SQL %r" % sql_counts())
    # the token left the address bar
    assert OPERATOR_TOKEN not in ui.drv.current_url, ui.drv.current_url


def test_a_new_incident_appears_without_reload(ui):
    before = ui.counts()
    ui.js("window.__gb_no_reload = true;")
    iid = open_row("quality", 0.2, "checkout.assistant")
    t0 = time.time()
    ui.wait(lambda: ui.exists(ui.row(iid)), APPEAR_DEADLINE + 0.5,
            "the new incident's row [data-incident-id=%d]" % iid, step=0.02)
    elapsed = time.time() - t0
    assert elapsed <= APPEAR_DEADLINE, "the row appeared %.2fs after the commit" % elapsed
    assert ui.js("return window.__gb_no_reload === true;"), "the page was reloaded"
    assert ui.attr(ui.row(iid), "data-severity") == "sev1"
    assert ui.attr(ui.row(iid), "data-status") == "open"
    want = dict(before, sev1=before["sev1"] + 1, open=before["open"] + 1)
    ui.wait(lambda: ui.counts() == want, APPEAR_DEADLINE,
            "the counters to move to %r" % want)
    assert ui.counts() == sql_counts()
    ui.seeded["checkout.assistant"] = iid


def test_operators_ack_click_changes_the_row(ui):
    iid = ui.seeded["support.triage"]
    before = ui.counts()
    ui.click(ui.row(iid))
    ui.wait(lambda: ui.visible("#incident-detail"), 5, "#incident-detail to open")
    ui.wait(lambda: ui.exists("#action-ack") and
            ui.js("return !document.querySelector('#action-ack').disabled;"), 5,
            "an enabled #action-ack")
    assert ui.exists("#action-resolve") and ui.exists("#action-snooze")
    ui.click("#action-ack")
    ui.wait(lambda: ui.attr(ui.row(iid), "data-status") == "ack", 5,
            "the row's data-status to become ack")
    st, by = sql("SELECT status, acked_by FROM gate_bridge.incidents WHERE id = %s", (iid,))[0]
    assert (st, by) == ("ack", OPERATOR_NAME), (st, by)
    want = dict(before, open=before["open"] - 1, ack=before["ack"] + 1)
    ui.wait(lambda: ui.counts() == want, 5, "the counters to move to %r" % want)
    ui.wait(lambda: ui.visible("#toast"), 5, "a #toast after the ack")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_screenshot(ui):
    # the detail of a sev1 with its timeline (acked above)
    ui.wait(lambda: ui.visible("#incident-detail"), 5, "#incident-detail open")
    time.sleep(0.5)  # the toast and transitions settle
    path = os.path.join(WORK, "dashboard.png")
    assert ui.drv.save_screenshot(path)
    w, h = png_size(path)
    assert (w, h) == (1400, 900), (w, h)
    dest = os.environ.get("GB_SCREENSHOT")
    if dest:
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        shutil.copyfile(path, dest)
    # several severities are on screen
    sevs = set(ui.js("return [...document.querySelectorAll('#incident-rows [data-severity]')]"
                     ".map(e => e.getAttribute('data-severity'));"))
    assert sevs == {"sev1", "sev2", "sev3"}, sevs


def test_an_incident_links_to_its_issues(ui):
    """The issues opened for an incident (external_refs, written by
    deliver) are links on its row and in its detail; a URL that is not
    http(s) is not a link."""
    refs = {"gh": {"kind": "github", "id": "7", "url": "https://github.com/acme/ops/issues/7"},
            "jira": {"kind": "jira", "id": "10001", "key": "OPS-7",
                     "url": "https://acme.atlassian.net/browse/OPS-7"},
            "odd": {"kind": "github", "id": "8", "url": "javascript:alert(1)"}}
    with db_connect() as c:
        c.autocommit = False
        c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('ship.tracker', 0.3)")
        c.execute("SELECT gate_bridge.decide_pending()")
        iid = c.execute("SELECT id FROM gate_bridge.incidents WHERE agent = 'ship.tracker' "
                        "AND status <> 'resolved'").fetchone()[0]
        c.execute("UPDATE gate_bridge.incident_rows SET external_refs = %s WHERE id = %s",
                  (json.dumps(refs), iid))
        c.commit()
    link = ui.row(iid) + ' a.issue-link[data-destination="%s"]'
    ui.wait(lambda: ui.exists(link % "gh"), 5, "the row's link to the GitHub issue")
    assert ui.attr(link % "gh", "href") == refs["gh"]["url"]
    assert ui.text(link % "gh") == "#7"
    assert ui.text(link % "jira") == "OPS-7"
    assert ui.attr(link % "jira", "target") == "_blank"
    assert "noopener" in ui.attr(link % "jira", "rel")
    assert not ui.exists(link % "odd"), "a javascript: URL became a link"
    assert ui.exists(ui.row(iid) + ' span.issue-link[data-destination="odd"]')
    ui.click(ui.row(iid))
    detail = '#incident-detail .issues a.issue-link[data-destination="%s"]'
    ui.wait(lambda: ui.exists(detail % "jira"), 5, "the detail's link to the Jira issue")
    assert ui.attr(detail % "jira", "href") == refs["jira"]["url"]
    assert ui.attr(detail % "gh", "href") == refs["gh"]["url"]
    sql("SELECT gate_bridge.resolve(%s, 'test-cleanup', NULL)", (iid,))


def test_playbooks_link_to_their_runbooks_and_run(ui):
    """An incident's playbooks link to the runbooks serve carries, with the
    registry's risk; an operator runs one with an action from the detail,
    and its outcome comes onto the timeline; the runbook page opens and
    leads back to the incidents."""
    from selenium.webdriver.common.by import By
    role = "serve_browser_runner"
    sql("CREATE ROLE %s NOLOGIN" % role)
    sql("CREATE FUNCTION public.serve_browser_rerun(incident jsonb) RETURNS text LANGUAGE sql "
        "AS $$ SELECT 'queued a rerun of ' || (incident->>'agent') $$")
    sql("GRANT EXECUTE ON FUNCTION public.serve_browser_rerun(jsonb) TO %s" % role)
    sql("UPDATE gate_bridge.playbooks SET action = 'public.serve_browser_rerun', action_role = %s "
        "WHERE name = 'rerun_eval'", (role,))
    try:
        iid = open_row("quality", 0.32, "warehouse.loader")
        ui.wait(lambda: ui.exists(ui.row(iid)), 10, "the new incident's row")
        ui.click(ui.row(iid))
        item = '#detail-playbooks li[data-playbook="%s"]'
        ui.wait(lambda: ui.exists(item % "rerun_dbt"), 5, "the detail's playbooks")
        names = ui.js("return [...document.querySelectorAll('#detail-playbooks li[data-playbook]')]"
                      ".map(e => e.getAttribute('data-playbook'));")
        assert names == ["rerun_eval", "rerun_dbt"], names
        link = ui.drv.find_element(By.CSS_SELECTOR, (item % "rerun_dbt") + " a.pb-runbook")
        runbook = link.get_attribute("href")
        assert runbook == ui.srv.url + "/docs/runbooks/rerun_dbt.md", runbook
        assert link.get_attribute("target") == "_blank"
        assert "low risk" in ui.text(item % "rerun_dbt")
        assert not ui.exists((item % "rerun_dbt") + " .pb-run"), "a playbook without an action has Run"
        sev = ui.drv.find_element(By.CSS_SELECTOR, '#detail-playbooks .runbooks a')
        assert sev.get_attribute("href") == \
            ui.srv.url + "/docs/runbooks/severity-tiers.md#what-the-tiers-mean"
        assert sev.text == "what SEV1 means", sev.text
        # run rerun_eval from the detail
        ui.click((item % "rerun_eval") + " .pb-run")
        ui.wait(lambda: ui.exists('#incident-detail .timeline [data-event="playbook_succeeded"]'),
                5, "playbook_succeeded on the detail's timeline")
        ui.wait(lambda: "succeeded" in (ui.text("#toast") or ""), 5, "the toast of the run")
        got = sql("SELECT event, actor, detail->>'result' FROM gate_bridge.incident_events "
                  "WHERE incident_id = %s AND event LIKE 'playbook%%' ORDER BY position", (iid,))
        assert got == [("playbook_started", OPERATOR_NAME, None),
                       ("playbook_succeeded", OPERATOR_NAME, "queued a rerun of warehouse.loader")], got
        # the runbook, and back
        ui.drv.get(runbook)
        h1 = ui.drv.find_element(By.CSS_SELECTOR, "main.doc h1").text
        assert "rerun_dbt" in h1, h1
        assert ui.exists('main.doc table'), "the runbook's tables are not rendered"
        ui.click('nav.doc-nav a[href="../../"]:not(.brand)')
        ui.wait(lambda: ui.badge() == "live", 20, "the dashboard again, live")
        ui.wait(lambda: ui.exists(ui.row(iid)), 10, "the incident's row again")
    finally:
        sql("UPDATE gate_bridge.playbooks SET action = NULL, action_role = NULL "
            "WHERE name = 'rerun_eval'")
        sql("DROP FUNCTION public.serve_browser_rerun(jsonb)")
        sql("DROP ROLE %s" % role)


def test_database_stop_turns_the_badge_red_and_restart_brings_it_back(ui):
    # committed just before the stop: must be shown, now or after the restart
    x = open_row("quality", 0.25, "fraud.screening")
    pg_stop("fast")
    try:
        ui.wait(lambda: ui.badge() not in ("live", None), 30,
                "#live-badge to leave data-state=live with the database down")
        down_state = ui.badge()
    finally:
        pg_start()
    # right after the restart
    y = open_row("quality", 0.7, "hr.onboarding")
    ui.wait(lambda: ui.badge() == "live", 60, "#live-badge[data-state=live] after the restart")
    for agent, iid in (("fraud.screening", x), ("hr.onboarding", y)):
        ui.wait(lambda: ui.exists(ui.row(iid)), 10,
                "the row of %s (incident %d) after the restart" % (agent, iid))
    for agent, iid in ui.seeded.items():
        assert ui.exists(ui.row(iid)), "lost the row of %s after the restart" % agent
    seen = {}

    def counts_match():
        seen["ui"], seen["sql"] = ui.counts(), sql_counts()
        return seen["ui"] == seen["sql"]

    try:
        ui.wait(counts_match, 10, "the counters to match SQL after the restart")
    except AssertionError:
        api = ui.srv.get("/api/counts", token=OPERATOR_TOKEN).json()
        ypos = sql("SELECT position FROM gate_bridge.incident_events WHERE incident_id = %s",
                   (y,))
        raise AssertionError("the counters after the restart: page %r, SQL %r, /api/counts %r; "
                             "the page's %r, the event of the row committed after the "
                             "restart at %r" % (seen.get("ui"), seen.get("sql"), api,
                                                ui.text("#stream-position"), ypos))
    assert down_state in ("down", "connecting"), down_state
    # and live again: a new one appears as before
    z = open_row("quality", 0.86, "maps.routing")
    t0 = time.time()
    ui.wait(lambda: ui.exists(ui.row(z)), APPEAR_DEADLINE + 0.5, "a new row after the restart")
    assert time.time() - t0 <= APPEAR_DEADLINE


def rows_shown(ui):
    return ui.js("return [...document.querySelectorAll('#incident-rows [data-incident-id]')]"
                 ".map(e => [Number(e.getAttribute('data-incident-id')),"
                 " e.getAttribute('data-status'), e.getAttribute('data-severity')]);")


def test_filters(ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    for id_ in ("#filter-status", "#filter-agent", "#filter-sev1", "#filter-sev2",
                "#filter-sev3", "#enable-notifications", "#toast", "#count-open", "#count-ack"):
        assert ui.exists(id_), "no %s on the page" % id_
    # acknowledged only
    Select(ui.drv.find_element(By.CSS_SELECTOR, "#filter-status")).select_by_value("ack")
    want = {r[0] for r in sql("SELECT id FROM gate_bridge.incidents WHERE status = 'ack'")}
    ui.wait(lambda: {r[0] for r in rows_shown(ui)} == want, 5,
            "only the acknowledged incidents %r (shown %r)" % (want, rows_shown(ui)))
    Select(ui.drv.find_element(By.CSS_SELECTOR, "#filter-status")).select_by_value("unresolved")
    # no sev3
    ui.click("#filter-sev3")
    want = {r[0] for r in sql("SELECT id FROM gate_bridge.incidents WHERE status <> 'resolved' "
                              "AND severity <> 'sev3'")}
    ui.wait(lambda: {r[0] for r in rows_shown(ui)} == want, 5,
            "the unresolved incidents but sev3 %r" % want)
    ui.click("#filter-sev3")
    # an agent glob
    agent = ui.drv.find_element(By.CSS_SELECTOR, "#filter-agent")
    agent.send_keys("support.*")
    want = {r[0] for r in sql("SELECT id FROM gate_bridge.incidents WHERE status <> 'resolved' "
                              "AND agent LIKE 'support.%'")}
    ui.wait(lambda: {r[0] for r in rows_shown(ui)} == want, 5,
            "the incidents of support.* %r" % want)
    agent.clear()
    ui.js("const e = document.querySelector('#filter-agent');"
          "e.value = ''; e.dispatchEvent(new Event('input', {bubbles: true}));"
          "e.dispatchEvent(new Event('change', {bubbles: true}));")
    want = {r[0] for r in sql("SELECT id FROM gate_bridge.incidents WHERE status <> 'resolved'")}
    ui.wait(lambda: {r[0] for r in rows_shown(ui)} == want, 5, "every unresolved incident again")


def test_token_form(ui):
    ui.js("sessionStorage.clear();")
    ui.drv.get(ui.srv.url + "/")
    ui.wait(lambda: ui.visible("#token-form"), 10, "#token-form without a token")
    from selenium.webdriver.common.by import By
    inp = ui.drv.find_element(By.CSS_SELECTOR, "#token-input")
    inp.send_keys(VIEWER_TOKEN)
    ui.click('#token-form [type="submit"]')
    ui.wait(lambda: ui.badge() == "live", 20, "live after entering a viewer token")
    iid = ui.seeded["search.ranker"]
    ui.wait(lambda: ui.exists(ui.row(iid)), 10, "the rows for a viewer")
    assert not ui.visible("#token-form")
    # a viewer sees the runbooks, and no Run
    ui.click(ui.row(iid))
    ui.wait(lambda: ui.exists('#detail-playbooks li[data-playbook="rerun_eval"] a.pb-runbook'), 5,
            "the viewer's link to the runbook")
    assert not ui.exists("#detail-playbooks .pb-run")
