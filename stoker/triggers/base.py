"""The trigger interface: a source that publishes envelopes and keeps a durable position.

A trigger type registers two things:
  - a manifest validator (`stoker.platform.manifest.register_trigger_type`), so that a bad
    `[[triggers]]` entry refuses the deploy with a message naming it;
  - for types that run in the background (queue, files, cron, dbchanges), a source factory
    (`register_source`), which the trigger runner calls for every deployed function that
    declares such a trigger. (`http` routes are served by the gateway instead.)

A source's `run(stop)` publishes events until `stop` is set. It must keep its position
durably (in Redis or SQL) so that nothing is lost or fired twice across restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from stoker.platform.context import PlatformContext


@dataclass(frozen=True)
class TriggerBinding:
    """One `[[triggers]]` entry of one function, as deployed."""

    function: str
    index: int
    config: dict[str, Any]
    #: the function version's spec (JSON); relative trigger paths are already absolute in it
    spec: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.config["type"])

    @property
    def qualifier(self) -> str | None:
        q = self.config.get("qualifier")
        return str(q) if q else None

    @property
    def key(self) -> str:
        """Identifies the binding across restarts; changes when its configuration changes."""
        digest = hashlib.sha256(orjson.dumps(self.config, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        return f"{self.function}:{self.type}:{digest}"


class TriggerSource(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


SourceFactory = Callable[[PlatformContext, TriggerBinding], TriggerSource]
SOURCES: dict[str, SourceFactory] = {}


def register_source(kind: str, factory: SourceFactory) -> None:
    SOURCES[kind] = factory
