"""Schedules: parsing, refusals that quote the input, and ticks across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stoker.errors import ConfigError
from stoker.platform.manifest import parse_manifest
from stoker.triggers.cron.config import validate
from stoker.triggers.cron.schedule import (
    CronSchedule,
    RateSchedule,
    parse_schedule,
    upcoming,
)


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def utc(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize("text,seconds", [
    ("rate(1 second)", 1), ("rate(1 seconds)", 1), ("rate(2 seconds)", 2), ("rate(5 minutes)", 300),
    ("rate(1 minute)", 60), ("rate(1 hour)", 3600), ("rate(3 hours)", 10800), ("rate(1 day)", 86400),
    ("rate(2 days)", 172800), ("RATE( 10  Minutes )", 600),
])
def test_rates_take_singular_or_plural_units(text: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert isinstance(schedule, RateSchedule)
    assert schedule.interval_ms == seconds * 1000


def test_rate_ticks_are_aligned_to_the_epoch() -> None:
    schedule = parse_schedule("rate(2 seconds)")
    assert schedule.next_after(1001) == 2000
    assert schedule.next_after(2000) == 4000
    assert schedule.latest_at_or_before(3999) == 2000
    assert schedule.latest_at_or_before(4000) == 4000


@pytest.mark.parametrize("macro,expression", [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"),
                                              ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
                                              ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
                                              ("@annually", "0 0 1 1 *")])
def test_macros(macro: str, expression: str) -> None:
    schedule = parse_schedule(macro)
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == expression and schedule.text == macro


@pytest.mark.parametrize("text,fragment", [
    ("61 * * * *", "bad minute"), ("* 24 * * *", "bad hour"), ("* * * *", "has 4 fields"),
    ("* * * * * *", "has 6 fields"), ("0 0 30 2 *", "0 0 30 2 *"), ("@reboot", "unknown macro"),
    ("rate(0 minutes)", "at least 1"), ("rate(5 weeks)", "not a valid rate"),
    ("rate(five minutes)", "not a valid rate"),
    ("", "not valid"),
])
def test_bad_schedules_are_refused_quoting_them(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_schedule(text)
    assert fragment in e.value.message
    if text:
        assert f'"{text}"' in e.value.message


def test_a_bad_schedule_refuses_the_manifest_and_quotes_it() -> None:
    manifest = '[function]\nname = "x"\n[[triggers]]\ntype = "cron"\nschedule = "61 * * * *"\n'
    with pytest.raises(ConfigError) as e:
        parse_manifest(manifest)
    assert "trigger #1 (cron)" in e.value.message and '"61 * * * *"' in e.value.message


def test_an_unknown_time_zone_is_refused_quoting_it() -> None:
    with pytest.raises(ConfigError) as e:
        validate({"schedule": "@daily", "timezone": "Mars/Olympus_Mons"}, None)
    assert '"Mars/Olympus_Mons"' in e.value.message


def test_cron_table_is_checked_key_by_key() -> None:
    assert validate({"schedule": "rate(1 minute)"}, None) == {
        "schedule": "rate(1 minute)", "timezone": "UTC", "missed": "skip", "payload": {}}
    out = validate({"schedule": "0 3 * * *", "timezone": "Europe/Berlin", "missed": "once",
                    "payload": '{"report": "daily"}', "name": "nightly"}, None)
    assert out["payload"] == {"report": "daily"} and out["missed"] == "once" and out["name"] == "nightly"
    for table, fragment in [({"schedule": "@daily", "missd": "once"}, "unknown key 'missd'"),
                            ({}, "no schedule"), ({"schedule": "@daily", "missed": "all"}, "missed = 'all'"),
                            ({"schedule": "@daily", "payload": [1]}, "payload must be a table"),
                            ({"schedule": "@daily", "payload": "{oops"}, "payload is not valid JSON"),
                            ({"schedule": "@daily", "name": "a b"}, "name = 'a b'")]:
        with pytest.raises(ConfigError) as e:
            validate(table, None)
        assert fragment in e.value.message


# -- daylight saving, as cronsim (Debian cron) defines it --------------------------------------

def test_a_fixed_time_in_the_skipped_hour_fires_once_right_after_the_gap() -> None:
    # Europe/Berlin, 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00 UTC)
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    ticks = upcoming(schedule, ms(2025, 3, 28, 12, 0), 4)
    assert [utc(t) for t in ticks] == ["2025-03-29 01:30", "2025-03-30 01:00", "2025-03-31 00:30", "2025-04-01 00:30"]


def test_a_fixed_time_in_the_repeated_hour_fires_once() -> None:
    # Europe/Berlin, 2025-10-26: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    ticks = upcoming(schedule, ms(2025, 10, 25, 12, 0), 3)
    assert [utc(t) for t in ticks] == ["2025-10-26 00:30", "2025-10-27 01:30", "2025-10-28 01:30"]
    # asked from inside the repeated hour (02:15 CET, the second pass), it does not fire again that day
    assert utc(schedule.next_after(ms(2025, 10, 26, 1, 15)) or 0) == "2025-10-27 01:30"


def test_an_hourly_wildcard_fires_in_both_passes_and_skips_the_missing_hour() -> None:
    schedule = parse_schedule("0 * * * *", "Europe/Berlin")
    fall = [utc(t) for t in upcoming(schedule, ms(2025, 10, 25, 22, 30), 4)]
    assert fall == ["2025-10-25 23:00", "2025-10-26 00:00", "2025-10-26 01:00", "2025-10-26 02:00"]  # 02:00 twice
    spring = [utc(t) for t in upcoming(schedule, ms(2025, 3, 29, 23, 30), 3)]
    assert spring == ["2025-03-30 00:00", "2025-03-30 01:00", "2025-03-30 02:00"]  # 01:00, 03:00, 04:00 local


def test_latest_tick_is_consistent_with_next_across_the_change() -> None:
    schedule = parse_schedule("*/30 * * * *", "Europe/Berlin")
    t = ms(2025, 10, 25, 22, 0)  # a tick; the next twelve cross the repeated hour
    for _ in range(12):
        nxt = schedule.next_after(t)
        assert nxt is not None and nxt - t == 30 * 60 * 1000  # every half hour of elapsed time
        assert schedule.latest_at_or_before(nxt) == nxt
        assert schedule.latest_at_or_before(nxt - 1) == t
        t = nxt


def test_a_stored_schedule_that_no_longer_parses_is_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    from stoker.triggers.base import SOURCES, TriggerBinding

    config = {"type": "cron", "schedule": "@daily", "timezone": "Gone/Zone"}
    binding = TriggerBinding("old", 0, config, {"triggers": [config]})
    source = SOURCES["cron"](None, binding)  # type: ignore[arg-type]  (fails before it needs the platform)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 1)

    with caplog.at_level(logging.ERROR):
        asyncio.run(run())
    assert "cron trigger #1 of old does not fire" in caplog.text and '"Gone/Zone"' in caplog.text
