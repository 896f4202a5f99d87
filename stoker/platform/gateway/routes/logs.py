"""Function logs over HTTP.

    GET /api/functions/{name}/logs   ?tail=N &since= &until= &request_id= &follow=true
    Without follow: {"lines": [{timestamp, request_id, message}], "next": STREAM_ID}: the
    newest chunks (or from `since` on); with request_id, that invocation's lines only.
    With follow: NDJSON, the same lines first, then one line object per new line as it is
    written, until the client leaves; an empty line every few seconds keeps an idle
    connection open (clients skip blank lines).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize
from stoker.platform.logstream import follow, read_logs
from stoker.platform.timeparse import parse_time

PARAMS = ("tail", "since", "until", "request_id", "follow")
MAX_TAIL = 1_000_000


def _ms(q: dict[str, str], name: str) -> int | None:
    return int(parse_time(q[name], name).timestamp() * 1000) if q.get(name) else None


async def logs_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    name = request.path_params["name"]
    q = dict(request.query_params)
    unknown = sorted(set(q) - set(PARAMS))
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}: use {', '.join(PARAMS)}")
    tail = None
    if q.get("tail"):
        if not (q["tail"].isascii() and q["tail"].isdigit()) or int(q["tail"]) > MAX_TAIL:
            raise InvalidInput(f"tail {q['tail']!r} is not a number of lines: use a whole number from 0 "
                               f"to {MAX_TAIL:,}")
        tail = int(q["tail"])
    since_ms, until_ms = _ms(q, "since"), _ms(q, "until")
    follow_raw = q.get("follow", "false").lower()
    if follow_raw not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidInput(f"follow {q['follow']!r} is not a yes or no: use follow=true or follow=false")
    following = follow_raw in ("true", "1", "yes")
    if following and until_ms is not None:
        raise InvalidInput("until and follow=true cannot go together: following reads lines as they come")
    await g.ctx.directory.require(name)
    request_id = q.get("request_id") or None
    lines, last = await read_logs(g.ctx.redis, g.ctx.keys, name, since_ms=since_ms, until_ms=until_ms, tail=tail,
                                  request_id=request_id)
    if not following:
        return json_response({"lines": [line.to_json() for line in lines], "next": last})

    async def stream() -> AsyncIterator[bytes]:
        for line in lines:
            yield orjson.dumps(line.to_json()) + b"\n"
        yield b"\n"  # lets the client know the follow has started
        async for batch in follow(g.ctx.redis, g.ctx.keys, name, last, request_id):
            yield b"".join(orjson.dumps(line.to_json()) + b"\n" for line in batch) or b"\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")


routes = [Route("/api/functions/{name}/logs", logs_route, methods=["GET"])]

openapi = {
    "/api/functions/{name}/logs": {
        "get": O.operation(
            "A function's log lines (with follow=true: NDJSON as they are written)", "read",
            {"200": ("the lines and the position to read on from; with follow=true, NDJSON: one `LogLine` a line "
                     "(an empty line keeps an idle connection open), until the client leaves",
                     O.Content({**O.json_content(O.ref("Logs")),
                                "application/x-ndjson": {"schema": {"type": "string"}}}))},
            errors=("400", "404"), tag="ledger",
            parameters=[O.path_param("name", O.NAME),
                        O.query_param("tail", {"type": "integer", "minimum": 0, "maximum": MAX_TAIL},
                                      "the newest lines only"),
                        O.query_param("since", O.WHEN, "ISO 8601, or a duration ago"),
                        O.query_param("until", O.WHEN, "ISO 8601, or a duration ago (not with follow)"),
                        O.query_param("request_id", None, "one invocation's lines only"),
                        O.query_param("follow", O.BOOLEAN, "keep the answer open and stream new lines")]),
    },
}
