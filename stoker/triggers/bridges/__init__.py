"""Bridges for existing Celery and RQ producers, as trigger types and as commands.

    [[triggers]]                      [[triggers]]
    type = "celery"                   type = "rq"
    task = "tasks.add"                func = "tasks.add"
    queue = "celery"                  queue = "default"
    broker = "redis://host:6379/0"    redis = "redis://host:6379/0"
    backend = "redis://host:6379/0"   concurrency = 4
    concurrency = 4

`broker` / `redis` default to the platform's own Redis, `backend` to the broker ("none"
stores no results). Every trigger runner runs a bridge per such trigger; all bridges on
one broker and queue route every task declared for that queue by any deployed function.
`stoker bridge celery|rq` runs one from the command line with routes given as options.

    base.py    routes, the bridge loop, calling functions
    lists.py   at-least-once consumption of a Redis list
    celery.py  Celery's message protocol 2
    results.py Celery's Redis result backend
    canvas.py  links, chains, groups and chords
    revokes.py revoke() over the pidbox channel
    rq.py      RQ jobs, through the rq library
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

from stoker.errors import ConfigError, StokerError
from stoker.platform.bus import connect
from stoker.platform.context import PlatformContext
from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import TriggerBinding, register_source
from stoker.triggers.bridges.base import Bridge, ManifestRoutes, Routes, instance_name, redis_url
from stoker.triggers.bridges.lists import DEAD_AFTER_S, ListConsumer

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 64
DEFAULT_CONCURRENCY = 4


async def run_celery(ctx: PlatformContext, broker: str, queue: str, routes: Routes, backend: str | None,
                     concurrency: int, stop: asyncio.Event, dead_after: float = DEAD_AFTER_S) -> None:
    from stoker.triggers.bridges.celery import CeleryHandler, queue_lists

    redis = connect(redis_url(broker))
    try:
        instance = instance_name("celery")
        consumer = ListConsumer(redis, ctx.keys.custom("bridge", "celery", queue), queue_lists(queue),
                                instance, pop_side="RIGHT", dead_after_s=dead_after)
        handler = CeleryHandler(queue, routes, redis_url(backend) if backend else None, redis,
                                ctx.keys.custom("bridge", "celery", "revoked"), instance)
        await Bridge(ctx, consumer, handler, concurrency).run(stop)
    finally:
        await redis.aclose()


async def run_rq(ctx: PlatformContext, url: str, queue: str, routes: Routes, concurrency: int,
                 stop: asyncio.Event, dead_after: float = DEAD_AFTER_S) -> None:
    from stoker.triggers.bridges.rq import QUEUE_KEY_PREFIX, RQHandler

    redis = connect(redis_url(url))
    try:
        instance = instance_name("rq")
        consumer = ListConsumer(redis, ctx.keys.custom("bridge", "rq", queue), [QUEUE_KEY_PREFIX + queue], instance,
                                pop_side="LEFT", dead_after_s=dead_after)
        handler = RQHandler(redis_url(url), queue, routes, instance)
        handler.consumer = consumer
        await Bridge(ctx, consumer, handler, concurrency).run(stop)
    finally:
        await redis.aclose()


def rq_installed() -> bool:
    return importlib.util.find_spec("rq") is not None


# -- manifest triggers --------------------------------------------------------------------

def _check_keys(table: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key '{key}'. Known keys: {', '.join(known)}")


def _string(table: dict[str, Any], key: str, default: str | None, example: str) -> str | None:
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string, e.g. {key} = \"{example}\"")
    return value.strip()


def _url(table: dict[str, Any], key: str) -> str | None:
    value = _string(table, key, None, "redis://localhost:6379/0")
    if value is not None and value.lower() != "none":
        try:
            redis_url(value)
        except StokerError as e:
            raise ConfigError(f"{key}: {e.message}") from None
    return value


def _common(table: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    concurrency = table.get("concurrency", DEFAULT_CONCURRENCY)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency = {concurrency!r} is not valid: a whole number from 1 to {MAX_CONCURRENCY}")
    out["concurrency"] = concurrency
    qualifier = _string(table, "qualifier", None, "prod")
    if qualifier is not None:
        out["qualifier"] = qualifier
    return out


CELERY_KEYS = ("task", "queue", "broker", "backend", "concurrency", "qualifier")
RQ_KEYS = ("func", "queue", "redis", "concurrency", "qualifier")


def validate_celery(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    _check_keys(table, CELERY_KEYS)
    task = _string(table, "task", None, "tasks.add")
    if task is None:
        raise ConfigError("task is missing: name the Celery task this function runs, e.g. task = \"tasks.add\"")
    out: dict[str, Any] = {"task": task, "queue": _string(table, "queue", "celery", "celery")}
    for key in ("broker", "backend"):
        value = _url(table, key)
        if value is not None:
            out[key] = value
    return _common(table, out)


def validate_rq(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    _check_keys(table, RQ_KEYS)
    func = _string(table, "func", None, "tasks.add")
    if func is None:
        raise ConfigError("func is missing: name the function RQ jobs call, e.g. func = \"tasks.add\"")
    out: dict[str, Any] = {"func": func, "queue": _string(table, "queue", "default", "default")}
    value = _url(table, "redis")
    if value is not None:
        out["redis"] = value
    return _common(table, out)


class CelerySource:
    def __init__(self, ctx: PlatformContext, binding: TriggerBinding) -> None:
        self.ctx = ctx
        self.config = binding.config

    async def run(self, stop: asyncio.Event) -> None:
        ctx, c = self.ctx, self.config
        broker = c.get("broker") or ctx.redis_url
        queue = c["queue"]
        backend = c.get("backend", broker)
        routes = ManifestRoutes(ctx.directory, "celery", "task",
                                lambda t: (t.get("broker") or ctx.redis_url) == broker and t.get("queue") == queue)
        await run_celery(ctx, broker, queue, routes, None if backend.lower() == "none" else backend,
                         int(c["concurrency"]), stop)


class RQSource:
    def __init__(self, ctx: PlatformContext, binding: TriggerBinding) -> None:
        self.ctx = ctx
        self.config = binding.config

    async def run(self, stop: asyncio.Event) -> None:
        ctx, c = self.ctx, self.config
        if not rq_installed():
            log.error("a function declares an rq trigger, but the rq library is not installed here: "
                      "pip install 'stoker[rq]' where the trigger runner runs")
            await stop.wait()
            return
        url = c.get("redis") or ctx.redis_url
        queue = c["queue"]
        routes = ManifestRoutes(ctx.directory, "rq", "func",
                                lambda t: (t.get("redis") or ctx.redis_url) == url and t.get("queue") == queue)
        await run_rq(ctx, url, queue, routes, int(c["concurrency"]), stop)


register_trigger_type("celery", validate_celery)
register_trigger_type("rq", validate_rq)
register_source("celery", CelerySource)
register_source("rq", RQSource)
