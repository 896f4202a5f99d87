"""Bearer tokens: who may call the gateway.

The admin token (STOKER_TOKEN, or the one generated for STOKER_HOME) is always
accepted. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

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
