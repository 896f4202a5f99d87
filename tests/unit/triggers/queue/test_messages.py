"""Queue messages: names, limits, attributes, and their stream fields."""

from __future__ import annotations

import pytest

from stoker.errors import InvalidInput, PayloadTooLarge
from stoker.triggers.queue.messages import (
    MAX_MESSAGE_BYTES,
    DeadLetter,
    Message,
    check_body,
    check_delay,
    check_queue_name,
    check_size,
    dlq_name,
    normalise_attributes,
)


@pytest.mark.parametrize("name", ["orders", "a", "x" * 80, "my_queue-2", "orders-dlq", "orders-dlq-dlq"])
def test_valid_queue_names(name: str) -> None:
    assert check_queue_name(name) == name


@pytest.mark.parametrize("name", ["", "has space", "x" * 81, "a:b", "ünïcode"])
def test_invalid_queue_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidInput, match="1-80 letters, digits"):
        check_queue_name(name)


def test_dead_letter_queue_name() -> None:
    assert dlq_name("orders") == "orders-dlq"


@pytest.mark.parametrize("delay", [-1, 901, "5", True, float("nan")])
def test_bad_delays(delay: object) -> None:
    with pytest.raises(InvalidInput, match="0 to 900"):
        check_delay(delay)  # type: ignore[arg-type]


def test_attributes_take_sqs_shape() -> None:
    attrs = normalise_attributes({"kind": "order", "priority": 3, "ratio": 0.5,
                                  "boto": {"DataType": "Number.int", "StringValue": "7"}})
    assert attrs == {"kind": {"dataType": "String", "stringValue": "order"},
                     "priority": {"dataType": "Number", "stringValue": "3"},
                     "ratio": {"dataType": "Number", "stringValue": "0.5"},
                     "boto": {"dataType": "Number.int", "stringValue": "7"}}
    assert normalise_attributes(None) == {}


@pytest.mark.parametrize("attrs, message", [
    ({"AWS.trace": "x"}, "not valid"),
    ({"bad name": "x"}, "not valid"),
    ({"flag": True}, "must be a string, a number"),
    ({"blob": {"DataType": "Binary", "BinaryValue": "AA=="}}, "binary values are not supported"),
    ({f"k{i}": "v" for i in range(11)}, "at most 10 attributes"),
])
def test_bad_attributes(attrs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        normalise_attributes(attrs)


def test_body_must_be_json() -> None:
    assert check_body(b' {"a": 1} ') == b' {"a": 1} '
    with pytest.raises(InvalidInput, match="not valid JSON"):
        check_body(b"{nope")
    with pytest.raises(InvalidInput, match="empty"):
        check_body(b"  ")


def test_size_limit_counts_attributes() -> None:
    body = b'"' + b"x" * (MAX_MESSAGE_BYTES - 2) + b'"'
    check_size(body, {})
    with pytest.raises(PayloadTooLarge, match="262,144 bytes"):
        check_size(body, normalise_attributes({"k": "v"}))


def test_message_fields_round_trip() -> None:
    m = Message(id="id-1", body=b'{"n": 1}', sent_at_ms=1700000000000,
                attributes=normalise_attributes({"k": "v"}), dead_letter=DeadLetter("orders", 3, 1700000000500))
    fields = {k.encode(): v for k, v in m.fields().items()}
    assert Message.from_fields(fields) == m
    plain = Message(id="id-2", body=b"1", sent_at_ms=5, attributes={})
    assert set(plain.fields()) == {"id", "b", "t"}
    assert Message.from_fields(plain.fields()) == plain
