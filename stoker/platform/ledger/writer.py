"""The ledger writer: consumes the ledger stream and upserts rows in batches.

Records of one invocation are merged within a batch, then written with one
`INSERT ... ON CONFLICT DO UPDATE ... WHERE rank <= new rank` per table, so a
redelivered or late record never duplicates or regresses a row. Entries are acked
only after their transaction commits. Any number of writers may run (one consumer
group); a writer that dies leaves its entries to be adopted by another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Engine, Table, func
from sqlalchemy.exc import SQLAlchemyError

from stoker.platform import keys as K
from stoker.platform.context import PlatformContext
from stoker.platform.ledger import records as R
from stoker.platform.ledger.models import Attempt, Invocation

log = logging.getLogger(__name__)

BATCH = 2000
ADOPT_IDLE_MS = 15_000

INVOCATION_COLUMNS = [c.name for c in Invocation.__table__.columns]
ATTEMPT_COLUMNS = [c.name for c in Attempt.__table__.columns]


def merge(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fold the records of each invocation into one row (higher rank wins, gaps filled)."""
    rows: dict[str, dict[str, Any]] = {}
    attempts: dict[tuple[str, int], dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.get("rank", 0)):
        attempt = record.pop("attempt", None)
        row = rows.setdefault(record["id"], {})
        for k, v in record.items():
            if v is not None:
                row[k] = v
        if attempt:
            a = attempts.setdefault((record["id"], attempt["attempt"]), {"invocation_id": record["id"]})
            for k, v in attempt.items():
                if v is not None:
                    a[k] = v
    inv = [{c: row.get(c) for c in INVOCATION_COLUMNS} for row in rows.values()]
    for row in inv:
        row["rank"] = row["rank"] or 0
        row["status"] = row["status"] or "queued"
        row["function"] = row["function"] or "?"
    att = [{c: a.get(c) for c in ATTEMPT_COLUMNS} for a in attempts.values()]
    for a in att:
        a["outcome"] = a["outcome"] or "unknown"
    return inv, att


def _insert(engine: Engine, table: Table) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise NotImplementedError(f"the ledger writer supports SQLite and PostgreSQL, not {engine.dialect.name}")
    return insert(table)


def upsert(engine: Engine, invocations: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> None:
    inv_table: Table = Invocation.__table__  # type: ignore[assignment]
    att_table: Table = Attempt.__table__  # type: ignore[assignment]
    with engine.begin() as conn:
        if invocations:
            stmt = _insert(engine, inv_table)
            ex = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=[inv_table.c.id],
                set_={c: func.coalesce(ex[c], inv_table.c[c]) for c in INVOCATION_COLUMNS if c != "id"},
                where=ex.rank >= inv_table.c.rank,
            )
            conn.execute(stmt, invocations)
        if attempts:
            stmt = _insert(engine, att_table)
            ex = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=[att_table.c.invocation_id, att_table.c.attempt],
                set_={c: func.coalesce(ex[c], att_table.c[c]) for c in ATTEMPT_COLUMNS
                      if c not in ("invocation_id", "attempt")},
            )
            conn.execute(stmt, attempts)


def write_records(engine: Engine, raw: list[bytes]) -> int:
    records = []
    for data in raw:
        try:
            records.append(R.decode(data))
        except Exception as e:  # a malformed record must not block the ledger forever
            log.error("skipping an undecodable ledger record: %s", e)
    invocations, attempts = merge(records)
    upsert(engine, invocations, attempts)
    return len(invocations)


class LedgerWriter:
    def __init__(self, ctx: PlatformContext, batch: int = BATCH) -> None:
        if ctx.engine is None:
            raise RuntimeError("the ledger writer needs a database (STOKER_DB_URL)")
        self.ctx = ctx
        self.engine: Engine = ctx.engine
        self.batch = batch
        self.consumer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.written = 0

    async def run(self, stop: asyncio.Event) -> None:
        await self.ctx.bus.ensure_group(self.ctx.keys.ledger, K.LEDGER_GROUP)
        backoff = 0.0
        while not stop.is_set():
            try:
                await self.step(block_ms=500)
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError) as e:
                backoff = min(5.0, backoff * 2 or 0.2)
                log.warning("ledger writer: %s; retrying in %.1fs", e, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        # write what has arrived before stopping
        with contextlib.suppress(Exception):
            while await self.step(block_ms=None):
                pass

    async def step(self, block_ms: int | None) -> int:
        """Read one batch (adopting a dead writer's entries first) and write it. Returns its size."""
        redis, stream = self.ctx.redis, self.ctx.keys.ledger
        _next, claimed, *_ = await redis.xautoclaim(stream, K.LEDGER_GROUP, self.consumer, ADOPT_IDLE_MS, "0-0",
                                                    count=self.batch)
        entries = [e for e in claimed if e and e[1] is not None]
        if not entries:
            response: Any = await redis.xreadgroup(K.LEDGER_GROUP, self.consumer, {stream: ">"}, count=self.batch,
                                              block=block_ms)
            for _s, items in response or ():
                entries.extend(items)
        if not entries:
            return 0
        raw = [fields.get(b"r") for _id, fields in entries]
        await asyncio.to_thread(write_records, self.engine, [r for r in raw if r is not None])
        ids = [e[0] for e in entries]
        pipe = redis.pipeline(transaction=True)
        pipe.xack(stream, K.LEDGER_GROUP, *ids)
        pipe.xdel(stream, *ids)
        await pipe.execute()
        self.written += len(entries)
        return len(entries)
