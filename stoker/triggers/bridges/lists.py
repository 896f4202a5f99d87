"""At-least-once consumption of a Redis list that another system's producers fill (Celery, RQ).

Taking an item moves it atomically (LMOVE) from the source list to this instance's
processing list; it leaves that list only once it is handled, or is rejected into a list
kept for inspection. Instances heart-beat in a sorted set. The processing list of an
instance that stopped heart-beating goes back to the head of the source list, so a
bridge that is killed loses nothing: its tasks run again (possibly a second time).

Keys, in the broker's Redis ({p} is the stoker prefix, {ns} = {p}:bridge:{kind}:{queue}):
    {ns}:instances             zset instance -> last heartbeat (ms)
    {ns}:processing:{instance} list of the items an instance is handling (newest on the left)
    {ns}:rejected              list of items refused (not JSON, pickled, malformed), as received
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

DEAD_AFTER_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class ListConsumer:
    def __init__(self, redis: aioredis.Redis, namespace: str, sources: Sequence[str], instance: str,
                 pop_side: str, dead_after_s: float = DEAD_AFTER_S) -> None:
        """`sources` in priority order; `pop_side` is where the list's consumers take from
        (RIGHT for kombu's lists, LEFT for RQ's)."""
        self.redis = redis
        self.sources = list(sources)
        self.instance = instance
        self.pop_side = pop_side
        self.dead_after_ms = int(dead_after_s * 1000)
        self.instances_key = f"{namespace}:instances"
        self.processing_prefix = f"{namespace}:processing:"
        self.processing = self.processing_prefix + instance
        self.rejected = f"{namespace}:rejected"
        self._recover = redis.register_script(
            (resources.files("stoker.platform") / "lua" / "bridge_recover.lua").read_text())

    async def heartbeat(self) -> None:
        await self.redis.zadd(self.instances_key, {self.instance: _now_ms()})

    async def alive(self, instance: str) -> bool:
        score = await self.redis.zscore(self.instances_key, instance)
        return score is not None and score >= _now_ms() - self.dead_after_ms

    async def take(self, timeout_s: float) -> bytes | None:
        """The next item (higher priority lists first), now held in this instance's processing list."""
        for source in self.sources[1:]:
            item: Any = await self.redis.lmove(source, self.processing, self.pop_side, "LEFT")
            if item is not None:
                return bytes(item)
        item = await self.redis.blmove(self.sources[0], self.processing, int(max(1, timeout_s)), self.pop_side, "LEFT")
        return None if item is None else bytes(item)

    async def done(self, item: bytes) -> None:
        await self.redis.lrem(self.processing, 1, item)  # type: ignore[arg-type]

    async def reject(self, item: bytes) -> None:
        """Keep a refused item, unchanged, in the rejected list for someone to look at."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrem(self.processing, 1, item)  # type: ignore[arg-type]
        pipe.lpush(self.rejected, item)
        await pipe.execute()

    async def recover_dead(self) -> int:
        """Hand the items of instances that stopped heart-beating back to the source list."""
        cutoff = _now_ms() - self.dead_after_ms
        dead: Any = await self.redis.zrangebyscore(self.instances_key, "-inf", f"({cutoff}")
        total = 0
        for raw in dead:
            instance = raw.decode() if isinstance(raw, bytes) else str(raw)
            if instance == self.instance:
                continue
            n = int(await self._recover(keys=[self.instances_key, self.processing_prefix + instance, self.sources[0]],
                                        args=[instance, cutoff, self.pop_side]))
            total += max(0, n)
        return total

    async def hand_back(self) -> int:
        """At a clean stop: whatever this instance still holds goes back to the head of the list."""
        n = await self._recover(keys=[self.instances_key, self.processing, self.sources[0]],
                                args=[self.instance, "+inf", self.pop_side])
        return int(n)
