"""The ledger writer as it runs: records from the Redis stream to SQL, acked after commit,
and the scheduled retention (STOKER_LEDGER_RETENTION)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from sqlalchemy import Engine

from stoker.platform.context import PlatformContext
from stoker.platform.ledger import records as R
from stoker.platform.ledger.queries import InvocationFilter, list_invocations
from stoker.platform.ledger.writer import LedgerWriter
from stoker.settings import Settings
from tests.conftest import RedisServer
from tests.integration.platform.ledger.conftest import completed, write


def context(redis_server: RedisServer, prefix: str, db_url: str) -> PlatformContext:
    settings = dataclasses.replace(Settings.from_env(), prefix=prefix, db_url=db_url, redis_url=redis_server.url)
    return PlatformContext.create(settings, redis_server.url)


async def run_until(writer: LedgerWriter, done: object, timeout: float = 30) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await asyncio.to_thread(done):  # type: ignore[arg-type]
            assert asyncio.get_running_loop().time() < deadline, "the writer did not get there in time"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def test_records_on_the_stream_become_rows_and_are_acked(engine: Engine, db_url: str, redis_server: RedisServer,
                                                          prefix: str) -> None:
    now = dt.datetime.now(dt.UTC)
    records = [completed(at=now, invocation_id=f"s{i}") for i in range(30)]

    async def go() -> int:
        ctx = context(redis_server, prefix, db_url)
        try:
            for r in records:
                await ctx.redis.xadd(ctx.keys.ledger, {"r": R.encode(r)})
            await run_until(LedgerWriter(ctx, batch=7),
                            lambda: len(list_invocations(engine, InvocationFilter(limit=100))) == 30)
            return int(await ctx.redis.xlen(ctx.keys.ledger))
        finally:
            await ctx.close()

    assert asyncio.run(go()) == 0  # acked and deleted once committed


def test_scheduled_retention_prunes_old_rows(engine: Engine, db_url: str, redis_server: RedisServer, prefix: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime.now(dt.UTC)
    write(engine, completed(at=now - dt.timedelta(days=10), invocation_id="old"),
          completed(at=now - dt.timedelta(hours=1), invocation_id="recent"))
    monkeypatch.setenv("STOKER_LEDGER_RETENTION", "7d")

    async def go() -> None:
        ctx = context(redis_server, prefix, db_url)
        try:
            await run_until(LedgerWriter(ctx),
                            lambda: [r["id"] for r in list_invocations(engine, InvocationFilter())] == ["recent"])
            # one prune an hour across all writers: the lease is left to expire, not released
            assert await ctx.redis.pttl(ctx.keys.lock("ledger-prune")) > 0
        finally:
            await ctx.close()

    asyncio.run(go())
