"""Function logs over HTTP.

    GET /api/functions/{name}/logs   ?tail=N &since= &request_id= &follow=true
    Without follow: {"lines": [{timestamp, request_id, message}], "next": STREAM_ID}.
    With follow: NDJSON, one line object per line, as they are written, until the client leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response, query_flag
from stoker.platform.gateway.state import authorize
from stoker.platform.logstream import follow, read_logs
from stoker.platform.timeparse import parse_time


async def logs_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    name = request.path_params["name"]
    await g.ctx.directory.require(name)
    q = request.query_params
    tail = None
    if q.get("tail"):
        if not (q["tail"].isascii() and q["tail"].isdigit()):
            raise InvalidInput(f"tail {q['tail']!r} is not a whole number")
        tail = int(q["tail"])
    since_ms = int(parse_time(q["since"], "since").timestamp() * 1000) if q.get("since") else None
    request_id = q.get("request_id")
    lines, last = await read_logs(g.ctx.redis, g.ctx.keys, name, since_ms=since_ms, tail=tail,
                                  request_id=request_id)
    if not query_flag(request, "follow"):
        return json_response({"lines": [line.to_json() for line in lines], "next": last})

    async def stream() -> AsyncIterator[bytes]:
        for line in lines:
            yield orjson.dumps(line.to_json()) + b"\n"
        yield b"\n"  # lets the client know the follow has started
        async for line in follow(g.ctx.redis, g.ctx.keys, name, last, request_id):
            yield orjson.dumps(line.to_json()) + b"\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


routes = [Route("/api/functions/{name}/logs", logs_route, methods=["GET"])]

openapi = {
    "/api/functions/{name}/logs": {
        "get": O.operation(
            "A function's log lines (with follow=true: NDJSON as they are written)", "read",
            {"200": ("the lines, and the position to read on from", O.ref("Logs"))}, errors=("400", "404"),
            tag="ledger",
            parameters=[O.path_param("name", O.NAME), O.query_param("tail", {"type": "integer", "minimum": 0}),
                        O.query_param("since", O.WHEN, "ISO 8601, or a duration ago"),
                        O.query_param("request_id"), O.query_param("follow", O.BOOLEAN)]),
    },
}
