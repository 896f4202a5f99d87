"""A lease in Redis: one holder at a time, renewed while it lives, taken over when it lapses.

Triggers that must run in one place at a time (a cron schedule's leader) hold a lease
`{p}:lock:{name}`. The holder renews it well within its time to live; if the holder
dies, the lease lapses and another runner takes it. A lease alone is not a guarantee
(a paused holder may act after its lease lapsed), so whoever holds one still moves its
durable position with a compare-and-set (`Bus.publish_guarded`).
"""

from __future__ import annotations

import secrets
import socket
from importlib import resources

import redis.asyncio as aioredis


def _script(name: str) -> str:
    return (resources.files("stoker.triggers") / "lua" / f"{name}.lua").read_text()


class Lease:
    def __init__(self, redis: aioredis.Redis, key: str, ttl: float = 10.0) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        #: who holds it, readable in Redis: host, then a random part
        self.token = f"{socket.gethostname()}:{secrets.token_hex(6)}"
        self.held = False
        self._hold = redis.register_script(_script("lease_hold"))
        self._release = redis.register_script(_script("lease_release"))

    async def hold(self) -> bool:
        """Take the lease or renew it; True while this owner holds it."""
        self.held = bool(await self._hold(keys=[self.key], args=[self.token, self.ttl_ms]))
        return self.held

    async def release(self) -> None:
        """Give the lease up (if still ours), so that another runner takes over at once."""
        if self.held:
            self.held = False
            await self._release(keys=[self.key], args=[self.token])

    async def holder(self) -> str | None:
        raw = await self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw
