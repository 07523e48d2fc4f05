"""Fixtures of the gate-bridge serve tests.  test/serve/run.sh starts the
cluster and sets the GB_TEST_* variables; the fixtures start servers on
--listen 127.0.0.1:0 and stop them."""

import itertools
import os
import re
import secrets
import signal
import subprocess
import threading
import time

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

PGHOST = os.environ.get("GB_TEST_PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("GB_TEST_PGPORT", "5432"))
PGDATA = os.environ.get("GB_TEST_PGDATA")
PGBIN = os.environ.get("GB_TEST_PGBIN", "/usr/lib/postgresql/15/bin")
PGLOG = os.environ.get("GB_TEST_PGLOG")
WORK = os.environ.get("GB_TEST_WORK") or os.path.join("/tmp", "gb_serve_test_%d" % os.getpid())
SERVE_BIN = os.environ.get("GB_SERVE_BIN", os.path.join(ROOT, "gate-bridge"))
LOGDIR = os.path.join(WORK, "serve-logs")
os.makedirs(LOGDIR, exist_ok=True)

SUPER_DSN = "host=%s port=%d dbname=postgres user=postgres" % (PGHOST, PGPORT)


def role_dsn(role):
    return "host=%s port=%d dbname=postgres user=%s" % (PGHOST, PGPORT, role)


# Tokens of this session: every one of them is looked for in every server's
# log at the end (test_z_logs.py).
OPERATOR_TOKEN = "op-" + secrets.token_hex(16)
OPERATOR2_TOKEN = "op2-" + secrets.token_hex(16)   # a line without a NAME
VIEWER_TOKEN = "view-" + secrets.token_hex(16)
WRONG_TOKEN = "wrong-" + secrets.token_hex(16)
OPERATOR_NAME = "alice"
ALL_TOKENS = [OPERATOR_TOKEN, OPERATOR2_TOKEN, VIEWER_TOKEN, WRONG_TOKEN]
SECRET_STRINGS = list(ALL_TOKENS)  # tests may add more (bad lines' tokens)

LISTEN_RE = re.compile(r"gate-bridge serve: listening on http://([^/]+):(\d+)/")

_agent_seq = itertools.count(1)
RUN_TAG = secrets.token_hex(3)


def agent_name(prefix="t"):
    """An agent name no other test uses: its key never deduplicates."""
    return "serve.%s.%s.a%d" % (prefix, RUN_TAG, next(_agent_seq))


QUALITY = {"sev1": 0.3, "sev2": 0.7, "sev3": 0.85}


# ---------------------------------------------------------------- database

def db_connect(dsn=SUPER_DSN, **kw):
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10, **kw)


def sql(query, args=None, dsn=SUPER_DSN):
    with db_connect(dsn) as c:
        cur = c.execute(query, args)
        return cur.fetchall() if cur.description else None


def sql1(query, args=None):
    rows = sql(query, args)
    return rows[0][0] if rows else None


def new_incident(sev="sev1", agent=None, conn=None):
    """Inserts a failing eval row (its own transaction) that opens a budget
    incident of severity SEV; returns (incident id, agent)."""
    agent = agent or agent_name()
    own = conn is None
    c = conn or db_connect()
    try:
        c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, %s)",
                  (agent, QUALITY[sev]))
        row = c.execute("SELECT id, severity FROM gate_bridge.incidents WHERE agent = %s "
                        "ORDER BY id DESC LIMIT 1", (agent,)).fetchone()
    finally:
        if own:
            c.close()
    assert row is not None, "the eval row of %s opened no incident" % agent
    assert row[1] == sev, "expected a %s incident, got %s" % (sev, row[1])
    return row[0], agent


def event_positions(after=0):
    return [r[0] for r in sql("SELECT position FROM gate_bridge.incident_events "
                               "WHERE position > %s ORDER BY position", (after,))]


def events_head():
    return sql1("SELECT gate_bridge.events_head()")


