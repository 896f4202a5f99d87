"""GET /openapi.json: the management API's OpenAPI document (see gateway.openapi)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import gateway


async def openapi_json(request: Request) -> Response:
    g = gateway(request)
    spec = g.extras.get("openapi")
    if spec is None:
        from stoker.platform.gateway.app import ROUTE_MODULES

        spec = g.extras["openapi"] = O.build_spec(ROUTE_MODULES)
    return json_response(spec)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]

openapi = {
    "/openapi.json": {"get": O.operation("This document", None, {"200": ("the OpenAPI document", {"type": "object"})},
                                         tag="platform")},
}
