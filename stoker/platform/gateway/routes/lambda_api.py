"""The AWS Lambda API (2015-03-31), so that boto3 and the AWS CLI work with `endpoint_url`.

    POST   /2015-03-31/functions/{name}/invocations      Invoke (X-Amz-Invocation-Type, Qualifier, LogType)
    POST   /2015-03-31/functions                         CreateFunction (Code.ZipFile)
    GET    /2015-03-31/functions                         ListFunctions
    GET    /2015-03-31/functions/{name}                  GetFunction
    DELETE /2015-03-31/functions/{name}                  DeleteFunction (?Qualifier: one version)
    GET    /2015-03-31/functions/{name}/configuration    GetFunctionConfiguration
    PUT    /2015-03-31/functions/{name}/configuration    UpdateFunctionConfiguration
    PUT    /2015-03-31/functions/{name}/code             UpdateFunctionCode
    POST   /2015-03-31/functions/{name}/versions         PublishVersion
    GET    /2015-03-31/functions/{name}/versions         ListVersionsByFunction
    POST   /2015-03-31/functions/{name}/aliases          CreateAlias (RoutingConfig.AdditionalVersionWeights)
    GET    /2015-03-31/functions/{name}/aliases          ListAliases
    GET    /2015-03-31/functions/{name}/aliases/{alias}  GetAlias
    PUT    /2015-03-31/functions/{name}/aliases/{alias}  UpdateAlias
    DELETE /2015-03-31/functions/{name}/aliases/{alias}  DeleteAlias

Every deploy makes a numbered version, so PublishVersion returns the newest one.
Authentication: SigV4 whose access key id is a stoker token (see gateway.sigv4), or a
bearer token. Errors are AWS-shaped (gateway.lambda_shapes.aws_error).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import ConfigError, Conflict, Forbidden, InvalidInput, NotFound, StokerError
from stoker.platform.envelope import ASYNC_PAYLOAD_LIMIT, SYNC_PAYLOAD_LIMIT
from stoker.platform.gateway import lambda_manifest as LM
from stoker.platform.gateway.auth import Principal, bearer_token
from stoker.platform.gateway.httputil import check_json, json_response, parse_json, read_body
from stoker.platform.gateway.lambda_shapes import (
    DEFAULT_REGION,
    alias_configuration,
    aws_error,
    code_sha256,
    configuration,
    function_ref,
)
from stoker.platform.gateway.limits import allow_large_body
from stoker.platform.gateway.routes.versions import version_number, weights_arg
from stoker.platform.gateway.sigv4 import SigV4, parse_authorization, verify_signature
from stoker.platform.gateway.state import GatewayState, gateway
from stoker.platform.manifest import NAME_RE
from stoker.platform.registry import lifecycle
from stoker.platform.registry.bundles import MAX_ZIP
from stoker.platform.registry.deploy import deploy_bundle
from stoker.platform.registry.store import FunctionState, VersionInfo

PREFIX = "/2015-03-31/functions"
#: a JSON body carrying a base64 zip of up to MAX_ZIP bytes
CODE_BODY_LIMIT = MAX_ZIP * 4 // 3 + 1024 * 1024
# CreateFunction and UpdateFunctionCode carry the zip: past the gateway's usual body cap
allow_large_body("POST", r"^/2015-03-31/functions/?$", CODE_BODY_LIMIT)
allow_large_body("PUT", r"^/2015-03-31/functions/[^/]+/code/?$", CODE_BODY_LIMIT)
SMALL_BODY_LIMIT = 256 * 1024
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")

Handler = Callable[[Request], Awaitable[Response]]


def aws_errors(handler: Handler) -> Handler:
    """Answer stoker's errors in AWS's form, so boto3 raises the right ClientError."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except StokerError as e:
            return aws_error(e)

    return wrapper


