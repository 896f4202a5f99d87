"""Named queues over HTTP.

    GET    /api/queues                          every queue: available, in flight, delayed, consumers
    GET    /api/queues/{queue}                  one queue
    POST   /api/queues/{queue}/messages         body: one message (any JSON value) -> 202 {"id", "queue"}
    POST   /api/queues/{queue}/messages/batch   body: a JSON array of 1-10 messages -> 202 {"ids", "queue"}
           both take ?delay=SECONDS (0-900) and an optional header
           X-Stoker-Message-Attributes: {"name": "value" | number, ...}
    GET    /api/queues/{queue}/messages         ?limit=N: look at the oldest messages without receiving them
    DELETE /api/queues/{queue}/messages         purge: delete every message -> {"purged": N}
    POST   /api/queues/{queue}/redrive          ?to=QUEUE &max=N: move messages (usually from a
                                                dead-letter queue) back to their source queue
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.errors import InvalidInput
from stoker.platform.gateway.httputil import json_response, parse_json, read_body
from stoker.platform.gateway.state import authorize
from stoker.platform.registry.projection import FunctionDirectory
from stoker.triggers.queue.messages import MAX_BATCH, MAX_MESSAGE_BYTES, check_queue_name
from stoker.triggers.queue.store import QueueStore

ATTRIBUTES_HEADER = "x-stoker-message-attributes"


def _store(request: Request) -> QueueStore:
    from stoker.platform.gateway.state import gateway

    g = gateway(request)
    store = g.extras.get("queues")
    if store is None:
        store = g.extras["queues"] = QueueStore(g.ctx.redis, g.ctx.keys)
    return store


async def consumers_by_queue(directory: FunctionDirectory) -> dict[str, list[str]]:
    """Queue name -> the functions whose newest version consumes it."""
    out: dict[str, list[str]] = {}
    for name in await directory.names():
        entry = await directory.entry(name)
        if entry is None:
            continue
        spec = await directory.spec(name, entry.latest)
        for trigger in spec.get("triggers") or []:
            if trigger.get("type") == "queue" and trigger.get("enabled", True):
                out.setdefault(str(trigger["queue"]), []).append(name)
    return out


def _delay(request: Request) -> float:
    raw = request.query_params.get("delay", "0")
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"delay {raw!r} is not a number of seconds (0 to 900)") from None


def _attributes(request: Request) -> dict[str, Any] | None:
    raw = request.headers.get(ATTRIBUTES_HEADER)
    if not raw:
        return None
    value = parse_json(raw.encode(), f"the {ATTRIBUTES_HEADER} header")
    if not isinstance(value, dict):
        raise InvalidInput(f"the {ATTRIBUTES_HEADER} header must be a JSON object of name -> value")
    return value


def _int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InvalidInput(f"{name} {raw!r} is not valid: give a whole number from {lo} to {hi}")
    return int(raw)


async def list_queues(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    store = _store(request)
    consumers = await consumers_by_queue(g.ctx.directory)
    stats = await store.stats(await store.names())
    return json_response([{**s.to_json(), "consumers": consumers.get(s.name, [])} for s in stats])


async def show_queue(request: Request) -> Response:
    g, _ = await authorize(request, "read")
    store = _store(request)
    queue = request.path_params["queue"]
    await store.require(queue)
    consumers = await consumers_by_queue(g.ctx.directory)
    (stats,) = await store.stats([queue])
    return json_response({**stats.to_json(), "consumers": consumers.get(queue, [])})


async def send(request: Request) -> Response:
    await authorize(request, "invoke")
    queue = check_queue_name(request.path_params["queue"])
    body = await read_body(request, MAX_MESSAGE_BYTES, "message")
    (message_id,) = await _store(request).send(queue, [body], delay=_delay(request), attributes=_attributes(request))
    return json_response({"id": message_id, "queue": queue}, status=202)


async def send_batch(request: Request) -> Response:
    await authorize(request, "invoke")
    queue = check_queue_name(request.path_params["queue"])
    raw = await read_body(request, MAX_BATCH * (MAX_MESSAGE_BYTES + 1024), "batch")
    messages = parse_json(raw, "the batch")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
        raise InvalidInput(f"the batch must be a JSON array of 1 to {MAX_BATCH} messages")
    bodies = [orjson.dumps(m) for m in messages]
    ids = await _store(request).send(queue, bodies, delay=_delay(request), attributes=_attributes(request))
    return json_response({"ids": ids, "queue": queue}, status=202)


async def peek(request: Request) -> Response:
    await authorize(request, "read")
    limit = _int_param(request, "limit", 10, 1, 1000)
    assert limit is not None
    return json_response(await _store(request).peek(request.path_params["queue"], limit))


async def purge(request: Request) -> Response:
    await authorize(request, "admin")
    return json_response({"purged": await _store(request).purge(request.path_params["queue"])})


async def redrive(request: Request) -> Response:
    await authorize(request, "admin")
    limit = _int_param(request, "max", None, 1, 10_000_000)
    result = await _store(request).redrive(request.path_params["queue"], request.query_params.get("to") or None,
                                           limit)
    return json_response(result.to_json())


routes = [
    Route("/api/queues", list_queues, methods=["GET"]),
    Route("/api/queues/{queue}", show_queue, methods=["GET"]),
    Route("/api/queues/{queue}/messages", send, methods=["POST"]),
    Route("/api/queues/{queue}/messages/batch", send_batch, methods=["POST"]),
    Route("/api/queues/{queue}/messages", peek, methods=["GET"]),
    Route("/api/queues/{queue}/messages", purge, methods=["DELETE"]),
    Route("/api/queues/{queue}/redrive", redrive, methods=["POST"]),
]
