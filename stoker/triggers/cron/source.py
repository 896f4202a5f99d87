"""The cron source: fires each tick of one schedule exactly once, however many runners run it.

Every trigger runner starts this source for every cron trigger. Two mechanisms make a
tick fire once:

  - a leader lease per schedule (`{p}:lock:cron:{function}:{name}`): only its holder
    computes and fires ticks; a holder that stops releases it, one that dies lets it
    lapse (LEASE_TTL_S) and another runner takes over;
  - an idempotency key of schedule id and tick time: the schedule's last fired tick is
    moved forward by a compare-and-set in the same atomic step as the publish
    (`Bus.publish_guarded`), so even two runners that both believe they lead cannot fire
    one tick twice, and a tick is never published without its position moving (or the
    reverse). The invocation id is derived from the same key.

A new leader fires every tick since the last fired one, late. If the oldest of them is
later than LATE_GRACE_MS (longer than any leader change takes: the platform was down),
the ticks owed were missed: `missed = "skip"` drops them all, `missed = "once"` fires one
catch-up event for the latest of them.

Redis keys (besides the lease):
    {p}:cron:{function}   hash: schedule name -> JSON {"sig": schedule|timezone, "last": tick ms}
                          A changed schedule (another "sig") starts afresh from the time it
                          is first seen, owing nothing before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from stoker.errors import StokerError
from stoker.platform.bus import Guard
from stoker.platform.context import PlatformContext
from stoker.platform.gateway.invoker import Invoker
from stoker.triggers.base import TriggerBinding
from stoker.triggers.cron.config import CronConfig, cron_configs
from stoker.triggers.cron.schedule import iso_utc
from stoker.triggers.lease import Lease

log = logging.getLogger(__name__)

LEASE_TTL_S = 10.0
#: the leader renews its lease at least this often
RENEW_S = 3.0
#: a runner without the lease tries to take it this often
FOLLOWER_POLL_S = 1.0
#: ticks up to this late still fire (a leader change after a crash takes up to the lease's
#: time to live); an older one means the platform was down, and the missed policy applies
LATE_GRACE_MS = 30_000
#: the namespace of invocation ids derived from (prefix, schedule, tick)
ID_NAMESPACE = uuid.UUID("6f1c3a52-41d4-4f0e-9a57-5b7c1e0d2c11")


@dataclass(frozen=True)
class FireState:
    sig: str
    #: ticks up to this one are done with (fired, skipped, or before the schedule began)
    last: int
    #: the latest tick that fired an event
    fired: int | None = None

    def encode(self) -> bytes:
        return orjson.dumps({"sig": self.sig, "last": self.last, "fired": self.fired})

    @classmethod
    def decode(cls, raw: bytes | None) -> FireState | None:
        if not raw:
            return None
        try:
            data = orjson.loads(raw)
            fired = data.get("fired")
            return cls(sig=str(data["sig"]), last=int(data["last"]), fired=int(fired) if fired is not None else None)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


def scheduled_event(config: CronConfig, event_id: str, tick_ms: int) -> dict[str, Any]:
    """An EventBridge "Scheduled Event" for one tick."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "stoker.cron",
        "account": "000000000000",
        "time": iso_utc(tick_ms),
        "region": "local",
        "resources": [config.schedule_id],
        "detail": dict(config.payload),
    }