class Call:
    """One authenticated Lambda API request: who calls, from which region, with what body."""

    def __init__(self, request: Request, g: GatewayState, principal: Principal, sig: SigV4 | None) -> None:
        self.request = request
        self.g = g
        self.principal = principal
        self.sig = sig
        self.region = sig.region if sig and sig.region else DEFAULT_REGION

    @classmethod
    async def start(cls, request: Request, right: str) -> Call:
        g = gateway(request)
        sig = parse_authorization(request.headers.get("authorization", ""))
        token = sig.access_key if sig is not None else bearer_token(request)
        principal = await g.tokens.principal(token)
        if not principal.may(right):
            raise Forbidden(f"the token {principal.name!r} does not have the right {right!r}")
        return cls(request, g, principal, sig)

    async def body(self, limit: int, what: str = "request body") -> bytes:
        """The body, with the signature checked over it when a SigV4 secret is configured."""
        data = await read_body(self.request, limit, what)
        secret = self.g.ctx.settings.sigv4_secret
        if secret and self.sig is not None:
            verify_signature(self.request, self.sig, data, secret)
        return data

    async def json(self, limit: int = SMALL_BODY_LIMIT) -> dict[str, Any]:
        data = await self.body(limit)
        value = parse_json(data, "the request body") if data.strip() else {}
        if not isinstance(value, dict):
            raise InvalidInput("the request body must be a JSON object")
        return value

    def name(self) -> tuple[str, str | None]:
        """The FunctionName in the path (a name, name:qualifier or an ARN) with ?Qualifier."""
        name, qualifier = function_ref(self.request.path_params["name"], self.request.query_params.get("Qualifier"))
        if not NAME_RE.match(name):
            raise NotFound(f"Function not found: {name}")
        return name, qualifier

    async def state(self, name: str) -> FunctionState:
        try:
            return await asyncio.to_thread(self.g.ctx.require_registry().state, name)
        except NotFound:
            raise NotFound(f"Function not found: {name}") from None

    def config(self, info: VersionInfo, label: str) -> dict[str, Any]:
        size = 0
        if self.g.ctx.bundles is not None:
            try:
                size = self.g.ctx.bundles.path(info.code_hash).stat().st_size
            except (OSError, StokerError):
                size = 0
        return configuration(info, label, self.region, size)


def _version_of(state: FunctionState, qualifier: str | None) -> tuple[VersionInfo, str]:
    """The version a qualifier names, and its label ($LATEST or the number)."""
    if qualifier in (None, "$LATEST"):
        return state.versions[state.latest], "$LATEST"
    assert qualifier is not None
    if qualifier.isascii() and qualifier.isdigit() and int(qualifier) in state.versions:
        return state.versions[int(qualifier)], str(int(qualifier))
    if qualifier in state.aliases:
        number = state.aliases[qualifier].version
        return state.versions[number], str(number)
    raise NotFound(f"Function not found: {state.name}:{qualifier}")


# -- Invoke -------------------------------------------------------------------------------

@aws_errors
async def invoke(request: Request) -> Response:
    call = await Call.start(request, "invoke")
    kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
    if kind not in INVOCATION_TYPES:
        raise ConfigError(f"X-Amz-Invocation-Type {kind!r} is not one of {', '.join(INVOCATION_TYPES)}")
    name, qualifier = call.name()
    resolved = await call.g.invoker.resolve(name, qualifier)
    limit = ASYNC_PAYLOAD_LIMIT if kind == "Event" else SYNC_PAYLOAD_LIMIT
    body = await call.body(limit, "payload")
    try:
        payload = check_json(body)
    except InvalidInput as e:
        raise InvalidInput(f"Could not parse request body into json: {e.message}") from None
    if kind == "DryRun":
        return Response(status_code=204)
    if kind == "Event":
        invocation_id = await call.g.invoker.invoke_async(resolved, payload, trigger="lambda")
        return Response(status_code=202, headers={"x-amzn-requestid": invocation_id})
    tail = request.headers.get("x-amz-log-type", "None") == "Tail"
    reply = await call.g.invoker.invoke(resolved, payload, trigger="lambda", meta={"tail": True} if tail else None)
    headers = {"x-amzn-requestid": reply.id, "x-amz-executed-version": reply.version}
    if not reply.ok:
        headers["x-amz-function-error"] = "Unhandled"
    if tail:
        log_tail = str(reply.meta.get("log_tail", "")).encode()[-4096:]
        headers["x-amz-log-result"] = base64.b64encode(log_tail).decode()
    return Response(reply.body, status_code=200, headers=headers, media_type="application/json")


# -- functions ----------------------------------------------------------------------------

