"""The ledger writer: consumes the ledger stream and upserts rows in batches.

Each batch is merged and written by stoker.platform.ledger.upsert (an idempotent upsert,
so a redelivered or late record never duplicates or regresses a row). Entries are acked
only after their transaction commits. Any number of writers may run (one consumer
group); a writer that dies leaves its entries to be adopted by another.

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
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from stoker.platform import keys as K
from stoker.platform.context import PlatformContext
from stoker.platform.ledger.retention import prune, retention_from_env
from stoker.platform.ledger.upsert import write_records

log = logging.getLogger(__name__)

BATCH = 2000
ADOPT_IDLE_MS = 15_000
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
                await self.step(block_ms=500)
                backoff = 0.0
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
        """Read one batch and write it; ack it once committed. Returns its size."""
        entries = await self._read(block_ms)
        if not entries:
            return 0
        await asyncio.to_thread(write_records, self.engine, _records(entries))
        await self._ack([e[0] for e in entries])
        return len(entries)

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


def _records(entries: list[Any]) -> list[bytes]:
    return [fields[b"r"] for _id, fields in entries if fields.get(b"r") is not None]
