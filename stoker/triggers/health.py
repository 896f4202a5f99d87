"""Trigger sources report their problems where `/healthz` shows them.

Sources run in the triggers role, the health route in the gateway: they meet in Redis.
A source with a problem (its database cannot be reached, its table is not watched)
reports it, and reports again while it lasts; a report expires unless refreshed, so a
source that stopped leaves no stale problem behind. A problem of a source is the user's
(their database is down), not the platform's: `/healthz` lists it without failing, so a
load balancer keeps the gateway and `stoker up` still starts.

Redis key:
    {p}:triggers:health   hash  source name -> JSON {"problem", "since", "expires"} (epoch seconds)
"""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from stoker.platform.keys import Keys

#: a report not refreshed for this long is dropped
REPORT_TTL_S = 60.0


def health_key(keys: Keys) -> str:
    return keys.custom("triggers", "health")


async def report_problem(redis: aioredis.Redis, keys: Keys, source: str, problem: str, since: float) -> None:
    value = {"problem": problem, "since": since, "expires": time.time() + REPORT_TTL_S}
    await redis.hset(health_key(keys), source, orjson.dumps(value))


async def clear_problem(redis: aioredis.Redis, keys: Keys, source: str) -> None:
    await redis.hdel(health_key(keys), source)


async def source_problems(redis: aioredis.Redis, keys: Keys) -> dict[str, str]:
    """Current problems by source, e.g. {"dbchanges audit (orders)": "… unreachable since …"}."""
    raw = await redis.hgetall(health_key(keys))
    now = time.time()
    out: dict[str, str] = {}
    stale = []
    for name, value in raw.items():
        source = name.decode() if isinstance(name, bytes) else str(name)
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            stale.append(source)
            continue
        if float(data.get("expires", 0)) < now:
            stale.append(source)
            continue
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(data.get("since", now))))
        out[source] = f"{data.get('problem')} (since {since})"
    if stale:
        await redis.hdel(health_key(keys), *stale)
    return dict(sorted(out.items()))
