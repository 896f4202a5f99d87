"""The bill's table: rounded for people, with the free tier as one credit line."""

from __future__ import annotations

from stoker.cli.bill import money, render


def test_money_keeps_tiny_amounts_visible() -> None:
    assert money(0) == "$0.00"
    assert money(12345.678) == "$12,345.68"
    assert money(0.01) == "$0.01"
    assert money(0.0000004) == "$0.0000004"


def test_money_never_prints_a_bare_point() -> None:
    """Amounts under a cent keep every digit down to 10 places: 1 ms at 128 MB is $0.0000000021."""
    assert money(0.0000166667 * 0.125 / 1000) == "$0.0000000021"
    assert money(0.0000002) == "$0.0000002"
    assert money(0.00999) == "$0.00999"
    assert money(1e-12) == "<$0.0000000001"
    assert money(-0.0000000021) == "-$0.0000000021"
    for value in (1e-9, 3e-10, 5e-9, 0.000123456789):
        assert not money(value).endswith("."), value


def test_table() -> None:
    bill = {
        "since": "2026-03-01T00:00:00.000Z", "until": "2026-03-14T09:12:44.120Z", "by": "function",
        "functions": [{"function": "resize", "requests": 1204331, "gb_seconds": 301082.75,
                       "request_cost": 0.2408662, "compute_cost": 5.018, "cost": 5.2588662}],
        "requests": 1204331, "gb_seconds": 301082.75, "subtotal": 5.2588662, "total_cost": 0.0400662,
        "free_tier": {"applied": True, "requests": 1000000, "gb_seconds": 301082.75, "requests_per_month": 1000000,
                      "gb_seconds_per_month": 400000, "credit": 5.2188},
    }
    lines = render(bill).splitlines()
    assert lines[0] == "bill from 2026-03-01 00:00:00Z to 2026-03-14 09:12:44Z"
    assert lines[2].split() == ["FUNCTION", "REQUESTS", "GB-SECONDS", "REQUESTS", "COST", "COMPUTE", "COST", "COST"]
    assert lines[3].split() == ["resize", "1,204,331", "301,082.750", "$0.24", "$5.02", "$5.26"]
    assert lines[-3].startswith("subtotal: $5.26")
    assert lines[-2].startswith("free tier: -$5.22  (1,000,000 requests and 301,082.750 GB-seconds")
    assert lines[-1] == "total: $0.04"
    no_free = dict(bill, free_tier=dict(bill["free_tier"], applied=False), total_cost=5.2588662)
    assert render(no_free).splitlines()[-2:] == ["free tier: not applied (--no-free-tier)", "total: $5.26"]
