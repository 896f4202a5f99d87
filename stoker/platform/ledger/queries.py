"""Reading the ledger: filtered lists of invocations, one invocation in full, and export.

The filters are served by indexes (models.py): a function, a status, a trigger or a node
walks its own `(column, received_at)` index newest first and stops at the limit (a time
range bounds the walk); cold starts have a partial index of their own; a version is read
with its function's index.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, Select, and_, or_, select
from sqlalchemy.orm import Session

from stoker.errors import InvalidInput, NotFound
from stoker.platform.ledger.models import ROW_FIELDS, Attempt, Invocation
from stoker.platform.ledger.records import RETAIN_LIMIT, STATUSES, billed_ms
from stoker.platform.timeparse import iso, parse_time

DEFAULT_LIMIT = 50
MAX_LIMIT = 100_000
EXPORT_PAGE = 5000
VERSION_RE = re.compile(r"^[0-9]{1,9}$")

#: the query parameters of GET /api/invocations (and the options of `stoker ledger`)
FILTER_PARAMS = ("function", "version", "status", "trigger", "node", "cold", "since", "until", "limit")
TRUE, FALSE = ("true", "1", "yes", "cold"), ("false", "0", "no", "warm")


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
    limit: int = DEFAULT_LIMIT

    def check(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"status {self.status!r} is not a status: use one of {', '.join(STATUSES)}")
        if self.version is not None and not VERSION_RE.match(self.version):
            raise InvalidInput(f"version {self.version!r} is not a version number: use 1, 2, ... (the ledger "
                               "records the version that ran, never an alias)")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit {self.limit} is out of range: use a whole number from 1 to {MAX_LIMIT:,}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput(f"since ({iso(self.since)}) is not before until ({iso(self.until)}): "
                               "swap them or widen the range")

    def where(self, q: Select[Any]) -> Select[Any]:
        for column, value in ((Invocation.function, self.function), (Invocation.version, self.version),
                              (Invocation.status, self.status), (Invocation.trigger, self.trigger),
                              (Invocation.node, self.node)):
            if value is not None:
                q = q.where(column == value)
        if self.cold is not None:
            # as a literal (`cold = 1`), which the partial index's own WHERE matches; a bound
            # parameter would keep SQLite from using it
            cold: Any = Invocation.cold if self.cold else ~Invocation.cold
            q = q.where(cold)
        if self.since is not None:
            q = q.where(Invocation.received_at >= self.since)
        if self.until is not None:
            q = q.where(Invocation.received_at < self.until)
        return q


def filter_from_params(params: Mapping[str, str], allowed: tuple[str, ...] = FILTER_PARAMS,
                       now: dt.datetime | None = None) -> InvocationFilter:
    """An InvocationFilter from query parameters; every bad value is an error naming its parameter."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}: use {', '.join(allowed)}")
    values: dict[str, Any] = {}
    for name in ("function", "version", "status", "trigger", "node"):
        raw = params.get(name)
        if raw is not None and raw != "":
            values[name] = raw
    if params.get("cold"):
        raw = params["cold"].lower()
        if raw not in TRUE + FALSE:
            raise InvalidInput(f"cold {params['cold']!r} is not a yes or no: use cold=true or cold=false")
        values["cold"] = raw in TRUE
    for name in ("since", "until"):
        if params.get(name):
            values[name] = parse_time(params[name], name, now)
    if params.get("limit"):
        raw = params["limit"]
        if not (raw.isascii() and raw.isdigit()):
            raise InvalidInput(f"limit {raw!r} is not a whole number: use a number from 1 to {MAX_LIMIT:,}")
        values["limit"] = int(raw)
    f = InvocationFilter(**values)
    f.check()
    return f


#: the columns lists and exports read (never the retained payloads, up to 128 KB a row)
ROW_COLUMNS = [getattr(Invocation, name) for name in ROW_FIELDS]


def row_json(row: Any) -> dict[str, Any]:
    """An invocation row (an ORM object or a result row of ROW_COLUMNS) as JSON-ready values."""
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
        "ended_at": iso(a.ended_at), "duration_ms": a.duration_ms,
        "billed_ms": billed_ms(a.duration_ms) if a.duration_ms is not None else None,
        "init_ms": a.init_ms, "outcome": a.outcome, "error_type": a.error_type, "error_message": a.error_message,
    }


def list_invocations(engine: Engine, f: InvocationFilter) -> list[dict[str, Any]]:
    """Rows matching the filter, newest first."""
    f.check()
    q = f.where(select(*ROW_COLUMNS)).order_by(Invocation.received_at.desc(), Invocation.id.desc()).limit(f.limit)
    with engine.connect() as conn:
        return [row_json(r) for r in conn.execute(q)]


def export_invocations(engine: Engine, f: InvocationFilter, page: int = EXPORT_PAGE) -> Iterator[list[dict[str, Any]]]:
    """Every row matching the filter (its limit ignored), oldest first, a page at a time.

    Pages are read by keyset (received_at, id), each in its own short transaction, so an
    export of millions of rows never holds a long read open against the writer.
    """
    f = replace(f, limit=1)
    f.check()
    after: tuple[dt.datetime, str] | None = None
    while True:
        q = f.where(select(*ROW_COLUMNS))
        if after is not None:
            q = q.where(or_(Invocation.received_at > after[0],
                            and_(Invocation.received_at == after[0], Invocation.id > after[1])))
        q = q.order_by(Invocation.received_at, Invocation.id).limit(page)
        with engine.connect() as conn:
            found = list(conn.execute(q))
            rows = [row_json(r) for r in found]
            if found:
                assert found[-1].received_at is not None
                after = (found[-1].received_at, found[-1].id)
        if not rows:
            return
        yield rows  # outside the session: the consumer may take its time
        if len(rows) < page:
            return


def _retained(data: bytes | None, size: int | None) -> tuple[str | None, bool]:
    """A retained payload or result as text, and whether it was cut at the retention cap."""
    if data is None:
        return None, False
    truncated = (size is not None and len(data) < size) or (size is None and len(data) >= RETAIN_LIMIT)
    return data.decode("utf-8", "replace"), truncated


def get_invocation(engine: Engine, invocation_id: str) -> dict[str, Any]:
    """One invocation: its row, `attempts` as the list of tries, and its payload and result
    when the function retains them (`retain_payloads`). The caller adds the log lines."""
    with Session(engine) as session:
        row = session.get(Invocation, invocation_id)
        if row is None:
            raise NotFound(f"no invocation {invocation_id!r} in the ledger (if it was just made, it may still be "
                           "on its way: the ledger is written in batches; list ids with `stoker ledger`)")
        out = row_json(row)
        out["attempt_count"] = out["attempts"]
        attempts = session.scalars(select(Attempt).where(Attempt.invocation_id == invocation_id)
                                   .order_by(Attempt.attempt)).all()
        out["attempts"] = [attempt_json(a) for a in attempts]
        out["payload"], out["payload_truncated"] = _retained(row.payload, row.payload_size)
        out["result"], out["result_truncated"] = _retained(row.result, row.result_size)
        return out
