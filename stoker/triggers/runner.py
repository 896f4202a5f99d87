"""The trigger runner: keeps one running source per background trigger of every function.

It reads the deployed functions from the registry projection and reconciles whenever
a function changes (pub/sub) and every few seconds: new or changed triggers start,
removed ones stop. Sources coordinate among themselves (leases, consumer groups) so
that several runners on several machines never fire an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from stoker.platform.context import PlatformContext
from stoker.triggers.base import SOURCES, TriggerBinding

log = logging.getLogger(__name__)

RECONCILE_S = 3.0


def shown(config: dict[str, Any]) -> dict[str, Any]:
    """A trigger's configuration as logs may show it: URLs without their passwords."""
    out = dict(config)
    for k, v in config.items():
        if isinstance(v, str) and "://" in v:
            parts = urlsplit(v)
            if parts.password:
                netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
                out[k] = urlunsplit(parts._replace(netloc=netloc))
    return out


class TriggerRunner:
    def __init__(self, ctx: PlatformContext) -> None:
        import stoker.triggers  # noqa: F401  (registers every trigger type)

        self.ctx = ctx
        self._running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    async def desired(self) -> dict[str, TriggerBinding]:
        out: dict[str, TriggerBinding] = {}
        directory = self.ctx.directory
        for name in await directory.names():
            entry = await directory.entry(name)
            if entry is None:
                continue
            spec = await directory.spec(name, entry.latest)
            for i, config in enumerate(spec.get("triggers") or []):
                if config.get("type") in SOURCES:
                    binding = TriggerBinding(function=name, index=i, config=config, spec=spec)
                    out[binding.key] = binding
        return out

    async def reconcile(self) -> None:
        want = await self.desired()
        for key in list(self._running):
            if key not in want:
                task, stop = self._running.pop(key)
                stop.set()
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(task, 10)
                log.info("stopped trigger %s", key)
        for key, binding in want.items():
            running = self._running.get(key)
            if running is not None and not running[0].done():
                continue
            stop = asyncio.Event()
            source = SOURCES[binding.type](self.ctx, binding)
            task = asyncio.create_task(self._supervise(key, source, stop), name=f"trigger-{key}")
            self._running[key] = (task, stop)
            log.info("started trigger %s: %s", key, orjson.dumps(shown(binding.config)).decode()[:200])

    async def _supervise(self, key: str, source: object, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await source.run(stop)  # type: ignore[attr-defined]
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trigger %s failed; restarting in %.0fs", key, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(30.0, backoff * 2)

    async def run(self, stop: asyncio.Event) -> None:
        await self.ctx.directory.start()
        try:
            while not stop.is_set():
                try:
                    self.ctx.directory.forget()
                    await self.reconcile()
                except Exception:
                    log.exception("reconciling triggers failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONCILE_S)
        finally:
            for _task, source_stop in self._running.values():
                source_stop.set()
            if self._running:
                await asyncio.wait([t for t, _ in self._running.values()], timeout=5)
            for task, _ in self._running.values():
                task.cancel()
