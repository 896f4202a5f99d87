"""Cluster-wide counters in Redis, for Prometheus and the console.

Every node counts its invocations (by function and status), their durations (a
histogram), its cold starts; schedulers count throttles. Each process adds its counts
to one Redis hash about once a second, so any gateway can expose the whole cluster.

Fields of `{p}:metrics`:
    inv|{function}|{status}        invocations finished with that status
    dur_bucket|{function}|{le}     invocations whose duration was <= le seconds (not cumulative)
    dur_sum|{function}             total duration, seconds
    dur_count|{function}           invocations timed
    cold|{function}                cold starts
    throttle|{function}            sync calls refused over a concurrency limit
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from stoker.platform.keys import Keys

log = logging.getLogger(__name__)

#: histogram bucket bounds, seconds (Prometheus-style; +Inf implied)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0)


def bucket_label(duration_s: float) -> str:
    for bound in DURATION_BUCKETS:
        if duration_s <= bound:
            return repr(bound)
    return "+Inf"


@dataclass
class MetricsRecorder:
    """Counts in memory; `flush` adds them to Redis (call it about once a second)."""

    counts: Counter[str] = field(default_factory=Counter)
    sums: dict[str, float] = field(default_factory=dict)

    def invocation(self, function: str, status: str, duration_ms: float | None, cold: bool) -> None:
        self.counts[f"inv|{function}|{status}"] += 1
        if duration_ms is not None:
            seconds = duration_ms / 1000
            self.counts[f"dur_bucket|{function}|{bucket_label(seconds)}"] += 1
            self.counts[f"dur_count|{function}"] += 1
            key = f"dur_sum|{function}"
            self.sums[key] = self.sums.get(key, 0.0) + seconds
        if cold:
            self.counts[f"cold|{function}"] += 1

    def throttle(self, function: str) -> None:
        self.counts[f"throttle|{function}"] += 1

    async def flush(self, redis: aioredis.Redis, keys: Keys) -> None:
        if not self.counts and not self.sums:
            return
        counts, sums = self.counts, self.sums
        self.counts, self.sums = Counter(), {}
        pipe = redis.pipeline(transaction=False)
        for k, n in counts.items():
            pipe.hincrby(keys.metrics, k, n)
        for k, x in sums.items():
            pipe.hincrbyfloat(keys.metrics, k, x)
        try:
            await pipe.execute()
        except Exception:
            self.counts.update(counts)  # keep them for the next flush
            for k, x in sums.items():
                self.sums[k] = self.sums.get(k, 0.0) + x
            raise

    async def run(self, redis: aioredis.Redis, keys: Keys, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await self.flush(redis, keys)


async def read_counters(redis: aioredis.Redis, keys: Keys) -> dict[str, float]:
    raw: Any = await redis.hgetall(keys.metrics)
    out: dict[str, float] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        try:
            out[name] = float(v)
        except ValueError:
            log.warning("metrics field %s is not a number", name)
    return out
