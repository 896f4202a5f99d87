"""Ledger records: what producers put on the ledger stream for the SQL writer.

A record is a partial row of `invocations` (only the fields the producer knows), and
optionally one row of `attempts`. Records of one invocation may reach different
writers out of order, so each carries a `rank`; the writer applies a record only if
its rank is not lower than the row's, which makes every write an idempotent upsert.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgpack

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "throttled", "dead_lettered"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "timed_out", "throttled",
                             "dead_lettered")
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "throttled", "dead_lettered"})

#: the most bytes of a payload and of a result kept when a function sets retain_payloads
RETAIN_LIMIT = 64 * 1024

# phases within one attempt, in the order they happen
QUEUED, RUNNING, ATTEMPT_DONE, TERMINAL = 0, 1, 2, 3


def rank(attempt: int, phase: int) -> int:
    """Later attempts outrank earlier ones; within an attempt, later phases outrank earlier."""
    return attempt * 4 + phase


def billed_ms(duration_ms: float) -> int:
    """Billed duration: the duration rounded up to the millisecond (at least 1 ms)."""
    return max(1, math.ceil(duration_ms))


#: the wire layout: a record is a msgpack array of these fields (None when not known), then
#: its attempt as an array of ATTEMPT_FIELDS (or None), then any other keys as a map. Arrays,
#: not maps: the writer decodes every record, and key strings were most of that cost.
FIELDS = ("id", "function", "version", "qualifier", "status", "trigger", "invocation_type", "received_at",
          "started_at", "ended_at", "duration_ms", "billed_ms", "memory_mb", "max_memory_mb", "init_ms", "cold",
          "attempts", "node", "error_type", "error_message", "payload_size", "result_size", "payload", "result",
          "rank")
ATTEMPT_FIELDS = ("attempt", "node", "worker", "started_at", "ended_at", "duration_ms", "init_ms", "outcome",
                  "error_type", "error_message")
_LAYOUT = 1
_KNOWN = frozenset((*FIELDS, "attempt"))


def encode(record: dict[str, Any]) -> bytes:
    get = record.get
    attempt = get("attempt")
    extra = {k: v for k, v in record.items() if k not in _KNOWN} or None
    return msgpack.packb(
        [_LAYOUT, [get(f) for f in FIELDS], [attempt.get(f) for f in ATTEMPT_FIELDS] if attempt else None, extra],
        use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(data, raw=False)
    if isinstance(value, dict):  # the earlier map layout, still on a stream after an upgrade
        return value
    _layout, values, attempt, extra = value
    record = dict(zip(FIELDS, values, strict=True))
    if attempt is not None:
        record["attempt"] = dict(zip(ATTEMPT_FIELDS, attempt, strict=True))
    if extra:
        record.update(extra)
    return record


def attempt_row(
    *,
    attempt: int,
    node: str | None,
    worker: str | None,
    started_at: float | None,
    ended_at: float | None,
    duration_ms: float | None,
    outcome: str,
    error_type: str | None = None,
    error_message: str | None = None,
    init_ms: float | None = None,
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "node": node,
        "worker": worker,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_ms": duration_ms,
        "outcome": outcome,
        "error_type": error_type,
        "error_message": error_message,
        "init_ms": init_ms,
    }
