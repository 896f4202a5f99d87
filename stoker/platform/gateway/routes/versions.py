"""Versions, aliases, rollback and deletion through the management API.

    GET    /api/functions/{name}/versions               every version, newest last
    DELETE /api/functions/{name}/versions/{version}     delete one (409 while an alias routes to it)
    DELETE /api/functions/{name}                        delete the function, its versions and aliases
    GET    /api/functions/{name}/aliases                every alias
    GET    /api/functions/{name}/aliases/{alias}        one alias
    PUT    /api/functions/{name}/aliases/{alias}        {"version": 3, "weights": {"4": 0.1}}: create or move
    DELETE /api/functions/{name}/aliases/{alias}
    POST   /api/functions/{name}/rollback               {"alias": "prod"?, "to": 2?}
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput, NotFound
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response, parse_json, read_body
from stoker.platform.gateway.state import authorize
from stoker.platform.registry import lifecycle
from stoker.platform.registry.store import FunctionState

#: small JSON bodies only on these routes
BODY_LIMIT = 64 * 1024


def version_number(value: Any, what: str = "version") -> int:
    """A version given as 3 or "3" (not $LATEST or an alias: those are not numbered versions)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a version number, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON does not tell 3 from 3.0
    if isinstance(value, int) and 0 < value < 1_000_000_000:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0 and len(value) < 10:
        return int(value)
    raise InvalidInput(f"{what} {value!r} is not a version number: give a published version such as 3 "
                       "(see `stoker versions NAME`)")


