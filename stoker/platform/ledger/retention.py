"""Ledger retention: delete invocations (and their attempts) received before a cutoff.

By hand with `stoker ledger prune --older-than 30d` (DELETE /api/invocations), or on a
schedule when STOKER_LEDGER_RETENTION is set (e.g. `90d`): the ledger writer then prunes
once an hour, one writer at a time. Unset (the default) keeps the ledger forever.

Rows go in chunks, each its own short transaction, so a large prune never blocks the
ledger writer for long (SQLite has a single writer).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.ledger.models import Attempt, Invocation
from stoker.platform.timeparse import parse_duration

CHUNK = 5000
RETENTION_ENV = "STOKER_LEDGER_RETENTION"


@dataclass(frozen=True)
class PruneResult:
    before: dt.datetime
    invocations: int
    attempts: int
    dry_run: bool


def count_before(engine: Engine, before: dt.datetime) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Invocation)
                                .where(Invocation.received_at < before)).scalar_one())


def prune(engine: Engine, before: dt.datetime, dry_run: bool = False, chunk: int = CHUNK) -> PruneResult:
    """Delete what was received before `before`; with dry_run, only count it."""
    if dry_run:
        return PruneResult(before, count_before(engine, before), 0, True)
    invocations = attempts = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(select(Invocation.id).where(Invocation.received_at < before)
                                    .order_by(Invocation.received_at).limit(chunk)).scalars())
            if not ids:
                break
            attempts += conn.execute(delete(Attempt).where(Attempt.invocation_id.in_(ids))).rowcount
            invocations += conn.execute(delete(Invocation).where(Invocation.id.in_(ids))).rowcount
        if len(ids) < chunk:
            break
    return PruneResult(before, invocations, attempts, False)


def cutoff(older_than: str, option: str, now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    try:
        return now - dt.timedelta(seconds=parse_duration(older_than, option))
    except OverflowError:
        raise InvalidInput(f"{option} {older_than!r} reaches back before the year 1: keep less") from None


def retention_from_env() -> float | None:
    """Seconds of ledger to keep (STOKER_LEDGER_RETENTION), or None to keep everything."""
    raw = os.environ.get(RETENTION_ENV, "").strip()
    if not raw or raw.lower() in ("forever", "none", "off"):
        return None
    try:
        return parse_duration(raw, RETENTION_ENV)
    except InvalidInput as e:
        raise ConfigError(f"{e.message}; or leave it unset (or 'forever') to keep the whole ledger") from None
