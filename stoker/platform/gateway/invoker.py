"""Invoking from the gateway: resolve the qualifier, publish the envelope, await the reply.

Sync callers wait on futures keyed by invocation id; one background task per gateway
pops this gateway's reply list and completes them. No database is touched on this path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from stoker.errors import PlatformUnavailable, StokerError, Throttled
from stoker.platform.bus import Guard
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope, check_payload_size, new_invocation_id
from stoker.platform.ledger import records as R
from stoker.platform.registry.projection import Resolved
from stoker.platform.replies import THROTTLED, decode_reply
from stoker.platform.throttles import record_throttle

log = logging.getLogger(__name__)

#: how long past the function's timeout a sync caller waits (cold start, queueing)
SYNC_GRACE_S = 60.0


class InvocationTimeout(StokerError):
    status_code = 504
    code = "ServiceException"


@dataclass(frozen=True)
class Reply:
    id: str
    ok: bool
    body: bytes
    version: str
    meta: dict[str, Any]


class Invoker:
    def __init__(self, ctx: PlatformContext) -> None:
        self.ctx = ctx
        self.gateway_id = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.reply_key = ctx.keys.reply(self.gateway_id)
        self._waiters: dict[str, asyncio.Future[tuple[str, bytes, dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._listener = ctx.redis  # BLPOP holds one pooled connection

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._collect_replies(), name="replies")

    async def stop(self) -> None:
        if self._task is not None:
            # redis-py may turn a cancel during a failing BLPOP into a ConnectionError, which
            # the loop outlives; the flag ends the loop all the same
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _collect_replies(self) -> None:
        redis = self._listener
        while not self._stopping:
            try:
                popped: Any = await redis.blpop([self.reply_key], timeout=1)
                if popped is None:
                    continue
                self._deliver(popped[1])  # at once: the caller must not wait for the drain below
                while True:
                    more: Any = await redis.lpop(self.reply_key, 255)
                    if not more:
                        break
                    for raw in more:
                        self._deliver(raw)
                    if len(more) < 255:
                        break
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                log.warning("reading replies failed: %s", e)
                await asyncio.sleep(0.5)

    def _deliver(self, raw: bytes) -> None:
        try:
            request_id, kind, body, meta = decode_reply(raw)
        except Exception as e:
            log.error("undecodable reply: %s", e)
            return
        fut = self._waiters.get(request_id)
        if fut is not None and not fut.done():
            fut.set_result((kind, body, meta))

    async def resolve(self, name: str, qualifier: str | None) -> Resolved:
        return await self.ctx.directory.resolve(name, qualifier)

    async def invoke(self, resolved: Resolved, payload: bytes, trigger: str = "api",
                     meta: dict[str, Any] | None = None, invocation_id: str | None = None) -> Reply:
        """A sync call: the function's result or error; throttles and timeouts raise."""
        check_payload_size(payload, "sync")
        wait = resolved.timeout + SYNC_GRACE_S
        now = time.time()
        envelope = Envelope(
            id=invocation_id or new_invocation_id(), function=resolved.function, version=resolved.version,
            payload=payload, invocation_type="sync", qualifier=resolved.qualifier, enqueued_at=now,
            deadline=now + wait, reply_to=self.reply_key, trigger=trigger, meta=meta,
        )
        fut: asyncio.Future[tuple[str, bytes, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._waiters[envelope.id] = fut
        try:
            try:
                # straight into a node's inbox when one has room (one hop less than intake and a
                # scheduler); otherwise through intake as usual
                placed = await self.ctx.bus.place_direct(envelope, self.ctx.settings)
                if placed == "T":
                    raise Throttled(await record_throttle(self.ctx, envelope, reply=False))
                if placed in ("F", "N"):
                    await self.ctx.bus.publish(envelope)
            except (RedisError, OSError) as e:
                raise PlatformUnavailable(f"the bus (Redis) is not reachable: {e}") from None
            try:
                # a timer instead of wait_for: the answer reaches the caller one loop turn sooner
                timer = asyncio.get_running_loop().call_later(wait, _give_up, fut)
                try:
                    kind, body, reply_meta = await fut
                finally:
                    timer.cancel()
            except TimeoutError:
                raise InvocationTimeout(
                    f"no answer for invocation {envelope.id} within {wait:.0f} s: the platform may be "
                    "overloaded or have no running node (see `stoker ledger` for its fate)") from None
        finally:
            self._waiters.pop(envelope.id, None)
        if kind == THROTTLED:
            raise Throttled(body.decode())
        return Reply(id=envelope.id, ok=kind == "ok", body=body,
                     version=str(reply_meta.get("version", resolved.version)), meta=reply_meta)

    def async_envelope(self, resolved: Resolved, payload: bytes, trigger: str = "api",
                       meta: dict[str, Any] | None = None, invocation_id: str | None = None) -> Envelope:
        """The envelope of an async event (checked for size), not yet published."""
        check_payload_size(payload, "async")
        now = time.time()
        max_age = float(resolved.spec.get("max_event_age", 6 * 3600))
        return Envelope(
            id=invocation_id or new_invocation_id(), function=resolved.function, version=resolved.version,
            payload=payload, invocation_type="async", qualifier=resolved.qualifier, enqueued_at=now,
            deadline=now + max_age, trigger=trigger, meta=meta,
        )

    async def invoke_async(self, resolved: Resolved, payload: bytes, trigger: str = "api",
                           meta: dict[str, Any] | None = None, invocation_id: str | None = None) -> str:
        """An async event: accepted into intake, recorded as queued; returns its invocation id."""
        envelope = self.async_envelope(resolved, payload, trigger, meta, invocation_id)
        try:
            await self.ctx.bus.publish(envelope, queued_record(envelope))
        except (RedisError, OSError) as e:
            raise PlatformUnavailable(f"the bus (Redis) is not reachable: {e}") from None
        return envelope.id

    async def invoke_async_guarded(self, guard: Guard, resolved: Resolved, payload: bytes, trigger: str = "api",
                                   meta: dict[str, Any] | None = None,
                                   invocation_id: str | None = None) -> str | None:
        """An async event published only if `guard` (a trigger's durable position) still holds
        what the trigger read, moving it in the same atomic step. None when it did not."""
        envelope = self.async_envelope(resolved, payload, trigger, meta, invocation_id)
        try:
            done = await self.ctx.bus.publish_guarded(guard, envelope, queued_record(envelope))
        except (RedisError, OSError) as e:
            raise PlatformUnavailable(f"the bus (Redis) is not reachable: {e}") from None
        return envelope.id if done else None


def _give_up(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def queued_record(envelope: Envelope) -> bytes:
    return R.encode({
        "id": envelope.id, "function": envelope.function, "version": envelope.version,
        "qualifier": envelope.qualifier, "status": "queued", "trigger": envelope.trigger,
        "invocation_type": envelope.invocation_type, "received_at": envelope.enqueued_at,
        "attempts": 0, "payload_size": len(envelope.payload), "rank": R.rank(envelope.attempt, R.QUEUED),
    })
