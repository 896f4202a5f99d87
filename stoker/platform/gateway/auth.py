"""Bearer tokens: who may call the gateway.

The admin token (STOKER_TOKEN, or the one generated for STOKER_HOME) is always
accepted. Tokens are compared in constant time. Every path under /api/ needs a valid
token before it is routed (`ManagementTokens`); each route then checks its right.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from stoker.errors import Unauthorized


@dataclass(frozen=True)
class Principal:
    name: str
    rights: frozenset[str]

    def may(self, right: str) -> bool:
        return "admin" in self.rights or right in self.rights


ADMIN = Principal("admin", frozenset({"admin"}))


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class TokenVerifier:
    def __init__(self, admin_token: str) -> None:
        self._admin = admin_token.encode()

    async def verify(self, token: str) -> Principal | None:
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN
        return None

    async def authenticate(self, request: Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            raise Unauthorized("this route needs a token: send 'Authorization: Bearer <token>' "
                               "(the token is in $STOKER_HOME/endpoint.json)")
        principal = await self.verify(token)
        if principal is None:
            raise Unauthorized("the token is not valid: check STOKER_TOKEN or $STOKER_HOME/endpoint.json")
        return principal


#: paths whose every route needs a valid token, checked before routing: a route that
#: forgets to authorize still answers 401
PROTECTED_PREFIXES = ("/api/",)
PRINCIPAL_SCOPE_KEY = "stoker.principal"


class ManagementTokens:
    """ASGI middleware: a valid bearer token for every path under PROTECTED_PREFIXES."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path.startswith(PROTECTED_PREFIXES) or path + "/" in PROTECTED_PREFIXES):
            request = Request(scope)
            verifier: TokenVerifier = scope["app"].state.gateway.tokens
            try:
                scope[PRINCIPAL_SCOPE_KEY] = await verifier.authenticate(request)
            except Unauthorized as e:
                body = orjson.dumps(e.to_json())
                await send({"type": "http.response.start", "status": e.status_code,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
