"""The ledger writer: consumes the ledger stream and upserts rows in batches.

Each batch is merged and written by stoker.platform.ledger.upsert (an idempotent upsert,
so a redelivered or late record never duplicates or regresses a row). Entries are acked
only after their transaction commits. Any number of writers may run (one consumer
group); a writer that dies leaves its entries to be adopted by another.

A record that only says an async event was queued is held back for up to a second
(STOKER_LEDGER_HOLD, unacked, so nothing is lost if the writer dies): most events finish
within that time, and their queued record is then merged into the final one instead of
costing a write of its own. Everything else is written as it comes.

With STOKER_LEDGER_RETENTION set, writers also prune the ledger once an hour; the lease
`{p}:lock:ledger-prune` (held for the interval, never released early) makes it one prune
an hour across all writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import time
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from stoker.platform import keys as K
from stoker.platform.context import PlatformContext
from stoker.platform.ledger import records as R
from stoker.platform.ledger.retention import prune, retention_from_env
from stoker.platform.ledger.upsert import decode_records, write_decoded

log = logging.getLogger(__name__)

BATCH = 2000
ADOPT_IDLE_MS = 15_000
#: records held back for merging, at most (the oldest are written when there are more)
MAX_HELD = 20_000
#: the shortest time between two small batches
WRITE_INTERVAL_S = 0.05
PRUNE_EVERY_S = 3600.0


class LedgerWriter:
    def __init__(self, ctx: PlatformContext, batch: int = BATCH) -> None:
        if ctx.engine is None:
            raise RuntimeError("the ledger writer needs a database (STOKER_DB_URL)")
        self.ctx = ctx
        self.engine: Engine = ctx.engine
        self.batch = batch
        self.consumer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.written = 0
        self.retention_s = retention_from_env()
        self.hold_s = float(os.environ.get("STOKER_LEDGER_HOLD", "1.0"))
        #: queued records waiting for their invocation's next record: id -> (entry id, record, since)
        self._held: dict[str, tuple[Any, dict[str, Any], float]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await self.ctx.bus.ensure_group(self.ctx.keys.ledger, K.LEDGER_GROUP)
        pruner = asyncio.create_task(self._prune_regularly(stop)) if self.retention_s else None
        try:
            await self._write_until(stop)
        finally:
            if pruner is not None:
                pruner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pruner

    async def _write_until(self, stop: asyncio.Event) -> None:
        # One batch at a time. Preparing the next batch in a thread while the database wrote the
        # last was tried: slower on SQLite (it releases the GIL at every row, and the preparing
        # thread held it: the convoy effect), no measurable gain on PostgreSQL on 2 cores. A
        # PostgreSQL ledger scales by running more writers on the same stream instead.
        backoff = 0.0
        while not stop.is_set():
            try:
                began = time.monotonic()
                read = await self.step(block_ms=500)
                backoff = 0.0
                if 0 < read < self.batch // 4:
                    # a small batch: let the next one gather for a moment (each transaction has a
                    # fixed cost; a row lands at most WRITE_INTERVAL_S later)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, WRITE_INTERVAL_S - (time.monotonic() - began)))
            except asyncio.CancelledError:
                raise
            except (RedisError, SQLAlchemyError, OSError) as e:
                # entries not acked stay pending, and are adopted again after ADOPT_IDLE_MS
                backoff = min(5.0, backoff * 2 or 0.2)
                log.warning("ledger writer: %s; retrying in %.1fs", e, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
        # write what has arrived before stopping
        with contextlib.suppress(Exception):
            while await self.step(block_ms=None):
                pass

    async def _read(self, block_ms: int | None) -> list[Any]:
        """One batch of entries, adopting a dead writer's (or our own failed) entries first."""
        redis, stream = self.ctx.redis, self.ctx.keys.ledger
        _next, claimed, *_ = await redis.xautoclaim(stream, K.LEDGER_GROUP, self.consumer, ADOPT_IDLE_MS, "0-0",
                                                    count=self.batch)
        entries = [e for e in claimed if e and e[1] is not None]
        if not entries:
            response: Any = await redis.xreadgroup(K.LEDGER_GROUP, self.consumer, {stream: ">"}, count=self.batch,
                                              block=block_ms)
            for _s, items in response or ():
                entries.extend(items)
        return entries

    async def _ack(self, ids: list[Any]) -> None:
        pipe = self.ctx.redis.pipeline(transaction=True)
        pipe.xack(self.ctx.keys.ledger, K.LEDGER_GROUP, *ids)
        pipe.xdel(self.ctx.keys.ledger, *ids)
        await pipe.execute()
        self.written += len(ids)

    async def step(self, block_ms: int | None) -> int:
        """Read one batch and write it (holding back fresh `queued` records a moment); ack what was
        committed. Returns the number of entries read (with block_ms=None: also those flushed)."""
        final = block_ms is None
        if self._held and block_ms is not None:
            block_ms = min(block_ms, 200)  # come back soon enough to write the held ones in time
        entries = await self._read(block_ms)
        now = time.monotonic()
        ids: list[Any] = []
        batch: list[dict[str, Any]] = []
        for entry_id, record in _decoded(entries):
            if record is None:
                ids.append(entry_id)
                continue
            rid = str(record.get("id"))
            if self.hold_s > 0 and not final and _fresh_queued(record) and rid not in self._held:
                self._held[rid] = (entry_id, record, now)
                continue
            held = self._held.pop(rid, None)
            if held is not None:
                ids.append(held[0])
                batch.append(held[1])
            ids.append(entry_id)
            batch.append(record)
        expired = 0
        for rid in list(self._held):  # oldest first (insertion order)
            entry_id, record, since = self._held[rid]
            if not final and now - since < self.hold_s and len(self._held) <= MAX_HELD:
                break
            del self._held[rid]
            ids.append(entry_id)
            batch.append(record)
            expired += 1
        if batch:
            await asyncio.to_thread(write_decoded, self.engine, batch)
        if ids:
            await self._ack(ids)
        return len(entries) + (expired if final else 0)

    async def _prune_regularly(self, stop: asyncio.Event) -> None:
        assert self.retention_s is not None
        lease = self.ctx.keys.lock("ledger-prune")
        while not stop.is_set():
            try:
                if await self.ctx.redis.set(lease, self.consumer, nx=True, px=int(PRUNE_EVERY_S * 1000)):
                    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.retention_s)
                    result = await asyncio.to_thread(prune, self.engine, before)
                    if result.invocations:
                        log.info("ledger retention: pruned %d invocations received before %s",
                                 result.invocations, before.isoformat())
            except (RedisError, SQLAlchemyError, OSError) as e:
                log.warning("ledger retention: %s; trying again later", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 60)


def _decoded(entries: list[Any]) -> list[tuple[Any, dict[str, Any] | None]]:
    """(entry id, record) per entry; None for an entry without a decodable record."""
    out: list[tuple[Any, dict[str, Any] | None]] = []
    for entry_id, fields in entries:
        raw = fields.get(b"r")
        decoded = decode_records([raw]) if raw is not None else []
        out.append((entry_id, decoded[0] if decoded else None))
    return out


def _fresh_queued(record: dict[str, Any]) -> bool:
    """The record an async event gets when it is accepted: worth waiting for the next one."""
    rank = int(record.get("rank") or 0)
    return record.get("status") == "queued" and rank % 4 == R.QUEUED
