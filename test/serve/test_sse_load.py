"""Many SSE clients: 500 clients each get every event of a storm once, in
order; the server's memory stays bounded over two equal storms; a client
that stops reading is dropped without slowing the others; a client
resuming from 0 gets the whole history, older than the server's ring."""

import asyncio
import os
import resource
import socket
import threading
import time

import pytest

from conftest import (RUN_TAG, Serve, db_connect, event_positions, events_head, proc_status,
                      sql, wait_until)
from sse import AsyncSSEClient, SSEClient, build_request

N_CLIENTS = int(os.environ.get("GB_SERVE_TEST_CLIENTS", "500"))
RSS_BOUND_KIB = 200 * 1024


def raise_fd_limit(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


raise_fd_limit()


class Sampler(threading.Thread):
    """VmRSS of PID every 0.1 s, with a label per phase."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []  # (label, kib)
        self.label = "idle"
        self.stop_flag = threading.Event()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.samples.append((self.label, proc_status(self.pid)["VmRSS"]))
            except (OSError, KeyError):
                pass
            time.sleep(0.1)

    def peak(self, label):
        vals = [k for l, k in self.samples if l == label]
        return max(vals) if vals else None


_storm_seq = iter(range(1, 1000))


def storm():
    """About 500 events: 200 incidents in their own transactions, 100 in
    ten 10-row transactions (every agent its own key), 100 acks each in its
    own transaction, 100 resolves in two statements."""
    tag = "serve.storm%s.s%d" % (RUN_TAG, next(_storm_seq))
    q = {0: 0.3, 1: 0.7, 2: 0.85}
    with db_connect() as c:
        for i in range(200):
            c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, %s)",
                      ("%s.single%d" % (tag, i), q[i % 3]))
        for b in range(10):
            with c.transaction():
                c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) "
                          "SELECT %s || g, 0.3 FROM generate_series(1, 10) g",
                          ("%s.batch%d." % (tag, b),))
        ids = [r[0] for r in c.execute(
            "SELECT id FROM gate_bridge.incidents WHERE agent LIKE %s ORDER BY id",
            (tag + ".%",)).fetchall()]
        assert len(ids) == 300, len(ids)
        for iid in ids[:100]:
            c.execute("SELECT gate_bridge.ack(%s, 'storm')", (iid,))
        for part in (ids[100:150], ids[150:200]):
            c.execute("SELECT gate_bridge.resolve(i, 'storm', 'storm') FROM unnest(%s::bigint[]) i",
                      (part,))
    return 500


async def connect_all(srv, n, path="/events"):
    clients = [AsyncSSEClient(srv.host, srv.port, path) for _ in range(n)]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.ensure_future(c.run()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 90)
    except asyncio.TimeoutError:
        pass
    not_ready = [c for c in clients if not c.status_frames]
    return clients, tasks, not_ready


async def wait_all(clients, count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(len(c.received) >= count for c in clients):
            return True
        if all(c.closed for c in clients):
            return False
        await asyncio.sleep(0.2)
    return False


async def close_all(clients, tasks):
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def check_clients(clients, want):
    bad = []
    for i, c in enumerate(clients):
        got = c.positions()
        if got != want:
            dup = len(got) - len(set(got))
            bad.append("client %d: %d of %d events, %d repeated, missing %s, error %r"
                       % (i, len(got), len(want), dup, sorted(set(want) - set(got))[:5], c.error))
    assert not bad, "%d of %d clients got the storm wrong:\n%s" % (len(bad), len(clients),
                                                                   "\n".join(bad[:10]))


def test_500_clients_two_storms_memory_bounded():
    srv = Serve(name="load")
    sampler = Sampler(srv.pid)
    sampler.start()
    report = []
    try:
        time.sleep(0.5)
        rss = {"start": srv.rss_kib()}
        base_clients = srv.metrics().value("gate_bridge_sse_clients")

        async def one_storm(k):
            sampler.label = "connect%d" % k
            clients, tasks, not_ready = await connect_all(srv, N_CLIENTS)
            try:
                assert not not_ready, "%d of %d clients never got their first status frame " \
                    "(errors: %r)" % (len(not_ready), N_CLIENTS,
                                      [c.error for c in not_ready][:5])
                loop = asyncio.get_running_loop()
                h0 = await loop.run_in_executor(None, events_head)
                sampler.label = "storm%d" % k
                t0 = time.time()
                n = await loop.run_in_executor(None, storm)
                t1 = time.time()
                want = await loop.run_in_executor(None, event_positions, h0)
                assert len(want) == n, (len(want), n)
                done = await wait_all(clients, len(want), 90)
                t2 = time.time()
                check_clients(clients, want)
                assert done
                rss["peak%d" % k] = max(v for v in (sampler.peak("connect%d" % k),
                                                   sampler.peak("storm%d" % k)) if v)
                report.append("storm %d: %d events in %.2fs, all %d clients had them %.2fs "
                              "after the last commit" % (k, n, t1 - t0, N_CLIENTS, t2 - t1))
            finally:
                sampler.label = "close%d" % k
                await close_all(clients, tasks)

        for k in (1, 2):
            asyncio.run(one_storm(k))
            wait_until(lambda: srv.metrics().value("gate_bridge_sse_clients") == base_clients,
                       60, "gate_bridge_sse_clients back to %s after storm %d" % (base_clients, k))
            time.sleep(1)
            rss["after%d" % k] = srv.rss_kib()
        st = proc_status(srv.pid)
        report.append("VmRSS KiB: %r; VmHWM %d KiB" % (rss, st["VmHWM"]))
        print("\n".join(report))
        peak = max(k for _, k in sampler.samples)
        assert peak < RSS_BOUND_KIB, "VmRSS reached %d KiB (bound %d): %s" % (
            peak, RSS_BOUND_KIB, report)
        g1 = rss["after1"] - rss["start"]
        g2 = rss["after2"] - rss["after1"]
        p1 = rss["peak1"] - rss["start"]
        p2 = rss["peak2"] - rss["after1"]
        slack = 6 * 1024
        assert g2 <= max(g1 / 2, slack), "memory keeps growing: +%d KiB over storm 1, +%d KiB " \
            "over storm 2 (%s)" % (g1, g2, report)
        assert rss["peak2"] <= rss["peak1"] + max(p1 / 2, slack), \
            "storm 2 peaked higher: %s (growth to peak %d, %d)" % (rss, p1, p2)
    finally:
        sampler.stop_flag.set()
        rc = srv.stop()
    assert rc == 0, "exit %s after SIGTERM with clients gone" % rc


def slow_socket(srv):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((srv.host, srv.port))
    s.sendall(build_request(srv.host, srv.port, "/events"))
    return s


def big_batch(tag, b, n=1000):
    """N incidents in one transaction, with long agent names (large frames)."""
    pad = "x" * 80
    with db_connect() as c:
        c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) "
                  "SELECT %s || g, 0.3 FROM generate_series(1, %s) g",
                  ("%s.%s.b%d." % (tag, pad, b), n))
    return time.time()


def test_a_client_that_stops_reading_is_dropped():
    srv = Serve(name="slow", args=["--client-timeout", "3"])
    tag = "serve.slow%s" % RUN_TAG
    try:
        d0 = srv.metrics().value("gate_bridge_sse_dropped_total")
        slow = slow_socket(srv)
        wait_until(lambda: srv.metrics().value("gate_bridge_sse_clients") >= 1, 15,
                   "the slow client to be counted")

        async def run():
            clients, tasks, not_ready = await connect_all(srv, 10)
            assert not not_ready
            loop = asyncio.get_running_loop()
            h0 = await loop.run_in_executor(None, events_head)
            commits = []
            dropped = None
            t_start = time.time()
            for b in range(40):
                commits.append(await loop.run_in_executor(None, big_batch, tag, b))
                await asyncio.sleep(0.5)
                m = await loop.run_in_executor(None, srv.metrics)
                if m.value("gate_bridge_sse_dropped_total") > d0:
                    dropped = time.time() - t_start
                    # one more batch after the drop
                    commits.append(await loop.run_in_executor(None, big_batch, tag, b + 1))
                    break
                if time.time() - t_start > 90:
                    break
            want = await loop.run_in_executor(None, event_positions, h0)
            ok = await wait_all(clients, len(want), 30)
            lag = max(c.received[-1][1] for c in clients if c.received) - commits[-1]
            check_clients(clients, want)
            assert ok
            await close_all(clients, tasks)
            return dropped, len(want), lag

        dropped, n, lag = asyncio.run(run())
        print("slow client dropped after %s s, %d events; the others had the last batch "
              "%.2f s after its commit" % (dropped, n, lag))
        assert dropped is not None, "gate_bridge_sse_dropped_total did not rise over %d " \
            "events with a client that never reads" % n
        assert lag < 10, "the other clients got the last batch %.1f s after its commit" % lag
        # its connection is closed: reading it ends (after what was buffered)
        slow.settimeout(5)
        deadline = time.time() + 30
        closed = False
        total = 0
        while time.time() < deadline:
            try:
                data = slow.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            total += len(data)
        assert closed, "the dropped client's connection is still open (%d bytes read)" % total
        slow.close()
        wait_until(lambda: srv.metrics().value("gate_bridge_sse_clients") == 0, 30,
                   "gate_bridge_sse_clients back to 0")
    finally:
        srv.stop()


def test_resume_from_zero_gets_the_whole_history():
    """Older than the ring (10,000 frames by default) once the slow-client
    test has run; across the database restart of test_sse too."""
    srv = Serve(name="history")
    try:
        want = event_positions(0)
        c = SSEClient(srv.host, srv.port, "/events?after=0")
        try:
            assert c.status == 200
            c.wait_for(lambda c: len(c.data_events()) >= len(want), 120,
                       "%d events of the history" % len(want))
            c.poll(0.3)
            assert c.positions() == want
        finally:
            c.close()
    finally:
        srv.stop()
