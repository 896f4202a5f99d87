"""SQS-shaped records and Lambda's rules for reading batchItemFailures."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from stoker.triggers.queue.messages import DeadLetter, Message, Received, normalise_attributes
from stoker.triggers.queue.records import batch_payload, failed_items, record


def received(body: bytes = b'{"n": 1}', dead: DeadLetter | None = None) -> Received:
    message = Message(id="m-1", body=body, sent_at_ms=1700000000000, attributes=normalise_attributes({"k": "v"}),
                      dead_letter=dead)
    return Received(queue="orders", entry_id="1700000000001-0", message=message, receive_count=2,
                    first_received_ms=1700000000100)


def test_record_has_the_fields_sqs_consumers_read() -> None:
    r = record(received())
    assert r["messageId"] == "m-1"
    assert r["body"] == '{"n": 1}'
    assert r["md5OfBody"] == hashlib.md5(b'{"n": 1}').hexdigest()
    assert r["attributes"]["ApproximateReceiveCount"] == "2"
    assert r["attributes"]["SentTimestamp"] == "1700000000000"
    assert r["attributes"]["ApproximateFirstReceiveTimestamp"] == "1700000000100"
    assert r["messageAttributes"] == {"k": {"stringValue": "v", "stringListValues": [], "binaryListValues": [],
                                            "dataType": "String"}}
    assert r["eventSource"] == "stoker:queue"
    assert r["eventSourceARN"].endswith(":orders")
    assert base64.urlsafe_b64decode(r["receiptHandle"]).decode() == "orders:1700000000001-0:2"


def test_dead_lettered_record_names_its_source() -> None:
    r = record(received(dead=DeadLetter("orders", 3, 1)))
    assert r["attributes"]["DeadLetterQueueSourceArn"].endswith(":orders")


def test_batch_payload_is_records() -> None:
    assert [r["messageId"] for r in orjson.loads(batch_payload([received()]))["Records"]] == ["m-1"]


@pytest.mark.parametrize("answer", [b"", b"null", b"{}", b'"ok"', b'{"batchItemFailures": []}',
                                    b'{"batchItemFailures": null}', b"42"])
def test_complete_success(answer: bytes) -> None:
    assert failed_items(answer, ["a", "b"]) == set()


def test_partial_failure() -> None:
    assert failed_items(b'{"batchItemFailures": [{"itemIdentifier": "b"}]}', ["a", "b"]) == {"b"}


@pytest.mark.parametrize("answer", [b"{not json", b'{"batchItemFailures": "b"}',
                                    b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
                                    b'{"batchItemFailures": [{"itemIdentifier": null}]}',
                                    b'{"batchItemFailures": [{"id": "b"}]}',
                                    b'{"batchItemFailures": [{"itemIdentifier": "zz"}]}'])
def test_unreadable_answers_fail_the_whole_batch(answer: bytes) -> None:
    assert failed_items(answer, ["a", "b"]) is None
