"""A migrated ledger on SQLite and PostgreSQL, and records shaped as the producers make them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from stoker.platform.db import make_engine, migrate
from stoker.platform.ledger import records as R
from stoker.platform.ledger.upsert import write_records

T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)
    e = make_engine(db_url)
    yield e
    e.dispose()


def completed(*, at: dt.datetime, function: str = "fn", duration_ms: float = 10.0, memory_mb: int = 128,
              status: str = "succeeded", attempt: int = 1, trigger: str = "api", node: str = "node-a",
              cold: bool = False, version: str = "1", error_type: str | None = None, invocation_id: str | None = None,
              last: bool = True, **extra: Any) -> dict[str, Any]:
    """The record a node writes when a try ends (as stoker.workers.execution does)."""
    started = at.timestamp() + 0.001
    outcome = status if status in ("succeeded", "failed", "timed_out") else "failed"
    return {
        "id": invocation_id or str(uuid.uuid4()), "function": function, "version": version, "qualifier": None,
        "status": status, "trigger": trigger, "invocation_type": "async" if trigger != "api" else "sync",
        "received_at": at.timestamp(), "started_at": started, "ended_at": started + duration_ms / 1000,
        "duration_ms": duration_ms, "billed_ms": R.billed_ms(duration_ms), "memory_mb": memory_mb,
        "max_memory_mb": 30, "init_ms": 5.0 if cold else None, "cold": cold, "attempts": attempt, "node": node,
        "error_type": error_type, "error_message": "boom" if error_type else None, "payload_size": 2,
        "result_size": 2 if status == "succeeded" else None,
        "rank": R.rank(attempt, R.TERMINAL if last else R.ATTEMPT_DONE),
        "attempt": R.attempt_row(attempt=attempt, node=node, worker="w1", started_at=started,
                                 ended_at=started + duration_ms / 1000, duration_ms=duration_ms, outcome=outcome,
                                 error_type=error_type),
        **extra,
    }


def write(engine: Engine, *records: dict[str, Any]) -> None:
    write_records(engine, [R.encode(dict(r, attempt=dict(r["attempt"])) if r.get("attempt") else r)
                           for r in records])
