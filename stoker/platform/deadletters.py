"""Dead letters: async events whose retries (or maximum age) ran out, per function.

Listing decodes `{p}:dlq:{function}`; redriving sends a dead letter back as a new async
invocation (a new id, the original payload, resolved afresh from the qualifier it was
first called with, so a fixed redeploy is what runs) and removes it, in one atomic step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from stoker.errors import NotFound
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope, new_invocation_id
from stoker.platform.ledger import records as R
from stoker.platform.retries import decode_dead_letter
from stoker.platform.timeparse import iso


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    letter: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        import datetime as dt

        payload_raw: bytes = self.letter.get("payload") or b""
        try:
            payload: Any = orjson.loads(payload_raw)
        except orjson.JSONDecodeError:
            payload = payload_raw.decode("utf-8", "replace")
        failed_at = self.letter.get("failed_at")
        return {
            "id": self.letter["id"],
            "entry": self.entry_id,
            "function": self.letter.get("function"),
            "version": str(self.letter.get("version")),
            "qualifier": self.letter.get("qualifier"),
            "trigger": self.letter.get("trigger"),
            "attempts": self.letter.get("attempts"),
            "reason": self.letter.get("reason"),
            "error": self.letter.get("error"),
            "payload": payload,
            "failed_at": iso(dt.datetime.fromtimestamp(failed_at, dt.UTC)) if failed_at else None,
        }


async def list_dead_letters(ctx: PlatformContext, function: str, limit: int = 1000) -> list[DeadLetter]:
    entries: Any = await ctx.redis.xrange(ctx.keys.dlq(function), "-", "+", count=limit)
    return [DeadLetter(e[0].decode(), decode_dead_letter(e[1][b"d"])) for e in entries]


async def redrive(ctx: PlatformContext, function: str, invocation_id: str | None = None) -> list[dict[str, str]]:
    """Send dead letters back (all, or the one with this invocation id). Returns old -> new ids."""
    await ctx.directory.require(function)
    letters = await list_dead_letters(ctx, function, limit=100_000)
    if invocation_id is not None:
        letters = [d for d in letters if d.letter["id"] == invocation_id]
        if not letters:
            raise NotFound(f"{function} has no dead letter for invocation {invocation_id}: see `stoker dlq {function}`")
    await ctx.bus.ensure_intake_groups()
    done = []
    for dead in letters:
        letter = dead.letter
        qualifier = letter.get("qualifier") or None
        resolved = await ctx.directory.resolve(function, qualifier)
        now = time.time()
        meta = dict(letter.get("meta") or {})
        meta["redrive_of"] = letter["id"]
        envelope = Envelope(
            id=new_invocation_id(), function=function, version=resolved.version, payload=letter["payload"],
            invocation_type="async", qualifier=resolved.qualifier, enqueued_at=now,
            deadline=now + float(resolved.spec.get("max_event_age", 6 * 3600)),
            trigger=letter.get("trigger") or "api", meta=meta,
        )
        record = R.encode({
            "id": envelope.id, "function": function, "version": envelope.version, "qualifier": envelope.qualifier,
            "status": "queued", "trigger": envelope.trigger, "invocation_type": "async",
            "received_at": now, "attempts": 0, "payload_size": len(envelope.payload),
            "rank": R.rank(1, R.QUEUED),
        })
        f = envelope.stream_fields()
        moved = await ctx.bus.redrive(
            keys=[ctx.keys.dlq(function), ctx.keys.intake_async, ctx.keys.ledger],
            args=[dead.entry_id, f["i"], f["f"], f["t"], f["e"], record],
        )
        if moved:
            done.append({"id": letter["id"], "new_id": envelope.id})
    return done
