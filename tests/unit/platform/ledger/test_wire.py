"""Ledger records on the wire: compact, and nothing a producer writes is lost."""

from __future__ import annotations

import msgpack

from stoker.platform.ledger import records as R
from stoker.platform.ledger.models import Attempt, Invocation


def test_the_layout_names_every_column_of_both_tables() -> None:
    assert tuple(c.name for c in Invocation.__table__.columns) == R.FIELDS
    assert tuple(c.name for c in Attempt.__table__.columns if c.name != "invocation_id") == R.ATTEMPT_FIELDS


def test_round_trip_keeps_known_and_unknown_keys() -> None:
    record = {"id": "a", "function": "f", "status": "succeeded", "rank": 6, "duration_ms": 1.5, "cold": True,
              "payload": b"{}", "attempt": R.attempt_row(attempt=1, node="n1", worker="w1", started_at=1.0,
                                                          ended_at=2.0, duration_ms=1.0, outcome="succeeded"),
              "future_field": [1, 2]}
    back = R.decode(R.encode(record))
    assert {k: v for k, v in back.items() if v is not None and k != "attempt"} == {
        k: v for k, v in record.items() if k != "attempt"}
    assert back["attempt"] == record["attempt"]
    assert back["version"] is None  # not given: None, which the writer treats as unknown


def test_records_in_the_earlier_map_layout_still_decode() -> None:
    old = msgpack.packb({"id": "a", "function": "f", "status": "queued", "rank": 4}, use_bin_type=True)
    assert R.decode(old) == {"id": "a", "function": "f", "status": "queued", "rank": 4}
