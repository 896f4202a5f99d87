"""The Celery bridge: Celery producers, unchanged, get their tasks run by stoker functions.

It reads Celery's message protocol 2 from a Redis broker as kombu's Redis transport
writes it: each queue is a list (`celery`, plus `celery\\x06\\x163`, `...6`, `...9` for
priorities) of JSON envelopes `{"body", "content-type", "content-encoding", "headers",
"properties"}` whose body (base64 when `properties.body_encoding` says so) is
`[args, kwargs, embed]` and whose headers carry `task` and `id`. Only
`application/json` bodies are read: a pickled (or YAML, msgpack) message is never
decoded, but logged and kept unchanged in the rejected list (`{p}:bridge:celery:{queue}:rejected`).

The routed function gets `{"task", "id", "args", "kwargs"}`. Its result is stored the
way Celery's Redis result backend stores it (results.py), so `AsyncResult.get()` returns it.

As a Celery worker does: a task of an unknown name is logged, discarded, and stored as
failed with `celery.exceptions.NotRegistered`; an expired task (`expires`) is stored as
REVOKED; a task with an `eta` (or countdown) is held until then; a revoked task
(revokes.py) is not run but stored REVOKED, also when it is held for its ETA;
`ignore_result` stores nothing; a success never overwrites an earlier SUCCESS; links,
chains, groups and chords go on as Celery's worker takes them on (canvas.py), and what the
bridge does not run is refused at once with a FAILURE that says so. Not done: worker
events (Flower), soft and hard time limits (the function's own timeout applies).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.platform.bus import connect
from stoker.triggers.bridges.base import Caller, Done, Failed, Later, Outcome, Reject, Routes
from stoker.triggers.bridges.canvas import Canvas, Links, Parent, queue_lists
from stoker.triggers.bridges.results import CeleryResults, exception_info, failure_from_error
from stoker.triggers.bridges.revokes import Revokes

__all__ = ["CeleryHandler", "CeleryTask", "Refused", "exception_info", "failure_from_error", "parse_task",
           "queue_lists"]

log = logging.getLogger(__name__)

#: the longest an ETA task is slept on before looking at it again
ETA_STEP_S = 60.0


class Refused(Exception):
    """A message the bridge will not run; kept for inspection."""

    def __init__(self, reason: str, error_type: str, headers: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.headers = headers or {}


@dataclass(frozen=True)
class CeleryTask:
    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: dt.datetime | None
    expires: dt.datetime | None
    ignore_result: bool
    links: Links
    headers: dict[str, Any]

    @property
    def linked(self) -> bool:
        links = self.links
        return bool(links.callbacks or links.errbacks or links.chain or links.chord)

    @property
    def parent(self) -> Parent:
        root = self.headers.get("root_id")
        priority = self.headers.get("priority")
        return Parent(self.id, root if isinstance(root, str) else self.id,
                      priority if isinstance(priority, int) else None)


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def parse_task(raw: bytes) -> CeleryTask:
    """A protocol-2 task message, or Refused; the body is decoded only if it is JSON."""
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused("the message is not a kombu JSON envelope", "InvalidMessage") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("headers"), dict):
        raise Refused("the message has no headers: not a Celery protocol 2 task message "
                      "(protocol 1 is not supported)", "InvalidMessage")
    headers: dict[str, Any] = envelope["headers"]
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str):
        raise Refused("the headers name no task and id: not a Celery protocol 2 task message", "InvalidMessage",
                      headers)
    content_type = str(envelope.get("content-type") or "")
    if content_type != "application/json":
        raise Refused(f"Refusing to deserialize untrusted content of type {content_type or 'unknown'}: the "
                      "stoker bridge accepts the JSON serializer only (set task_serializer = 'json')",
                      "ContentDisallowed", headers)
    properties: dict[str, Any] = envelope["properties"] if isinstance(envelope.get("properties"), dict) else {}
    body: Any = envelope.get("body", "")
    try:
        data = base64.b64decode(body) if properties.get("body_encoding") == "base64" else str(body).encode()
        decoded = orjson.loads(data)
        args, kwargs, embed = decoded if len(decoded) == 3 else (*decoded, {})
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise Refused("the body is not [args, kwargs, embed] in JSON", "InvalidMessage", headers) from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise Refused("the body's args is not a list or its kwargs not an object", "InvalidMessage", headers)
    embed = embed if isinstance(embed, dict) else {}
    return CeleryTask(id=headers["id"], name=headers["task"], args=args, kwargs=kwargs, eta=_time(headers.get("eta")),
                      expires=_time(headers.get("expires")), ignore_result=bool(headers.get("ignore_result")),
                      links=Links.of(embed, headers), headers=headers)


class CeleryHandler:
    kind = "celery"

    def __init__(self, queue: str, routes: Routes, backend_url: str | None, broker: aioredis.Redis,
                 revoked_key: str, origin: str) -> None:
        self.queue = queue
        self.routes = routes
        self.results = CeleryResults(connect(backend_url)) if backend_url else None
        self.revokes = Revokes(broker, revoked_key)
        self.canvas = Canvas(broker, self.results, queue, origin)

    async def start(self) -> None:
        self.revokes.start()

    async def heartbeat(self) -> None:
        await self.revokes.prune()

    async def close(self) -> None:
        await self.revokes.stop()
        if self.results is not None:
            await self.results.close()

    async def _store(self, task_id: str, status: str, result: Any, traceback: str | None = None,
                     headers: dict[str, Any] | None = None) -> None:
        if self.results is not None:
            await self.results.store(task_id, status, result, traceback, headers)

    async def _revoked(self, task: CeleryTask, reason: str) -> Done:
        info = exception_info("TaskRevokedError", reason, "celery.exceptions")
        await self._store(task.id, "REVOKED", info, headers=task.headers)
        await self.canvas.failed(task.parent, task.links, "REVOKED", info, None)
        self.revokes.forget(task.id)
        return Done()

    async def _failed(self, task: CeleryTask, info: dict[str, Any], traceback: str | None = None) -> Done:
        await self._store(task.id, "FAILURE", info, traceback, headers=task.headers)
        await self.canvas.failed(task.parent, task.links, "FAILURE", info, traceback)
        return Done()

    async def handle(self, item: bytes, call: Caller) -> Outcome:
        try:
            task = parse_task(item)
        except Refused as e:
            log.error("celery bridge: refused a message on %s: %s. It is kept unchanged in the rejected list. "
                      "Headers: %s", self.queue, e.reason, orjson.dumps(e.headers).decode()[:500])
            task_id = e.headers.get("id")
            if isinstance(task_id, str) and e.error_type == "ContentDisallowed":
                await self._store(task_id, "FAILURE", exception_info(e.error_type, e.reason, "kombu.exceptions"),
                                  headers=e.headers)
            return Reject()
        now = dt.datetime.now(dt.UTC)
        # a task held for its ETA is woken by a revoke; listen before looking, so none is missed
        wake = self.revokes.hold(task.id) if task.eta is not None and task.eta > now else None
        if await self.revokes.is_revoked(task.id):
            log.info("celery bridge: task %s[%s] was revoked; not run", task.name, task.id)
            return await self._revoked(task, "revoked")
        if task.expires is not None and task.expires <= now:
            log.info("celery bridge: task %s[%s] expired at %s; revoked", task.name, task.id, task.expires)
            return await self._revoked(task, "expired")
        if task.eta is not None and task.eta > now:
            return Later(min(ETA_STEP_S, (task.eta - now).total_seconds()), wake=wake)
        route = await self.routes.lookup(task.name)
        if route is None:
            log.error("celery bridge: Received unregistered task of type %r. The message has been ignored and "
                      "discarded (add a route: --route %s=FUNCTION, or a [[triggers]] type = \"celery\" with "
                      "task = %r).", task.name, task.name, task.name)
            return await self._failed(task, exception_info("NotRegistered", task.name, "celery.exceptions"))
        unsupported = task.links.unsupported(self.results is not None)
        if unsupported is not None:
            log.error("celery bridge: refused task %s[%s]: %s", task.name, task.id, unsupported)
            await self.canvas.refuse(task.id, task.links, unsupported)
            return Done()
        payload = orjson.dumps({"task": task.name, "id": task.id, "args": task.args, "kwargs": task.kwargs})
        terminated = self.revokes.run(task.id)
        calling = asyncio.ensure_future(call(route, payload))
        watching = asyncio.ensure_future(terminated.wait())
        try:
            await asyncio.wait({calling, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not calling.done():
                calling.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await calling
        if calling.cancelled():  # revoke(terminate=True) while it ran
            log.info("celery bridge: task %s[%s] was revoked with terminate=True while it ran; its function's "
                     "run is not waited for", task.name, task.id)
            return await self._revoked(task, "terminated")
        self.revokes.forget(task.id)
        try:
            reply = calling.result()
        except Failed as f:
            log.error("celery bridge: task %s[%s] cannot run: %s", task.name, task.id, f.message)
            return await self._failed(task, exception_info(f.error_type, f.message))
        if reply.ok:
            result = orjson.loads(reply.body) if reply.body.strip() else None
            if not task.ignore_result:
                await self._store(task.id, "SUCCESS", result, headers=task.headers)
            await self.canvas.succeeded(task.parent, task.links, result)
            return Done()
        info, traceback = failure_from_error(reply.body)
        if task.ignore_result:
            await self.canvas.failed(task.parent, task.links, "FAILURE", info, traceback)
            return Done()
        return await self._failed(task, info, traceback)
