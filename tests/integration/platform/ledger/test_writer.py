"""The batch writer on real SQLite and PostgreSQL: merging, idempotency, times that compare."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from stoker.platform.ledger import records as R
from stoker.platform.ledger.queries import InvocationFilter, get_invocation, list_invocations
from tests.integration.platform.ledger.conftest import T0, completed, write


def queued(invocation_id: str, at: dt.datetime) -> dict:
    return {"id": invocation_id, "function": "fn", "version": "1", "status": "queued", "trigger": "queue",
            "invocation_type": "async", "received_at": at.timestamp(), "attempts": 0, "payload_size": 9,
            "rank": R.rank(1, R.QUEUED)}


def test_records_of_one_invocation_merge_in_one_batch_and_across_batches(engine: Engine) -> None:
    write(engine, queued("m1", T0), completed(at=T0, invocation_id="m1", trigger="queue"))
    write(engine, queued("m2", T0))
    write(engine, completed(at=T0, invocation_id="m2", trigger="queue"))
    for rid in ("m1", "m2"):
        row = get_invocation(engine, rid)
        assert row["status"] == "succeeded" and row["payload_size"] == 2 and len(row["attempts"]) == 1


def test_redelivered_and_late_records_never_duplicate_or_regress(engine: Engine) -> None:
    done = completed(at=T0, invocation_id="d1", trigger="queue")
    write(engine, done)
    write(engine, done)  # redelivered
    write(engine, queued("d1", T0))  # a late queued record
    rows = list_invocations(engine, InvocationFilter())
    assert len(rows) == 1 and rows[0]["status"] == "succeeded" and rows[0]["duration_ms"] == 10.0


def test_undecodable_records_are_skipped_not_fatal(engine: Engine) -> None:
    from stoker.platform.ledger.upsert import write_records

    assert write_records(engine, [b"\xc1not msgpack", R.encode(completed(at=T0, invocation_id="ok"))]) == 1
    assert [r["id"] for r in list_invocations(engine, InvocationFilter())] == ["ok"]


def test_stored_times_compare_exactly_with_query_bounds(engine: Engine) -> None:
    at = dt.datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=dt.UTC)
    write(engine, completed(at=at, invocation_id="t1"), completed(at=at.replace(microsecond=0), invocation_id="t0"))
    assert [r["id"] for r in list_invocations(engine, InvocationFilter(since=at))] == ["t1"]
    assert [r["id"] for r in list_invocations(engine, InvocationFilter(until=at))] == ["t0"]
    assert get_invocation(engine, "t1")["received_at"] == "2026-03-10T12:00:00.123Z"


def test_a_large_batch_is_written_whole(engine: Engine) -> None:
    write(engine, *[completed(at=T0 + dt.timedelta(seconds=i), invocation_id=f"b{i}") for i in range(2500)])
    assert len(list_invocations(engine, InvocationFilter(limit=5000))) == 2500
