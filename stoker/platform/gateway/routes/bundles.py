"""GET /api/bundles/{hash}: nodes on other machines fetch bundles here (no shared disk)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.state import authorize


async def bundle_route(request: Request) -> Response:
    g, _ = await authorize(request, "admin")
    assert g.ctx.bundles is not None
    data = await asyncio.to_thread(g.ctx.bundles.get, request.path_params["hash"])
    return Response(data, media_type="application/zip")


routes = [Route("/api/bundles/{hash}", bundle_route, methods=["GET"])]

openapi = {
    "/api/bundles/{hash}": {
        "get": O.operation("A stored bundle by content hash (nodes on other machines fetch here)", "admin",
                           {"200": ("the zip", O.ZIP)}, errors=("404",), tag="platform",
                           parameters=[O.path_param("hash", {"type": "string", "pattern": "^[0-9a-f]{64}$"})]),
    },
}
