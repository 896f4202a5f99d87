"""Serving function routes: the route table kept fresh, and one request turned into one invocation.

The table (stoker.triggers.http.RouteTable) is built from the newest version of every
deployed function, read from the Redis projection. It is rebuilt on the first request
after any function changes (the directory's pub/sub notice) and at least every 30 s,
so routing costs no Redis round trip and never a database query.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from stoker.errors import PlatformUnavailable, StokerError
from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT, check_payload_size, new_invocation_id
from stoker.platform.gateway.apigateway import BadProxyResponse, proxy_event, proxy_response
from stoker.platform.gateway.httputil import json_response, raw_json_response, read_body
from stoker.platform.gateway.state import GatewayState
from stoker.platform.registry.projection import FunctionDirectory, Resolved
from stoker.triggers.http import RouteTable

log = logging.getLogger(__name__)

MAX_AGE_S = 30.0
#: what `ANY` means (Starlette routes take GET alone unless told)
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpRoutes:
    def __init__(self, directory: FunctionDirectory) -> None:
        self.directory = directory
        self._table = RouteTable()
        self._generation = 1  # bumped on every change; the table is fresh when built at this value
        self._built_generation = 0
        self._built_at = 0.0
        self._lock = asyncio.Lock()
        directory.on_change(self._changed)

    def _changed(self, _name: str | None) -> None:
        self._generation += 1

    def _fresh(self) -> bool:
        return self._built_generation == self._generation and time.monotonic() - self._built_at < MAX_AGE_S

    async def table(self) -> RouteTable:
        if self._fresh():
            return self._table
        async with self._lock:
            if not self._fresh():
                generation = self._generation
                try:
                    self._table = await self._build()
                except (RedisError, OSError) as e:
                    if not self._built_at:
                        raise PlatformUnavailable(f"cannot read the routes: Redis is not reachable ({e})") from None
                    log.warning("keeping the last route table: Redis is not reachable (%s)", e)
                    return self._table
                self._built_generation, self._built_at = generation, time.monotonic()
        return self._table

    async def _build(self) -> RouteTable:
        specs = []
        for name in await self.directory.names():
            entry = await self.directory.entry(name)
            if entry is None:
                continue
            try:
                specs.append(await self.directory.spec(name, entry.latest))
            except StokerError:  # deleted between the two reads
                continue
        return RouteTable.build(specs)


def http_routes(g: GatewayState) -> HttpRoutes:
    routes = g.extras.get("http_routes")
    if routes is None:
        routes = g.extras["http_routes"] = HttpRoutes(g.ctx.directory)
    assert isinstance(routes, HttpRoutes)
    return routes


async def serve(request: Request, g: GatewayState, resolved: Resolved, resource: str,
                path_params: dict[str, str] | None, public: bool) -> Response:
    """Invoke the function with the request as an API Gateway proxy event; map its answer back."""
    body = await read_body(request, SYNC_PAYLOAD_LIMIT, "request body")
    request_id = new_invocation_id()
    event = orjson.dumps(proxy_event(request, body, resource, path_params, request_id,
                                     hide_authorization=not public))
    check_payload_size(event, "sync")
    reply = await g.invoker.invoke(resolved, event, trigger="http", invocation_id=request_id)
    headers = {"x-amzn-requestid": reply.id}
    if not reply.ok:
        return raw_json_response(reply.body, status=502, headers=headers)
    try:
        mapped = proxy_response(reply.body)
    except BadProxyResponse as e:
        log.info("%s returned a malformed proxy response: %s", resolved.function, e)
        return json_response({"error": f"the function's response is malformed: {e}", "code": "BadGateway"},
                             status=502, headers=headers)
    response = mapped.to_response()
    response.headers["x-amzn-requestid"] = reply.id
    return response
