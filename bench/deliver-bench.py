"""bench/deliver.sh's measurements: see there."""

import os
import statistics
import subprocess
import sys
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "deliver"))
from receiver import Receiver  # noqa: E402

PORT = int(os.environ["GB_BENCH_PGPORT"])
WORK = os.environ["GB_BENCH_WORK"]
BIN = os.environ["GB_DELIVER_BIN"]
EVENTS = int(os.environ.get("GB_BENCH_EVENTS", "10000"))
LAT_EVENTS = int(os.environ.get("GB_BENCH_LATENCY_EVENTS", "1000"))
LAT_RATE = float(os.environ.get("GB_BENCH_LATENCY_RATE", "100"))
WORKERS = [int(x) for x in os.environ.get("GB_BENCH_WORKERS", "1 4").split()]
DSN = "host=127.0.0.1 port=%d dbname=postgres user=postgres" % PORT


def db():
    return psycopg.connect(DSN, autocommit=True)


def start_worker(n, tag):
    log = open(os.path.join(WORK, "deliver-%s.log" % tag), "wb")
    return subprocess.Popen([BIN, "deliver", "-d", DSN, "--tick", "0", "--workers", str(n)],
                            stdout=subprocess.DEVNULL, stderr=log)


def stop_worker(p):
    p.terminate()
    p.wait(30)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    rcv = Receiver().start()
    with db() as c:
        c.execute("SET client_min_messages = warning")  # one LOG per incident otherwise
        for n in WORKERS:
            tag = "w%d" % n
            dest = "bench-" + tag
            c.execute("INSERT INTO gate_bridge.destinations (name, kind, url, secret, agent_pattern)"
                      " VALUES (%s, 'webhook', %s, 'bench-secret', %s)",
                      (dest, rcv.url("ok", dest), "bench.%s.*" % tag))
            # throughput: a backlog of EVENTS created events, then the worker
            t0 = time.time()
            batch = 500
            for start in range(0, EVENTS, batch):
                c.execute("INSERT INTO gate_bridge.eval_results (agent, quality)"
                          " SELECT 'bench.' || %s || '.t' || g, 0.3"
                          " FROM generate_series(%s::int, %s::int) g", (tag, start + 1, min(EVENTS, start + batch)))
            made = c.execute("SELECT count(*) FROM gate_bridge.deliveries WHERE destination = %s",
                             (dest,)).fetchone()[0]
            print("== %d worker%s: %d deliveries written in %.1f s" %
                  (n, "" if n == 1 else "s", made, time.time() - t0), flush=True)
            t1 = time.monotonic()
            w = start_worker(n, tag)
            deadline = t1 + 600
            while len(rcv.received(dest)) < made and time.monotonic() < deadline:
                time.sleep(0.05)
            got = rcv.received(dest)
            last = max(r.mono_ns for r in got) / 1e9 if got else t1
            secs = last - t1
            print("   throughput: %d received in %.2f s (from the worker's start): %.0f deliveries/s" %
                  (len(got), secs, len(got) / secs if secs > 0 else 0), flush=True)
            # latency: paced commits, each its own transaction, the worker waiting
            commits = {}
            gap = 1.0 / LAT_RATE
            nxt = time.monotonic()
            for i in range(LAT_EVENTS):
                agent = "bench.%s.l%d" % (tag, i)
                c.execute("INSERT INTO gate_bridge.eval_results (agent, quality) VALUES (%s, 0.3)", (agent,))
                commits[agent] = time.monotonic_ns()
                nxt += gap
                d = nxt - time.monotonic()
                if d > 0:
                    time.sleep(d)
            want = made + LAT_EVENTS
            deadline = time.monotonic() + 120
            while len(rcv.received(dest)) < want and time.monotonic() < deadline:
                time.sleep(0.05)
            import json
            lat = []
            for r in rcv.received(dest):
                a = json.loads(r.body)["incident"]["agent"]
                if a in commits:
                    lat.append((r.mono_ns - commits[a]) / 1e6)
            stop_worker(w)
            dup = len(rcv.received(dest)) - len({r.header("Gate-Bridge-Event-Id") for r in rcv.received(dest)})
            if lat:
                print("   latency (commit to receipt, %d events at %.0f/s): p50 %.1f ms, p99 %.1f ms, max %.1f ms"
                      % (len(lat), LAT_RATE, pct(lat, 50), pct(lat, 99), max(lat)), flush=True)
            print("   missing %d, duplicates %d" % (want - len({r.header("Gate-Bridge-Event-Id") for r in rcv.received(dest)}), dup),
                  flush=True)
    rcv.stop()


if __name__ == "__main__":
    main()
