"""What psycopg_runner.py and psycopg_async_runner.py share: the input they
read, the COPY they send, and when and how long they wait before a retry
(psycopg_listener.py waits the same way before it reconnects).

Input: one JSON object per line, keys named after the columns of
gate_bridge.eval_results; only "agent" is required, a missing metric is
not checked:

    {"agent": "inbox.triage", "eval_run_id": "run-7", "quality": 0.55,
     "latency_p95_ms": 420, "context": {"commit": "3f2a1c9"}}
"""

import json
import random
import sys

from psycopg.types.json import Jsonb

# The columns the writer role may fill.  id is the identity column and
# created_at the server's now(): neither is sent.
COLUMNS = ("agent", "eval_run_id", "quality", "latency_p95_ms", "cost_usd",
           "success_rate", "invariants_failed", "planner_version",
           "triggered_by", "context")

COPY_SQL = "COPY gate_bridge.eval_results ({}) FROM STDIN".format(
    ", ".join(COLUMNS))

# Transient by nature: the same transaction run again can succeed.
# 40001: serialization failure (REPEATABLE READ or SERIALIZABLE lost a race
# for an incident); 40P01: deadlock detected.  Anything else is reported.
RETRY_SQLSTATES = ("40001", "40P01")
MAX_ATTEMPTS = 5


def read_rows(stream):
    """The eval rows of a JSON-lines stream, as tuples in COLUMNS order."""
    rows = []
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        record = json.loads(line)
        unknown = sorted(set(record) - set(COLUMNS))
        if unknown:
            raise ValueError("line %d: unknown keys %s" % (lineno, unknown))
        if record.get("context") is not None:
            # Jsonb makes psycopg send the value as jsonb, whatever its shape
            record["context"] = Jsonb(record["context"])
        rows.append(tuple(record.get(column) for column in COLUMNS))
    return rows


def backoff(attempt, cap=2.0):
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...):
    about 0.1 s doubling up to `cap` (2 s), half of it random so that
    clients that collided do not collide again in step."""
    ceiling = min(cap, 0.1 * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def report_retry(program, attempt, error, delay):
    print("%s: attempt %d of %d failed with SQLSTATE %s (%s); retrying in %.2f s"
          % (program, attempt, MAX_ATTEMPTS, error.sqlstate,
             str(error).splitlines()[0], delay), file=sys.stderr)
