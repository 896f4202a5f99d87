"""What a queue consumer receives and answers: SQS-shaped records and `batchItemFailures`.

    {"Records": [{"messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                  "md5OfBody", "eventSource": "stoker:queue", "eventSourceARN", "awsRegion"}]}

`body` is the message as a JSON string (the producer's bytes), `md5OfBody` its MD5, as
SQS. A function that reports partial failures answers `{"batchItemFailures":
[{"itemIdentifier": messageId}, ...]}`; the rules for reading that answer are Lambda's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from stoker.triggers.queue.messages import Received

EVENT_SOURCE = "stoker:queue"
REGION = "local"
ACCOUNT = "000000000000"


def queue_arn(queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"


def receipt_handle(received: Received) -> str:
    """Names this receipt of the message (queue, stream entry, receive count)."""
    raw = f"{received.queue}:{received.entry_id}:{received.receive_count}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def record(received: Received) -> dict[str, Any]:
    message = received.message
    attributes = {
        "ApproximateReceiveCount": str(received.receive_count),
        "SentTimestamp": str(message.sent_at_ms),
        "SenderId": "stoker",
        "ApproximateFirstReceiveTimestamp": str(received.first_received_ms),
    }
    if message.dead_letter is not None:
        attributes["DeadLetterQueueSourceArn"] = queue_arn(message.dead_letter.queue)
    return {
        "messageId": message.id,
        "receiptHandle": receipt_handle(received),
        "body": message.body.decode("utf-8", "replace"),
        "attributes": attributes,
        "messageAttributes": {name: {"stringValue": a["stringValue"], "stringListValues": [],
                                     "binaryListValues": [], "dataType": a["dataType"]}
                              for name, a in message.attributes.items()},
        "md5OfBody": hashlib.md5(message.body).hexdigest(),
        "eventSource": EVENT_SOURCE,
        "eventSourceARN": queue_arn(received.queue),
        "awsRegion": REGION,
    }


def batch_payload(batch: Iterable[Received]) -> bytes:
    return orjson.dumps({"Records": [record(r) for r in batch]})


def failed_items(answer: bytes, message_ids: Sequence[str]) -> set[str] | None:
    """The message ids a function reported as failed; None means the whole batch failed.

    As Lambda: no answer, `null`, `{}`, or an empty or null `batchItemFailures` is
    complete success; an answer that is not JSON, a `batchItemFailures` that is not a
    list, or an item whose `itemIdentifier` is missing, empty or not in the batch is
    complete failure.
    """
    if not answer.strip():
        return set()
    try:
        data = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return set()
    items = data.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    known = set(message_ids)
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed
