"""The bus: Redis streams and the atomic hand-offs between them.

Every hand-off that must neither lose nor duplicate an event is one Lua script
(`stoker/platform/lua/*.lua`, each documenting its keys): placing intake entries on a
node (`place`), a node handing back results (`complete`), reclaiming a dead node's
events (`reclaim`), moving due retries back to intake (`promote`) and releasing
held-back events (`drain`). Everything else here is a thin, typed wrapper.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stoker.errors import ConfigError
from stoker.platform import keys as K
from stoker.platform.envelope import Envelope
from stoker.platform.keys import Keys


def _script(name: str) -> str:
    return (resources.files("stoker.platform") / "lua" / f"{name}.lua").read_text()


#: connections one process's client keeps to Redis (STOKER_REDIS_MAX_CONNECTIONS); a command
#: that finds them all busy waits for one, up to STOKER_REDIS_POOL_TIMEOUT seconds, instead of
#: failing with "Too many connections" (redis-py's default pool)
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_POOL_TIMEOUT_S = 10.0


def pool_settings() -> tuple[int, float]:
    """(max connections, seconds to wait for one), from the environment; ConfigError if wrong."""
    raw_max = os.environ.get("STOKER_REDIS_MAX_CONNECTIONS", "") or str(DEFAULT_MAX_CONNECTIONS)
    raw_wait = os.environ.get("STOKER_REDIS_POOL_TIMEOUT", "") or str(DEFAULT_POOL_TIMEOUT_S)
    if not raw_max.isdigit() or not 2 <= int(raw_max) <= 100_000:
        raise ConfigError(f"STOKER_REDIS_MAX_CONNECTIONS={raw_max!r} is not valid: give a whole number from 2 to "
                          "100000")
    try:
        wait = float(raw_wait)
    except ValueError:
        wait = -1.0
    if not 0.1 <= wait <= 600:
        raise ConfigError(f"STOKER_REDIS_POOL_TIMEOUT={raw_wait!r} is not valid: give seconds from 0.1 to 600")
    return int(raw_max), wait


def connect(url: str) -> aioredis.Redis:
    """An asyncio Redis client (hiredis-parsed, bytes in and out) on a pool of a known size that
    waits for a free connection. Connects lazily."""
    max_connections, wait = pool_settings()
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait, decode_responses=False, health_check_interval=30,
        socket_keepalive=True)
    return aioredis.Redis(connection_pool=pool)


def now_ms() -> int:
    return int(time.time() * 1000)


class Bus:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.place = redis.register_script(_script("place"))
        self.complete = redis.register_script(_script("complete"))
        self.reclaim = redis.register_script(_script("reclaim"))
        self.promote = redis.register_script(_script("promote"))
        self.drain = redis.register_script(_script("drain"))
        self.settle = redis.register_script(_script("settle"))
        self.redrive = redis.register_script(_script("redrive"))
        self.guarded_publish = redis.register_script(_script("guarded_publish"))
        self.start = redis.register_script(_script("start"))

    @classmethod
    def from_url(cls, url: str, prefix: str) -> Bus:
        return cls(connect(url), Keys(prefix))

    async def close(self) -> None:
        await self.redis.aclose()

    async def ensure_group(self, stream: str, group: str, start: str = "0") -> None:
        try:
            await self.redis.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def ensure_intake_groups(self) -> None:
        for stream in (self.keys.intake_sync, self.keys.intake_async, self.keys.capacity):
            await self.ensure_group(stream, K.SCHEDULERS)

    async def publish(self, envelope: Envelope, ledger_record: bytes | None = None) -> None:
        """Put one event on intake; with a ledger record (e.g. `queued`) in the same transaction."""
        await self.publish_many([(envelope, ledger_record)])

    async def publish_many(self, items: Iterable[tuple[Envelope, bytes | None]]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for envelope, record in items:
            pipe.xadd(self.keys.intake(envelope.is_sync), envelope.stream_fields())  # type: ignore[arg-type]
            if record is not None:
                pipe.xadd(self.keys.ledger, {"r": record})
        await pipe.execute()

    async def publish_guarded(self, guard: Guard, envelope: Envelope | None = None,
                              ledger_record: bytes | None = None) -> bool:
        """Compare-and-set `guard` and publish an async envelope in one atomic step.

        Without an envelope only the compare-and-set happens. False (and nothing written)
        when the field no longer holds `guard.expected`.
        """
        args: list[bytes | str] = [guard.field, guard.expected or b"", guard.new or b"", ledger_record or b""]
        if envelope is not None:
            if envelope.is_sync:
                raise ValueError("publish_guarded takes async envelopes only")
            for name, value in envelope.stream_fields().items():
                args += [name, value]
        done = await self.guarded_publish(keys=[guard.key, self.keys.intake_async, self.keys.ledger], args=args)
        return bool(done)

    async def place_direct(self, envelope: Envelope, settings: Any) -> str:
        """Place one event on a node without going through intake (a gateway's sync fast path).

        Returns the node id, "T" (over a concurrency limit: throttled) or "F"/"N" (no room or
        no node: publish it to intake for a scheduler instead). Same rules as the scheduler's.
        """
        f = envelope.stream_fields()
        result = await self.place(
            keys=[self.keys.intake_sync, self.keys.intake_async, self.keys.concurrency, self.keys.nodes,
                  self.keys.waiting_set],
            args=[self.keys.prefix, K.SCHEDULERS, now_ms(), int(settings.node_dead_after * 1000),
                  settings.global_concurrency, settings.prefetch, "", f["i"], f["f"], f["t"], f["e"]],
        )
        value = result[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    async def record(self, *records: bytes) -> None:
        """Put ledger records on the ledger stream (for events that never reach a node)."""
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.xadd(self.keys.ledger, {"r": record})
        await pipe.execute()

    async def reply(self, reply_to: str, reply: bytes) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(reply_to, reply)
        pipe.pexpire(reply_to, 120_000)
        await pipe.execute()


@dataclass(frozen=True)
class Guard:
    """A compare-and-set on one hash field, for `Bus.publish_guarded`."""

    key: str
    field: str
    #: what the caller read; None: the field must be absent
    expected: bytes | None
    #: what to write; None: delete the field
    new: bytes | None


def fields_of(entry: Any) -> dict[str, bytes]:
    """A stream entry's fields with str keys (redis-py gives bytes keys)."""
    _id, raw = entry
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
