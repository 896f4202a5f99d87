"""A sync call refused over a concurrency limit: the message the caller gets, and what is
recorded (a `throttled` ledger row and the throttle counter). Used by the scheduler and by a
gateway that placed the call itself."""

from __future__ import annotations

import time

from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope
from stoker.platform.ledger import records as R
from stoker.platform.replies import THROTTLED, encode_reply


async def throttle_message(ctx: PlatformContext, function: str) -> str:
    entry = await ctx.directory.entry(function)
    reserved = entry.concurrency if entry else None
    reason = (f"its reserved concurrency is {reserved}" if reserved
              else f"the platform's concurrency limit of {ctx.settings.global_concurrency} is reached")
    return (f"Rate exceeded: {function} is throttled: {reason}. "
            "Retry later, or raise the limit (concurrency in stoker.toml)")


async def record_throttle(ctx: PlatformContext, envelope: Envelope, reply: bool = True) -> str:
    """Record the refusal (and answer the caller's reply list when `reply`); returns the message."""
    message = await throttle_message(ctx, envelope.function)
    record = R.encode({
        "id": envelope.id, "function": envelope.function, "version": envelope.version,
        "qualifier": envelope.qualifier, "status": "throttled", "trigger": envelope.trigger,
        "invocation_type": envelope.invocation_type, "received_at": envelope.enqueued_at,
        "ended_at": time.time(), "attempts": 0, "error_type": "TooManyRequestsException", "error_message": message,
        "payload_size": len(envelope.payload), "rank": R.rank(envelope.attempt, R.TERMINAL),
    })
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.xadd(ctx.keys.ledger, {"r": record})
    pipe.hincrby(ctx.keys.metrics, f"throttle|{envelope.function}", 1)
    if reply and envelope.reply_to:
        pipe.rpush(envelope.reply_to, encode_reply(envelope.id, THROTTLED, message.encode(), {}))
        pipe.pexpire(envelope.reply_to, 120_000)
    await pipe.execute()
    return message
