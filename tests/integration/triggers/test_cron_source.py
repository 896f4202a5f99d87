"""The cron source on a real Redis with an injected clock: daylight-saving changes, two schedulers,
a leader that dies, and downtime with each missed-tick policy. No test sleeps for a tick."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from stoker.platform.context import PlatformContext
from stoker.triggers.base import TriggerBinding
from stoker.triggers.cron.source import CronSource
from tests.integration.triggers.conftest import TriggerEnv, deploy, published, write_function


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


async def sources(ctx: PlatformContext, function: str) -> dict[str, CronSource]:
    entry = await ctx.directory.require(function)
    spec = await ctx.directory.spec(function, entry.latest)
    out = {}
    for i, config in enumerate(spec["triggers"]):
        source = CronSource.from_binding(ctx, TriggerBinding(function, i, config, spec))
        out[source.config.name] = source
    return out


async def fired_times(ctx: PlatformContext, schedule_id: str | None = None) -> list[str]:
    return [p["time"] for e, p in await published(ctx) if schedule_id is None or p["resources"] == [schedule_id]]


async def run_until(source: CronSource, start: int, end: int) -> None:
    """Step the source at exactly each tick time (a punctual clock) from start to end."""
    now = start
    await source.step(now)
    while True:
        nxt = source.config.schedule.next_after(now)
        if nxt is None or nxt > end:
            return
        now = nxt
        await source.step(now)


def test_daylight_saving_changes_follow_debian_cron(trigger_env: TriggerEnv) -> None:
    folder = write_function(trigger_env.tmp / "fn", "berlin", '''
[[triggers]]
type = "cron"
name = "daily"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
payload = { job = "backup" }
[[triggers]]
type = "cron"
name = "hourly"
schedule = "@hourly"
timezone = "Europe/Berlin"
''')

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, folder)
            by_name = await sources(ctx, "berlin")
            daily, hourly = by_name["daily"], by_name["hourly"]
            # autumn: 03:00 CEST becomes 02:00 CET on 2025-10-26; 02:30 happens twice
            await run_until(daily, ms(2025, 10, 25, 12), ms(2025, 10, 27, 12))
            assert await fired_times(ctx, "berlin/daily") == ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]
            # spring: 02:00 CET becomes 03:00 CEST on 2025-03-30; 02:30 does not exist, fires at 03:00
            await ctx.redis.delete(ctx.keys.custom("cron", "berlin"))  # a fresh start, far earlier
            await run_until(daily, ms(2025, 3, 29, 12), ms(2025, 3, 31, 12))
            assert (await fired_times(ctx, "berlin/daily"))[2:] == ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"]
            await run_until(hourly, ms(2025, 10, 25, 21, 30), ms(2025, 10, 26, 3, 30))
            assert await fired_times(ctx, "berlin/hourly") == [  # 00:00 .. 04:00 local, 02:00 twice
                "2025-10-25T22:00:00Z", "2025-10-25T23:00:00Z", "2025-10-26T00:00:00Z", "2025-10-26T01:00:00Z",
                "2025-10-26T02:00:00Z", "2025-10-26T03:00:00Z"]
            events = await published(ctx)
            first = events[0][1]
            assert first["detail-type"] == "Scheduled Event" and first["source"] == "stoker.cron"
            assert first["detail"] == {"job": "backup"} and first["version"] == "0"
            assert first["id"] == events[0][0].id  # the event id is the invocation id
            assert {e.trigger for e, _ in events} == {"cron"}
            assert len({e.id for e, _ in events}) == len(events)
        finally:
            await ctx.close()

    asyncio.run(main())


def _rate_function(tmp: Path, name: str, missed: str = "skip") -> Path:
    return write_function(tmp / name, name, f'''
[[triggers]]
type = "cron"
schedule = "rate(5 seconds)"
missed = "{missed}"
''')


def test_two_schedulers_fire_each_tick_once_across_a_leader_change(trigger_env: TriggerEnv) -> None:
    folder = _rate_function(trigger_env.tmp, "ticker")

    async def main() -> None:
        ctx_a, ctx_b = trigger_env.context(), trigger_env.context()  # two schedulers, two connections
        try:
            await deploy(ctx_a, folder)
            a, b = (await sources(ctx_a, "ticker"))["cron-1"], (await sources(ctx_b, "ticker"))["cron-1"]
            start = ms(2030, 1, 1, 0, 0, 1)
            await asyncio.gather(a.step(start), b.step(start))
            leader, follower = (a, b) if a.lease.held else (b, a)
            assert leader.lease.held and not follower.lease.held
            ticks = [ms(2030, 1, 1, 0, 0, 5) + 5000 * i for i in range(12)]
            for tick in ticks[:4]:  # both run at every tick; only one fires
                await asyncio.gather(a.step(tick), b.step(tick))
            # split brain: the follower believes it leads at the same moment as the leader
            await asyncio.gather(leader.step(ticks[4]), follower.fire_due(ticks[4]))
            # the leader dies without releasing its lease; the lease lapses; the follower takes over
            # 12 s late (within the late grace): it fires the three ticks it owes, then keeps time
            await ctx_a.redis.pexpire(leader.lease.key, 1)
            await asyncio.sleep(0.01)
            await follower.step(ticks[7] + 2000)
            assert follower.lease.held
            for tick in ticks[8:]:
                await asyncio.gather(a.step(tick), b.step(tick))
            fired = await fired_times(ctx_a)
            counts = Counter(fired)
            assert all(n == 1 for n in counts.values()), counts
            assert fired == [datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in ticks]
        finally:
            await ctx_a.close()
            await ctx_b.close()

    asyncio.run(main())


def test_a_clean_stop_hands_the_lease_over_at_once(trigger_env: TriggerEnv) -> None:
    folder = _rate_function(trigger_env.tmp, "handover")

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, folder)
            a = (await sources(ctx, "handover"))["cron-1"]
            b = (await sources(ctx, "handover"))["cron-1"]
            stop = asyncio.Event()
            stop.set()
            assert await a.lease.hold()
            await a.run(stop)  # stops at once and releases
            assert await b.lease.hold()
        finally:
            await ctx.close()

    asyncio.run(main())


def test_downtime_skips_missed_ticks_or_fires_one_catch_up(trigger_env: TriggerEnv) -> None:
    skip_folder = _rate_function(trigger_env.tmp, "skipper", "skip")
    once_folder = _rate_function(trigger_env.tmp, "catcher", "once")

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, skip_folder)
            await deploy(ctx, once_folder)
            t0 = ms(2030, 6, 1, 12, 0, 0)
            down_until = t0 + 3600_000 + 2500  # an hour and a bit later
            for name in ("skipper", "catcher"):
                source = (await sources(ctx, name))["cron-1"]
                await source.step(t0 - 1000)
                await source.step(t0)
                await source.lease.release()
                restarted = (await sources(ctx, name))["cron-1"]
                await restarted.step(down_until)
                await restarted.step(t0 + 3600_000 + 5000)
            skipped = await fired_times(ctx, "skipper/cron-1")
            assert skipped == ["2030-06-01T12:00:00Z", "2030-06-01T13:00:05Z"]
            caught = await fired_times(ctx, "catcher/cron-1")
            # one catch-up event, for the latest tick owed, then on time again
            assert caught == ["2030-06-01T12:00:00Z", "2030-06-01T13:00:00Z", "2030-06-01T13:00:05Z"]
        finally:
            await ctx.close()

    asyncio.run(main())
