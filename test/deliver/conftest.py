"""Fixtures of the gate-bridge deliver tests.  test/deliver/run.sh starts the
cluster and sets the GB_TEST_* variables; the tests start the receiver and
the workers, and stop them."""

import itertools
import os
import secrets
import signal
import subprocess
import sys
import time

import psycopg
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from receiver import Receiver  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
PGHOST = os.environ.get("GB_TEST_PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("GB_TEST_PGPORT", "5432"))
PGDATA = os.environ.get("GB_TEST_PGDATA")
PGBIN = os.environ.get("GB_TEST_PGBIN", "/usr/lib/postgresql/15/bin")
PGLOG = os.environ.get("GB_TEST_PGLOG")
WORK = os.environ.get("GB_TEST_WORK") or "/tmp/gb_deliver_test_%d" % os.getpid()
BIN = os.environ.get("GB_DELIVER_BIN", os.path.join(ROOT, "gate-bridge"))
LOGDIR = os.path.join(WORK, "deliver-logs")
os.makedirs(LOGDIR, exist_ok=True)

SUPER_DSN = "host=%s port=%d dbname=postgres user=postgres" % (PGHOST, PGPORT)
MAX_ATTEMPTS_GUC = "gate_bridge.delivery_max_attempts"

RUN_TAG = secrets.token_hex(3)
_seq = itertools.count(1)
QUALITY = {"sev1": 0.3, "sev2": 0.7, "sev3": 0.85}
# secrets of this session: none may appear in a worker's log (test_z_logs)
SECRETS = []
_logs = []


def unique(prefix):
    return "%s%s%d" % (prefix, RUN_TAG, next(_seq))


def db_connect(dsn=SUPER_DSN):
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def sql(query, args=None):
    with db_connect() as c:
        cur = c.execute(query, args)
        return cur.fetchall() if cur.description else None


def sql1(query, args=None):
    rows = sql(query, args)
    return rows[0][0] if rows else None


def new_incident(agent, sev="sev1", conn=None):
    """A failing eval row (its own transaction unless conn is given) that
    opens a budget incident on agent; returns its id."""
    own = conn is None
    c = conn or db_connect()
    try:
        c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, %s)",
                  (agent, QUALITY[sev]))
        if not own:
            c.execute("SELECT gate_bridge.decide_pending()")   # else decided at commit
        row = c.execute("SELECT id FROM gate_bridge.incidents WHERE agent = %s "
                        "ORDER BY id DESC LIMIT 1", (agent,)).fetchone()
    finally:
        if own:
            c.close()
    assert row is not None, "the eval row of %s opened no incident" % agent
    return row[0]


def add_destination(name, kind, url, secret=None, agent_pattern="*", **kw):
    cols = {"name": name, "kind": kind, "url": url, "secret": secret,
            "agent_pattern": agent_pattern}
    cols.update(kw)
    if secret:
        SECRETS.append(secret)
    # a token in every URL, as Slack's and many webhooks' URLs hold one
    token = "urltok" + secrets.token_hex(8)
    SECRETS.append(token)
    cols["url"] = url + ("&" if "?" in url else "?") + "tok=" + token
    keys = list(cols)
    sql("INSERT INTO gate_bridge.destinations (%s) VALUES (%s)" %
        (", ".join(keys), ", ".join(["%s"] * len(keys))), [cols[k] for k in keys])


def deliveries(destination):
    return sql("SELECT id, event_id, incident_id, event, status, attempts, last_status, last_error,"
               " next_attempt_at - now() FROM gate_bridge.deliveries WHERE destination = %s"
               " ORDER BY id", (destination,))


def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def role_dsn(role):
    return "host=%s port=%d dbname=postgres user=%s" % (PGHOST, PGPORT, role)


def pg_ctl(action, mode="fast", timeout=60):
    assert PGDATA, "GB_TEST_PGDATA is not set (run test/deliver/run.sh)"
    cmd = [os.path.join(PGBIN, "pg_ctl"), "-D", PGDATA, "-w", "-t", str(timeout)]
    cmd += ["-m", mode, "stop"] if action == "stop" else ["-l", PGLOG, "start"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, cwd="/", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=timeout + 10)


class Worker:
    """A gate-bridge deliver process; its stderr goes to a log file."""

    def __init__(self, args=(), env=None, name="deliver", dsn=SUPER_DSN, tick="0"):
        self.log_path = os.path.join(LOGDIR, "%s-%d.log" % (name, next(_seq)))
        _logs.append(self.log_path)
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e.pop("DATABASE_URL", None)
        e.update(env or {})
        self.proc = subprocess.Popen([BIN, "deliver", "-d", dsn, "--tick", tick] + list(args),
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=e)
        with open(os.path.join(WORK, "deliver.pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def run_once(args=(), env=None, timeout=120):
    w = Worker(["--once"] + list(args), env=env, name="once")
    rc = w.wait(timeout)
    assert rc == 0, "deliver --once exited %s: %s" % (rc, w.text())
    return w


def all_logs():
    out = []
    for p in _logs:
        with open(p, "rb") as f:
            out.append((p, f.read().decode("utf-8", "replace")))
    return out


@pytest.fixture(scope="session")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def workers():
    started = []

    def start(*args, **kw):
        w = Worker(*args, **kw)
        started.append(w)
        return w
    yield start
    for w in started:
        if w.proc.poll() is None:
            w.stop(signal.SIGKILL)
