"""What happens after an async event fails: a retry with exponential backoff, or a dead letter.

Lambda's rules: an async event is retried `retries` times (default 2), the first
after `retry_delay` seconds (default 60), doubling after; when retries or the
maximum event age (default 6 h) run out it goes to the function's dead-letter
stream. Sync calls are never retried by the platform.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from stoker.platform.envelope import Envelope
from stoker.platform.ledger import records as R


def retry_member(envelope: Envelope) -> bytes:
    """A member of the delayed set; packed without bin types so Lua's cmsgpack reads it."""
    return msgpack.packb([envelope.id, envelope.function_version, "s" if envelope.is_sync else "a",
                          envelope.encode()], use_bin_type=False)


def dead_letter(envelope: Envelope, error: dict[str, Any] | None, reason: str) -> bytes:
    return msgpack.packb({
        "id": envelope.id, "function": envelope.function, "version": envelope.version,
        "qualifier": envelope.qualifier, "trigger": envelope.trigger, "attempts": envelope.attempt,
        "payload": envelope.payload, "error": error, "reason": reason, "failed_at": time.time(),
        "enqueued_at": envelope.enqueued_at, "meta": envelope.meta,
    }, use_bin_type=True)


def decode_dead_letter(data: bytes) -> dict[str, Any]:
    letter: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return letter


def retry_delay(spec: dict[str, Any], attempt: int) -> float:
    return float(spec.get("retry_delay", 60.0)) * (2 ** (attempt - 1))


@dataclass
class Decision:
    """The invocation's status after this attempt, and what the bus must do next."""

    status: str
    phase: int
    action: str = ""  # "" | "retry" | "dlq"
    arg1: bytes | str = ""
    arg2: bytes | str = ""


def decide(envelope: Envelope, spec: dict[str, Any], outcome_status: str,
           error: dict[str, Any] | None, now: float, delay: float | None = None) -> Decision:
    if outcome_status == "succeeded" or envelope.is_sync:
        return Decision(status=outcome_status, phase=R.ATTEMPT_DONE)
    retries = int(spec.get("retries", 2))
    max_age = float(spec.get("max_event_age", 6 * 3600))
    wait = retry_delay(spec, envelope.attempt) if delay is None else delay
    if envelope.attempt <= retries and (now + wait) - envelope.enqueued_at < max_age:
        return Decision(status="queued", phase=R.ATTEMPT_DONE, action="retry",
                        arg1=str(int((now + wait) * 1000)), arg2=retry_member(envelope.next_attempt()))
    reason = "retries exhausted" if envelope.attempt > retries else "maximum event age reached"
    return Decision(status="dead_lettered", phase=R.TERMINAL, action="dlq",
                    arg1=dead_letter(envelope, error, reason))
