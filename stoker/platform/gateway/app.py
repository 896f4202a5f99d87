"""The gateway's ASGI app: routes, error handling, and what runs while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from stoker.platform.bus import now_ms
from stoker.platform.context import PlatformContext
from stoker.platform.gateway.auth import ManagementTokens, TokenVerifier
from stoker.platform.gateway.httputil import exception_handlers
from stoker.platform.gateway.invoker import Invoker
from stoker.platform.gateway.limits import RequestLimits
from stoker.platform.gateway.state import GatewayState
from stoker.platform.registry.deploy import sync_projection
from stoker.platform.tokens.store import TokenStore

log = logging.getLogger(__name__)

#: route modules, in matching order; each exports `routes` (a catch-all, if any, goes last)
ROUTE_MODULES = [
    "stoker.platform.gateway.routes.health",
    "stoker.platform.gateway.routes.functions",
    "stoker.platform.gateway.routes.invocations",
    "stoker.platform.gateway.routes.logs",
    "stoker.platform.gateway.routes.bill",
    "stoker.platform.gateway.routes.bundles",
    "stoker.platform.gateway.routes.deadletters",
    "stoker.platform.gateway.routes.cron",
    "stoker.platform.gateway.routes.queues",
    "stoker.platform.gateway.routes.versions",
    "stoker.platform.gateway.routes.tokens",
    "stoker.platform.gateway.routes.metrics",
    "stoker.platform.gateway.routes.openapi",
    "stoker.platform.gateway.routes.lambda_api",
    "stoker.platform.gateway.routes.fn",
    "stoker.platform.gateway.console.routes",
    # the routes functions declare in their manifests: matches every path, so it stays last
    "stoker.platform.gateway.routes.function_routes",
]


def collect_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).routes)
    return routes


def create_app(ctx: PlatformContext, admin_token: str, advertise_url: str | None = None,
               rebuild_projection: bool = True) -> Starlette:
    token_store = TokenStore(ctx.engine) if ctx.engine is not None else None
    tokens = TokenVerifier(admin_token, ctx.redis, ctx.keys, token_store)
    state = GatewayState(ctx=ctx, tokens=tokens, invoker=Invoker(ctx))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ctx.bus.ensure_intake_groups()
        if rebuild_projection and ctx.registry is not None:
            await sync_projection(ctx)
        await ctx.directory.start()
        await tokens.start()
        await state.invoker.start()
        announcer = asyncio.create_task(_announce(ctx, advertise_url)) if advertise_url else None
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            if announcer is not None:
                announcer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await announcer
            await state.invoker.stop()
            await tokens.stop()
            await ctx.directory.stop()

    app = Starlette(
        routes=collect_routes(),
        lifespan=lifespan,
        middleware=[Middleware(RequestLimits), Middleware(ManagementTokens)],
        exception_handlers=exception_handlers(),
    )
    app.state.gateway = state
    return app


async def _announce(ctx: PlatformContext, url: str) -> None:
    """Tell nodes where to fetch bundles from (and that this gateway is alive)."""
    while True:
        with contextlib.suppress(Exception):
            await ctx.redis.hset(ctx.keys.gateways, url, now_ms())
        await asyncio.sleep(5)
