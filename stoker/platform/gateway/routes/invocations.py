"""The ledger over HTTP.

    GET    /api/invocations          ?function= &version= &status= &trigger= &node= &cold=true|false
                                      &since= &until= &limit=   -> a list of rows, newest first
    GET    /api/invocations/export   the same filters, no limit -> NDJSON, one row a line, oldest first
    GET    /api/invocations/{id}     the row, `attempts` (one per try) and `logs` (its lines)
    DELETE /api/invocations          ?older_than=30d [&dry_run=true] -> {"before", "invocations", "attempts"}

Times are ISO 8601 or a duration ago (`10m`); a bad value or an unknown parameter is a 400
naming the parameter and the accepted forms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.context import PlatformContext
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize
from stoker.platform.ledger.queries import (
    DEFAULT_LIMIT,
    FILTER_PARAMS,
    MAX_LIMIT,
    export_invocations,
    filter_from_params,
    get_invocation,
    list_invocations,
)
from stoker.platform.ledger.records import STATUSES
from stoker.platform.ledger.retention import cutoff, prune
from stoker.platform.logstream import read_logs
from stoker.platform.timeparse import iso

LOG_WINDOW_BEFORE_MS = 60_000  # generous: the gateway, nodes and Redis keep their own clocks
LOG_WINDOW_AFTER_MS = 120_000


def _engine(request: Request) -> Any:
    engine = request.app.state.gateway.ctx.engine
    if engine is None:
        raise InvalidInput("this gateway runs without a ledger database (STOKER_DB_URL)")
    return engine


async def list_route(request: Request) -> Response:
    await authorize(request, "read")
    f = filter_from_params(request.query_params)
    rows = await asyncio.to_thread(list_invocations, _engine(request), f)
    return json_response(rows)


async def export_route(request: Request) -> Response:
    await authorize(request, "read")
    f = filter_from_params(request.query_params, allowed=tuple(p for p in FILTER_PARAMS if p != "limit"))
    engine = _engine(request)
    pages = export_invocations(engine, f)

    async def stream() -> AsyncIterator[bytes]:
        while True:
            page = await asyncio.to_thread(next, pages, None)
            if page is None:
                return
            yield b"".join(orjson.dumps(row) + b"\n" for row in page)

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def _ms(value: str | None) -> int | None:
    if value is None:
        return None
    return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


async def invocation_detail(ctx: PlatformContext, engine: Any, invocation_id: str) -> dict[str, Any]:
    """The ledger row, its attempts, retained payload and result, and `logs` (rendered lines)."""
    row = await asyncio.to_thread(get_invocation, engine, invocation_id)
    # log chunks are stamped when each try completes: search from receipt to the end (plus slack)
    received, ended = _ms(row.get("received_at")), _ms(row.get("ended_at"))
    since = received - LOG_WINDOW_BEFORE_MS if received is not None else None
    until = ended + LOG_WINDOW_AFTER_MS if ended is not None and row["status"] != "queued" else None
    lines, _ = await read_logs(ctx.redis, ctx.keys, row["function"], since_ms=since, until_ms=until,
                               request_id=row["id"])
    row["logs"] = [line.render() for line in lines]
    return row


async def show_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    return json_response(await invocation_detail(g.ctx, _engine(request), request.path_params["id"]))


async def prune_route(request: Request) -> Response:
    await authorize(request, "admin")
    q = request.query_params
    unknown = sorted(set(q) - {"older_than", "dry_run"})
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}: use older_than and dry_run")
    if not q.get("older_than"):
        raise InvalidInput("older_than is required: say how much ledger to keep, e.g. older_than=30d")
    before = cutoff(q["older_than"], "older_than")
    dry_raw = q.get("dry_run", "false").lower()
    if dry_raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"dry_run {q['dry_run']!r} is not a yes or no: use dry_run=true or dry_run=false")
    result = await asyncio.to_thread(prune, _engine(request), before, dry_raw in ("true", "1"))
    return json_response({"before": iso(result.before), "invocations": result.invocations,
                          "attempts": result.attempts, "dry_run": result.dry_run})


routes = [
    Route("/api/invocations", list_route, methods=["GET"]),
    Route("/api/invocations", prune_route, methods=["DELETE"]),
    Route("/api/invocations/export", export_route, methods=["GET"]),
    Route("/api/invocations/{id}", show_route, methods=["GET"]),
]

_filters = [O.query_param("function", O.NAME), O.query_param("version", {"type": "string", "pattern": "^[0-9]{1,9}$"},
                                                                 "the version that ran (never an alias)"),
            O.query_param("status", {"type": "string", "enum": list(STATUSES)}),
            O.query_param("trigger"), O.query_param("node"),
            O.query_param("cold", O.BOOLEAN, "cold starts only (true) or warm ones only (false)"),
            O.query_param("since", O.WHEN, "received at or after: ISO 8601, or a duration ago: 30s, 10m, 2h, 7d"),
            O.query_param("until", O.WHEN, "received before: ISO 8601, or a duration ago")]
openapi = {
    "/api/invocations": {
        "get": O.operation(
            "Invocations from the ledger, newest first", "read",
            {"200": ("the rows", O.array(O.ref("Invocation")))}, errors=("400",), tag="ledger",
            parameters=[*_filters, O.query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                                                 f"at most this many rows (default {DEFAULT_LIMIT})")]),
        "delete": O.operation(
            "Prune the ledger: delete invocations (and their attempts) received before a cutoff", "admin",
            {"200": ("what was deleted (or, on a dry run, would be)", O.ref("Pruned"))}, errors=("400",),
            tag="ledger",
            parameters=[O.query_param("older_than", {"type": "string", "pattern": "^[0-9]{1,6}(s|m|h|d|w)$"},
                                      "keep this much: delete rows received longer ago than this (30d)",
                                      required=True),
                        O.query_param("dry_run", O.BOOLEAN, "only count what would be deleted")]),
    },
    "/api/invocations/export": {
        "get": O.operation(
            "Every invocation matching the filters, oldest first, as NDJSON (one row a line)", "read",
            {"200": ("the rows", O.Content({"application/x-ndjson": {"schema": {
                "type": "string", "description": "one JSON `Invocation` a line"}}}))},
            errors=("400",), tag="ledger", parameters=_filters),
    },
    "/api/invocations/{id}": {
        "get": O.operation("One invocation with its attempts and log lines", "read",
                           {"200": ("the invocation", O.ref("InvocationDetail"))}, errors=("404",), tag="ledger",
                           parameters=[O.path_param("id")]),
    },
}