def _as_server_user(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def pg_ctl(action, mode="fast", timeout=60):
    assert PGDATA, "GB_TEST_PGDATA is not set (run test/serve/run.sh)"
    cmd = [os.path.join(PGBIN, "pg_ctl"), "-D", PGDATA, "-w", "-t", str(timeout)]
    if action == "stop":
        cmd += ["-m", mode, "stop"]
    else:
        cmd += ["-l", PGLOG, "start"]
    subprocess.run(_as_server_user(cmd), check=True, cwd="/",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout + 10)


def pg_stop(mode="fast"):
    pg_ctl("stop", mode)


def pg_start():
    pg_ctl("start")
    wait_until(lambda: _db_answers(), 30, "the database to accept connections")


def _db_answers():
    try:
        sql("SELECT 1")
        return True
    except psycopg.Error:
        return False


def db_is_up():
    return _db_answers()


# ---------------------------------------------------------------- waiting

def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.time() > deadline:
            raise AssertionError("timed out after %ss waiting for %s (last: %r)"
                                 % (timeout, what, last))
        time.sleep(0.1)


# ---------------------------------------------------------------- the server

class Serve:
    """One `gate-bridge serve` process."""

    _seq = itertools.count(1)

    def __init__(self, role="serve_oncall", tokens=None, args=(), dsn=None, name="serve",
                 listen="127.0.0.1:0", wait=True):
        self.n = next(Serve._seq)
        self.name = "%s-%d" % (name, self.n)
        self.log_path = os.path.join(LOGDIR, self.name + ".log")
        self.lines = []
        self.host = None
        self.port = None
        self.tokens_path = None
        self.dsn = dsn or role_dsn(role)
        cmd = [SERVE_BIN, "serve", "-d", self.dsn, "--listen", listen, "--tick", "0"]
        if tokens is not None:
            self.tokens_path = os.path.join(WORK, self.name + ".tokens")
            with open(self.tokens_path, "w") as f:
                f.write(tokens)
            cmd += ["--tokens", self.tokens_path]
        cmd += list(args)
        self.cmd = cmd
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.PIPE, cwd=WORK)
        # run.sh ends whatever is left of these if the session dies
        with open(os.path.join(WORK, "serve.pids"), "a") as f:
            f.write("%d\n" % self.proc.pid)
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._read_stderr, daemon=True)
        self.reader.start()
        if wait:
            self.wait_listening()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self.log.write(line + "\n")
            self.log.flush()
            m = LISTEN_RE.search(line)
            if m and not self.listening.is_set():
                self.host, self.port = m.group(1), int(m.group(2))
                self.listening.set()
        self.listening.set()

    def wait_listening(self, timeout=30):
        if not self.listening.wait(timeout) or self.port is None:
            rc = self.proc.poll()
            self.stop()
            raise AssertionError("%s did not print its listening line within %ss "
                                 "(exit %r); stderr:\n%s"
                                 % (self.name, timeout, rc, "\n".join(self.lines[-30:])))
        return self

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    @property
    def pid(self):
        return self.proc.pid

    def get(self, path, token=None, headers=None, **kw):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, headers=h, **kw)

    def post(self, path, body=None, token=None, headers=None, data=None, **kw):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        kw.setdefault("timeout", 30)
        if data is None:
            import json
            data = json.dumps({} if body is None else body)
        return requests.post(self.url + path, data=data, headers=h, **kw)

    def request(self, method, path, token=None, **kw):
        h = kw.pop("headers", {})
        if token:
            h["Authorization"] = "Bearer " + token
        kw.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=h, **kw)

    def metrics(self, token=None):
        r = self.get("/metrics", token=token)
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)

    def wait_db_up(self, timeout=60):
        wait_until(lambda: self.get("/healthz", timeout=5).status_code == 200, timeout,
                   "%s's /healthz to answer 200" % self.name)

    def rss_kib(self):
        return proc_status(self.pid)["VmRSS"]

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.lines.append("*** killed: no exit %ss after SIGTERM" % timeout)
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
        self.log.close() if not self.log.closed else None
        return self.proc.returncode


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, v = line.split(":", 1)
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0])
    return out


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck  # utime + stime


class Metrics:
    def __init__(self, families):
        self.families = {f.name: f for f in families}
        self.samples = {}
        for f in families:
            for s in f.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def type_of(self, name):
        """The TYPE of a family, by sample name or family name."""
        for fname, f in self.families.items():
            if fname == name or any(s.name == name for s in f.samples):
                return f.type
        return None

    def names(self):
        return {n for n, _ in self.samples}


def parse_metrics(text):
    return Metrics(list(text_string_to_metric_families(text)))


def run_serve_exit(args, timeout=20, stdin_tokens=None):
    """Runs serve with ARGS to its exit: (status, stderr)."""
    p = subprocess.run([SERVE_BIN, "serve"] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, cwd=WORK)
    err = p.stderr.decode("utf-8", "replace")
    with open(os.path.join(LOGDIR, "exit-%s.log" % secrets.token_hex(4)), "w") as f:
        f.write("$ %s\n%s%s" % (" ".join(args), p.stdout.decode("utf-8", "replace"), err))
    return p.returncode, err


def tokens_text():
    return ("# operators and viewers of the tests\n\n"
            "%s operator %s\n%s operator\n%s viewer bob\n"
            % (OPERATOR_TOKEN, OPERATOR_NAME, OPERATOR2_TOKEN, VIEWER_TOKEN))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session", autouse=True)
def _database_ready():
    assert os.path.exists(SERVE_BIN), "%s is missing: make" % SERVE_BIN
    if PGDATA and not db_is_up():
        pg_start()
    yield


@pytest.fixture(autouse=True)
def _database_back_up():
    """A test that stops the database and fails must not leave it down."""
    yield
    if PGDATA and not db_is_up():
        pg_start()


@pytest.fixture
def serve_factory():
    started = []

    def start(**kw):
        s = Serve(**kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def serve_open():
    """A server without a tokens file, connected as serve_oncall."""
    s = Serve(name="open")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def serve_auth():
    """A server with a tokens file (operator alice, an operator without a
    name, viewer bob), connected as serve_oncall."""
    s = Serve(name="auth", tokens=tokens_text())
    yield s
    s.stop()
