"""Reading the ledger: filtered lists of invocations, and one invocation in full."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from stoker.errors import InvalidInput, NotFound
from stoker.platform.ledger.models import ROW_FIELDS, Attempt, Invocation
from stoker.platform.ledger.records import STATUSES
from stoker.platform.timeparse import iso

MAX_LIMIT = 100_000


@dataclass(frozen=True)
class InvocationFilter:
    function: str | None = None
    version: str | None = None
    status: str | None = None
    trigger: str | None = None
    node: str | None = None
    cold: bool | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 50

    def check(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"status {self.status!r} is not one of: {', '.join(STATUSES)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit {self.limit} must be from 1 to {MAX_LIMIT}")


def row_json(row: Invocation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ROW_FIELDS:
        value = getattr(row, name)
        if isinstance(value, dt.datetime):
            value = iso(value)
        out[name] = value
    return out


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt, "node": a.node, "worker": a.worker, "started_at": iso(a.started_at),
        "ended_at": iso(a.ended_at), "duration_ms": a.duration_ms, "init_ms": a.init_ms, "outcome": a.outcome,
        "error_type": a.error_type, "error_message": a.error_message,
    }


def list_invocations(engine: Engine, f: InvocationFilter) -> list[dict[str, Any]]:
    f.check()
    q = select(Invocation)
    if f.function is not None:
        q = q.where(Invocation.function == f.function)
    if f.version is not None:
        q = q.where(Invocation.version == f.version)
    if f.status is not None:
        q = q.where(Invocation.status == f.status)
    if f.trigger is not None:
        q = q.where(Invocation.trigger == f.trigger)
    if f.node is not None:
        q = q.where(Invocation.node == f.node)
    if f.cold is not None:
        q = q.where(Invocation.cold == f.cold)
    if f.since is not None:
        q = q.where(Invocation.received_at >= f.since)
    if f.until is not None:
        q = q.where(Invocation.received_at < f.until)
    q = q.order_by(Invocation.received_at.desc(), Invocation.id.desc()).limit(f.limit)
    with engine.connect() as conn:
        from sqlalchemy.orm import Session

        with Session(bind=conn) as session:
            return [row_json(r) for r in session.scalars(q)]


def get_invocation(engine: Engine, invocation_id: str) -> dict[str, Any]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        row = session.get(Invocation, invocation_id)
        if row is None:
            raise NotFound(f"no invocation {invocation_id!r} in the ledger (it may still be on its way: "
                           "the ledger is written in batches)")
        out = row_json(row)
        out["attempt_count"] = out["attempts"]
        attempts = session.scalars(select(Attempt).where(Attempt.invocation_id == invocation_id)
                                   .order_by(Attempt.attempt)).all()
        out["attempts"] = [attempt_json(a) for a in attempts]
        out["payload"] = row.payload.decode("utf-8", "replace") if row.payload is not None else None
        out["result"] = row.result.decode("utf-8", "replace") if row.result is not None else None
        return out