class CronSource:
    def __init__(self, ctx: PlatformContext, config: CronConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.config = config
        self.clock = clock
        self.state_key = ctx.keys.custom("cron", config.function)
        self.lease = Lease(ctx.redis, ctx.keys.lock(f"cron:{config.function}:{config.name}"), LEASE_TTL_S)
        self.invoker = Invoker(ctx)
        #: another cron trigger of the function uses this name (they would share fire state)
        self.duplicate_of = False

    @classmethod
    def from_binding(cls, ctx: PlatformContext, binding: TriggerBinding) -> CronSource:
        config = CronConfig.from_trigger(binding.function, list(binding.spec.get("triggers") or []), binding.index)
        source = cls(ctx, config)
        names = [c.name for c in cron_configs(binding.function, binding.spec)]
        source.duplicate_of = names.count(config.name) > 1
        return source

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        if self.duplicate_of:
            log.error("schedule %s is named twice in %s's manifest: give each cron trigger its own name; "
                      "it does not fire until then", self.config.schedule_id, self.config.function)
            await stop.wait()
            return
        log.info("schedule %s: %s (%s)", self.config.schedule_id, self.config.schedule.text, self.config.timezone)
        try:
            while not stop.is_set():
                wake = await self.step(self.now_ms())
                delay = max(0.0, (wake - self.now_ms()) / 1000)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            with contextlib.suppress(Exception):
                await self.lease.release()

    async def step(self, now_ms: int) -> int:
        """One pass at `now_ms`: fire what is due if this runner leads. Returns when to pass again."""
        if not await self.lease.hold():
            return now_ms + int(FOLLOWER_POLL_S * 1000)
        await self.fire_due(now_ms)
        renew = now_ms + int(RENEW_S * 1000)
        upcoming = self.config.schedule.next_after(now_ms)
        return renew if upcoming is None else min(upcoming, renew)

    async def fire_due(self, now_ms: int) -> list[int]:
        """Fire every tick due at `now_ms` (the missed policy applied); returns the ticks fired."""
        fired: list[int] = []
        schedule = self.config.schedule
        while True:
            raw: Any = await self.ctx.redis.hget(self.state_key, self.config.name)
            state = FireState.decode(raw)
            if state is None or state.sig != self.config.signature:
                # a new or changed schedule starts now: nothing before it is owed
                await self._move(raw, FireState(self.config.signature, now_ms))
                return fired
            due = schedule.next_after(state.last)
            if due is None or due > now_ms:
                return fired
            if due < now_ms - LATE_GRACE_MS:
                # longer than any leader change: the platform was down, and every tick owed
                # up to now (late ones included) falls under the missed policy
                missed = schedule.latest_at_or_before(now_ms) or due
                if self.config.missed == "once":
                    log.info("schedule %s: ticks from %s to %s were missed; firing one catch-up event",
                             self.config.schedule_id, iso_utc(due), iso_utc(missed))
                    if await self._fire(raw, state, missed):
                        fired.append(missed)
                else:
                    log.info("schedule %s: skipping the ticks missed from %s to %s (missed = \"skip\")",
                             self.config.schedule_id, iso_utc(due), iso_utc(missed))
                    await self._move(raw, FireState(self.config.signature, missed, state.fired))
                continue
            if await self._fire(raw, state, due):
                fired.append(due)

    async def _move(self, raw: bytes | None, state: FireState) -> bool:
        return await self.ctx.bus.publish_guarded(Guard(self.state_key, self.config.name, raw, state.encode()))

    async def _fire(self, raw: bytes | None, state: FireState, tick_ms: int) -> bool:
        """Publish the tick's event and move the last fired tick to it, atomically."""
        key = f"{self.ctx.keys.prefix}:{self.config.schedule_id}:{self.config.signature}:{tick_ms}"
        event_id = str(uuid.uuid5(ID_NAMESPACE, key))
        try:
            resolved = await self.invoker.resolve(self.config.function, self.config.qualifier)
        except StokerError as e:
            # the function (or alias) is gone: the tick is dropped, as the trigger soon will be
            log.warning("schedule %s: tick %s not fired: %s", self.config.schedule_id, iso_utc(tick_ms), e.message)
            await self._move(raw, FireState(self.config.signature, tick_ms, state.fired))
            return False
        payload = orjson.dumps(scheduled_event(self.config, event_id, tick_ms))
        moved = FireState(self.config.signature, tick_ms, tick_ms)
        guard = Guard(self.state_key, self.config.name, raw, moved.encode())
        published = await self.invoker.invoke_async_guarded(
            guard, resolved, payload, trigger="cron", meta={"schedule": self.config.schedule_id, "tick": tick_ms},
            invocation_id=event_id)
        return published is not None
