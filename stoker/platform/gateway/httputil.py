"""HTTP helpers shared by the gateway's routes: JSON responses, bounded bodies, errors."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.exceptions as redis_errors
import sqlalchemy.exc as db_errors
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stoker.errors import InvalidInput, PayloadTooLarge, PlatformUnavailable, StokerError

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
#: what a 503 tells the caller to wait before trying again (seconds)
RETRY_AFTER_S = 2
#: Redis replies that mean "not now" rather than "wrong": persistence failing (a full disk),
#: a replica, memory full, loading its data, a cluster or failover in progress
REDIS_UNAVAILABLE_REPLIES = ("MISCONF", "READONLY", "OOM", "LOADING", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN",
                             "TRYAGAIN")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def raw_json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the {what} is {int(declared):,} bytes; at most {limit:,} bytes are accepted")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the {what} is over {limit:,} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def query_flag(request: Request, name: str) -> bool:
    """A true/false query parameter; anything else is refused rather than read as false."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return False
    value = raw.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise InvalidInput(f"{name}={raw!r} must be true or false")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def parse_json(body: bytes, what: str = "the body") -> Any:
    """Parse JSON, with an error that says where it is broken."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidInput(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def check_json(body: bytes, what: str = "the payload") -> bytes:
    """Validate that `body` is JSON and return it unchanged (payloads travel as the caller's bytes)."""
    if not body.strip():
        return b"{}"
    parse_json(body, what)
    return body


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def unavailable_reason(exc: BaseException) -> str | None:
    """What a 503 says when `exc` (or what caused it) means Redis or the database cannot be used
    right now: unreachable, stalled past the socket timeout, refusing writes, or out of disk.
    None for every other error (a bug: 500)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        e = current
        if isinstance(e, redis_errors.ConnectionError | redis_errors.TimeoutError):
            return f"Redis is unreachable ({_first_line(e)}); try again shortly"
        if isinstance(e, redis_errors.ResponseError) and str(e).startswith(REDIS_UNAVAILABLE_REPLIES):
            return f"Redis refuses the request for now ({_first_line(e)}); try again shortly"
        if isinstance(e, db_errors.OperationalError | db_errors.TimeoutError | db_errors.InterfaceError) or (
                isinstance(e, db_errors.DBAPIError) and e.connection_invalidated):
            line = _first_line(e)
            if "full" in line.lower() or "no space" in line.lower():
                return f"the database cannot write: its disk is full ({line}); try again once there is space"
            return f"the database is unreachable ({line}); try again shortly"
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk is full ({e}); try again once there is space"
        if isinstance(e, ConnectionError):
            return f"a service the gateway needs is unreachable ({_first_line(e)}); try again shortly"
        current = e.__cause__ or e.__context__
    return None


def unavailable_response(reason: str) -> Response:
    return json_response(PlatformUnavailable(reason).to_json(), status=503,
                         headers={"Retry-After": str(RETRY_AFTER_S)})


async def stoker_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StokerError)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status_code == 503 else None
    return json_response(exc.to_json(), status=exc.status_code, headers=headers)


async def backend_error_handler(request: Request, exc: Exception) -> Response:
    """Redis, database and OS errors: 503 while a backend cannot be used, else a 500."""
    reason = unavailable_reason(exc)
    if reason is None:
        return await internal_error_handler(request, exc)
    log.warning("%s %s: 503, %s", request.method, request.url.path, reason)
    return unavailable_response(reason)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.method} {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
    message = messages.get(exc.status_code, str(exc.detail))
    return json_response({"error": message, "code": str(exc.status_code)}, status=exc.status_code,
                         headers=getattr(exc, "headers", None))


#: the exception types `backend_error_handler` answers for
BACKEND_ERRORS: tuple[type[Exception], ...] = (redis_errors.RedisError, db_errors.SQLAlchemyError, OSError)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    reason = unavailable_reason(exc)  # raised outside the routes (a middleware), or wrapped in another error
    if reason is not None:
        log.warning("%s %s: 503, %s", request.method, request.url.path, reason)
        return unavailable_response(reason)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response({"error": "internal error: the gateway's log has the details", "code": "ServiceException"},
                         status=500)


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """The gateway's error mapping: its own errors as they say, Redis or the database
    unreachable as a 503 with Retry-After on every route, anything else a logged 500."""
    return {StokerError: stoker_error_handler, HTTPException: http_error_handler,
            **dict.fromkeys(BACKEND_ERRORS, backend_error_handler), Exception: internal_error_handler}
