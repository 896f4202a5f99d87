"""Batches as events: cut to the async payload limit; a change too large alone goes to the dead letters."""

from __future__ import annotations

import msgpack
import orjson

from stoker.platform.envelope import ASYNC_PAYLOAD_LIMIT
from stoker.platform.keys import Keys
from stoker.platform.ledger import records as R
from stoker.platform.outcomes import decode_outcome
from stoker.platform.registry.projection import Resolved
from stoker.triggers.dbchanges.changelog import Change
from stoker.triggers.dbchanges.events import batch_envelope, event_payload, publish_entries
from stoker.triggers.dbchanges.target import Target

TARGET = Target.parse("postgresql://app:secret@db:5432/shop", "orders")
RESOLVED = Resolved(function="audit", version="3", qualifier="$LATEST", alias=None,
                    spec={"max_event_age": 60, "timeout": 3})


def change(seq: int, size: int) -> Change:
    row = {"id": seq, "blob": "x" * size}
    return Change(seq, "INSERT", None, {"id": seq}, None, row, 0.0)


def test_a_batch_is_cut_where_the_payload_limit_falls() -> None:
    payload, fitted = event_payload([change(i, 300_000) for i in range(1, 6)], TARGET, "plain")
    assert fitted == 3 and len(payload) <= ASYNC_PAYLOAD_LIMIT
    assert [r["dynamodb"]["Keys"]["id"] for r in orjson.loads(payload)["Records"]] == [1, 2, 3]


def test_the_envelope_asks_for_its_outcome_and_carries_no_credentials() -> None:
    payload, _ = event_payload([change(1, 10)], TARGET, "plain")
    env = batch_envelope(RESOLVED, "id-1", payload, (1,), TARGET, "t:dbchanges:x:outcomes")
    assert env.meta is not None and env.meta["notify"] == "t:dbchanges:x:outcomes" and env.trigger == "dbchanges"
    assert env.invocation_type == "async" and env.deadline is not None and env.deadline - env.enqueued_at == 60
    assert b"secret" not in env.encode()
    (intake, fields), (ledger, record) = publish_entries(Keys("t"), env, "t:dbchanges:x:outcomes", "src")
    assert intake == "t:intake:async" and fields["i"] == "id-1" and ledger == "t:ledger"
    assert R.decode(record["r"])["status"] == "queued"


def test_a_change_too_large_alone_is_dead_lettered_with_its_outcome() -> None:
    payload, fitted = event_payload([change(7, ASYNC_PAYLOAD_LIMIT), change(8, 10)], TARGET, "plain")
    assert fitted == 1 and len(payload) > ASYNC_PAYLOAD_LIMIT
    env = batch_envelope(RESOLVED, "id-7", payload, (7,), TARGET, "t:out")
    (dlq, letter), (_, record), (out, outcome) = publish_entries(Keys("t"), env, "t:out", "src")
    assert dlq == "t:dlq:audit" and out == "t:out"
    assert msgpack.unpackb(letter["d"], raw=False)["payload"] == payload
    row = R.decode(record["r"])
    assert row["status"] == "dead_lettered" and row["error_type"] == "RequestTooLargeException"
    assert "change 7 of table orders" in row["error_message"]
    assert decode_outcome(outcome["o"]).status == "dead_lettered"
