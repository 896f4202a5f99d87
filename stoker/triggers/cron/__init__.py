"""Cron schedules: `[[triggers]] type = "cron"` fires a function on a schedule, once per tick
across the cluster. config.py checks the manifest table, schedule.py computes ticks,
source.py fires them (leader lease + idempotent ticks). User documentation: docs/cron.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from stoker.errors import ConfigError
from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import TriggerBinding, TriggerSource, register_source
from stoker.triggers.cron.config import validate

if TYPE_CHECKING:
    from stoker.platform.context import PlatformContext

log = logging.getLogger(__name__)


class _Unusable:
    """A deployed schedule that no longer parses (e.g. its time zone left the tz database):
    said once in the log instead of failing the runner's reconcile over and over."""

    def __init__(self, binding: TriggerBinding, error: ConfigError) -> None:
        self.binding, self.error = binding, error

    async def run(self, stop: asyncio.Event) -> None:
        log.error("cron trigger #%d of %s does not fire: %s", self.binding.index + 1, self.binding.function,
                  self.error.message)
        await stop.wait()


def _source(ctx: PlatformContext, binding: TriggerBinding) -> TriggerSource:
    from stoker.triggers.cron.source import CronSource

    try:
        return CronSource.from_binding(ctx, binding)
    except ConfigError as e:
        return _Unusable(binding, e)


register_trigger_type("cron", validate)
register_source("cron", _source)
