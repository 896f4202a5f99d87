"""Celery's revoke, as a Celery worker learns it over Redis: the broadcast (pidbox) channel.

`AsyncResult.revoke()` and `app.control.revoke(ids, terminate=...)` publish a control
message on the fanout exchange `celery.pidbox`, which kombu's Redis transport carries as
PUBLISH on `/{db}.celery.pidbox` (`/{db}.<control_exchange>.pidbox`, plus `/<routing key>`
with fanout patterns). Every bridge on the broker subscribes to it, and reads the message
only when it is JSON (Celery's default control serializer; anything else is logged and
ignored, never decoded).

A revoked id is kept in the broker's Redis for REVOKE_EXPIRES_S (as a Celery worker keeps
its revoked set), so every bridge on the broker sees it, and a task taken later (or held
for its ETA, or taken again after a bridge died) is not run but stored REVOKED. A held ETA
task is woken at once. `terminate=True` also stops waiting for a running task: it is
stored REVOKED ("terminated") at once; the function's run itself goes on to its end (the
platform has no way to stop an invocation that started), and its answer is dropped.
Control messages other than revoke (ping, inspect, rate limits, shutdown) are not
answered: the bridge is not a Celery worker node.

Key, in the broker's Redis: {p}:bridge:celery:revoked  zset task id -> expiry (ms).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: how long a revoke is remembered (Celery's REVOKE_EXPIRES)
REVOKE_EXPIRES_S = 3 * 3600


def control_message(data: bytes) -> dict[str, Any] | None:
    """A pidbox broadcast's body ({"method", "arguments", ...}) if it is JSON, else None."""
    try:
        envelope = orjson.loads(data)
        if not isinstance(envelope, dict) or envelope.get("content-type") != "application/json":
            return None
        properties = envelope.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        body = envelope.get("body", "")
        raw = base64.b64decode(body) if properties.get("body_encoding") == "base64" else str(body).encode()
        message = orjson.loads(raw)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None
    return message if isinstance(message, dict) else None


def revoked_ids(message: dict[str, Any]) -> tuple[list[str], bool]:
    """The task ids a revoke message names, and whether it asks to terminate them."""
    if message.get("method") != "revoke" or not isinstance(message.get("arguments"), dict):
        return [], False
    arguments = message["arguments"]
    ids = arguments.get("task_id")
    ids = [ids] if isinstance(ids, str) else ids if isinstance(ids, list) else []
    return [i for i in ids if isinstance(i, str)], bool(arguments.get("terminate"))


class Revokes:
    """The revoked set of one broker, the pidbox listener that fills it, and the tasks that
    a revoke must wake (held for their ETA) or stop waiting for (running, terminate=True)."""

    def __init__(self, broker: aioredis.Redis, key: str) -> None:
        self.broker = broker
        self.key = key
        db = int(broker.connection_pool.connection_kwargs.get("db", 0) or 0)
        self.patterns = [f"/{db}.*.pidbox", f"/{db}.*.pidbox/*"]
        self._held: dict[str, asyncio.Event] = {}
        self._running: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    # -- the revoked set -------------------------------------------------------------------
    async def is_revoked(self, task_id: str) -> bool:
        score = await self.broker.zscore(self.key, task_id)
        return score is not None and score > time.time() * 1000

    async def revoke(self, ids: list[str], terminate: bool) -> None:
        expiry = int((time.time() + REVOKE_EXPIRES_S) * 1000)
        if ids:
            await self.broker.zadd(self.key, dict.fromkeys(ids, expiry))
        for task_id in ids:  # after the set holds it: a woken task must find itself revoked
            if task_id in self._held:
                self._held[task_id].set()
            if terminate and task_id in self._running:
                self._running[task_id].set()

    async def prune(self) -> None:
        await self.broker.zremrangebyscore(self.key, "-inf", f"({int(time.time() * 1000)}")

    # -- tasks that a revoke acts on ---------------------------------------------------------
    def hold(self, task_id: str) -> asyncio.Event:
        """The event set when `task_id`, held for its ETA, is revoked."""
        return self._held.setdefault(task_id, asyncio.Event())

    def run(self, task_id: str) -> asyncio.Event:
        """The event set when `task_id`, running, is revoked with terminate=True."""
        self._held.pop(task_id, None)
        return self._running.setdefault(task_id, asyncio.Event())

    def forget(self, task_id: str) -> None:
        self._held.pop(task_id, None)
        self._running.pop(task_id, None)

    # -- the listener ------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="celery-revokes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            pubsub = self.broker.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(*self.patterns)
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        await self._on_message(bytes(message["data"]))
            except (RedisError, OSError) as e:
                self.subscribed.clear()
                log.warning("celery bridge: listening for revokes failed: %s; again in 1 s (revokes sent "
                            "meanwhile are missed, as by a Celery worker)", e)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _on_message(self, data: bytes) -> None:
        message = control_message(data)
        if message is None:
            log.warning("celery bridge: ignored a control message that is not JSON (set "
                        "control_serializer / accept_content to json)")
            return
        ids, terminate = revoked_ids(message)
        if ids:
            log.info("celery bridge: revoked %s%s", ", ".join(ids), " (terminate)" if terminate else "")
            await self.revoke(ids, terminate)
