"""GET /metrics: Prometheus metrics of the whole cluster (no token: scrapers rarely send one).

What is exposed is described in stoker.platform.gateway.prometheus.
"""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import PlatformUnavailable
from stoker.platform.gateway.prometheus import render, take_snapshot
from stoker.platform.gateway.state import gateway


async def metrics(request: Request) -> Response:
    ctx = gateway(request).ctx
    try:
        snapshot = await take_snapshot(ctx.redis, ctx.keys, ctx.settings.node_dead_after)
    except (RedisError, OSError) as e:
        raise PlatformUnavailable(f"cannot read the metrics: Redis is not reachable ({e})") from None
    body, content_type = render(snapshot, request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})


routes = [Route("/metrics", metrics, methods=["GET"])]

openapi = {
    "/metrics": {"get": {
        "summary": "Prometheus metrics of the whole cluster", "tags": ["platform"], "security": [],
        "responses": {"200": {"description": "Prometheus text format (OpenMetrics when asked for)",
                              "content": {"text/plain": {"schema": {"type": "string"}},
                                          "application/openmetrics-text": {"schema": {"type": "string"}}}},
                      "503": {"description": "Redis is not reachable",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
    }},
}
