"""Caps on every request, before any route reads it (an ASGI middleware).

    the request line (path and query)   8 KB     -> 414
    headers                             100 of them, 32 KB in all -> 431
    the body                            6 MB and 64 KB by default (a 6 MB invocation payload
                                        and its framing); routes that take more register a larger cap
                                        with `allow_large_body` (deploying a bundle: 100 MB)
                                        -> 413, from the declared Content-Length before
                                        reading, or as soon as the streamed body passes it

Every refusal is a JSON error that says which limit was crossed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from stoker.errors import PayloadTooLarge
from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT
from stoker.platform.registry.bundles import MAX_ZIP

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_TARGET = 8 * 1024
MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_BODY = SYNC_PAYLOAD_LIMIT + 64 * 1024

#: (method, path pattern, cap) for routes whose bodies may be larger than the default
LARGE_BODIES: list[tuple[str, re.Pattern[str], int]] = []


def allow_large_body(method: str, path_pattern: str, limit: int) -> None:
    """Let one route accept bodies up to `limit` bytes (it should still cap what it reads)."""
    LARGE_BODIES.append((method.upper(), re.compile(path_pattern), limit))


allow_large_body("POST", r"^/api/functions/?$", MAX_ZIP + 64 * 1024)


def body_limit(method: str, path: str) -> int:
    for m, pattern, limit in LARGE_BODIES:
        if m == method and pattern.match(path):
            return limit
    return DEFAULT_MAX_BODY


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = orjson.dumps({"error": message, "code": code})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"")
        if target > MAX_TARGET:
            await _refuse(send, 414, f"the request's path and query are {target:,} bytes; at most "
                          f"{MAX_TARGET:,} are accepted", "RequestTooLargeException")
            return
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) for k, v in headers)
        if len(headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
            await _refuse(send, 431, f"the request has {len(headers)} headers of {size:,} bytes; at most "
                          f"{MAX_HEADERS} headers and {MAX_HEADER_BYTES:,} bytes are accepted",
                          "RequestTooLargeException")
            return
        limit = body_limit(scope["method"], scope["path"])
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    await _refuse(send, 400, "Content-Length is not a number", "InvalidRequestContentException")
                    return
                if int(value) > limit:
                    await _refuse(send, 413, f"the request body is {int(value):,} bytes; at most {limit:,} are "
                                  f"accepted on {scope['method']} {scope['path']}", PayloadTooLarge.code)
                    return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the request body is over {limit:,} bytes, the most accepted on "
                                          f"{scope['method']} {scope['path']}")
            return message

        await self.app(scope, capped_receive, send)
