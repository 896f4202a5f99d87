"""Cron schedules: `[[triggers]] type = "cron"` fires a function on a schedule, once per tick
across the cluster. config.py checks the manifest table, schedule.py computes ticks,
source.py fires them (leader lease + idempotent ticks). User documentation: docs/cron.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import TriggerBinding, TriggerSource, register_source
from stoker.triggers.cron.config import validate

if TYPE_CHECKING:
    from stoker.platform.context import PlatformContext


def _source(ctx: PlatformContext, binding: TriggerBinding) -> TriggerSource:
    from stoker.triggers.cron.source import CronSource

    return CronSource.from_binding(ctx, binding)


register_trigger_type("cron", validate)
register_source("cron", _source)
