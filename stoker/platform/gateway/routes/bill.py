"""The bill over HTTP.

    GET /api/bill   ?since= &until= | ?month=YYYY-MM   (default: this calendar month so far, UTC)
                    &by=function|day   &free_tier=true|false
    -> {"functions" (or "days"): [{function, requests, gb_seconds, request_cost, compute_cost, cost}],
        "months": [...], "free_tier": {...}, "requests", "gb_seconds", "subtotal", "total_cost", ...}

Figures are unrounded. How they are computed: stoker.platform.ledger.billing.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize
from stoker.platform.ledger.billing import GROUPINGS, compute_bill, default_period, parse_month
from stoker.platform.timeparse import parse_time

PARAMS = ("since", "until", "month", "by", "free_tier")


async def bill_route(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    q = request.query_params
    unknown = sorted(set(q) - set(PARAMS))
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}: use {', '.join(PARAMS)}")
    now = dt.datetime.now(dt.UTC)
    since, until = default_period(now)
    if q.get("month"):
        if q.get("since") or q.get("until"):
            raise InvalidInput("month cannot go with since or until: give a month, or a since/until range")
        since, until = parse_month(q["month"])
    if q.get("since"):
        since = parse_time(q["since"], "since", now)
    if q.get("until"):
        until = parse_time(q["until"], "until", now)
    by = q.get("by", "function")
    if by not in GROUPINGS:
        raise InvalidInput(f"by {by!r} is not a grouping: use {' or '.join(GROUPINGS)}")
    free_raw = q.get("free_tier", "true").lower()
    if free_raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"free_tier {q['free_tier']!r} is not a yes or no: use free_tier=true or free_tier=false")
    if g.ctx.engine is None:
        raise InvalidInput("this gateway runs without a ledger database (STOKER_DB_URL)")
    bill = await asyncio.to_thread(compute_bill, g.ctx.engine, since, until, by, free_raw in ("true", "1"))
    return json_response(bill)


routes = [Route("/api/bill", bill_route, methods=["GET"])]

openapi = {
    "/api/bill": {
        "get": O.operation(
            "The bill: requests and GB-seconds from the ledger, priced, with the monthly free tier", "read",
            {"200": ("the bill (figures unrounded); lines under `functions` or `days` as `by` says",
                     O.ref("Bill"))}, errors=("400",), tag="ledger",
            parameters=[O.query_param("since", O.WHEN, "ISO 8601, or a duration ago (default: the start of "
                                                       "this month, UTC)"),
                        O.query_param("until", O.WHEN, "ISO 8601, or a duration ago (default: now)"),
                        O.query_param("month", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                                      "a calendar month, YYYY-MM (not with since or until)"),
                        O.query_param("by", {"type": "string", "enum": list(GROUPINGS)}, "default function"),
                        O.query_param("free_tier", O.BOOLEAN, "apply the free tier (default true)")]),
    },
}
