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


def encode(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    record: dict[str, Any] = msgpack.unpackb(data, raw=False)
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
