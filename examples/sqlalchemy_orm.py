#!/usr/bin/env python3
"""Eval rows through SQLAlchemy's ORM (1.4, psycopg2), as the writer role.

    PGUSER=eval_writer python3 examples/sqlalchemy_orm.py < examples/evals.jsonl
    {"ids": [4, 5, 6]}

To learn a new row's primary key the ORM sends
INSERT ... RETURNING gate_bridge.eval_results.id, which needs SELECT on
column id: the README's writer grant includes it, and nothing more.  The
model below keeps the ORM from reading any other column back.

Connects with the libpq environment (PGHOST, PGUSER, ...) or DATABASE_URL.
Input: one JSON object per line, keys named after the model's attributes.
"""

import json
import os
import sys

from sqlalchemy import (ARRAY, BigInteger, Column, DateTime, Float, Identity,
                        Text, create_engine, func)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, declarative_base

Base = declarative_base()


class EvalResult(Base):
    __tablename__ = "eval_results"
    __table_args__ = {"schema": "gate_bridge"}

    # The identity column: never sent, read back with RETURNING id.
    id = Column(BigInteger, Identity(), primary_key=True)
    agent = Column(Text, nullable=False)
    eval_run_id = Column(Text)
    quality = Column(Float)
    latency_p95_ms = Column(Float)
    cost_usd = Column(Float)
    success_rate = Column(Float)
    invariants_failed = Column(ARRAY(Text))
    planner_version = Column(Text)
    triggered_by = Column(Text)
    context = Column(JSONB)
    # Stamped by the server (DEFAULT now()).  The mapper's eager_defaults
    # stays off: it would add created_at to RETURNING, which the writer may
    # not read.  Unset here, the attribute is loaded only if someone reads it.
    created_at = Column(DateTime(timezone=True), server_default=func.now())


def engine_url():
    # SQLAlchemy 1.4 has no psycopg 3 dialect; psycopg2 (libpq) it is.
    # An empty URL lets libpq read PGHOST, PGUSER, ... from the environment.
    url = os.environ.get("DATABASE_URL", "postgresql://")
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def main():
    results = [EvalResult(**json.loads(line)) for line in sys.stdin if line.strip()]
    engine = create_engine(engine_url(), future=True)
    # expire_on_commit=False: after COMMIT the objects keep what the
    # session knows (their ids) instead of reloading every column with a
    # SELECT the writer is not allowed.
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(results)
    print(json.dumps({"ids": [result.id for result in results]}))


if __name__ == "__main__":
    main()
