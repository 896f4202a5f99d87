"""Points in time and durations as users write them.

A point in time is ISO 8601 (`2026-01-31T12:00:00Z`, `2026-01-31`; no zone means UTC),
`now`, or a duration ago (`30s`, `10m`, `2h`, `7d`, `1w`). A duration is the same
`NUMBER UNIT`. Errors name the option or setting and show the accepted forms.
"""

from __future__ import annotations

import datetime as dt
import re

from stoker.errors import InvalidInput

RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.ASCII)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ACCEPTED = "ISO 8601 (2026-01-31T12:00:00Z or 2026-01-31), now, or a duration ago (30s, 10m, 2h, 7d)"
ACCEPTED_DURATION = "a number and a unit: 30s, 10m, 2h, 7d or 1w"


def parse_duration(value: str, option: str) -> float:
    """Seconds; `option` names the setting in the error, e.g. "--older-than"."""
    m = RELATIVE.match(value)
    if not m:
        raise InvalidInput(f"{option} {value!r} is not a duration: use {ACCEPTED_DURATION}")
    seconds = float(m.group(1)) * UNITS[m.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"{option} {value!r} must be longer than zero: use {ACCEPTED_DURATION}")
    return seconds


def parse_time(value: str, option: str, now: dt.datetime | None = None) -> dt.datetime:
    """A UTC datetime; `option` names the setting in the error, e.g. "--since"."""
    now = now or dt.datetime.now(dt.UTC)
    m = RELATIVE.match(value)
    if m:
        try:
            return now - dt.timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
        except OverflowError:
            raise InvalidInput(f"{option} {value!r} reaches back before the year 1") from None
    text = value.strip()
    if text.lower() == "now":
        return now
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{option} {value!r} is not a time: use {ACCEPTED}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a time, but not one UTC can hold
        raise InvalidInput(f"{option} {value!r} is out of range: give a time from the year 1 to 9999 (UTC)") from None


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
