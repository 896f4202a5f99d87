"""The ledger's figures for bench/run.py: writer rows/s through the real path (records on a
Redis stream, the LedgerWriter draining them into SQLite), and the p50 of a function +
time-range query over the million rows that writing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _record(i: int, now: float, functions: int) -> dict[str, Any]:
    from stoker.platform.ledger import records as R

    received = now - (1_000_000 - i) * 0.5  # a million rows over about six days
    duration = random.uniform(0.3, 120.0)
    failed = i % 17 == 0
    return {
        "id": str(uuid.UUID(int=random.getrandbits(128))), "function": f"fn{i % functions}", "version": "1",
        "qualifier": "$LATEST", "status": "failed" if failed else "succeeded", "trigger": "api",
        "invocation_type": "async" if i % 3 else "sync", "received_at": received, "started_at": received + 0.001,
        "ended_at": received + 0.001 + duration / 1000, "duration_ms": duration, "billed_ms": R.billed_ms(duration),
        "memory_mb": 128, "max_memory_mb": 40, "init_ms": None, "cold": i % 50 == 0, "attempts": 1, "node": "n1",
        "error_type": "ValueError" if failed else None, "error_message": "x" if failed else None,
        "payload_size": 2, "result_size": 4, "rank": R.rank(1, R.ATTEMPT_DONE),
        "attempt": R.attempt_row(attempt=1, node="n1", worker="w1", started_at=received + 0.001,
                                 ended_at=received + 0.001 + duration / 1000, duration_ms=duration,
                                 outcome="failed" if failed else "succeeded"),
    }


def ledger_figures(work: Path, rows: int = 1_000_000, functions: int = 100) -> dict[str, Any]:
    from stoker.platform.context import PlatformContext
    from stoker.platform.db import make_engine, migrate
    from stoker.platform.embedded_redis import redis_server_binary
    from stoker.platform.ledger import records as R
    from stoker.platform.ledger.queries import InvocationFilter, list_invocations
    from stoker.platform.ledger.writer import LedgerWriter
    from stoker.settings import Settings

    db = work / "ledger-bench.db"
    url = f"sqlite:///{db}"
    migrate(url)
    port = _free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if r.ping():
                    break
            time.sleep(0.05)
        env = {"STOKER_HOME": str(work / "ledger-home"), "STOKER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
               "STOKER_DB_URL": url, "STOKER_PREFIX": "ledgerbench"}
        old = dict(os.environ)
        os.environ.update(env)
        try:
            settings = Settings.from_env()
        finally:
            os.environ.clear()
            os.environ.update(old)
        now = time.time()
        stream = "ledgerbench:ledger"
        chunk = 100_000
        elapsed = 0.0
        random.seed(7)

        async def drain() -> float:
            ctx = PlatformContext.create(settings)
            writer = LedgerWriter(ctx)
            try:
                await ctx.bus.ensure_group(stream, "ledger")
                t = time.perf_counter()
                while await writer.step(block_ms=None):
                    pass
                return time.perf_counter() - t
            finally:
                await ctx.close()

        for start in range(0, rows, chunk):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(rows, start + chunk)):
                pipe.xadd(stream, {"r": R.encode(_record(i, now, functions))})
            pipe.execute()
            elapsed += asyncio.run(drain())
        written = rows / elapsed

        engine = make_engine(url)
        samples = []
        for k in range(60):
            since = dt.datetime.fromtimestamp(now - random.uniform(3600, 5 * 86400), dt.UTC)
            f = InvocationFilter(function=f"fn{k % functions}", since=since, until=since + dt.timedelta(hours=1),
                                 limit=50)
            t = time.perf_counter()
            list_invocations(engine, f)
            samples.append((time.perf_counter() - t) * 1000)
        engine.dispose()
        samples.sort()
        return {"ledger_rows_per_s": written, "ledger_rows": rows,
                "ledger_query_ms": {"p50": samples[len(samples) // 2], "p99": samples[int(len(samples) * 0.99)]}}
    finally:
        proc.terminate()
        proc.wait(10)
        with contextlib.suppress(OSError):
            db.unlink()
