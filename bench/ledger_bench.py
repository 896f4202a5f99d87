"""Ledger benchmark: writer throughput and query latency over a million rows.

Seeds the ledger itself, through the writer's own batch path (so seeding *is* the writer
measurement), on SQLite and on PostgreSQL, then times the queries users make:

    python bench/ledger_bench.py                      # 1,000,000 rows, SQLite and PostgreSQL
    python bench/ledger_bench.py --rows 200000 --only sqlite
    python bench/ledger_bench.py --redis redis://127.0.0.1:6379/0   # also the full writer path

Targets (docs/ledger.md): the writer sustains >= 20,000 rows/s with batching; a query by
function and time range over 1,000,000 rows answers in < 50 ms (p50).

The seeded ledger looks like a month of a busy platform: 50 functions of uneven traffic,
mostly sync API calls, a share of async events (some retried), a few cold starts, failures,
time-outs and throttles, on 4 nodes. The PostgreSQL database is created for the run and
dropped after it; the SQLite file lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from stoker.platform.db import make_engine, migrate
from stoker.platform.envelope import new_invocation_id
from stoker.platform.ledger import records as R
from stoker.platform.ledger.billing import Prices, compute_bill
from stoker.platform.ledger.queries import InvocationFilter, list_invocations
from stoker.platform.ledger.upsert import write_records

BATCH = 2000  # the writer's batch (stoker.platform.ledger.writer.BATCH)
FUNCTIONS = [f"fn-{i:02d}" for i in range(50)]
WEIGHTS = [1 / (i + 1) for i in range(50)]  # a few busy functions, a long tail
TRIGGERS = ["api"] * 70 + ["http"] * 15 + ["queue"] * 10 + ["cron"] * 2 + ["files"] * 3
NODES = [f"node-{i}" for i in range(4)]
DAYS = 30
RANDOM_IDS = False  # --random-ids: uuid4 ids, as stoker made them before (for comparison)


def records_for(i: int, start: float, span: float, rng: random.Random) -> list[bytes]:
    """The ledger records one invocation produces, as producers write them."""
    received = start + span * i / 1_000_000 + rng.random()
    invocation_id = str(uuid.UUID(int=rng.getrandbits(128))) if RANDOM_IDS else new_invocation_id(int(received * 1000))
    function = rng.choices(FUNCTIONS, WEIGHTS)[0]
    trigger = rng.choice(TRIGGERS)
    asynchronous = trigger in ("queue", "cron", "files")
    roll = rng.random()
    status = ("throttled" if roll < 0.01 else "timed_out" if roll < 0.02 else "failed" if roll < 0.08
              else "succeeded")
    base = {"id": invocation_id, "function": function, "version": str(1 + i % 3), "qualifier": None,
            "trigger": trigger, "invocation_type": "async" if asynchronous else "sync", "received_at": received,
            "payload_size": rng.randint(2, 4000)}
    out = []
    if asynchronous:
        out.append(R.encode({**base, "status": "queued", "attempts": 0, "rank": R.rank(1, R.QUEUED)}))
    if status == "throttled":
        out.append(R.encode({**base, "status": "throttled", "attempts": 0, "ended_at": received + 0.001,
                             "error_type": "TooManyRequestsException", "rank": R.rank(1, R.TERMINAL)}))
        return out
    tries = 2 if asynchronous and status != "succeeded" else 1
    for attempt in range(1, tries + 1):
        started = received + 0.002 + (attempt - 1) * 60
        duration = rng.lognormvariate(3, 1.2)
        ended = started + duration / 1000
        outcome = status if attempt == tries else "failed"
        error_type = {"failed": "RuntimeError", "timed_out": "Sandbox.Timedout"}.get(outcome)
        cold = rng.random() < 0.02
        last = attempt == tries
        out.append(R.encode({
            **base, "status": status if last else "queued", "started_at": started, "ended_at": ended,
            "duration_ms": round(duration, 3), "billed_ms": R.billed_ms(duration), "memory_mb": 128 << (i % 3),
            "max_memory_mb": 40, "init_ms": 8.5 if cold else None, "cold": cold, "attempts": attempt,
            "node": rng.choice(NODES), "error_type": error_type,
            "error_message": "something went wrong" if error_type else None,
            "result_size": 42 if outcome == "succeeded" else None,
            "rank": R.rank(attempt, R.TERMINAL if last else R.ATTEMPT_DONE),
            "attempt": R.attempt_row(attempt=attempt, node=rng.choice(NODES), worker="w1", started_at=started,
                                     ended_at=ended, duration_ms=duration, outcome=outcome, error_type=error_type,
                                     init_ms=8.5 if cold else None),
        }))
    return out


def batches(rows: int, seed: int = 7, start: float | None = None, days: float = DAYS) -> Iterator[list[bytes]]:
    """Batches of records as the writer reads them from the stream: BATCH entries each, for
    invocations received over `days` from `start` (default: the last DAYS days)."""
    rng = random.Random(seed)
    start = time.time() - days * 86400 if start is None else start
    span = days * 86400 * 1_000_000 / rows
    pending: list[bytes] = []
    for i in range(rows):
        pending.extend(records_for(i, start, span, rng))
        if len(pending) >= BATCH:
            yield pending[:BATCH]
            pending = pending[BATCH:]
    if pending:
        yield pending


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving an engine, when the server runs on this
    machine (read from /proc): with COPY, the server does much of the writer's work."""

    def __init__(self, engine: Engine) -> None:
        self.pids: set[int] = set()
        if engine.dialect.name == "postgresql":
            @event.listens_for(engine, "connect")
            def _remember(dbapi_connection: Any, _record: Any) -> None:
                with dbapi_connection.cursor() as cur:
                    cur.execute("select pg_backend_pid()")
                    self.pids.add(int(cur.fetchone()[0]))

    def seconds(self) -> float | None:
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None  # not on this machine, or gone
            total += (int(fields[11]) + int(fields[12])) / tick
        return total


