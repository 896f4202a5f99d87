"""Changes as DynamoDB Streams records, read back by AWS Lambda Powertools as DynamoDB code would."""

from __future__ import annotations

from decimal import Decimal

import orjson
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecordEventName

from stoker.triggers.dbchanges.changelog import Change
from stoker.triggers.dbchanges.records import event_payload, to_records

ARN = "arn:stoker:db:sqlite:/srv/shop.db:table/orders/stream"


def records(change: Change, image_format: str = "plain") -> list[dict]:
    return to_records(change, arn=ARN, table="orders", image_format=image_format)


ROW = {"id": 7, "item": "tea", "qty": 2, "price": Decimal("3.50"), "tags": ["a", None], "meta": {"gift": True}}


def test_plain_images_are_json_values() -> None:
    (r,) = records(Change(42, "UPDATE", {"id": 7}, {"id": 7}, {**ROW, "qty": 1}, ROW, 1767225600.1234))
    assert r["eventName"] == "MODIFY" and r["eventSource"] == "stoker:db" and r["eventSourceARN"] == ARN
    assert r["table"] == "orders"
    body = r["dynamodb"]
    assert body["Keys"] == {"id": 7}
    assert body["NewImage"] == {"id": 7, "item": "tea", "qty": 2, "price": 3.5, "tags": ["a", None],
                                "meta": {"gift": True}}
    assert body["OldImage"]["qty"] == 1
    assert body["SequenceNumber"] == "000000000000000000420"
    assert body["StreamViewType"] == "NEW_AND_OLD_IMAGES" and body["ApproximateCreationDateTime"] == 1767225600.123


def test_inserts_have_no_old_image_and_removes_no_new_image() -> None:
    (ins,) = records(Change(1, "INSERT", None, {"id": 7}, None, ROW, 0.0))
    (rem,) = records(Change(2, "DELETE", {"id": 7}, None, ROW, None, 0.0))
    assert ins["eventName"] == "INSERT" and "OldImage" not in ins["dynamodb"] and ins["dynamodb"]["Keys"] == {"id": 7}
    assert rem["eventName"] == "REMOVE" and "NewImage" not in rem["dynamodb"] and rem["dynamodb"]["Keys"] == {"id": 7}
    assert ins["eventID"] != rem["eventID"]


def test_a_primary_key_change_is_a_remove_then_an_insert() -> None:
    old, new = {"a": 1, "b": 2, "v": "x"}, {"a": 1, "b": 3, "v": "x"}
    rem, ins = records(Change(9, "UPDATE", {"a": 1, "b": 2}, {"a": 1, "b": 3}, old, new, 0.0))
    assert (rem["eventName"], rem["dynamodb"]["Keys"], rem["dynamodb"]["OldImage"]) == ("REMOVE", {"a": 1, "b": 2}, old)
    assert (ins["eventName"], ins["dynamodb"]["Keys"], ins["dynamodb"]["NewImage"]) == ("INSERT", {"a": 1, "b": 3}, new)
    assert rem["dynamodb"]["SequenceNumber"] < ins["dynamodb"]["SequenceNumber"]
    assert int(rem["dynamodb"]["SequenceNumber"]) < int(ins["dynamodb"]["SequenceNumber"])


def test_dynamodb_format_reads_back_with_powertools() -> None:
    changes = [Change(1, "INSERT", None, {"id": 7}, None, ROW, 1767225600.5),
               Change(2, "UPDATE", {"id": 7}, {"id": 7}, ROW, {**ROW, "qty": 3, "item": None}, 1767225601.0),
               Change(3, "DELETE", {"id": 7}, None, {**ROW, "qty": 3}, None, 1767225602.0)]
    payload = event_payload(r for c in changes for r in records(c, "dynamodb"))
    event = DynamoDBStreamEvent(orjson.loads(payload))
    got = list(event.records)
    assert [r.event_name for r in got] == [DynamoDBRecordEventName.INSERT, DynamoDBRecordEventName.MODIFY,
                                           DynamoDBRecordEventName.REMOVE]
    first = got[0].dynamodb
    assert first is not None and first.keys == {"id": 7}
    assert first.new_image == {"id": 7, "item": "tea", "qty": 2, "price": Decimal("3.50"), "tags": ["a", None],
                               "meta": {"gift": True}}
    assert first.approximate_creation_date_time == 1767225600
    second = got[1].dynamodb
    assert second is not None and second.new_image["qty"] == 3 and second.new_image["item"] is None
    assert second.old_image["qty"] == 2
    assert got[2].dynamodb is not None and got[2].dynamodb.old_image["qty"] == 3
    assert got[2].event_source_arn == ARN


def test_huge_numbers_survive_encoding() -> None:
    big = {"id": 2**70}
    payload = event_payload(records(Change(1, "INSERT", None, big, None, big, 0.0), "dynamodb"))
    assert b'{"N":"1180591620717411303424"}' in payload
    assert b"1180591620717411303424" in event_payload(records(Change(1, "INSERT", None, big, None, big, 0.0)))
