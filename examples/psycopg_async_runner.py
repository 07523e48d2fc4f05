#!/usr/bin/env python3
"""psycopg_runner.py for asyncio: the same batch, loaded with COPY in one
transaction through psycopg.AsyncConnection, retried as a whole on a
deadlock or serialization failure.

    PGUSER=eval_writer python3 examples/psycopg_async_runner.py < examples/evals.jsonl
    {"rows": 3, "attempts": 1}

Connection, input and output as psycopg_runner.py.
"""

import asyncio
import json
import os
import sys

import psycopg

from runner_common import (COPY_SQL, MAX_ATTEMPTS, RETRY_SQLSTATES, backoff,
                           read_rows, report_retry)


async def load(conn, rows):
    """Load rows in one transaction; return the number of attempts made."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                async with conn.cursor().copy(COPY_SQL) as copy:
                    for row in rows:
                        await copy.write_row(row)
            return attempt
        except psycopg.Error as error:
            if error.sqlstate not in RETRY_SQLSTATES or attempt == MAX_ATTEMPTS:
                raise
            delay = backoff(attempt)
            report_retry("psycopg_async_runner", attempt, error, delay)
            await asyncio.sleep(delay)   # other tasks run meanwhile


async def main():
    rows = read_rows(sys.stdin)
    conn = await psycopg.AsyncConnection.connect(
        os.environ.get("DATABASE_URL", ""), autocommit=True,
        prepare_threshold=None, fallback_application_name="psycopg_async_runner")
    async with conn:
        attempts = await load(conn, rows)
    print(json.dumps({"rows": len(rows), "attempts": attempts}))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except psycopg.Error as error:
        sys.exit("psycopg_async_runner: SQLSTATE %s: %s" % (error.sqlstate, error))
