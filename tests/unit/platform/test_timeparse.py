"""Times and durations as users write them."""

from __future__ import annotations

import datetime as dt

import pytest

from stoker.errors import InvalidInput
from stoker.platform.timeparse import iso, parse_duration, parse_time

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", NOW - dt.timedelta(seconds=30)),
    ("10m", NOW - dt.timedelta(minutes=10)),
    ("2h", NOW - dt.timedelta(hours=2)),
    ("7d", NOW - dt.timedelta(days=7)),
    ("1w", NOW - dt.timedelta(days=7)),
    ("1.5h", NOW - dt.timedelta(minutes=90)),
    ("now", NOW),
    ("2026-01-31T12:00:00Z", dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)),
    ("2026-01-31T14:00:00+02:00", dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)),
    ("2026-01-31", dt.datetime(2026, 1, 31, tzinfo=dt.UTC)),
    ("2026-01-31 12:00", dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)),  # no zone: UTC
])
def test_accepted_times(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, "--since", NOW) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "10 minutes", "-5m", "", "2026-13-01"])
def test_a_bad_time_names_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_time(text, "--since", NOW)
    assert "--since" in e.value.message and "ISO 8601" in e.value.message and "10m" in e.value.message


def test_durations() -> None:
    assert parse_duration("30d", "--older-than") == 30 * 86400
    assert parse_duration("90s", "--older-than") == 90
    for bad in ("30", "thirty days", "0d", "-1d"):
        with pytest.raises(InvalidInput, match=r"--older-than .*30s, 10m, 2h, 7d"):
            parse_duration(bad, "--older-than")


def test_iso_is_utc_with_milliseconds() -> None:
    assert iso(dt.datetime(2026, 1, 31, 14, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == \
        "2026-01-31T12:00:00.123Z"
    assert iso(None) is None


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_utc_cannot_hold_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"--since .* out of range"):
        parse_time(text, "--since", NOW)
