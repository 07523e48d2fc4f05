#!/usr/bin/python3
"""The batch case of bench/measure.sh: concurrent COPY loaders and an operator.

    /usr/bin/python3 bench/batch.py DBNAME SECONDS [on|off]

Connects with the PG* environment (pg_virtualenv's).  For SECONDS, each of
LOADERS loader connections commits transactions of:

  - a COPY of ROWS eval rows into gate_bridge.eval_results, the agents
    bench.batch.0 .. AGENTS-1 in random order, a share VIOLATING of the rows
    violating one budget (half quality 0.65, half latency 5000 ms: keys
    (agent, quality) and (agent, latency)), the others clean;
  - in half of the transactions, a second statement: an INSERT of one
    violating row per agent in reverse agent order (the opposite order of
    keys to any other transaction's);

while an operator connection resolves the open incidents of these agents in
a loop (each resolve() its own transaction, the incidents in random order).

Printed, one "name value" per line: batches committed and failed, their
deadlocks (SQLSTATE 40P01) and other errors by SQLSTATE, rows and
violations committed, the operator's resolves, failures and deadlocks; then
the exactness check: for every key, occurrences over its incidents plus
incident_keys.rate_limited against the violations the loaders committed (not with "off": the trigger is disabled).

Environment: GB_BENCH_BATCH_LOADERS [4], GB_BENCH_BATCH_ROWS [100],
GB_BENCH_BATCH_AGENTS [10], GB_BENCH_BATCH_VIOLATING [0.30],
GB_BENCH_BATCH_SEED [42].
"""

import collections
import os
import random
import sys
import threading
import time

import psycopg
from psycopg import errors

LOADERS = int(os.environ.get("GB_BENCH_BATCH_LOADERS", "4"))
ROWS = int(os.environ.get("GB_BENCH_BATCH_ROWS", "100"))
AGENTS = int(os.environ.get("GB_BENCH_BATCH_AGENTS", "10"))
VIOLATING = float(os.environ.get("GB_BENCH_BATCH_VIOLATING", "0.30"))
SEED = int(os.environ.get("GB_BENCH_BATCH_SEED", "42"))

COLUMNS = ("agent, eval_run_id, quality, latency_p95_ms, cost_usd, success_rate, "
           "invariants_failed, triggered_by")


def agent(n):
    return "bench.batch.%d" % n


def row(rng, a, kind):
    """One eval row as COPY text, and the key it violates (or None)."""
    quality, latency = 0.95, 100 + rng.randrange(1400)
    if kind == "quality":
        quality = 0.65
    elif kind == "latency":
        latency = 5000
    return ("%s\tbench-batch\t%.3f\t%d\t0.010\t0.990\t{}\tbench\n" % (a, quality, latency),
            (a, kind) if kind else None)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()
        self.violations = collections.Counter()     # (agent, subject) -> committed

    def add(self, **kw):
        with self.lock:
            self.c.update(kw)


def loader(dbname, deadline, n, counts):
    rng = random.Random(SEED * 1000 + n)
    with psycopg.connect(dbname=dbname, application_name="gb_batch_loader") as conn:
        while time.monotonic() < deadline:
            lines, viol = [], collections.Counter()
            for _ in range(ROWS):
                kind = None
                if rng.random() < VIOLATING:
                    kind = rng.choice(("quality", "latency"))
                text, key = row(rng, agent(rng.randrange(AGENTS)), kind)
                lines.append(text)
                if key:
                    viol[key] += 1
            second = rng.random() < 0.5
            if second:
                values = []
                for a in range(AGENTS - 1, -1, -1):
                    values.append("('%s', 'bench-batch', 0.65, 500, 0.01, 0.99, '{}', 'bench')" % agent(a))
                    viol[(agent(a), "quality")] += 1
            try:
                with conn.transaction():
                    with conn.cursor() as cur:
                        with cur.copy("COPY gate_bridge.eval_results (%s) FROM STDIN" % COLUMNS) as cp:
                            cp.write("".join(lines))
                        if second:
                            cur.execute("INSERT INTO gate_bridge.eval_results (%s) VALUES %s"
                                        % (COLUMNS, ", ".join(values)))
            except errors.DeadlockDetected:
                counts.add(batches_failed=1, batches_deadlocked=1)
                continue
            except psycopg.Error as e:
                counts.add(batches_failed=1, **{"batch_error_" + (e.sqlstate or "none"): 1})
                continue
            with counts.lock:
                counts.c.update(batches_committed=1, rows_committed=ROWS + (AGENTS if second else 0),
                                second_statements=1 if second else 0)
                counts.violations.update(viol)


def operator(dbname, deadline, counts):
    rng = random.Random(SEED)
    with psycopg.connect(dbname=dbname, autocommit=True, application_name="gb_batch_operator") as conn:
        while time.monotonic() < deadline:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM gate_bridge.incidents"
                " WHERE agent LIKE 'bench.batch.%' AND status <> 'resolved'")]
            rng.shuffle(ids)
            for i in ids:
                if time.monotonic() >= deadline:
                    break
                try:
                    conn.execute("SELECT gate_bridge.resolve(%s, 'bench.oncall')", (i,))
                    counts.add(resolves=1)
                except errors.DeadlockDetected:
                    counts.add(resolves_failed=1, resolves_deadlocked=1)
                except psycopg.Error as e:
                    counts.add(resolves_failed=1, **{"resolve_error_" + (e.sqlstate or "none"): 1})
            if not ids:
                time.sleep(0.01)
            counts.add(operator_passes=1)


def main():
    dbname, secs = sys.argv[1], float(sys.argv[2])
    side = sys.argv[3] if len(sys.argv) > 3 else "on"
    counts = Counts()
    deadline = time.monotonic() + secs
    threads = [threading.Thread(target=loader, args=(dbname, deadline, n, counts)) for n in range(LOADERS)]
    threads.append(threading.Thread(target=operator, args=(dbname, deadline, counts)))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    c = counts.c
    for name in ("batches_committed", "batches_failed", "batches_deadlocked", "rows_committed",
                 "second_statements", "resolves", "resolves_failed", "resolves_deadlocked",
                 "operator_passes"):
        print(name, c.get(name, 0))
    for name in sorted(k for k in c if "_error_" in k):
        print(name, c[name])
    print("violations_committed", sum(counts.violations.values()))
    print("elapsed_s %.1f" % elapsed)
    if side == "off":
        return

    # exactness: occurrences + rate limited per key = committed violations
    with psycopg.connect(dbname=dbname) as conn:
        stored = collections.Counter()
        for a, s, n in conn.execute(
                "SELECT agent, subject, sum(occurrences) FROM gate_bridge.incidents"
                " WHERE agent LIKE 'bench.batch.%' GROUP BY 1, 2"):
            stored[(a, s)] += n
        for a, s, n in conn.execute(
                "SELECT agent, subject, rate_limited FROM gate_bridge.incident_keys"
                " WHERE agent LIKE 'bench.batch.%'"):
            stored[(a, s)] += n
        unresolved_dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM gate_bridge.incidents WHERE status <> 'resolved'"
            " GROUP BY kind, agent, subject HAVING count(*) > 1) d").fetchone()[0]
    keys = set(stored) | set(counts.violations)
    wrong = sorted(k for k in keys if stored[k] != counts.violations[k])
    print("keys", len(keys))
    print("keys_count_wrong", len(wrong))
    for k in wrong[:5]:
        print("#   %s %s: stored %d, committed %d" % (k[0], k[1], stored[k], counts.violations[k]))
    print("keys_with_two_unresolved", unresolved_dupes)


if __name__ == "__main__":
    main()
