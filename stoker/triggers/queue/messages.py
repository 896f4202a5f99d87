"""Queue messages: names, limits, attributes, and how a message is kept in its stream.

A message is the producer's JSON bytes (kept as sent, never re-encoded), a message id
(a UUID that stays with the message through dead-lettering and redrive), the time it
was sent, and optional message attributes in SQS's shape. In its stream it is the fields

    id   message id           b   body (JSON bytes)        t   sent at (ms)
    a    attributes (JSON, only when there are any)
    dq   dead-letter source queue, dr  receive count there, dt  moved at (ms)
         (only on messages that reached a dead-letter queue)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from stoker.errors import InvalidInput, PayloadTooLarge

#: SQS's rules: 1-80 letters, digits, '-' and '_' (a dead-letter queue adds "-dlq")
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
DLQ_SUFFIX = "-dlq"
#: the most a message may hold, body and attributes together, as SQS
MAX_MESSAGE_BYTES = 256 * 1024
#: messages in one batch send, as SQS's SendMessageBatch
MAX_BATCH = 10
#: the longest delivery delay, as SQS (15 minutes)
MAX_DELAY_S = 900
MAX_ATTRIBUTES = 10
ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
ATTRIBUTE_TYPES = ("String", "Number")


def check_queue_name(name: str) -> str:
    base = name
    while base.endswith(DLQ_SUFFIX) and len(base) > len(DLQ_SUFFIX):
        base = base[: -len(DLQ_SUFFIX)]
    if not isinstance(name, str) or not QUEUE_NAME_RE.match(base):
        raise InvalidInput(f"{name!r} is not a valid queue name: use 1-80 letters, digits, '-' or '_'")
    return name


def dlq_name(queue: str) -> str:
    return queue + DLQ_SUFFIX


def check_delay(delay: float) -> float:
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_S:
        raise InvalidInput(f"delay {delay!r} is not valid: give a number of seconds from 0 to {MAX_DELAY_S}")
    return float(delay)


def new_message_id() -> str:
    return str(uuid.uuid4())


def _attribute(name: str, value: Any) -> dict[str, str]:
    if not isinstance(name, str) or not ATTRIBUTE_NAME_RE.match(name) or name.lower().startswith(("aws.", "amazon.")):
        raise InvalidInput(f"message attribute name {name!r} is not valid: use 1-256 letters, digits, '_', '-' "
                           "or '.', not starting with 'AWS.' or 'Amazon.'")
    if isinstance(value, str):
        return {"dataType": "String", "stringValue": value}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"dataType": "Number", "stringValue": repr(value)}
    if isinstance(value, Mapping):  # SQS's own shape, as boto3 users write it
        lowered = {str(k)[:1].lower() + str(k)[1:]: v for k, v in value.items()}
        data_type, string_value = lowered.get("dataType"), lowered.get("stringValue")
        base_type = str(data_type).split(".", 1)[0]
        if base_type in ATTRIBUTE_TYPES and isinstance(string_value, str):
            return {"dataType": str(data_type), "stringValue": string_value}
    raise InvalidInput(f"message attribute {name!r} must be a string, a number, or "
                       "{\"DataType\": \"String\"|\"Number\", \"StringValue\": \"...\"} "
                       "(binary values are not supported)")


def normalise_attributes(attributes: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Message attributes in SQS's shape: name -> {"dataType", "stringValue"}."""
    if not attributes:
        return {}
    if not isinstance(attributes, Mapping):
        raise InvalidInput("message attributes must be an object of name -> value")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"a message takes at most {MAX_ATTRIBUTES} attributes; {len(attributes)} were given")
    return {name: _attribute(name, value) for name, value in attributes.items()}


def message_size(body: bytes, attributes: Mapping[str, Mapping[str, str]]) -> int:
    """As SQS counts it: the body plus each attribute's name, type and value."""
    extra = sum(len(n.encode()) + len(a["dataType"].encode()) + len(a["stringValue"].encode())
                for n, a in attributes.items())
    return len(body) + extra


def check_body(body: bytes, what: str = "the message") -> bytes:
    """The message as sent, once it is known to be JSON; the caller's bytes are kept."""
    if not body.strip():
        raise InvalidInput(f"{what} is empty: a message is a JSON value, e.g. {{\"order\": 42}}")
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    return body


def check_size(body: bytes, attributes: Mapping[str, Mapping[str, str]], what: str = "the message") -> None:
    size = message_size(body, attributes)
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(
            f"{what} is {size:,} bytes; a queue message holds at most {MAX_MESSAGE_BYTES:,} bytes (256 KB), "
            "attributes included. Store large data elsewhere and enqueue a reference to it")


@dataclass(frozen=True)
class DeadLetter:
    """Where a dead-lettered message came from."""

    queue: str
    receive_count: int
    at_ms: int


@dataclass(frozen=True)
class Message:
    id: str
    body: bytes
    sent_at_ms: int
    attributes: dict[str, dict[str, str]]
    dead_letter: DeadLetter | None = None

    def fields(self) -> dict[str, bytes]:
        out = {"id": self.id.encode(), "b": self.body, "t": str(self.sent_at_ms).encode()}
        if self.attributes:
            out["a"] = orjson.dumps(self.attributes)
        if self.dead_letter is not None:
            out.update({"dq": self.dead_letter.queue.encode(), "dr": str(self.dead_letter.receive_count).encode(),
                        "dt": str(self.dead_letter.at_ms).encode()})
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[Any, bytes]) -> Message:
        f = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        dead = None
        if "dq" in f:
            dead = DeadLetter(queue=f["dq"].decode(), receive_count=int(f.get("dr", b"0")),
                              at_ms=int(f.get("dt", b"0")))
        return cls(id=f["id"].decode(), body=f["b"], sent_at_ms=int(f["t"]),
                   attributes=orjson.loads(f["a"]) if f.get("a") else {}, dead_letter=dead)


def fields_from_list(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's [field, value, ...] as Lua returns it."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


@dataclass(frozen=True)
class Received:
    """A message as one consumer received it."""

    queue: str
    entry_id: str
    message: Message
    receive_count: int
    first_received_ms: int
