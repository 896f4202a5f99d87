"""Filters, ordering, export and one invocation in full, on real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from stoker.errors import InvalidInput, NotFound
from stoker.platform.ledger import records as R
from stoker.platform.ledger.queries import (
    InvocationFilter,
    export_invocations,
    filter_from_params,
    get_invocation,
    list_invocations,
)
from tests.integration.platform.ledger.conftest import T0, completed, write

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    write(engine,
          completed(at=T0, function="a", invocation_id="i1"),
          completed(at=T0 + MINUTE, function="a", status="failed", error_type="ValueError", invocation_id="i2",
                    node="node-b"),
          completed(at=T0 + 2 * MINUTE, function="b", trigger="cron", cold=True, invocation_id="i3"),
          completed(at=T0 + 3 * MINUTE, function="a", version="2", cold=True, invocation_id="i4"),
          completed(at=T0 + 4 * MINUTE, function="b", status="timed_out", error_type="Sandbox.Timedout",
                    invocation_id="i5", node="node-b"))
    return engine


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def test_each_filter_newest_first(seeded: Engine) -> None:
    def q(**kw: object) -> list[str]:
        return ids(list_invocations(seeded, InvocationFilter(**kw)))  # type: ignore[arg-type]

    assert q() == ["i5", "i4", "i3", "i2", "i1"]
    assert q(function="a") == ["i4", "i2", "i1"]
    assert q(function="a", version="2") == ["i4"]
    assert q(status="failed") == ["i2"]
    assert q(status="timed_out", function="b") == ["i5"]
    assert q(trigger="cron") == ["i3"]
    assert q(node="node-b") == ["i5", "i2"]
    assert q(cold=True) == ["i4", "i3"]
    assert q(cold=False) == ["i5", "i2", "i1"]
    assert q(since=T0 + MINUTE, until=T0 + 3 * MINUTE) == ["i3", "i2"]  # since inclusive, until exclusive
    assert q(since=T0 + 10 * MINUTE) == []
    assert q(limit=2) == ["i5", "i4"]
    assert q(function="nobody") == []


def test_rows_carry_what_users_read(seeded: Engine) -> None:
    row = list_invocations(seeded, InvocationFilter(function="a", status="failed"))[0]
    assert row["received_at"] == "2026-03-10T12:01:00.000Z"
    assert row["error_type"] == "ValueError" and row["billed_ms"] == 10 and row["memory_mb"] == 128
    assert row["attempts"] == 1 and row["cold"] is False and "payload" not in row


def test_filters_from_query_parameters(seeded: Engine) -> None:
    f = filter_from_params({"function": "a", "cold": "true", "since": "2026-03-10T12:00:30Z", "limit": "5"})
    assert ids(list_invocations(seeded, f)) == ["i4"]
    now = T0 + 5 * MINUTE
    assert ids(list_invocations(seeded, filter_from_params({"since": "2m"}, now=now))) == ["i5", "i4"]


@pytest.mark.parametrize(("params", "named", "hint"), [
    ({"since": "yesterday-ish"}, "since", "ISO 8601"),
    ({"until": "soon"}, "until", "30s, 10m"),
    ({"status": "done"}, "status", "succeeded"),
    ({"limit": "ten"}, "limit", "1 to 100,000"),
    ({"limit": "0"}, "limit", "1 to 100,000"),
    ({"cold": "maybe"}, "cold", "cold=true"),
    ({"version": "$LATEST"}, "version", "1, 2"),
    ({"functon": "a"}, "functon", "function"),
    ({"since": "2026-03-11", "until": "2026-03-10"}, "since", "swap"),
])
def test_bad_filter_values_name_the_parameter(params: dict[str, str], named: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as e:
        filter_from_params(params)
    assert named in e.value.message and hint in e.value.message


def test_export_pages_through_everything_oldest_first(seeded: Engine) -> None:
    pages = list(export_invocations(seeded, InvocationFilter(limit=1), page=2))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [r["id"] for p in pages for r in p] == ["i1", "i2", "i3", "i4", "i5"]
    only_b = [r["id"] for p in export_invocations(seeded, InvocationFilter(function="b"), page=1) for r in p]
    assert only_b == ["i3", "i5"]


def test_export_keeps_rows_received_at_the_same_instant(engine: Engine) -> None:
    write(engine, *[completed(at=T0, invocation_id=f"same-{i}") for i in range(7)])
    exported = [r["id"] for p in export_invocations(engine, InvocationFilter(), page=3) for r in p]
    assert sorted(exported) == [f"same-{i}" for i in range(7)] and len(set(exported)) == 7


def test_one_invocation_with_its_tries(engine: Engine) -> None:
    first = completed(at=T0, invocation_id="r1", status="queued", error_type="RuntimeError", last=False,
                      duration_ms=12.5)
    first["attempt"]["outcome"] = "failed"
    second = completed(at=T0, invocation_id="r1", attempt=2, duration_ms=3.2, node="node-b",
                       payload=b'{"k": 1}', result=b'"ok"')
    write(engine, first)
    write(engine, second)
    row = get_invocation(engine, "r1")
    assert row["status"] == "succeeded" and row["attempt_count"] == 2
    assert [(a["attempt"], a["outcome"], a["node"], a["billed_ms"]) for a in row["attempts"]] == [
        (1, "failed", "node-a", 13), (2, "succeeded", "node-b", 4)]
    assert row["attempts"][0]["error_type"] == "RuntimeError"
    assert row["payload"] == '{"k": 1}' and row["result"] == '"ok"'
    assert row["payload_truncated"] is False and row["result_truncated"] is False


def test_retained_payload_cut_at_the_cap_says_so(engine: Engine) -> None:
    big = b'"' + b"x" * (R.RETAIN_LIMIT + 100) + b'"'
    write(engine, completed(at=T0, invocation_id="big", payload=big[:R.RETAIN_LIMIT], payload_size=len(big)))
    row = get_invocation(engine, "big")
    assert len(row["payload"]) == R.RETAIN_LIMIT and row["payload_truncated"] is True
    assert row["result"] is None and row["result_truncated"] is False


def test_unknown_invocation_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match="nope"):
        get_invocation(engine, "nope")
