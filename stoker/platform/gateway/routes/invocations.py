"""The ledger over HTTP.

    GET /api/invocations        ?function= &version= &status= &trigger= &node= &cold= &since= &until= &limit=
    GET /api/invocations/{id}   the row, its attempts and its log lines
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize
from stoker.platform.ledger.queries import MAX_LIMIT, InvocationFilter, get_invocation, list_invocations
from stoker.platform.ledger.records import STATUSES
from stoker.platform.logstream import read_logs
from stoker.platform.timeparse import parse_time


def filter_from_query(request: Request) -> InvocationFilter:
    q = request.query_params
    limit_raw = q.get("limit", "50")
    if not (limit_raw.isascii() and limit_raw.isdigit()):
        raise InvalidInput(f"limit {limit_raw!r} is not a whole number")
    cold_raw = q.get("cold")
    cold = None
    if cold_raw is not None:
        if cold_raw.lower() not in ("true", "false", "1", "0"):
            raise InvalidInput(f"cold {cold_raw!r} must be true or false")
        cold = cold_raw.lower() in ("true", "1")
    return InvocationFilter(
        function=q.get("function"), version=q.get("version"), status=q.get("status"), trigger=q.get("trigger"),
        node=q.get("node"), cold=cold,
        since=parse_time(q["since"], "since") if q.get("since") else None,
        until=parse_time(q["until"], "until") if q.get("until") else None,
        limit=int(limit_raw),
    )


async def list_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    f = filter_from_query(request)
    assert g.ctx.engine is not None
    rows = await asyncio.to_thread(list_invocations, g.ctx.engine, f)
    return json_response(rows)


async def show_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    assert g.ctx.engine is not None
    row = await asyncio.to_thread(get_invocation, g.ctx.engine, request.path_params["id"])
    lines, _ = await read_logs(g.ctx.redis, g.ctx.keys, row["function"], request_id=row["id"])
    row["logs"] = [line.text for line in lines]
    return json_response(row)


routes = [
    Route("/api/invocations", list_route, methods=["GET"]),
    Route("/api/invocations/{id}", show_route, methods=["GET"]),
]

openapi = {
    "/api/invocations": {
        "get": O.operation(
            "Invocations from the ledger, newest first", "read",
            {"200": ("the rows", O.array(O.ref("Invocation")))}, errors=("400",), tag="ledger",
            parameters=[O.query_param("function"), O.query_param("version"),
                        O.query_param("status", {"type": "string", "enum": list(STATUSES)}),
                        O.query_param("trigger"), O.query_param("node"),
                        O.query_param("cold", O.BOOLEAN),
                        O.query_param("since", O.WHEN, "ISO 8601, or a duration ago: 30s, 10m, 2h, 7d"),
                        O.query_param("until", O.WHEN, "ISO 8601, or a duration ago"),
                        O.query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})]),
    },
    "/api/invocations/{id}": {
        "get": O.operation("One invocation with its attempts and log lines", "read",
                           {"200": ("the invocation", O.ref("InvocationDetail"))}, errors=("404",), tag="ledger",
                           parameters=[O.path_param("id")]),
    },
}