def weights_arg(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput('weights must be an object of version -> share, e.g. {"4": 0.1}')
    out: dict[int, float] = {}
    for k, v in value.items():
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise InvalidInput(f"the weight of version {k} must be a number from 0 to 1, not {v!r}")
        out[version_number(k, "a weighted version")] = float(v)
    return out


async def json_object(request: Request) -> dict[str, Any]:
    body = await read_body(request, BODY_LIMIT)
    data = parse_json(body) if body.strip() else {}
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return data


def versions_json(state: FunctionState) -> list[dict[str, Any]]:
    rows = []
    for number, info in sorted(state.versions.items()):
        row = info.to_json()
        row["latest"] = number == state.latest
        row["aliases"] = sorted(a.name for a in state.aliases.values() if number in a.versions())
        rows.append(row)
    return rows


async def list_versions(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    state = await asyncio.to_thread(g.ctx.require_registry().state, request.path_params["name"])
    return json_response(versions_json(state))


async def delete_version(request: Request) -> Response:
    g, _ = await authorize(request, "deploy")
    version = version_number(request.path_params["version"])
    result = await lifecycle.delete_version(g.ctx, request.path_params["name"], version)
    return json_response(result.to_json())


async def delete_function(request: Request) -> Response:
    g, _ = await authorize(request, "deploy")
    result = await lifecycle.delete_function(g.ctx, request.path_params["name"])
    return json_response(result.to_json())


async def list_aliases(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    state = await asyncio.to_thread(g.ctx.require_registry().state, request.path_params["name"])
    return json_response([a.to_json() for _, a in sorted(state.aliases.items())])


async def show_alias(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    name, alias = request.path_params["name"], request.path_params["alias"]
    state = await asyncio.to_thread(g.ctx.require_registry().state, name)
    if alias not in state.aliases:
        raise NotFound(f"function {name!r} has no alias {alias!r}: see `stoker alias ls {name}`")
    return json_response(state.aliases[alias].to_json())


async def put_alias(request: Request) -> Response:
    g, _ = await authorize(request, "deploy")
    data = await json_object(request)
    unknown = set(data) - {"version", "weights"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}: an alias takes version and weights")
    if "version" not in data:
        raise InvalidInput('give the version the alias points at: {"version": 3}')
    change = await lifecycle.set_alias(g.ctx, request.path_params["name"], request.path_params["alias"],
                                       version_number(data["version"]), weights_arg(data.get("weights")))
    body = {**change.alias.to_json(), "message": lifecycle.describe_alias_change(change)}
    return json_response(body, status=201 if change.before is None else 200)


async def delete_alias(request: Request) -> Response:
    g, _ = await authorize(request, "deploy")
    name, alias = request.path_params["name"], request.path_params["alias"]
    info = await lifecycle.delete_alias(g.ctx, name, alias)
    return json_response({**info.to_json(), "message": f"deleted alias {alias} of {name}"})


async def rollback(request: Request) -> Response:
    g, principal = await authorize(request, "deploy")
    data = await json_object(request)
    unknown = set(data) - {"alias", "to"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}: a rollback takes alias and to")
    alias = data.get("alias")
    if alias is not None and not isinstance(alias, str):
        raise InvalidInput(f"alias must be a string, not {alias!r}")
    to = version_number(data["to"], "to") if data.get("to") is not None else None
    result = await lifecycle.rollback(g.ctx, request.path_params["name"], alias or None, to, by=principal.name)
    return json_response(result.to_json())


routes = [
    Route("/api/functions/{name}", delete_function, methods=["DELETE"]),
    Route("/api/functions/{name}/versions", list_versions, methods=["GET"]),
    Route("/api/functions/{name}/versions/{version}", delete_version, methods=["DELETE"]),
    Route("/api/functions/{name}/aliases", list_aliases, methods=["GET"]),
    Route("/api/functions/{name}/aliases/{alias}", show_alias, methods=["GET"]),
    Route("/api/functions/{name}/aliases/{alias}", put_alias, methods=["PUT"]),
    Route("/api/functions/{name}/aliases/{alias}", delete_alias, methods=["DELETE"]),
    Route("/api/functions/{name}/rollback", rollback, methods=["POST"]),
]

_name = O.path_param("name", O.NAME, "the function")
_alias = O.path_param("alias", O.ALIAS, "the alias")
openapi = {
    "/api/functions/{name}": {
        "delete": O.operation("Delete a function: its versions, aliases, triggers and routes", "deploy",
                              {"200": ("deleted", O.ref("Deleted"))}, errors=("404",), parameters=[_name]),
    },
    "/api/functions/{name}/versions": {
        "get": O.operation("A function's versions, oldest first", "read",
                           {"200": ("the versions", O.array(O.ref("VersionListed")))}, errors=("404",),
                           parameters=[_name]),
    },
    "/api/functions/{name}/versions/{version}": {
        "delete": O.operation("Delete one version (refused while an alias routes to it)", "deploy",
                              {"200": ("deleted", O.ref("Deleted"))}, errors=("400", "404", "409"),
                              parameters=[_name, O.path_param("version", {"type": "string",
                                                                          "pattern": "^[1-9][0-9]{0,8}$"})]),
    },
    "/api/functions/{name}/aliases": {
        "get": O.operation("A function's aliases", "read", {"200": ("the aliases", O.array(O.ref("Alias")))},
                           errors=("404",), parameters=[_name]),
    },
    "/api/functions/{name}/aliases/{alias}": {
        "get": O.operation("One alias", "read", {"200": ("the alias", O.ref("Alias"))}, errors=("404",),
                           parameters=[_name, _alias]),
        "put": O.operation("Create or move an alias, optionally routing shares to other versions", "deploy",
                           {"201": ("created", O.ref("AliasChanged")), "200": ("moved", O.ref("AliasChanged"))},
                           errors=("400", "404", "413"), parameters=[_name, _alias],
                           body=O.json_body(O.ref("AliasSet"))),
        "delete": O.operation("Delete an alias", "deploy", {"200": ("deleted", O.ref("AliasChanged"))},
                              errors=("404",), parameters=[_name, _alias]),
    },
    "/api/functions/{name}/rollback": {
        "post": O.operation("Move an alias back to its state before its last change (or to a version); "
                            "without an alias, make $LATEST run the previous version's code again", "deploy",
                            {"200": ("rolled back", O.ref("RolledBack"))}, errors=("400", "404", "409", "413"),
                            parameters=[_name], body=O.json_body(O.ref("RollbackRequest"), required=False)),
    },
}
