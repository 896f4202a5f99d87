"""The routes functions declare in their manifests (`[[triggers]] type = "http"`).

This module's route matches every path, so it must come last in the gateway's route
list: it answers what no built-in route took. A path no route knows is 404; a path a
route knows with another method is 405 (with Allow), for built-in routes as well.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from stoker.platform.gateway.http_routes import ALL_METHODS, http_routes, serve
from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import authorize, gateway


def _builtin_methods(request: Request) -> list[str]:
    """The methods a built-in route allows on this path (it matched the path, not the method)."""
    allowed: set[str] = set()
    for route in request.app.router.routes:
        if route is CATCH_ALL:
            continue
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL and isinstance(route, Route) and route.methods:
            allowed |= route.methods
    return sorted(allowed)


async def manifest_route(request: Request) -> Response:
    g = gateway(request)
    found, allowed = (await http_routes(g).table()).match(request.method, request.url.path)
    if found is None:
        allowed = sorted(set(allowed) | set(_builtin_methods(request)))
        if allowed:
            return json_response({"error": f"{request.method} is not allowed on {request.url.path}: "
                                           f"use {', '.join(allowed)}", "code": "405"},
                                 status=405, headers={"allow": ", ".join(allowed)})
        return json_response({"error": f"no route {request.method} {request.url.path}", "code": "404"},
                             status=404)
    route = found.route
    if not route.public:
        await authorize(request, "invoke")
    resolved = await g.invoker.resolve(route.function, route.qualifier)
    return await serve(request, g, resolved, route.pattern.path, found.params, public=route.public)


CATCH_ALL = Route("/{path:path}", manifest_route, methods=ALL_METHODS)
routes = [CATCH_ALL]
