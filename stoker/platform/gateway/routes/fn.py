"""Every function over HTTP, with API Gateway proxy events.

    ANY /fn/{name}              resource /fn/{name}
    ANY /fn/{name}/{proxy+}     resource /fn/{name}/{proxy+}

`name` may carry a qualifier (`/fn/shop:prod/...`). A token with the invoke right is
needed unless the function's http trigger without a route says `public = true`; that
trigger's `qualifier` is the default version or alias.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.platform.gateway.http_routes import ALL_METHODS, http_routes, serve
from stoker.platform.gateway.state import authorize, gateway
from stoker.platform.registry.projection import split_qualified


async def fn_route(request: Request) -> Response:
    g = gateway(request)
    name, qualifier = split_qualified(request.path_params["name"])
    settings = (await http_routes(g).table()).settings(name)
    if not settings.public:
        await authorize(request, "invoke")
    resolved = await g.invoker.resolve(name, qualifier or settings.qualifier)
    params = {"name": request.path_params["name"]}
    resource = "/fn/{name}"
    if "proxy" in request.path_params:
        params["proxy"] = request.path_params["proxy"]
        resource = "/fn/{name}/{proxy+}"
    return await serve(request, g, resolved, resource, params, public=settings.public)


routes = [
    Route("/fn/{name}", fn_route, methods=ALL_METHODS),
    Route("/fn/{name}/{proxy:path}", fn_route, methods=ALL_METHODS),
]
