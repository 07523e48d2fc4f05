"""What SQLAlchemy's ORM reads back after an INSERT, as the writer role
(INSERT on eval_results, SELECT on id alone).  Run by clients.pl with
examples/ on the module path.

Each case inserts one clean eval row with the model of
examples/sqlalchemy_orm.py, configured one way; prints one JSON object
mapping each case to "ok" or the SQLSTATE it failed with.
"""

import json

from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sqlalchemy_orm import EvalResult, engine_url

engine = create_engine(engine_url(), future=True)


def insert(expire_on_commit=False, after_flush=None, after_commit=None):
    result = EvalResult(agent="clients.orm.readback", eval_run_id="orm-readback")
    with Session(engine, expire_on_commit=expire_on_commit) as session:
        with session.begin():
            session.add(result)
            session.flush()
            if after_flush:
                after_flush(result)
        if after_commit:
            after_commit(result)


def eager_defaults():
    EvalResult.__mapper__.eager_defaults = True
    try:
        insert()
    finally:
        EvalResult.__mapper__.eager_defaults = False


cases = {
    # the example's configuration
    "as configured": insert,
    # created_at is the server's: reading it loads it with a SELECT
    "read created_at": lambda: insert(after_flush=lambda r: r.created_at),
    # eager_defaults adds created_at to RETURNING
    "eager_defaults": eager_defaults,
    # expire_on_commit=True: the next read reloads every column
    "expire_on_commit": lambda: insert(expire_on_commit=True,
                                       after_commit=lambda r: r.id),
}
outcome = {}
for name, case in cases.items():
    try:
        case()
        outcome[name] = "ok"
    except DBAPIError as error:
        outcome[name] = error.orig.pgcode
print(json.dumps(outcome))
