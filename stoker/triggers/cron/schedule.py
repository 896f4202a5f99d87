"""When a cron trigger fires: a cron expression in a time zone, or a fixed rate.

    schedule = "30 2 * * *"          5 fields: minute hour day-of-month month day-of-week
    schedule = "@daily"              @yearly @annually @monthly @weekly @daily @midnight @hourly
    schedule = "rate(5 minutes)"     every N second(s) | minute(s) | hour(s) | day(s)
    timezone = "Europe/Berlin"       IANA name; cron expressions are read in it (default UTC)

Cron expressions are evaluated by cronsim, which follows Debian's cron on daylight-saving
changes (see docs/cron.md): a time skipped when clocks go forward fires once right after
the gap; a fixed time repeated when clocks go back fires once (the first pass); schedules
with a wildcard or step in the hour field fire in both passes, as elapsed time suggests.

Rates tick on multiples of their interval since the Unix epoch, so every scheduler
computes the same ticks without sharing any anchor; the time zone does not move them.

Every tick is an instant, in integer milliseconds since the epoch (UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from stoker.errors import ConfigError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
RATE_RE = re.compile(r"^rate\(\s*(\d+)\s+(second|minute|hour|day)s?\s*\)$", re.IGNORECASE)
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
FORMS = ("write 5 fields (minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\"), "
         "a macro (@hourly, @daily, @weekly, @monthly, @yearly), or rate(N unit) with unit "
         "second, minute, hour or day (e.g. \"rate(5 minutes)\")")
#: a cron expression is searched this many matches ahead at most (cronsim itself gives up
#: after 50 years without a match)
MAX_STEPS = 10_000


class Schedule(Protocol):
    @property
    def text(self) -> str:
        """The schedule as written (macros kept)."""

    def next_after(self, t_ms: int) -> int | None:
        """The first tick strictly after t_ms, or None if there is none."""

    def latest_at_or_before(self, t_ms: int) -> int | None:
        """The last tick at or before t_ms, or None if there is none."""


@dataclass(frozen=True)
class RateSchedule:
    text: str
    interval_ms: int

    def next_after(self, t_ms: int) -> int | None:
        return (t_ms // self.interval_ms + 1) * self.interval_ms

    def latest_at_or_before(self, t_ms: int) -> int | None:
        return (t_ms // self.interval_ms) * self.interval_ms


@dataclass(frozen=True)
class CronSchedule:
    text: str
    expression: str
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _local(self, t_ms: int) -> datetime:
        # fromtimestamp sets `fold` for the repeated hour, so cronsim knows which pass it is in
        return datetime.fromtimestamp(t_ms / 1000, self.zone)

    def next_after(self, t_ms: int) -> int | None:
        # started inside a repeated hour, cronsim may answer a match from the first pass
        # (earlier than the start): skip anything not strictly later
        try:
            for steps, match in enumerate(CronSim(self.expression, self._local(t_ms))):
                tick = _ms(match)
                if tick > t_ms:
                    return tick
                if steps >= MAX_STEPS:
                    break
        except StopIteration:
            pass
        return None

    def latest_at_or_before(self, t_ms: int) -> int | None:
        # reverse iteration yields matches strictly before its start; start a second later
        # (ticks fall on whole minutes) and keep the first one not after t_ms
        try:
            for steps, match in enumerate(CronSim(self.expression, self._local(t_ms + 1000), reverse=True)):
                tick = _ms(match)
                if tick <= t_ms:
                    return tick
                if steps >= MAX_STEPS:
                    break
        except StopIteration:
            pass
        return None


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def parse_timezone(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"timezone {value!r} is not valid: give an IANA time zone name such as "
                          "\"UTC\" or \"Europe/Berlin\"")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"timezone \"{value}\" is not a known IANA time zone: use a name such as "
                          "\"UTC\", \"Europe/Berlin\" or \"America/New_York\"") from None
    return value


def parse_schedule(text: object, timezone: str = "UTC") -> Schedule:
    """A schedule from its text, or a ConfigError that quotes it and says what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"schedule {text!r} is not valid: {FORMS}")
    raw = text.strip()
    rate = RATE_RE.match(raw)
    if rate:
        count = int(rate.group(1))
        if count < 1:
            raise ConfigError(f"schedule \"{text}\" is not valid: the rate must be at least 1")
        return RateSchedule(text=raw, interval_ms=count * UNIT_SECONDS[rate.group(2).lower()] * 1000)
    if raw.lower().startswith("rate"):
        raise ConfigError(f"schedule \"{text}\" is not a valid rate: {FORMS}")
    expression = MACROS.get(raw.lower(), raw)
    if raw.startswith("@") and raw.lower() not in MACROS:
        raise ConfigError(f"schedule \"{text}\" uses an unknown macro: {FORMS}")
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigError(f"schedule \"{text}\" has {len(fields)} fields, not 5: {FORMS}")
    try:
        matches = CronSim(expression, datetime.now(UTC).astimezone(ZoneInfo(timezone)))
        next(matches)
    except CronSimError as e:
        raise ConfigError(f"schedule \"{text}\" is not a valid cron expression ({str(e).lower()}): {FORMS}") from None
    except StopIteration:
        raise ConfigError(f"schedule \"{text}\" never fires (no matching date in 50 years)") from None
    return CronSchedule(text=raw, expression=expression, timezone=timezone)


def upcoming(schedule: Schedule, after_ms: int, count: int) -> list[int]:
    """The next `count` ticks after `after_ms`."""
    out: list[int] = []
    t = after_ms
    while len(out) < count:
        tick = schedule.next_after(t)
        if tick is None:
            break
        out.append(tick)
        t = tick
    return out


def iso_utc(t_ms: int) -> str:
    """A tick as EventBridge writes times: ISO 8601 in UTC, whole seconds, with a Z."""
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(t_ms: int, timezone: str) -> str:
    return datetime.fromtimestamp(t_ms / 1000, ZoneInfo(timezone)).isoformat(timespec="seconds")
