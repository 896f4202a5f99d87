"""The periods the ledger's bill and retention take: out-of-range ones are refused, by name."""

from __future__ import annotations

import datetime as dt

import pytest

from stoker.errors import InvalidInput
from stoker.platform.ledger.billing import parse_month
from stoker.platform.ledger.retention import cutoff

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def test_a_month_is_its_first_instant_to_the_next_month() -> None:
    assert parse_month("2026-12") == (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


def test_the_last_month_a_datetime_cannot_end_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"month '9999-12' is out of range"):
        parse_month("9999-12")


def test_a_cutoff_before_the_year_1_is_refused_naming_the_option() -> None:
    assert cutoff("30d", "older_than", NOW) == NOW - dt.timedelta(days=30)
    for too_far in ("999999w", "827944d", "9" * 30 + "s"):
        with pytest.raises(InvalidInput, match=r"older_than .* before the year 1"):
            cutoff(too_far, "older_than", NOW)
