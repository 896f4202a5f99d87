"""HTTP helpers shared by the gateway's routes: JSON responses, bounded bodies, errors."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stoker.errors import InvalidInput, PayloadTooLarge, StokerError

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64


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


async def stoker_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StokerError)
    return json_response(exc.to_json(), status=exc.status_code)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no route {request.method} {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
    message = messages.get(exc.status_code, str(exc.detail))
    return json_response({"error": message, "code": str(exc.status_code)}, status=exc.status_code,
                         headers=getattr(exc, "headers", None))


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response({"error": "internal error: the gateway's log has the details", "code": "ServiceException"},
                         status=500)