def seed(engine: Engine, rows: int) -> dict[str, float]:
    """Write `rows` invocations through the writer's batch path; time only the writing.

    Besides the wall-clock rate, the CPU seconds spent (this process, plus the PostgreSQL
    backends when local) give the rate one free core sustains, which a shared machine's
    wall clock does not show."""
    backend = BackendCpu(engine)
    records = 0
    spent = cpu = 0.0
    last_report = time.monotonic()
    for batch in batches(rows):
        t0, c0 = time.perf_counter(), time.process_time()
        write_records(engine, batch)
        spent += time.perf_counter() - t0
        cpu += time.process_time() - c0
        records += len(batch)
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"    ... {records:,} records, {records / spent:,.0f} records/s", file=sys.stderr)
    server = backend.seconds() if engine.dialect.name == "postgresql" else 0.0
    out = {"records": records, "seconds": spent, "records_per_s": records / spent, "cpu_seconds": cpu}
    if server is not None:
        out["server_cpu_seconds"] = server
    return out


def timed(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    fn()  # warm the caches once, as a live ledger's are
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p95_ms": samples[int(len(samples) * 0.95) - 1],
            "max_ms": samples[-1]}


def queries(engine: Engine, runs: int) -> dict[str, dict[str, float]]:
    rng = random.Random(11)
    now = dt.datetime.now(dt.UTC)

    def by_function_and_range() -> None:
        end = now - dt.timedelta(hours=rng.uniform(0, 24 * (DAYS - 1)))
        f = InvocationFilter(function=rng.choice(FUNCTIONS), since=end - dt.timedelta(days=1), until=end)
        list_invocations(engine, f)

    def one(**kw: Any) -> Callable[[], None]:
        return lambda: list_invocations(engine, InvocationFilter(**kw))

    day_ago = now - dt.timedelta(days=1)
    cases: dict[str, Callable[[], None]] = {
        "function + 1-day range (the target)": by_function_and_range,
        "newest 50, no filter": one(),
        "function, newest 50": one(function=FUNCTIONS[10]),
        "status=failed, last day": one(status="failed", since=day_ago),
        "function + status=failed": one(function=FUNCTIONS[3], status="failed"),
        "trigger=cron": one(trigger="cron"),
        "node=node-2, last day": one(node="node-2", since=day_ago),
        "cold starts": one(cold=True),
        "function + version + range": one(function=FUNCTIONS[0], version="2", since=day_ago),
        "limit 1000, last day": one(since=day_ago, limit=1000),
    }
    out = {name: timed(fn, runs) for name, fn in cases.items()}
    prices = Prices()
    out["bill: whole month, by function"] = timed(
        lambda: compute_bill(engine, now - dt.timedelta(days=DAYS + 1), now, "function", True, prices), 3)
    out["bill: one day, by function"] = timed(
        lambda: compute_bill(engine, day_ago, now, "function", True, prices), 10)
    return out


