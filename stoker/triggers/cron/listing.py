"""What `stoker cron ls` and `GET /api/cron` show: every schedule, its state and its next ticks."""

from __future__ import annotations

import time
from typing import Any

from stoker.platform.context import PlatformContext
from stoker.triggers.cron.config import cron_configs
from stoker.triggers.cron.schedule import iso_local, iso_utc, upcoming
from stoker.triggers.cron.source import FireState


async def list_schedules(ctx: PlatformContext, count: int = 3, now_ms: int | None = None) -> list[dict[str, Any]]:
    """Each cron trigger of each function's newest version, with its next `count` fire times."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[dict[str, Any]] = []
    directory = ctx.directory
    for name in sorted(await directory.names()):
        entry = await directory.entry(name)
        if entry is None:
            continue
        spec = await directory.spec(name, entry.latest)
        for config in cron_configs(name, spec):
            raw: Any = await ctx.redis.hget(ctx.keys.custom("cron", name), config.name)
            state = FireState.decode(raw)
            fired = state.fired if state is not None and state.sig == config.signature else None
            holder = await ctx.redis.get(ctx.keys.lock(f"cron:{name}:{config.name}"))
            ticks = upcoming(config.schedule, now_ms, count)
            out.append({
                "schedule": config.schedule_id,
                "function": name,
                "expression": config.schedule.text,
                "timezone": config.timezone,
                "missed": config.missed,
                "qualifier": config.qualifier,
                "last_fired": iso_utc(fired) if fired is not None else None,
                "leader": holder.decode() if isinstance(holder, bytes) else holder,
                "next": [iso_utc(t) for t in ticks],
                "next_local": [iso_local(t, config.timezone) for t in ticks],
            })
    return out

