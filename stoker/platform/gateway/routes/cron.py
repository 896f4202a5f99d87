"""Cron schedules over HTTP.

    GET /api/cron   ?next=N (1-100, default 3)
    [{schedule, function, expression, timezone, missed, qualifier, last_fired, leader,
      next: [ISO 8601 UTC], next_local: [ISO 8601 in the schedule's time zone]}]
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize

MAX_NEXT = 100


async def list_cron(request: Request) -> Response:
    from stoker.triggers.cron.listing import list_schedules

    g, _ = await authorize(request, "read")
    raw = request.query_params.get("next", "3")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_NEXT:
        raise InvalidInput(f"next={raw!r} is not valid: give a whole number from 1 to {MAX_NEXT}")
    return json_response(await list_schedules(g.ctx, int(raw)))


routes = [Route("/api/cron", list_cron, methods=["GET"])]

openapi = {
    "/api/cron": {
        "get": O.operation("Every cron schedule of every function's newest version, with its next ticks", "read",
                           {"200": ("the schedules", O.array(O.ref("CronSchedule")))}, errors=("400",), tag="cron",
                           parameters=[O.query_param("next", {"type": "integer", "minimum": 1, "maximum": MAX_NEXT},
                                                     "how many upcoming ticks to show (default 3)")]),
    },
}
