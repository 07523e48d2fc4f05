#!/usr/bin/env python3
"""The latency of gate-bridge serve's event stream: N SSE clients in this
process (asyncio), failing eval rows committed one per transaction at a
steady rate, and for every (client, event) pair the time from the row's
COMMIT returning to the event's frame arriving at the client, on one
clock.  bench/serve.sh starts the cluster and runs this.

Environment: GB_BENCH_PGPORT (the cluster), GB_SERVE_BIN, GB_BENCH_CLIENTS
[500], GB_BENCH_ROWS [300], GB_BENCH_RATE rows per second [20],
GB_BENCH_WORK (logs).  Exit 1 if any client missed, repeated or reordered
an event, 2 on a setup failure."""

import asyncio
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "serve"))
from sse import AsyncSSEClient, HTTPBody  # noqa: E402

PGPORT = int(os.environ["GB_BENCH_PGPORT"])
SERVE_BIN = os.environ.get("GB_SERVE_BIN", os.path.join(HERE, "..", "gate-bridge"))
CLIENTS = int(os.environ.get("GB_BENCH_CLIENTS", "500"))
ROWS = int(os.environ.get("GB_BENCH_ROWS", "300"))
RATE = float(os.environ.get("GB_BENCH_RATE", "20"))
WORK = os.environ.get("GB_BENCH_WORK", "/tmp")
SUPER = "host=127.0.0.1 port=%d dbname=postgres user=postgres" % PGPORT
SERVE_DSN = "host=127.0.0.1 port=%d dbname=postgres user=serve_oncall" % PGPORT
TAG = "bench.serve.%d" % os.getpid()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def start_serve():
    log = open(os.path.join(WORK, "serve-bench.log"), "w")
    p = subprocess.Popen([SERVE_BIN, "serve", "-d", SERVE_DSN, "--listen", "127.0.0.1:0",
                          "--tick", "0"], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.PIPE)
    port = None
    ready = threading.Event()

    def reader():
        nonlocal port
        for raw in p.stderr:
            line = raw.decode("utf-8", "replace")
            log.write(line)
            log.flush()
            m = re.search(r"listening on http://[^/]+:(\d+)/", line)
            if m and port is None:
                port = int(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(30) or port is None:
        p.kill()
        sys.exit("serve did not start: see %s" % log.name)
    return p, port


class LeanClients:
    """N SSE clients on one epoll in a thread of their own: recv, split
    frames at blank lines, keep each frame's id and its receipt time.
    Much less work per frame than asyncio streams, so that the clients'
    own queueing adds little to what is measured."""

    def __init__(self, port, n):
        import select
        import socket
        self.select = select
        self.n = n
        self.socks = []
        self.bufs = {}
        self.received = {}  # fd -> [(position, t)]
        self.started = set()  # fds that got the first status frame
        self.errors = []
        self.stop_flag = threading.Event()
        self.ep = select.epoll()
        self.raw = {}
        self.dec = {}
        self.head_done = set()
        req = ("GET /events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
               "\r\n" % port).encode()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(req)
            s.setblocking(False)
            fd = s.fileno()
            self.socks.append(s)
            self.bufs[fd] = b""
            self.received[fd] = []
            self.ep.register(fd, select.EPOLLIN)
            if i % 50 == 49:
                time.sleep(0.02)
        self.byfd = {s.fileno(): s for s in self.socks}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag.is_set():
            for fd, _ in self.ep.poll(0.2):
                try:
                    data = self.byfd[fd].recv(262144)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.errors.append(repr(e))
                    self.ep.unregister(fd)
                    continue
                now = time.time()
                if not data:
                    self.errors.append("closed")
                    self.ep.unregister(fd)
                    continue
                if fd not in self.head_done:
                    raw = self.raw.get(fd, b"") + data
                    i = raw.find(b"\r\n\r\n")
                    if i < 0:
                        self.raw[fd] = raw
                        continue
                    head = raw[:i]
                    if b" 200 " not in head.split(b"\r\n", 1)[0]:
                        self.errors.append(head[:60])
                    self.dec[fd] = HTTPBody(b"chunked" in head.lower())
                    self.head_done.add(fd)
                    data = raw[i + 4:]
                buf = self.bufs[fd] + self.dec[fd].feed(data)
                # frames end with a blank line (the server writes LF only)
                rec = self.received[fd]
                while True:
                    j = buf.find(b"\n\n")
                    if j < 0:
                        break
                    frame = buf[:j]
                    buf = buf[j + 2:]
                    k = frame.find(b"id: ")
                    if k >= 0 and (k == 0 or frame[k - 1:k] == b"\n"):
                        e = frame.find(b"\n", k)
                        rec.append((int(frame[k + 4:e if e >= 0 else None]), now))
                    elif b"event: status" in frame:
                        self.started.add(fd)
                self.bufs[fd] = buf

    def positions(self, fd):
        return [p for p, _ in self.received[fd]]

    def close(self):
        self.stop_flag.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def writer(commits, started, stop_at):
    """ROWS failing eval rows, one transaction each, at RATE per second."""
    with psycopg.connect(SUPER, autocommit=True) as c:
        started.set()
        t0 = time.time()
        for i in range(ROWS):
            due = t0 + i / RATE
            d = due - time.time()
            if d > 0:
                time.sleep(d)
            agent = "%s.a%05d" % (TAG, i)
            c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, 0.3)",
                      (agent,))
            commits[agent] = time.time()
    stop_at.append(time.time())


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CLIENTS + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    serve, port = start_serve()
    try:
        lean = LeanClients(port, CLIENTS)
        deadline = time.time() + 90
        while len(lean.started) < CLIENTS and time.time() < deadline:
            time.sleep(0.05)
        if len(lean.started) < CLIENTS:
            print("bench: %d of %d clients never started (%r)" % (
                CLIENTS - len(lean.started), CLIENTS, lean.errors[:3]))
            return 2
        fds = list(lean.received)
        with psycopg.connect(SUPER, autocommit=True) as c:
            h0 = c.execute("SELECT gate_bridge.events_head()").fetchone()[0]
        time.sleep(0.5)
        mem0 = status_kib(serve.pid)
        cpu0 = cpu_seconds(serve.pid)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.time()
        commits, started, stop_at = {}, threading.Event(), []
        loop = asyncio.get_running_loop()
        wfut = loop.run_in_executor(None, writer, commits, started, stop_at)
        await wfut
        deadline = time.time() + 60
        while time.time() < deadline and not all(len(lean.received[fd]) >= ROWS for fd in fds):
            await asyncio.sleep(0.05)
        w1 = time.time()
        cpu1 = cpu_seconds(serve.pid)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        bench_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
        mem1 = status_kib(serve.pid)
        with psycopg.connect(SUPER, autocommit=True) as c:
            rows = c.execute(
                "SELECT e.position, i.agent FROM gate_bridge.incident_events e "
                "JOIN gate_bridge.incidents i ON i.id = e.incident_id "
                "WHERE e.position > %s ORDER BY e.position", (h0,)).fetchall()
        want = [p for p, _ in rows]
        commit_of = {p: commits.get(a) for p, a in rows}
        lat = []
        first = {}  # position -> the earliest receipt over the clients
        last = {}
        bad = 0
        for fd in fds:
            got = lean.positions(fd)
            if got != want:
                bad += 1
            for p, t in lean.received[fd]:
                if commit_of.get(p) is not None:
                    lat.append(t - commit_of[p])
                    first[p] = min(first.get(p, t), t)
                    last[p] = max(last.get(p, t), t)
        lat_first = sorted(first[p] - commit_of[p] for p in first)
        spread = sorted(last[p] - first[p] for p in first)
        lean.close()
        lat.sort()
        wall = w1 - w0
        cpu = cpu1 - cpu0
        print("== gate-bridge serve: %d SSE clients, %d rows at %g/s, one transaction each"
              % (CLIENTS, ROWS, RATE))
        print("events created            %d (of %d rows)" % (len(want), ROWS))
        print("clients with every event  %d of %d (once, in position order)"
              % (CLIENTS - bad, CLIENTS))
        print("(client, event) pairs     %d" % len(lat))
        print("latency commit->receipt   p50 %.1f ms   p99 %.1f ms   max %.1f ms"
              % (pct(lat, 50) * 1000, pct(lat, 99) * 1000, (lat[-1] if lat else float("nan"))
                 * 1000))
        print("  first client per event  p50 %.1f ms   p99 %.1f ms   (commit -> first receipt)"
              % (pct(lat_first, 50) * 1000, pct(lat_first, 99) * 1000))
        print("  spread per event        p50 %.1f ms   p99 %.1f ms   (first -> last client)"
              % (pct(spread, 50) * 1000, pct(spread, 99) * 1000))
        print("serve CPU                 %.2f s over %.1f s  (%.1f%% of one core)"
              % (cpu, wall, 100.0 * cpu / wall if wall else 0))
        print("bench clients' CPU        %.2f s (%.1f%% of one core; they share the machine)"
              % (bench_cpu, 100.0 * bench_cpu / wall if wall else 0))
        print("serve memory              VmRSS %d KiB before, %d KiB after; VmHWM %d KiB"
              % (mem0["VmRSS"], mem1["VmRSS"], mem1["VmHWM"]))
        print("target p99 < 100 ms       %s" % ("met" if lat and pct(lat, 99) < 0.1 else "MISSED"))
        if len(want) != ROWS:
            print("bench: %d rows opened %d events" % (ROWS, len(want)))
            return 1
        return 1 if bad else 0
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(15)
        except subprocess.TimeoutExpired:
            serve.kill()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
