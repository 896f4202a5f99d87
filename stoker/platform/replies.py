"""Answers to sync callers: what a node or scheduler puts on the caller's reply list."""

from __future__ import annotations

from typing import Any

import msgpack

#: the function returned a result
OK = "ok"
#: the function failed (error object in the body)
ERROR = "error"
#: refused over a concurrency limit
THROTTLED = "throttled"


def encode_reply(request_id: str, kind: str, body: bytes, meta: dict[str, Any]) -> bytes:
    return msgpack.packb((request_id, kind, body, meta), use_bin_type=True)


def decode_reply(data: bytes) -> tuple[str, str, bytes, dict[str, Any]]:
    request_id, kind, body, meta = msgpack.unpackb(data, raw=False)
    return request_id, kind, body, meta
