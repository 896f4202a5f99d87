"""Helpers for trigger tests against real parts: the session's redis-server, a SQLite registry,
functions deployed as `stoker deploy` would, and the events a source published (read back
from the async intake stream the scheduler would consume)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope
from stoker.settings import Settings
from tests.conftest import RedisServer


@dataclass
class TriggerEnv:
    """Everything a source needs, minus the running loop (contexts are made inside it)."""

    settings: Settings
    tmp: Path

    def context(self) -> PlatformContext:
        return PlatformContext.create(self.settings)


@pytest.fixture
def trigger_env(tmp_path: Path, redis_server: RedisServer, prefix: str,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[TriggerEnv]:
    from stoker.platform.db import migrate

    home = tmp_path / "home"
    monkeypatch.setenv("STOKER_HOME", str(home))
    monkeypatch.setenv("STOKER_REDIS_URL", redis_server.url)
    monkeypatch.setenv("STOKER_DB_URL", f"sqlite:///{home / 'ledger.db'}")
    monkeypatch.setenv("STOKER_PREFIX", prefix)
    settings = Settings.from_env()
    settings.ensure_home()
    migrate(settings.db_url)
    yield TriggerEnv(settings, tmp_path)


def write_function(folder: Path, name: str, triggers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (folder / "stoker.toml").write_text(f'[function]\nname = "{name}"\n{triggers}\n')
    return folder


async def deploy(ctx: PlatformContext, folder: Path) -> None:
    from stoker.platform.registry.deploy import deploy_path

    await ctx.bus.ensure_intake_groups()
    await deploy_path(ctx, folder)


async def published(ctx: PlatformContext) -> list[tuple[Envelope, dict[str, Any]]]:
    """Every async event published so far: (envelope, decoded payload)."""
    entries: Any = await ctx.redis.xrange(ctx.keys.intake_async)
    out = []
    for _id, fields in entries:
        envelope = Envelope.decode(fields[b"e"])
        out.append((envelope, orjson.loads(envelope.payload)))
    return out


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0, message: str = "condition") -> Any:
    """Poll an async predicate until it is truthy (returns its value) or fail the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value: {last!r})")
