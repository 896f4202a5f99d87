"""What every route reaches through `request.app.state.gateway`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from stoker.platform.context import PlatformContext
from stoker.platform.gateway.auth import PRINCIPAL_SCOPE_KEY, Principal, TokenVerifier
from stoker.platform.gateway.invoker import Invoker


@dataclass
class GatewayState:
    ctx: PlatformContext
    tokens: TokenVerifier
    invoker: Invoker
    ready: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def authorize(request: Request, right: str = "admin") -> tuple[GatewayState, Principal]:
    from stoker.errors import Forbidden

    g = gateway(request)
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) or await g.tokens.authenticate(request)
    if not principal.may(right):
        raise Forbidden(f"the token {principal.name!r} does not have the right {right!r}")
    return g, principal
