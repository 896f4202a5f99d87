"""The Celery bridge: Celery producers, unchanged, get their tasks run by stoker functions.

It reads Celery's message protocol 2 from a Redis broker as kombu's Redis transport
writes it: each queue is a list (`celery`, plus `celery\\x06\\x163`, `...6`, `...9` for
priorities) of JSON envelopes `{"body", "content-type", "content-encoding", "headers",
"properties"}` whose body (base64 when `properties.body_encoding` says so) is
`[args, kwargs, embed]` and whose headers carry `task` and `id`. Only
`application/json` bodies are read: a pickled (or YAML, msgpack) message is never
decoded, but logged and kept unchanged in the rejected list (`{p}:bridge:celery:{queue}:rejected`).

The routed function gets `{"task", "id", "args", "kwargs"}`. Its result is stored the
way Celery's Redis result backend stores it, so `AsyncResult.get()` returns it: the JSON
`{"status", "result", "traceback", "children", "date_done", "task_id"}` at
`celery-task-meta-<id>` (expiring after a day, as `result_expires`), published on the
channel of the same name. A function error is stored as a FAILURE whose exception Celery
rebuilds (a built-in type such as ValueError comes back as itself).

As a Celery worker does: a task of an unknown name is logged, discarded, and stored as
failed with `celery.exceptions.NotRegistered`; an expired task (`expires`) is stored as
REVOKED; a task with an `eta` (or countdown) is held until then; `ignore_result` stores
nothing; a success never overwrites an earlier SUCCESS. Not done: links (callbacks,
errbacks, chains and chords are not started; a warning is logged), worker events
(Flower), soft and hard time limits (the function's own timeout applies).
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.platform.bus import connect
from stoker.triggers.bridges.base import Caller, Done, Failed, Later, Outcome, Reject, Routes

log = logging.getLogger(__name__)

#: kombu's Redis transport: priority sub-queues are "<queue>\x06\x16<priority>", 0 served first
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
RESULT_KEY_PREFIX = "celery-task-meta-"
RESULT_EXPIRES_S = 24 * 3600
#: the longest an ETA task is slept on before looking at it again
ETA_STEP_S = 60.0


def queue_lists(queue: str) -> list[str]:
    """The lists of one Celery queue, highest priority first."""
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


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
    linked: bool
    headers: dict[str, Any]


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
    linked = any(embed.get(k) for k in ("callbacks", "errbacks", "chain", "chord"))
    return CeleryTask(id=headers["id"], name=headers["task"], args=args, kwargs=kwargs, eta=_time(headers.get("eta")),
                      expires=_time(headers.get("expires")), ignore_result=bool(headers.get("ignore_result")),
                      linked=linked, headers=headers)


def exception_info(error_type: str, message: str, module: str | None = None) -> dict[str, Any]:
    """A failure's `result` as Celery's JSON result serializer writes an exception."""
    if module is None and isinstance(getattr(builtins, error_type, None), type) \
            and issubclass(getattr(builtins, error_type), BaseException):
        module = "builtins"
    return {"exc_type": error_type, "exc_message": [message], "exc_module": module}


def failure_from_error(body: bytes) -> tuple[dict[str, Any], str]:
    """A function's error object as Celery's exception info, and a traceback text."""
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    error_type = str(error.get("errorType") or "Exception")
    message = str(error.get("errorMessage") or "")
    stack = error.get("stackTrace") or []
    lines = "".join(str(s) if str(s).endswith("\n") else f"{s}\n" for s in stack)
    traceback = f"Traceback (most recent call last):\n{lines}{error_type}: {message}\n"
    return exception_info(error_type, message), traceback


class CeleryResults:
    """Writes results as Celery's Redis result backend does, so AsyncResult.get() sees them."""

    def __init__(self, redis: aioredis.Redis, expires_s: int = RESULT_EXPIRES_S) -> None:
        self.redis = redis
        self.expires_s = expires_s

    async def store(self, task_id: str, status: str, result: Any, traceback: str | None = None,
                    headers: dict[str, Any] | None = None) -> None:
        key = RESULT_KEY_PREFIX + task_id
        current = await self.redis.get(key)
        if current is not None and status != "SUCCESS":
            try:
                if orjson.loads(current).get("status") == "SUCCESS":  # a redelivered task that already succeeded
                    return
            except (orjson.JSONDecodeError, AttributeError):
                pass
        meta: dict[str, Any] = {"status": status, "result": result, "traceback": traceback, "children": [],
                                "date_done": dt.datetime.now(dt.UTC).isoformat(), "task_id": task_id}
        for header, field in (("group", "group_id"), ("parent_id", "parent_id")):
            if headers and headers.get(header):
                meta[field] = headers[header]
        value = orjson.dumps(meta)
        pipe = self.redis.pipeline(transaction=True)
        pipe.setex(key, self.expires_s, value)
        pipe.publish(key, value)
        await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()


class CeleryHandler:
    kind = "celery"

    def __init__(self, queue: str, routes: Routes, backend_url: str | None) -> None:
        self.queue = queue
        self.routes = routes
        self.results = CeleryResults(connect(backend_url)) if backend_url else None

    async def start(self) -> None:
        return None

    async def heartbeat(self) -> None:
        return None

    async def close(self) -> None:
        if self.results is not None:
            await self.results.close()

    async def _store(self, task_id: str, status: str, result: Any, traceback: str | None = None,
                     headers: dict[str, Any] | None = None) -> None:
        if self.results is not None:
            await self.results.store(task_id, status, result, traceback, headers)

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
        if task.expires is not None and task.expires <= now:
            log.info("celery bridge: task %s[%s] expired at %s; revoked", task.name, task.id, task.expires)
            await self._store(task.id, "REVOKED", exception_info("TaskRevokedError", "expired", "celery.exceptions"),
                              headers=task.headers)
            return Done()
        if task.eta is not None and task.eta > now:
            return Later(min(ETA_STEP_S, (task.eta - now).total_seconds()))
        route = await self.routes.lookup(task.name)
        if route is None:
            log.error("celery bridge: Received unregistered task of type %r. The message has been ignored and "
                      "discarded (add a route: --route %s=FUNCTION, or a [[triggers]] type = \"celery\" with "
                      "task = %r).", task.name, task.name, task.name)
            await self._store(task.id, "FAILURE", exception_info("NotRegistered", task.name, "celery.exceptions"),
                              headers=task.headers)
            return Done()
        if task.linked:
            log.warning("celery bridge: task %s[%s] has callbacks, a chain or a chord; the bridge stores its "
                        "result but does not start linked tasks", task.name, task.id)
        payload = orjson.dumps({"task": task.name, "id": task.id, "args": task.args, "kwargs": task.kwargs})
        try:
            reply = await call(route, payload)
        except Failed as f:
            log.error("celery bridge: task %s[%s] cannot run: %s", task.name, task.id, f.message)
            await self._store(task.id, "FAILURE", exception_info(f.error_type, f.message), headers=task.headers)
            return Done()
        if task.ignore_result:
            return Done()
        if reply.ok:
            result = orjson.loads(reply.body) if reply.body.strip() else None
            await self._store(task.id, "SUCCESS", result, headers=task.headers)
        else:
            info, traceback = failure_from_error(reply.body)
            await self._store(task.id, "FAILURE", info, traceback, headers=task.headers)
        return Done()
