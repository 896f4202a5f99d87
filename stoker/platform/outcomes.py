"""Final outcomes for triggers that need them (move a processed file, advance a change cursor).

A trigger that publishes an event with `meta={"notify": STREAM}` gets one entry on
STREAM when the event reaches its final state (succeeded, failed, timed out, or dead
lettered after its retries), written in the same atomic step as the ledger record. An
event re-run after its node died may report twice: consumers key by invocation id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from stoker.platform.envelope import Envelope

BODY_LIMIT = 256 * 1024
NOTIFY = "notify"


@dataclass(frozen=True)
class Outcome:
    id: str
    function: str
    version: str
    status: str  # succeeded | failed | timed_out | dead_lettered
    attempts: int
    error_type: str | None
    body: bytes  # the result JSON, or the error object JSON (truncated to BODY_LIMIT)
    meta: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


def notify_stream(envelope: Envelope) -> str:
    if envelope.meta and isinstance(envelope.meta.get(NOTIFY), str):
        return str(envelope.meta[NOTIFY])
    return ""


def encode_outcome(envelope: Envelope, status: str, error_type: str | None, body: bytes) -> bytes:
    return msgpack.packb({
        "id": envelope.id, "function": envelope.function, "version": envelope.version, "status": status,
        "attempts": envelope.attempt, "error_type": error_type, "body": body[:BODY_LIMIT],
        "meta": {k: v for k, v in (envelope.meta or {}).items() if k != NOTIFY},
    }, use_bin_type=True)


def decode_outcome(data: bytes) -> Outcome:
    d = msgpack.unpackb(data, raw=False)
    return Outcome(id=d["id"], function=d["function"], version=d["version"], status=d["status"],
                   attempts=d["attempts"], error_type=d.get("error_type"), body=d.get("body") or b"",
                   meta=d.get("meta") or {})