def _zip_from(body: dict[str, Any]) -> bytes:
    code = body.get("Code", body)  # CreateFunction nests it in Code, UpdateFunctionCode does not
    if not isinstance(code, dict) or not code.get("ZipFile"):
        if isinstance(code, dict) and (code.get("S3Bucket") or code.get("ImageUri")):
            raise ConfigError("only ZipFile code is supported: send the zip itself (Code.ZipFile)")
        raise ConfigError("give the function's code as a zip in ZipFile")
    try:
        return base64.b64decode(code["ZipFile"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError("ZipFile is not valid base64") from None


async def _deploy(call: Call, data: bytes) -> int:
    result = await deploy_bundle(call.g.ctx, data, deployed_by=call.principal.name)
    return result.version


@aws_errors
async def create_function(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    body = await call.json(CODE_BODY_LIMIT)
    raw_name = body.get("FunctionName")
    if not isinstance(raw_name, str) or not raw_name:
        raise ConfigError("FunctionName is required")
    name, qualifier = function_ref(raw_name, None)
    if qualifier or not NAME_RE.match(name):
        raise ConfigError(f"FunctionName {raw_name!r} is not valid: use 1-64 letters, digits, '-' or '_'")
    if body.get("PackageType", "Zip") != "Zip":
        raise ConfigError("only PackageType Zip is supported")
    zipped = _zip_from(body)
    if name in await asyncio.to_thread(call.g.ctx.require_registry().function_names):
        raise Conflict(f"Function already exist: {name}")
    settings = LM.request_settings(body)
    own = LM.zip_manifest(zipped)
    if own is not None:
        LM.check_agrees(own, name, settings)
        data = zipped
    else:
        data = LM.add_manifest(zipped, LM.manifest_text({"name": name, **settings}, []))
    version = await _deploy(call, data)
    state = await call.state(name)
    label = str(version) if body.get("Publish") else "$LATEST"
    return json_response(call.config(state.versions[version], label), status=201)


@aws_errors
async def update_code(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    state = await call.state(name)
    body = await call.json(CODE_BODY_LIMIT)
    zipped = _zip_from(body)
    own = LM.zip_manifest(zipped)
    if own is not None:
        LM.check_agrees(own, name, {})
        data = zipped
    else:
        spec = state.versions[state.latest].spec
        data = LM.add_manifest(zipped, LM.manifest_text(LM.spec_settings(spec), list(spec.triggers)))
    version = await _deploy(call, data)
    state = await call.state(name)
    label = str(version) if body.get("Publish") else "$LATEST"
    return json_response(call.config(state.versions[version], label))


@aws_errors
async def update_configuration(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    state = await call.state(name)
    body = await call.json()
    latest = state.versions[state.latest]
    settings = {**LM.spec_settings(latest.spec), **LM.request_settings(body)}
    assert call.g.ctx.bundles is not None
    bundle = await asyncio.to_thread(call.g.ctx.bundles.get, latest.code_hash)
    manifest = LM.manifest_text(settings, list(latest.spec.triggers))
    data = await asyncio.to_thread(LM.replace_manifest, bundle, manifest)
    version = await _deploy(call, data)
    state = await call.state(name)
    return json_response(call.config(state.versions[version], "$LATEST"))


@aws_errors
async def get_function(request: Request) -> Response:
    call = await Call.start(request, "read")
    name, qualifier = call.name()
    info, label = _version_of(await call.state(name), qualifier)
    location = f"{request.base_url}api/bundles/{info.code_hash}"
    return json_response({"Configuration": call.config(info, label),
                          "Code": {"RepositoryType": "S3", "Location": location}, "Tags": {}})


@aws_errors
async def get_configuration(request: Request) -> Response:
    call = await Call.start(request, "read")
    name, qualifier = call.name()
    info, label = _version_of(await call.state(name), qualifier)
    return json_response(call.config(info, label))


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _page(request: Request) -> tuple[int, int]:
    marker, max_items = request.query_params.get("Marker") or "0", request.query_params.get("MaxItems") or "50"
    if not _whole(marker) or not _whole(max_items) or not 1 <= int(max_items) <= 10_000:
        raise ConfigError("Marker must come from an earlier answer's NextMarker; MaxItems from 1 to 10000")
    return int(marker), int(max_items)


def _paged(key: str, items: list[dict[str, Any]], start: int, size: int) -> dict[str, Any]:
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextMarker"] = str(start + size)
    return out


@aws_errors
async def list_functions(request: Request) -> Response:
    call = await Call.start(request, "read")
    start, size = _page(request)
    every_version = request.query_params.get("FunctionVersion") == "ALL"
    states = await asyncio.to_thread(call.g.ctx.require_registry().states)
    items = []
    for state in states:
        items.append(call.config(state.versions[state.latest], "$LATEST"))
        if every_version:
            items.extend(call.config(v, str(n)) for n, v in sorted(state.versions.items()))
    return json_response(_paged("Functions", items, start, size))


@aws_errors
async def delete_function(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, qualifier = call.name()
    await call.state(name)
    if qualifier is None:
        await lifecycle.delete_function(call.g.ctx, name)
    elif qualifier.isascii() and qualifier.isdigit():
        await lifecycle.delete_version(call.g.ctx, name, int(qualifier))
    else:
        raise ConfigError(f"Qualifier {qualifier!r}: only a version number can be deleted (delete an alias with "
                          "DeleteAlias, $LATEST with the whole function)")
    return Response(status_code=204)


@aws_errors
async def publish_version(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    state = await call.state(name)
    body = await call.json()
    latest = state.versions[state.latest]
    wanted = body.get("CodeSha256")
    if wanted and wanted not in (code_sha256(latest.code_hash), latest.code_hash):
        raise ConfigError(f"CodeSha256 {wanted!r} is not the code of $LATEST ({code_sha256(latest.code_hash)})")
    return json_response(call.config(latest, str(state.latest)), status=201)


@aws_errors
async def list_versions(request: Request) -> Response:
    call = await Call.start(request, "read")
    name, _ = call.name()
    state = await call.state(name)
    start, size = _page(request)
    items = [call.config(state.versions[state.latest], "$LATEST")]
    items.extend(call.config(v, str(n)) for n, v in sorted(state.versions.items()))
    return json_response(_paged("Versions", items, start, size))


# -- aliases ------------------------------------------------------------------------------

def _alias_target(body: dict[str, Any]) -> int | None:
    raw = body.get("FunctionVersion")
    if raw is None:
        return None
    if raw == "$LATEST":
        raise ConfigError("an alias points at a numbered version, not $LATEST (every deploy makes one)")
    return version_number(raw, "FunctionVersion")


def _routing(body: dict[str, Any]) -> dict[int, float] | None:
    routing = body.get("RoutingConfig")
    if routing is None:
        return None
    if not isinstance(routing, dict):
        raise ConfigError('RoutingConfig must be {"AdditionalVersionWeights": {"VERSION": SHARE}}')
    return weights_arg(routing.get("AdditionalVersionWeights") or {})


@aws_errors
async def create_alias(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    body = await call.json()
    alias, version = body.get("Name"), _alias_target(body)
    if not isinstance(alias, str) or version is None:
        raise ConfigError("CreateAlias needs Name and FunctionVersion")
    await call.state(name)
    change = await lifecycle.set_alias(call.g.ctx, name, alias, version, _routing(body), must_exist=False)
    return json_response(alias_configuration(change.alias, call.region), status=201)


@aws_errors
async def update_alias(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    alias = request.path_params["alias"]
    body = await call.json()
    state = await call.state(name)
    current = state.aliases.get(alias)
    if current is None:
        raise NotFound(f"Alias not found: {name}:{alias}")
    version = _alias_target(body) or current.version
    weights = _routing(body)
    if weights is None:  # not given: keep the split, unless it would route to the alias's own version
        weights = {int(v): w for v, w in current.weights.items() if int(v) != version}
    change = await lifecycle.set_alias(call.g.ctx, name, alias, version, weights, must_exist=True)
    return json_response(alias_configuration(change.alias, call.region))


@aws_errors
async def get_alias(request: Request) -> Response:
    call = await Call.start(request, "read")
    name, _ = call.name()
    alias = request.path_params["alias"]
    state = await call.state(name)
    if alias not in state.aliases:
        raise NotFound(f"Alias not found: {name}:{alias}")
    return json_response(alias_configuration(state.aliases[alias], call.region))


@aws_errors
async def list_aliases(request: Request) -> Response:
    call = await Call.start(request, "read")
    name, _ = call.name()
    state = await call.state(name)
    start, size = _page(request)
    items = [alias_configuration(a, call.region) for _, a in sorted(state.aliases.items())]
    return json_response(_paged("Aliases", items, start, size))


@aws_errors
async def delete_alias(request: Request) -> Response:
    call = await Call.start(request, "deploy")
    name, _ = call.name()
    await call.state(name)
    await lifecycle.delete_alias(call.g.ctx, name, request.path_params["alias"])
    return Response(status_code=204)


routes = [
    Route(PREFIX + "/{name}/invocations", invoke, methods=["POST"]),
    Route(PREFIX, create_function, methods=["POST"]),
    Route(PREFIX, list_functions, methods=["GET"]),
    Route(PREFIX + "/{name}", get_function, methods=["GET"]),
    Route(PREFIX + "/{name}", delete_function, methods=["DELETE"]),
    Route(PREFIX + "/{name}/configuration", get_configuration, methods=["GET"]),
    Route(PREFIX + "/{name}/configuration", update_configuration, methods=["PUT"]),
    Route(PREFIX + "/{name}/code", update_code, methods=["PUT"]),
    Route(PREFIX + "/{name}/versions", publish_version, methods=["POST"]),
    Route(PREFIX + "/{name}/versions", list_versions, methods=["GET"]),
    Route(PREFIX + "/{name}/aliases", create_alias, methods=["POST"]),
    Route(PREFIX + "/{name}/aliases", list_aliases, methods=["GET"]),
    Route(PREFIX + "/{name}/aliases/{alias}", get_alias, methods=["GET"]),
    Route(PREFIX + "/{name}/aliases/{alias}", update_alias, methods=["PUT"]),
    Route(PREFIX + "/{name}/aliases/{alias}", delete_alias, methods=["DELETE"]),
]
