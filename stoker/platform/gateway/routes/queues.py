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
from stoker.platform.gateway import openapi as O
from stoker.platform.gateway.httputil import json_response, parse_json, read_body
from stoker.platform.gateway.state import authorize
from stoker.platform.registry.projection import FunctionDirectory
from stoker.triggers.queue.messages import MAX_BATCH, MAX_DELAY_S, MAX_MESSAGE_BYTES, check_queue_name
from stoker.triggers.queue.store import QueueStore

ATTRIBUTES_HEADER = "x-stoker-message-attributes"
PEEK_MAX = 1000
REDRIVE_MAX = 10_000_000


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
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
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
    limit = _int_param(request, "limit", 10, 1, PEEK_MAX)
    assert limit is not None
    return json_response(await _store(request).peek(request.path_params["queue"], limit))


async def purge(request: Request) -> Response:
    await authorize(request, "admin")
    return json_response({"purged": await _store(request).purge(request.path_params["queue"])})


async def redrive(request: Request) -> Response:
    await authorize(request, "admin")
    limit = _int_param(request, "max", None, 1, REDRIVE_MAX)
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

_queue = O.path_param("queue", O.QUEUE, "the queue (its dead-letter queue is QUEUE-dlq)")
_sending = [_queue, O.query_param("delay", {"type": "number", "minimum": 0, "maximum": MAX_DELAY_S},
                                  "seconds before the messages become visible"),
            {"name": "X-Stoker-Message-Attributes", "in": "header", "required": False,
             "description": "message attributes as JSON: name -> a string, a number, or "
                            '{"DataType": "String"|"Number", "StringValue": "..."}',
             "content": {"application/json": {"schema": O.ref("MessageAttributes")}}}]
openapi = {
    "/api/queues": {
        "get": O.operation("Every queue: messages available, in flight and delayed, and its consumers", "read",
                           {"200": ("the queues", O.array(O.ref("Queue")))}, tag="queues"),
    },
    "/api/queues/{queue}": {
        "get": O.operation("One queue", "read", {"200": ("the queue", O.ref("Queue"))}, errors=("400", "404"),
                           tag="queues", parameters=[_queue]),
    },
    "/api/queues/{queue}/messages": {
        "post": O.operation(
            "Send one message (any JSON value; the queue is made by its first message)", "invoke",
            {"202": ("queued", O.ref("MessageSent"))}, errors=("400", "413"), tag="queues", parameters=_sending,
            body=O.json_body(O.ANY_JSON)),
        "get": O.operation("Look at the oldest messages (then delayed ones) without receiving them", "read",
                           {"200": ("the messages", O.array(O.ref("QueuedMessage")))}, errors=("400", "404"),
                           tag="queues",
                           parameters=[_queue, O.query_param("limit", {"type": "integer", "minimum": 1,
                                                                       "maximum": PEEK_MAX}, "default 10")]),
        "delete": O.operation("Purge: delete every message, in flight and delayed ones too", "admin",
                              {"200": ("how many were deleted", O.ref("Purged"))}, errors=("400", "404"),
                              tag="queues", parameters=[_queue]),
    },
    "/api/queues/{queue}/messages/batch": {
        "post": O.operation(
            f"Send 1 to {MAX_BATCH} messages at once (all or none)", "invoke",
            {"202": ("queued, ids in the order sent", O.ref("MessagesSent"))}, errors=("400", "413"), tag="queues",
            parameters=_sending,
            body=O.json_body({"type": "array", "items": O.ANY_JSON, "minItems": 1, "maxItems": MAX_BATCH})),
    },
    "/api/queues/{queue}/redrive": {
        "post": O.operation(
            "Move messages not in flight (usually of a dead-letter queue) back to their source queue, or to `to`",
            "admin", {"200": ("what was moved and what was not", O.ref("QueueRedriven"))}, errors=("400", "404"),
            tag="queues",
            parameters=[_queue, O.query_param("to", O.QUEUE, "the queue to move them to (default: each message's "
                                                             "source queue)"),
                        O.query_param("max", {"type": "integer", "minimum": 1, "maximum": REDRIVE_MAX},
                                      "move at most this many")]),
    },
}
