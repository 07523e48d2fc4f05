#!/usr/bin/env python3
"""An eval runner's last step with psycopg 3: load a batch of eval rows into
gate_bridge.eval_results with COPY, in one transaction.  The gate trigger
checks every row; violations become incidents in the same transaction.

    PGUSER=eval_writer python3 examples/psycopg_runner.py < examples/evals.jsonl
    {"rows": 3, "attempts": 1}

Connects with the libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD) or DATABASE_URL, as the writer role of the README (INSERT on
eval_results, nothing else is needed).  Input: one JSON object per line
(runner_common.py).  A deadlock or serialization failure rolls the whole
batch back; it is loaded again after a short wait, at most MAX_ATTEMPTS
times, so each row is stored exactly once or the program fails.
"""

import json
import os
import sys
import time

import psycopg

from runner_common import (COPY_SQL, MAX_ATTEMPTS, RETRY_SQLSTATES, backoff,
                           read_rows, report_retry)


def load(conn, rows):
    """Load rows in one transaction; return the number of attempts made."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with conn.transaction():
                with conn.cursor().copy(COPY_SQL) as copy:
                    for row in rows:
                        copy.write_row(row)
            return attempt
        except psycopg.Error as error:
            if error.sqlstate not in RETRY_SQLSTATES or attempt == MAX_ATTEMPTS:
                raise
            # the transaction is rolled back: nothing of this attempt stays
            delay = backoff(attempt)
            report_retry("psycopg_runner", attempt, error, delay)
            time.sleep(delay)


def main():
    rows = read_rows(sys.stdin)
    # autocommit: conn.transaction() alone draws the transaction's bounds.
    # prepare_threshold=None: no server-side prepared statements, so the
    # runner also works through PgBouncer in transaction mode.
    with psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True,
                         prepare_threshold=None,
                         fallback_application_name="psycopg_runner") as conn:
        attempts = load(conn, rows)
    print(json.dumps({"rows": len(rows), "attempts": attempts}))


if __name__ == "__main__":
    try:
        main()
    except psycopg.Error as error:
        sys.exit("psycopg_runner: SQLSTATE %s: %s" % (error.sqlstate, error))