async def full_writer(db_url: str, redis_url: str, rows: int) -> dict[str, float]:
    """The whole writer path as it runs: records on a Redis stream, read, written and acked by
    LedgerWriter.run."""
    from stoker.platform.context import PlatformContext
    from stoker.platform.ledger.writer import LedgerWriter
    from stoker.settings import Settings

    prefix = "bench" + secrets.token_hex(4)
    settings = dataclasses.replace(Settings.from_env(), prefix=prefix, db_url=db_url, redis_url=redis_url)
    ctx = PlatformContext.create(settings, redis_url)
    writer = LedgerWriter(ctx)
    try:
        await ctx.bus.ensure_group(ctx.keys.ledger, "ledger")
        records = 0
        # new invocations, received after those already in the ledger, as in production
        for batch in batches(rows, seed=99, start=time.time(), days=1 / 24):
            pipe = ctx.redis.pipeline(transaction=False)
            for record in batch:
                pipe.xadd(ctx.keys.ledger, {"r": record})
            await pipe.execute()
            records += len(batch)
        stop = asyncio.Event()
        t0 = time.perf_counter()
        running = asyncio.create_task(writer.run(stop))
        while writer.written < records:
            await asyncio.sleep(0.01)
        spent = time.perf_counter() - t0
        stop.set()
        await running
        return {"records": records, "seconds": spent, "records_per_s": records / spent}
    finally:
        await ctx.redis.delete(ctx.keys.ledger)
        await ctx.close()


def run_one(name: str, url: str, rows: int, runs: int, redis_url: str | None) -> dict[str, Any]:
    print(f"== {name}: seeding {rows:,} invocations through the writer", file=sys.stderr)
    migrate(url)
    engine = make_engine(url)
    try:
        result: dict[str, Any] = {"writer": seed(engine, rows)}
        with engine.connect() as conn:
            count = conn.exec_driver_sql("select count(*) from invocations").scalar_one()
        result["rows"] = count
        w = result["writer"]
        w["rows_per_s"] = count / w["seconds"]
        if "server_cpu_seconds" in w:
            w["rows_per_cpu_s"] = count / (w["cpu_seconds"] + w["server_cpu_seconds"])
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # as autovacuum would, soon after a bulk load
                conn.exec_driver_sql("analyze")
        print(f"== {name}: {count:,} rows; timing queries", file=sys.stderr)
        result["queries"] = queries(engine, runs)
        if redis_url:
            print(f"== {name}: the full writer path through Redis", file=sys.stderr)
            result["full_writer"] = asyncio.run(full_writer(url, redis_url, min(rows, 100_000)))
        return result
    finally:
        engine.dispose()


def report(name: str, r: dict[str, Any]) -> None:
    w = r["writer"]
    print(f"\n{name}: {r['rows']:,} invocations")
    print(f"  writer (batch path):   {w['rows_per_s']:>10,.0f} invocation rows/s, {w['records_per_s']:,.0f} "
          f"records/s ({w['records']:,} records in {w['seconds']:.1f} s)")
    if "rows_per_cpu_s" in w:
        print(f"  writer per CPU-second: {w['rows_per_cpu_s']:>10,.0f} invocation rows (client "
              f"{w['cpu_seconds']:.1f} s + server {w.get('server_cpu_seconds', 0):.1f} s of CPU)")
    if "full_writer" in r:
        fw = r["full_writer"]
        print(f"  writer (Redis -> SQL): {fw['records_per_s']:>10,.0f} records/s  ({fw['records']:,} records)")
    print(f"  {'query':<40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for q, t in r["queries"].items():
        print(f"  {q:<40} {t['p50_ms']:>8.2f} {t['p95_ms']:>8.2f} {t['max_ms']:>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="invocations to seed (default 1,000,000)")
    p.add_argument("--runs", type=int, default=200, help="timed runs of each query")
    p.add_argument("--only", choices=["sqlite", "postgres"], help="run one database only")
    p.add_argument("--pg-admin-url", default=os.environ.get("STOKER_BENCH_PG_URL",
                                                             "postgresql://root@127.0.0.1:5432/postgres"),
                   help="a PostgreSQL database to create the bench database from")
    p.add_argument("--redis", default=None, help="a Redis URL: also time the full writer path (100,000 rows)")
    p.add_argument("--random-ids", action="store_true",
                   help="random (uuid4) invocation ids instead of stoker's time-ordered ones, to compare")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = p.parse_args()
    global RANDOM_IDS
    RANDOM_IDS = args.random_ids

    results: dict[str, Any] = {}
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs",
          file=sys.stderr)
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="stoker-ledger-bench-") as tmp:
            results["sqlite"] = run_one("sqlite", f"sqlite:///{tmp}/ledger.db", args.rows, args.runs, args.redis)
    if args.only in (None, "postgres"):
        import psycopg

        name = "stoker_bench_" + secrets.token_hex(4)
        admin = args.pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        try:
            url = admin.rsplit("/", 1)[0] + "/" + name
            results["postgres"] = run_one("postgres", url, args.rows, args.runs, args.redis)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for name, r in results.items():
        report(name, r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
