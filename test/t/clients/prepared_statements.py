"""psycopg 3 behind PgBouncer in transaction mode: what happens to a
statement that psycopg has prepared on the server.  Run by clients.pl.

    prepared_statements.py default|none

Two connections through the same pool (the libpq environment points at
PgBouncer).  Connection A runs one parametrized INSERT of a clean eval row
again and again; psycopg prepares it on the server connection it happens to
have after prepare_threshold (5) executions.  Then connection B holds that
server connection in an open transaction, so that A's next executions run
on another server connection of the pool.  Prints one JSON object: how many
INSERTs succeeded and the first error (SQLSTATE and message), if any.
"""

import json
import sys

import psycopg

INSERT = ("INSERT INTO gate_bridge.eval_results (agent, eval_run_id, quality)"
          " VALUES (%s, %s, %s)")
EXECUTIONS = 8
HOLD_AT = 6          # after psycopg has prepared the statement (at the 6th)

mode = sys.argv[1]
options = {"default": {}, "none": {"prepare_threshold": None}}[mode]

a = psycopg.connect("", autocommit=True, **options)
b = psycopg.connect("")      # not autocommit: its SELECT opens a transaction
stored = 0
error = None
for i in range(EXECUTIONS):
    if i == HOLD_AT:
        b.execute("SELECT 1")
    try:
        a.execute(INSERT, ("clients.prepared", "prepared-" + mode, 0.99))
        stored += 1
    except psycopg.Error as e:
        if error is None:
            error = {"sqlstate": e.sqlstate, "message": str(e).splitlines()[0],
                     "at": i}
b.rollback()
print(json.dumps({"stored": stored, "error": error}))
