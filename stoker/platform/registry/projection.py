"""The registry's Redis projection, and the cached directory that reads it on the hot path.

The SQL registry is the truth. After every change the writer projects the function
into Redis (`publish`), and the gateway rebuilds the whole projection at start, so a
Redis that lost its data is repaired. Readers (gateway, scheduler, nodes, triggers)
use a `FunctionDirectory`: an in-memory cache invalidated by a pub/sub message on
every change, so invoking a function costs no database query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.errors import InvalidInput, NotFound
from stoker.platform.keys import Keys
from stoker.platform.manifest import NAME_RE, FunctionSpec
from stoker.platform.registry.store import FunctionState

log = logging.getLogger(__name__)

LATEST = "$LATEST"
#: a deleted version's spec stays readable this long, so that events already accepted for it
#: (in flight, or retries) can still run; it can no longer be invoked
DELETED_SPEC_TTL_S = 3600


def version_spec_json(state: FunctionState, version: int) -> bytes:
    info = state.versions[version]
    data = info.spec.to_json()
    data.update({"version": str(version), "code_hash": info.code_hash, "function": state.name})
    return orjson.dumps(data)


async def publish(redis: aioredis.Redis, keys: Keys, state: FunctionState) -> None:
    """Project one function (all its versions and aliases) into Redis, atomically."""
    latest = state.versions[state.latest].spec
    old_versions = await redis.hget(keys.function(state.name), "versions")
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.function(state.name))
    mapping: dict[str, Any] = {
        "latest": str(state.latest),
        "versions": orjson.dumps(sorted(state.versions)),
        "aliases": orjson.dumps({a.name: {"version": a.version, "weights": a.weights}
                                 for a in state.aliases.values()}),
        "updated": str(int(time.time() * 1000)),
    }
    if latest.concurrency is not None:
        mapping["concurrency"] = str(latest.concurrency)
    pipe.hset(keys.function(state.name), mapping=mapping)  # type: ignore[arg-type]
    for number in state.versions:
        pipe.set(keys.function_version(state.name, str(number)), version_spec_json(state, number))
    if old_versions:
        for gone in set(orjson.loads(old_versions)) - set(state.versions):
            pipe.expire(keys.function_version(state.name, str(gone)), DELETED_SPEC_TTL_S)
    pipe.sadd(keys.functions, state.name)
    pipe.publish(keys.registry_channel, state.name)
    await pipe.execute()


async def unpublish(redis: aioredis.Redis, keys: Keys, name: str) -> None:
    versions = await redis.hget(keys.function(name), "versions")
    pipe = redis.pipeline(transaction=True)
    for number in orjson.loads(versions) if versions else []:
        pipe.expire(keys.function_version(name, str(number)), DELETED_SPEC_TTL_S)
    pipe.delete(keys.function(name))
    pipe.srem(keys.functions, name)
    pipe.publish(keys.registry_channel, name)
    await pipe.execute()


@dataclass(frozen=True)
class FunctionEntry:
    name: str
    latest: str
    versions: frozenset[str]
    aliases: dict[str, dict[str, Any]]
    concurrency: int | None


@dataclass(frozen=True)
class Resolved:
    """Which version runs for a (function, qualifier), and the alias it was reached through."""

    function: str
    version: str
    qualifier: str
    alias: str | None
    spec: dict[str, Any]

    @property
    def timeout(self) -> float:
        return float(self.spec["timeout"])


def split_qualified(name: str, qualifier: str | None = None) -> tuple[str, str | None]:
    """`name:prod` is the same as (`name`, qualifier `prod`); both at once must agree."""
    if ":" in name:
        name, _, inline = name.partition(":")
        if qualifier and qualifier != inline:
            raise InvalidInput(f"two qualifiers given: {inline!r} in the name and {qualifier!r}; give one")
        qualifier = inline
    return name, qualifier or None


class FunctionDirectory:
    """Cached reads of the projection: function entries, version specs, qualifier resolution."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, max_age: float = 30.0) -> None:
        self.redis = redis
        self.keys = keys
        self.max_age = max_age
        self._entries: dict[str, tuple[float, FunctionEntry | None]] = {}
        self._specs: dict[tuple[str, str], dict[str, Any]] = {}
        self._spec_fetches: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_change: list[Callable[[str | None], None]] = []

    def on_change(self, callback: Callable[[str | None], None]) -> None:
        """Call `callback(name)` whenever a function changes (None: anything may have changed)."""
        self._on_change.append(callback)

    async def start(self) -> None:
        """Listen for changes so that cached entries are dropped the moment they change."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="registry-listener")

    async def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self._entries.clear()
        else:
            self._entries.pop(name, None)
        for callback in self._on_change:
            callback(name)

    async def _listen(self) -> None:
        while not self._stopping:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.registry_channel)
                self.forget()  # whatever changed while we were not listening
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.forget(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis went away: drop the cache, then listen again
                if self._stopping:  # a cancel that redis-py turned into a connection error
                    return
                log.warning("registry listener: %s; retrying", e)
                self.forget()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def entry(self, name: str) -> FunctionEntry | None:
        cached = self._entries.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        raw: Any = await self.redis.hgetall(self.keys.function(name))
        entry = None
        if raw:
            h = {k.decode(): v for k, v in raw.items()}
            entry = FunctionEntry(
                name=name,
                latest=h["latest"].decode(),
                versions=frozenset(str(v) for v in orjson.loads(h["versions"])),
                aliases=orjson.loads(h.get("aliases", b"{}")),
                concurrency=int(h["concurrency"]) if "concurrency" in h else None,
            )
        self._entries[name] = (now, entry)
        return entry

    async def require(self, name: str) -> FunctionEntry:
        if not NAME_RE.match(name):
            raise NotFound(f"function {name!r} does not exist: function names use letters, digits, '-', '_'")
        entry = await self.entry(name)
        if entry is None:
            raise NotFound(f"function {name!r} does not exist: deploy it first (see `stoker functions`)")
        return entry

    async def spec(self, name: str, version: str) -> dict[str, Any]:
        """A version's spec. Versions are immutable, so this is cached for good."""
        key = (name, version)
        spec = self._specs.get(key)
        if spec is not None:
            return spec
        # one fetch per version and process, shared by every event that asks meanwhile (a backlog
        # of one new version must not open a connection per event)
        fetching = self._spec_fetches.get(key)
        if fetching is None:
            fetching = asyncio.ensure_future(self._fetch_spec(name, version))
            self._spec_fetches[key] = fetching
            fetching.add_done_callback(lambda _: self._spec_fetches.pop(key, None))
        return await asyncio.shield(fetching)

    async def _fetch_spec(self, name: str, version: str) -> dict[str, Any]:
        raw = await self.redis.get(self.keys.function_version(name, version))
        if raw is None:
            raise NotFound(f"function {name!r} has no version {version}")
        spec: dict[str, Any] = orjson.loads(raw)
        self._specs[(name, version)] = spec
        return spec

    async def resolve(self, name: str, qualifier: str | None = None) -> Resolved:
        name, qualifier = split_qualified(name, qualifier)
        entry = await self.require(name)
        alias = None
        if qualifier is None or qualifier == LATEST:
            version = entry.latest
        elif qualifier.isascii() and qualifier.isdigit():
            version = str(int(qualifier))
            if version not in entry.versions:
                raise NotFound(f"function {name!r} has no version {qualifier}: see `stoker versions {name}`")
        elif qualifier in entry.aliases:
            alias = qualifier
            target = entry.aliases[qualifier]
            version = str(target["version"])
            # Lambda's AdditionalVersionWeights: each listed version takes its share,
            # the alias's own version the rest
            draw, cumulative = random.random(), 0.0
            for other, weight in (target.get("weights") or {}).items():
                cumulative += float(weight)
                if draw < cumulative:
                    version = str(other)
                    break
        else:
            raise NotFound(f"function {name!r} has no version or alias {qualifier!r}")
        spec = await self.spec(name, version)
        return Resolved(function=name, version=version, qualifier=qualifier or LATEST, alias=alias, spec=spec)

    async def names(self) -> list[str]:
        members: Any = await self.redis.smembers(self.keys.functions)
        return sorted(m.decode() for m in members)


def spec_from_json(data: dict[str, Any]) -> FunctionSpec:
    return FunctionSpec.from_json(data)
