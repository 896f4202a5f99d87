"""The writer's own conversions: they must match what SQLAlchemy stores and binds."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.dialects import sqlite

from stoker.platform.db import UTCDateTime
from stoker.platform.ledger.upsert import TimeText, merge


def sqlalchemy_text(value: dt.datetime) -> str:
    dialect = sqlite.dialect()
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return str(processor(value))


def test_time_text_matches_sqlalchemy_sqlite_storage() -> None:
    to_text = TimeText()
    for value in (dt.datetime(2026, 3, 10, 12, 0, 0, 123456, tzinfo=dt.UTC),
                  dt.datetime(2026, 3, 10, 12, 0, 0, tzinfo=dt.UTC),
                  dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)):
        assert to_text(value.timestamp()) == sqlalchemy_text(value)
        assert to_text(value) == sqlalchemy_text(value)


def test_time_text_for_postgresql_is_utc() -> None:
    value = dt.datetime(2026, 3, 10, 12, 0, 0, 5, tzinfo=dt.UTC)
    assert TimeText("+00")(value.timestamp()) == "2026-03-10 12:00:00.000005+00"


def test_merge_folds_records_by_rank_and_fills_gaps() -> None:
    rows, attempts = merge([
        {"id": "x", "status": "succeeded", "duration_ms": 5.0, "payload_size": None, "rank": 7,
         "attempt": {"attempt": 1, "outcome": "succeeded", "duration_ms": 5.0}},
        {"id": "x", "status": "queued", "function": "fn", "payload_size": 9, "rank": 4},
        {"id": "y", "rank": None},
    ])
    by_id = {r["id"]: r for r in rows}
    assert by_id["x"]["status"] == "succeeded" and by_id["x"]["function"] == "fn" and by_id["x"]["payload_size"] == 9
    assert by_id["y"]["status"] == "queued" and by_id["y"]["rank"] == 0 and by_id["y"]["function"] == "?"
    assert attempts == [{"attempt": 1, "outcome": "succeeded", "duration_ms": 5.0, "invocation_id": "x"}]
