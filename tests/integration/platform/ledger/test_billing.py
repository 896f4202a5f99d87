"""The bill's arithmetic against a real ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from stoker.errors import InvalidInput
from stoker.platform.ledger import records as R
from stoker.platform.ledger.billing import Prices, compute_bill
from tests.integration.platform.ledger.conftest import T0, completed, write

AWS = Prices()  # $0.20 per 1M requests, $0.0000166667 per GB-s, 1M requests and 400,000 GB-s free a month
NO_FREE = Prices(free_requests=0, free_gb_seconds=0)
DAY = dt.timedelta(days=1)
SINCE, UNTIL = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def line(bill: dict, name: str) -> dict:
    return next(f for f in bill["functions"] if f["function"] == name)


def test_requests_gb_seconds_and_cost_per_function(engine: Engine) -> None:
    write(engine,
          completed(at=T0, function="a", memory_mb=128, duration_ms=10.0),
          completed(at=T0, function="a", memory_mb=256, duration_ms=100.2),  # billed 101 ms
          completed(at=T0, function="a", memory_mb=512, duration_ms=0.3),  # billed 1 ms (the minimum)
          completed(at=T0, function="a", memory_mb=128, duration_ms=7.0, status="failed", error_type="ValueError"),
          completed(at=T0, function="a", memory_mb=128, duration_ms=3000.0, status="timed_out",
                    error_type="Sandbox.Timedout"))
    bill = compute_bill(engine, SINCE, UNTIL, free_tier=False, prices=AWS)
    a = line(bill, "a")
    mb_ms = 128 * 10 + 256 * 101 + 512 * 1 + 128 * 7 + 128 * 3000
    assert a["requests"] == 5
    assert a["gb_seconds"] == pytest.approx(mb_ms / 1024 / 1000, abs=1e-12)
    assert a["request_cost"] == pytest.approx(5 * 0.20 / 1e6, abs=1e-15)
    assert a["compute_cost"] == pytest.approx(mb_ms / 1024 / 1000 * 0.0000166667, abs=1e-15)
    assert a["cost"] == pytest.approx(a["request_cost"] + a["compute_cost"], abs=1e-15)
    assert bill["total_cost"] == pytest.approx(a["cost"], abs=1e-15) and bill["free_tier"]["applied"] is False


def test_what_is_not_billed_and_retries_that_are(engine: Engine) -> None:
    throttled = {"id": "th", "function": "b", "status": "throttled", "received_at": T0.timestamp(), "attempts": 0,
                 "error_type": "TooManyRequestsException", "rank": R.rank(1, R.TERMINAL)}
    platform_error = completed(at=T0, function="b", duration_ms=0.0, status="failed",
                               error_type="Runtime.PlatformError")
    retried_1 = completed(at=T0, function="b", invocation_id="rt", status="queued", duration_ms=50.0, last=False,
                          error_type="RuntimeError")
    retried_1["attempt"]["outcome"] = "failed"
    retried_2 = completed(at=T0, function="b", invocation_id="rt", attempt=2, duration_ms=20.0)
    lost_1 = {"id": "lost", "function": "b", "status": "queued", "received_at": T0.timestamp(), "attempts": 1,
              "error_type": "Runtime.NodeLost", "rank": R.rank(1, R.ATTEMPT_DONE),
              "attempt": R.attempt_row(attempt=1, node=None, worker=None, started_at=None, ended_at=T0.timestamp(),
                                       duration_ms=None, outcome="interrupted", error_type="Runtime.NodeLost")}
    lost_2 = completed(at=T0, function="b", invocation_id="lost", attempt=2, duration_ms=5.0)
    write(engine, throttled, platform_error, retried_1, lost_1)
    write(engine, retried_2, lost_2)
    b = line(compute_bill(engine, SINCE, UNTIL, free_tier=False, prices=AWS), "b")
    assert b["requests"] == 3  # both tries of "rt", the second of "lost"; not the throttle, not the platform's fault
    assert b["gb_seconds"] == pytest.approx(128 * (50 + 20 + 5) / 1024 / 1000, abs=1e-12)


def test_inside_the_free_tier_the_total_is_zero(engine: Engine) -> None:
    write(engine, *[completed(at=T0, function="a", memory_mb=1024, duration_ms=1000.0) for _ in range(3)])
    bill = compute_bill(engine, SINCE, UNTIL, prices=AWS)
    assert bill["total_cost"] == 0
    assert bill["subtotal"] > 0 and bill["free_tier"]["credit"] == pytest.approx(bill["subtotal"], abs=1e-15)
    assert bill["free_tier"]["requests"] == 3 and bill["free_tier"]["gb_seconds"] == pytest.approx(3.0)
    assert line(bill, "a")["cost"] == pytest.approx(bill["subtotal"])  # lines show list price


def test_the_free_tier_is_per_calendar_month_and_used_up_in_order(engine: Engine) -> None:
    small = Prices(per_million_requests=1_000_000.0, per_gb_second=0.0, free_requests=2, free_gb_seconds=0)
    # $1 a request, 2 free a month: March has 3 (one billed), April has 1 (none billed)
    march = [completed(at=T0 + i * DAY, function="a") for i in range(3)]
    april = [completed(at=dt.datetime(2026, 4, 2, tzinfo=dt.UTC), function="a")]
    write(engine, *march, *april)
    bill = compute_bill(engine, SINCE, dt.datetime(2026, 5, 1, tzinfo=dt.UTC), prices=small)
    assert [(m["month"], m["requests"], m["free_requests"], m["billed_cost"]) for m in bill["months"]] == [
        ("2026-03", 3, 2, 1.0), ("2026-04", 1, 1, 0.0)]
    assert bill["total_cost"] == 1.0 and bill["subtotal"] == 4.0
    # a period starting mid-March: the free requests went to the first two, so the third is billed
    late = compute_bill(engine, T0 + 2 * DAY, UNTIL, prices=small)
    assert late["requests"] == 1 and late["total_cost"] == 1.0
    assert compute_bill(engine, T0 + 2 * DAY, UNTIL, prices=small, free_tier=False)["total_cost"] == 1.0


def test_by_day(engine: Engine) -> None:
    write(engine, completed(at=T0, function="a"), completed(at=T0, function="b"),
          completed(at=T0 + DAY, function="a"))
    bill = compute_bill(engine, SINCE, UNTIL, by="day", free_tier=False, prices=AWS)
    assert [(d["day"], d["requests"]) for d in bill["days"]] == [("2026-03-10", 2), ("2026-03-11", 1)]
    assert "functions" not in bill


def test_a_period_without_invocations_costs_nothing(engine: Engine) -> None:
    bill = compute_bill(engine, SINCE, UNTIL, prices=AWS)
    assert bill["functions"] == [] and bill["total_cost"] == 0 and bill["requests"] == 0


def test_bad_periods_and_groupings(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match=r"by 'week'.*function or day"):
        compute_bill(engine, SINCE, UNTIL, by="week")
    with pytest.raises(InvalidInput, match="not before"):
        compute_bill(engine, UNTIL, SINCE)
