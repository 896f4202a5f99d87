"""Prices, free tier and retention from the environment: defaults, overrides, clear errors."""

from __future__ import annotations

import pytest

from stoker.errors import ConfigError
from stoker.platform.ledger.billing import Prices, parse_month
from stoker.platform.ledger.retention import retention_from_env


def test_default_prices_are_aws_x86_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STOKER_PRICE_PER_MILLION_REQUESTS", "STOKER_PRICE_PER_GB_SECOND", "STOKER_FREE_REQUESTS",
                 "STOKER_FREE_GB_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert Prices.from_env() == Prices(0.20, 0.0000166667, 1_000_000, 400_000)


def test_prices_and_free_tier_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_PRICE_PER_MILLION_REQUESTS", "0.25")
    monkeypatch.setenv("STOKER_PRICE_PER_GB_SECOND", "0.00001")
    monkeypatch.setenv("STOKER_FREE_REQUESTS", "0")
    monkeypatch.setenv("STOKER_FREE_GB_SECONDS", "0")
    p = Prices.from_env()
    assert (p.per_million_requests, p.per_gb_second, p.free_requests, p.free_gb_seconds) == (0.25, 0.00001, 0, 0)
    assert p.cost(2_000_000, 10) == pytest.approx(0.5 + 0.0001)


@pytest.mark.parametrize("value", ["cheap", "-1", "nan", "inf"])
def test_a_bad_price_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STOKER_PRICE_PER_GB_SECOND", value)
    with pytest.raises(ConfigError, match="STOKER_PRICE_PER_GB_SECOND"):
        Prices.from_env()


def test_months() -> None:
    start, end = parse_month("2026-12")
    assert (start.isoformat(), end.isoformat()) == ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")
    with pytest.raises(Exception, match="YYYY-MM"):
        parse_month("December")


def test_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOKER_LEDGER_RETENTION", raising=False)
    assert retention_from_env() is None
    monkeypatch.setenv("STOKER_LEDGER_RETENTION", "forever")
    assert retention_from_env() is None
    monkeypatch.setenv("STOKER_LEDGER_RETENTION", "90d")
    assert retention_from_env() == 90 * 86400
    monkeypatch.setenv("STOKER_LEDGER_RETENTION", "3 months")
    with pytest.raises(ConfigError, match=r"STOKER_LEDGER_RETENTION.*7d"):
        retention_from_env()
