"""Functions: deploy, list, show, and invoke through the management API.

    POST /api/functions                   body: a zip bundle -> the version made (or kept)
         ?source_dir=/abs/folder           the folder it came from: relative trigger paths resolve there
         ?progress=true                    NDJSON: the installer's output line by line, then the answer
    GET  /api/functions                   every function with its newest version
    GET  /api/functions/{name}            one function, its versions and aliases, and `spec`: the newest
                                          version's settings and triggers (env values masked)
    POST /api/functions/{name}/invoke     body: the JSON event
         ?qualifier=VERSION|ALIAS          (or name:qualifier)
         ?async=true or X-Stoker-Invocation-Type: Event  -> 202 {"id": ...}
         sync -> 200 with the result; a function error adds X-Stoker-Function-Error: Unhandled
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stoker.errors import InvalidInput, StokerError
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import check_json, json_response, query_flag, raw_json_response, read_body
from stoker.platform.gateway.state import authorize
from stoker.platform.registry.bundles import MAX_ZIP
from stoker.platform.registry.deploy import CheckedBundle, check_bundle, deploy_bundle
from stoker.platform.registry.store import FunctionState

log = logging.getLogger(__name__)

#: deploys whose client stopped reading their progress: they run to the end all the same
_deploys: set[asyncio.Task[Any]] = set()


def function_json(state: FunctionState) -> dict[str, object]:
    latest = state.versions[state.latest]
    spec = latest.spec
    return {
        "name": state.name,
        "version": str(state.latest),
        "runtime": spec.runtime,
        "handler": spec.handler,
        "memory": spec.memory,
        "timeout": spec.timeout,
        "concurrency": spec.concurrency,
        "description": spec.description,
        "triggers": [t["type"] for t in spec.triggers],
        "code_hash": latest.code_hash,
        "deployed_at": latest.deployed_at.isoformat(),
        "aliases": {a.name: str(a.version) for a in state.aliases.values()},
    }


async def deploy(request: Request) -> Response:
    g, principal = await authorize(request, "deploy")
    source_dir = request.query_params.get("source_dir") or None
    if source_dir is not None and not os.path.isabs(source_dir):
        raise InvalidInput(f"source_dir={source_dir!r} must be an absolute path (the folder deployed from)")
    data = await read_body(request, MAX_ZIP, "bundle")
    if query_flag(request, "progress"):
        # what can be refused is refused here, as a plain deploy's 4xx; the stream starts with the build
        checked = await check_bundle(g.ctx, data, source_dir)
        return StreamingResponse(_deploy_stream(g.ctx, checked, principal.name),
                                 media_type="application/x-ndjson")
    result = await deploy_bundle(g.ctx, data, deployed_by=principal.name, source_dir=source_dir)
    body = {**result.to_json(), "message": result.describe()}
    return json_response(body, status=201 if result.created else 200)


async def _deploy_stream(ctx: PlatformContext, checked: CheckedBundle,
                         deployed_by: str | None) -> AsyncIterator[bytes]:
    """?progress=true: one JSON object per line, {"progress": "..."} for each line of the dependency
    installer's output as it comes, then {"result": {...}, "status": 201|200} or {"error", "code",
    "status"} (the answer a plain deploy would give, as the last line)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def progress(line: str) -> None:  # called from the build's thread
        loop.call_soon_threadsafe(lines.put_nowait, line)

    task = asyncio.create_task(deploy_bundle(ctx, checked, deployed_by=deployed_by, progress=progress))
    # if the client goes away the deploy still finishes, as a plain one would: keep the task referenced
    _deploys.add(task)
    task.add_done_callback(_deploys.discard)
    while not (task.done() and lines.empty()):
        getter = asyncio.ensure_future(lines.get())
        try:
            await asyncio.wait([getter, task], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            getter.cancel()
            raise
        if getter.done():
            yield orjson.dumps({"progress": getter.result()}) + b"\n"
        else:
            getter.cancel()  # the deploy ended first: no line was taken
    try:
        result = task.result()
    except StokerError as e:
        yield orjson.dumps({**e.to_json(), "status": e.status_code}) + b"\n"
        return
    except Exception as e:  # the answer is already 200: the failure must be the last line
        log.error("deploy failed", exc_info=e)
        yield orjson.dumps({"error": f"the deploy failed on the platform: {type(e).__name__}: {e}",
                            "code": "ServiceException", "status": 500}) + b"\n"
        return
    body = {**result.to_json(), "message": result.describe()}
    yield orjson.dumps({"result": body, "status": 201 if result.created else 200}) + b"\n"


async def list_functions(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    states = await asyncio.to_thread(g.ctx.require_registry().states)
    return json_response([function_json(s) for s in states if s.versions])


async def show_function(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    state = await asyncio.to_thread(g.ctx.require_registry().state, request.path_params["name"])
    body = function_json(state)
    body["versions"] = [v.to_json() for _, v in sorted(state.versions.items())]
    spec = state.versions[state.latest].spec.to_json()
    spec["env"] = dict.fromkeys(spec["env"], "***")  # names only: values may be secrets
    body["spec"] = spec
    return json_response(body)


def _is_async(request: Request) -> bool:
    flag = query_flag(request, "async")
    return flag or request.headers.get("x-stoker-invocation-type", "").lower() == "event"


async def invoke(request: Request) -> Response:
    g, _ = await authorize(request, "invoke")
    resolved = await g.invoker.resolve(request.path_params["name"], request.query_params.get("qualifier"))
    payload = check_json(await read_body(request, SYNC_PAYLOAD_LIMIT, "payload"))
    if _is_async(request):
        invocation_id = await g.invoker.invoke_async(resolved, payload)
        return json_response({"id": invocation_id, "function": resolved.function, "version": resolved.version},
                             status=202, headers={"x-stoker-invocation-id": invocation_id})
    reply = await g.invoker.invoke(resolved, payload)
    headers = {"x-stoker-invocation-id": reply.id, "x-stoker-executed-version": reply.version}
    if not reply.ok:
        headers["x-stoker-function-error"] = "Unhandled"
    return raw_json_response(reply.body, headers=headers)


routes = [
    Route("/api/functions", deploy, methods=["POST"]),
    Route("/api/functions", list_functions, methods=["GET"]),
    Route("/api/functions/{name}", show_function, methods=["GET"]),
    Route("/api/functions/{name}/invoke", invoke, methods=["POST"]),
]

_name = O.path_param("name", O.NAME, "the function")
_invoked = {"X-Stoker-Invocation-Id": "the invocation's id (see `GET /api/invocations/{id}`)"}
openapi = {
    "/api/functions": {
        "post": O.operation(
            "Deploy a bundle (a zip of a function folder with stoker.toml)", "deploy",
            {"201": ("a new version was made", O.ref("Deployed")),
             "200": ("the newest version has this exact code and configuration already", O.ref("Deployed"))},
            errors=("400", "413"),
            parameters=[O.query_param("source_dir", {"type": "string", "pattern": "^/"},
                                      "the absolute folder the bundle was made from: relative trigger paths "
                                      "(files) resolve there")],
            body={"required": True, "content": O.ZIP}),
        "get": O.operation("Every function with its newest version", "read",
                           {"200": ("the functions", O.array(O.ref("Function")))}),
    },
    "/api/functions/{name}": {
        "get": O.operation("One function with its versions", "read",
                           {"200": ("the function", O.ref("FunctionDetail"))}, errors=("404",),
                           parameters=[_name]),
    },
    "/api/functions/{name}/invoke": {
        "post": O.operation(
            "Invoke a function (sync by default)", "invoke",
            {"200": ("the function's result; its error, with X-Stoker-Function-Error: Unhandled", O.ANY_JSON),
             "202": ("queued (async): the invocation id", O.ref("Accepted"))},
            errors=("400", "404", "413", "429", "504"),
            parameters=[O.path_param("name", O.QUALIFIED_NAME, "the function (name:qualifier works too)"),
                        O.query_param("qualifier", None, "a version number, an alias, or $LATEST"),
                        O.query_param("async", O.BOOLEAN, "queue the event and answer 202"),
                        O.header_param("X-Stoker-Invocation-Type", {"type": "string",
                                                                    "enum": ["RequestResponse", "Event"]},
                                       "Event: the same as async=true")],
            body=O.json_body(O.ANY_JSON, required=False),
            headers={"200": {**_invoked, "X-Stoker-Executed-Version": "the version that ran",
                             "X-Stoker-Function-Error": "Unhandled when the function failed"},
                     "202": _invoked}),
    },
}
