"""Dead letters over HTTP.

    GET  /api/functions/{name}/dlq              the function's dead letters, oldest first
    POST /api/functions/{name}/dlq/redrive      body (optional): {"id": INVOCATION_ID}; all when absent
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.deadletters import list_dead_letters, redrive
from stoker.platform.gateway.httputil import json_response, parse_json, read_body
from stoker.platform.gateway.state import authorize


async def list_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    name = request.path_params["name"]
    await g.ctx.directory.require(name)
    return json_response([d.to_json() for d in await list_dead_letters(g.ctx, name)])


async def redrive_route(request: Request) -> Response:
    g, _ = await authorize(request, "invoke")
    body = await read_body(request, 64 * 1024)
    invocation_id = None
    if body.strip():
        data = parse_json(body)
        if not isinstance(data, dict) or not isinstance(data.get("id", ""), str):
            raise InvalidInput('the body must be {"id": "<invocation id>"} or empty (redrive all)')
        invocation_id = data.get("id") or None
    moved = await redrive(g.ctx, request.path_params["name"], invocation_id)
    return json_response({"redriven": moved, "count": len(moved)})


routes = [
    Route("/api/functions/{name}/dlq", list_route, methods=["GET"]),
    Route("/api/functions/{name}/dlq/redrive", redrive_route, methods=["POST"]),
]
