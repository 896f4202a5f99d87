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
from stoker.platform.gateway import openapi as O
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
        unknown = sorted(set(data) - {"id"})
        if unknown:  # a mistyped field must not turn into "redrive them all"
            raise InvalidInput(f"unknown field(s) {', '.join(unknown)}: a redrive takes id (or an empty body "
                               "for all)")
        invocation_id = data.get("id") or None
    moved = await redrive(g.ctx, request.path_params["name"], invocation_id)
    return json_response({"redriven": moved, "count": len(moved)})


routes = [
    Route("/api/functions/{name}/dlq", list_route, methods=["GET"]),
    Route("/api/functions/{name}/dlq/redrive", redrive_route, methods=["POST"]),
]

_name = O.path_param("name", O.NAME, "the function")
openapi = {
    "/api/functions/{name}/dlq": {
        "get": O.operation("A function's dead letters (async events whose retries or maximum age ran out), "
                           "oldest first", "read", {"200": ("the dead letters", O.array(O.ref("DeadLetter")))},
                           errors=("404",), tag="ledger", parameters=[_name]),
    },
    "/api/functions/{name}/dlq/redrive": {
        "post": O.operation("Send dead letters back as new async invocations (all, or the one with `id`)", "invoke",
                            {"200": ("old id -> new id of each one sent back", O.ref("DeadLettersRedriven"))},
                            errors=("400", "404", "413"), tag="ledger", parameters=[_name],
                            body=O.json_body(O.ref("RedriveRequest"), required=False)),
    },
}
