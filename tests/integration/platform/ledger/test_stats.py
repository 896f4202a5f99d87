"""Dashboard aggregates against a real ledger (SQLite and PostgreSQL): counts, rates, percentiles, series."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest
from sqlalchemy import Engine

from stoker.errors import InvalidInput
from stoker.platform.ledger import records as R
from stoker.platform.ledger.stats import WINDOWS, by_function, series, window
from tests.integration.platform.ledger.conftest import T0, completed, write

MIN = dt.timedelta(minutes=1)


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def throttled(at: dt.datetime, function: str) -> dict:
    return {"id": str(uuid.uuid4()), "function": function, "status": "throttled", "received_at": at.timestamp(),
            "attempts": 0, "error_type": "TooManyRequestsException", "rank": R.rank(1, R.TERMINAL)}


def queued(at: dt.datetime, function: str) -> dict:
    return {"id": str(uuid.uuid4()), "function": function, "status": "queued", "received_at": at.timestamp(),
            "attempts": 0, "invocation_type": "async", "rank": R.rank(1, R.QUEUED)}


def test_figures_per_function(engine: Engine) -> None:
    durations = [3.0, 1.5, 40.0, 2.0, 7.25, 5.0, 900.0, 11.0, 4.0]
    records = [completed(at=T0 + i * MIN, function="a", duration_ms=d, cold=i < 2) for i, d in enumerate(durations)]
    records += [
        completed(at=T0, function="a", duration_ms=12.0, status="failed", error_type="ValueError"),
        completed(at=T0, function="a", duration_ms=3000.0, status="timed_out", error_type="Sandbox.Timedout"),
        completed(at=T0, function="a", duration_ms=8.0, status="dead_lettered", error_type="RuntimeError"),
        throttled(T0, "a"), throttled(T0, "a"),
        queued(T0, "a"),
        completed(at=T0, function="b", duration_ms=20.0),
        completed(at=T0 - 2 * dt.timedelta(hours=1), function="a", duration_ms=99999.0),  # before the window
    ]
    write(engine, *records)
    figures = by_function(engine, T0 - MIN, T0 + dt.timedelta(hours=1))
    assert set(figures) == {"a", "b"}
    a = figures["a"]
    assert a.invocations == 9 + 3 + 1  # the throttled never ran; the queued one was accepted
    assert a.finished == 12 and a.errors == 3 and a.error_rate == pytest.approx(3 / 12)
    assert a.throttles == 2
    assert a.cold == 2 and a.ran == 12 and a.cold_share == pytest.approx(2 / 12)
    every = [*durations, 12.0, 3000.0, 8.0]
    assert a.p50 == nearest_rank(every, 50) and a.p99 == nearest_rank(every, 99)
    b = figures["b"]
    assert (b.invocations, b.errors, b.error_rate, b.p50, b.p99) == (1, 0, 0.0, 20.0, 20.0)

    only_b = by_function(engine, T0 - MIN, T0 + dt.timedelta(hours=1), function="b")
    assert list(only_b) == ["b"]


def test_a_function_with_only_throttles_has_no_rates(engine: Engine) -> None:
    write(engine, throttled(T0, "c"))
    c = by_function(engine, T0, T0 + MIN)["c"]
    assert (c.invocations, c.throttles, c.error_rate, c.cold_share, c.p50) == (0, 1, None, None, None)


def test_series_has_every_bucket_and_its_own_figures(engine: Engine) -> None:
    step = 60
    since = T0 - dt.timedelta(seconds=30)  # a window that starts mid-bucket
    until = since + dt.timedelta(minutes=5)
    write(engine,
          completed(at=T0, function="a", duration_ms=10.0),
          completed(at=T0 + dt.timedelta(seconds=59), function="a", duration_ms=30.0, cold=True),
          completed(at=T0 + dt.timedelta(seconds=20), function="a", duration_ms=5.0, status="failed",
                    error_type="ValueError"),
          throttled(T0 + 2 * MIN, "a"),
          completed(at=T0 + 3 * MIN, function="b", duration_ms=70.0))
    s = series(engine, since, until, step)
    assert s.starts == [int(since.timestamp()) // step * step + i * step for i in range(len(s.starts))]
    assert s.starts[0] <= since.timestamp() < s.starts[0] + step and s.starts[-1] < until.timestamp()
    by_start = dict(zip(s.starts, s.points, strict=True))
    t0 = int(T0.timestamp())
    first = by_start[t0]
    assert (first.invocations, first.errors, first.cold, first.throttles) == (3, 1, 1, 0)
    assert first.p50 == 10.0 and first.p99 == 30.0
    assert by_start[t0 + 60].invocations == 0 and by_start[t0 + 60].p50 is None
    assert by_start[t0 + 120].throttles == 1 and by_start[t0 + 120].invocations == 0
    assert by_start[t0 + 180].invocations == 1 and by_start[t0 + 180].p99 == 70.0
    only_a = series(engine, since, until, step, function="a")
    assert sum(p.invocations for p in only_a.points) == 3
    data = s.to_json()
    assert len(data["t"]) == len(data["invocations"]) == len(data["p99_ms"]) == len(s.starts)


def test_windows_and_their_errors() -> None:
    assert window(None).name == "1h" and window("7d").length == dt.timedelta(days=7)
    assert all(30 <= w.length.total_seconds() / w.step <= 90 for w in WINDOWS.values())
    with pytest.raises(InvalidInput, match="15m, 1h, 24h, 7d"):
        window("2y")


def test_bad_ranges_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="not before"):
        by_function(engine, T0, T0)
    with pytest.raises(InvalidInput, match="too many"):
        series(engine, T0 - dt.timedelta(days=365), T0, 1)
