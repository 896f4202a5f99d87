"""API tokens (admin only).

    POST   /api/tokens            {"name": "ci", "rights": ["deploy", "read"]} -> 201 with the token, shown once
    GET    /api/tokens            live tokens (?revoked=true: revoked ones too); never the secrets
    DELETE /api/tokens/{name}     revoke: it stops working at once, on every gateway
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput, PlatformUnavailable
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response, query_flag
from stoker.platform.gateway.routes.versions import json_object
from stoker.platform.gateway.state import GatewayState, authorize
from stoker.platform.tokens import store as tokens


def _store(g: GatewayState) -> tokens.TokenStore:
    if g.tokens.store is None or g.tokens.redis is None:
        raise PlatformUnavailable("this gateway runs without a database, so it cannot manage tokens")
    return g.tokens.store


async def create_token(request: Request) -> Response:
    g, principal = await authorize(request, "admin")
    store = _store(g)
    data = await json_object(request)
    unknown = set(data) - {"name", "rights"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}: a token takes name and rights")
    name, rights = data.get("name"), data.get("rights")
    if not isinstance(name, str):
        raise InvalidInput('give the token a name: {"name": "ci", "rights": ["deploy"]}')
    if isinstance(rights, str):
        rights = [r.strip() for r in rights.split(",") if r.strip()]
    if not isinstance(rights, list) or not all(isinstance(r, str) for r in rights):
        raise InvalidInput(f"rights must be a list of {', '.join(tokens.RIGHTS)}")
    info, secret = await asyncio.to_thread(store.create, name, rights, principal.name)
    assert g.tokens.redis is not None
    await tokens.project_one(g.tokens.redis, g.ctx.keys, tokens.token_hash(secret), info.name, info.rights)
    g.tokens.forget()
    return json_response({**info.to_json(), "token": secret}, status=201)


async def list_tokens(request: Request) -> Response:
    g, _ = await authorize(request, "admin")
    revoked = query_flag(request, "revoked")
    infos = await asyncio.to_thread(_store(g).all, revoked)
    return json_response([i.to_json() for i in infos])


async def revoke_token(request: Request) -> Response:
    g, _ = await authorize(request, "admin")
    info, digest = await asyncio.to_thread(_store(g).revoke, request.path_params["name"])
    assert g.tokens.redis is not None
    g.tokens.forget()
    try:
        await tokens.unproject_one(g.tokens.redis, g.ctx.keys, digest)
    except (RedisError, OSError) as e:
        raise PlatformUnavailable(f"token {info.name!r} is revoked in the database, but Redis could not be told "
                                  f"({e}); gateways re-read their tokens when they reconnect to Redis") from None
    return json_response(info.to_json())


routes = [
    Route("/api/tokens", create_token, methods=["POST"]),
    Route("/api/tokens", list_tokens, methods=["GET"]),
    Route("/api/tokens/{name}", revoke_token, methods=["DELETE"]),
]

openapi = {
    "/api/tokens": {
        "post": O.operation("Create a token (its secret is in the answer, and only there)", "admin",
                            {"201": ("created", O.ref("TokenCreated"))}, errors=("400", "409", "413"),
                            body=O.json_body(O.ref("TokenRequest")), tag="tokens"),
        "get": O.operation("Tokens (never their secrets)", "admin", {"200": ("the tokens", O.array(O.ref("Token")))},
                           errors=("400",), tag="tokens",
                           parameters=[O.query_param("revoked", O.BOOLEAN, "include revoked tokens")]),
    },
    "/api/tokens/{name}": {
        "delete": O.operation("Revoke a token: it stops working at once", "admin",
                              {"200": ("revoked", O.ref("Token"))}, errors=("404",), tag="tokens",
                              parameters=[O.path_param("name")]),
    },
}
