"""Changes as DynamoDB Streams records: `{"Records": [{"eventName": "INSERT" | "MODIFY" | "REMOVE", ...}]}`.

    {"eventID": "…", "eventName": "MODIFY", "eventVersion": "1.1", "eventSource": "stoker:db",
     "eventSourceARN": "arn:stoker:db:postgresql:db:5432/shop:table/orders/stream",
     "dynamodb": {"ApproximateCreationDateTime": 1767225600.123, "Keys": {...},
                  "NewImage": {...}, "OldImage": {...}, "SequenceNumber": "000000000000000000420",
                  "SizeBytes": 123, "StreamViewType": "NEW_AND_OLD_IMAGES"},
     "table": "orders"}

Images are plain JSON values by default (`image_format = "plain"`), or DynamoDB's typed
attribute values (`"dynamodb"`: {"S": …}, {"N": "…"}, {"BOOL": …}, {"NULL": true}, {"M": …},
{"L": …}), so code written for DynamoDB Streams (AWS Lambda Powertools'
`DynamoDBStreamEvent`, boto3's TypeDeserializer) reads them unchanged.

An UPDATE that changes the primary key is, as in DynamoDB (where keys cannot change), a
REMOVE of the old key followed by an INSERT of the new one. SequenceNumber is the change
log's sequence zero-padded to 20 digits plus one digit (1 for that INSERT, else 0): it
compares the same as a number and as a string, and is unique within the table's stream.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import orjson

from stoker.triggers.dbchanges.changelog import Change

EVENT_NAMES = {"INSERT": "INSERT", "UPDATE": "MODIFY", "DELETE": "REMOVE"}
_EVENT_ID_NS = uuid.UUID("6f1c3f4e-2b1d-4a5e-9d1e-5d0c2b7a9e11")


def typed(value: Any) -> dict[str, Any]:
    """One JSON value as a DynamoDB attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [typed(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {str(k): typed(v) for k, v in value.items()}}
    return {"S": str(value)}


def plain(value: Any) -> Any:
    """Numbers with a fraction or exponent become floats, as any JSON parser reads them."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _image(row: dict[str, Any] | None, image_format: str) -> dict[str, Any] | None:
    if row is None:
        return None
    if image_format == "dynamodb":
        return {str(k): typed(v) for k, v in row.items()}
    return {str(k): plain(v) for k, v in row.items()}


def dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError:  # an integer beyond 64 bits, from a NUMERIC column
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _record(change: Change, name: str, sub: int, keys: dict[str, Any] | None, new: dict[str, Any] | None,
            old: dict[str, Any] | None, *, arn: str, table: str, image_format: str) -> dict[str, Any]:
    sequence = f"{change.seq:020d}{sub}"
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": round(change.changed_at, 3),
        "Keys": _image(keys or {}, image_format),
    }
    if new is not None:
        body["NewImage"] = _image(new, image_format)
    if old is not None:
        body["OldImage"] = _image(old, image_format)
    body["SequenceNumber"] = sequence
    body["SizeBytes"] = len(dumps([body.get("Keys"), body.get("NewImage"), body.get("OldImage")]))
    body["StreamViewType"] = "NEW_AND_OLD_IMAGES"
    return {
        "eventID": uuid.uuid5(_EVENT_ID_NS, f"{arn}/{sequence}").hex,
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "stoker:db",
        "eventSourceARN": arn,
        "dynamodb": body,
        "table": table,
    }


def to_records(change: Change, *, arn: str, table: str, image_format: str) -> list[dict[str, Any]]:
    """The record(s) one change becomes: two for an UPDATE that moves the primary key."""
    kw: dict[str, Any] = {"arn": arn, "table": table, "image_format": image_format}
    if change.op == "UPDATE" and change.old_keys != change.new_keys:
        return [_record(change, "REMOVE", 0, change.old_keys, None, change.old_row, **kw),
                _record(change, "INSERT", 1, change.new_keys, change.new_row, None, **kw)]
    keys = change.new_keys if change.op != "DELETE" else change.old_keys
    return [_record(change, EVENT_NAMES[change.op], 0, keys, change.new_row, change.old_row, **kw)]


def event_payload(records: Iterable[dict[str, Any]]) -> bytes:
    return dumps({"Records": list(records)})
