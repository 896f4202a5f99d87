"""Results as Celery's Redis result backend stores them, so `AsyncResult.get()` sees them.

The JSON `{"status", "result", "traceback", "children", "date_done", "task_id"}` at
`celery-task-meta-<id>` (expiring after a day, as `result_expires`), published on the
channel of the same name so a waiting `get()` wakes at once. A failure's `result` is the
exception as Celery's JSON serializer writes one, which Celery rebuilds (a built-in type
such as ValueError comes back as itself).
"""

from __future__ import annotations

import builtins
import datetime as dt
from typing import Any

import orjson
import redis.asyncio as aioredis

RESULT_KEY_PREFIX = "celery-task-meta-"
RESULT_EXPIRES_S = 24 * 3600


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
