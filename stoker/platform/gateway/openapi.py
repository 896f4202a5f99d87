"""The OpenAPI document of the management API, assembled from the route modules.

Each route module documents its own operations beside their handlers, in a module-level
`openapi` dict (path -> method -> operation), written with `operation()` below; shared
schemas live in `SCHEMAS`. `/openapi.json` merges them in the gateway's route order, so
a new route module documents itself by exporting `openapi`. Function routes (`/fn/...`,
manifest routes) and the Lambda API (documented by AWS) are not part of it.
"""

from __future__ import annotations

import importlib
from typing import Any

from stoker import __version__

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(required: list[str], properties: dict[str, Schema], additional: bool | Schema = False) -> Schema:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": additional}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
ANY_JSON: Schema = {}
#: a point in time as parse_time takes it: RFC 3339, or a duration ago
WHEN: Schema = {"anyOf": [{"type": "string", "format": "date-time"},
                          {"type": "string", "pattern": "^[0-9]{1,6}(s|m|h|d|w)$"},
                          {"type": "string", "maxLength": 0, "description": "empty: not given"}]}
ALIAS: Schema = {"type": "string", "pattern": "^(?![0-9]+$)[A-Za-z0-9_-]{1,128}$"}
#: a published version, as a number or a string of digits
VERSION_NUMBER: Schema = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 999_999_999},
                                    {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"}]}
#: a function name (QUALIFIED_NAME: with :qualifier, where the route resolves qualifiers)
NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
QUALIFIED_NAME: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}(:[^/]*)?$"}
#: a named queue (SQS's rules), or its dead-letter queue (`-dlq`)
QUEUE: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,80}(-dlq)*$"}

_VERSION_PROPS: dict[str, Schema] = {
    "function": STRING, "version": STRING, "code_hash": STRING, "deployed_at": TIME,
    "deployed_by": nullable(STRING), "runtime": STRING, "handler": STRING, "memory": INTEGER, "timeout": NUMBER,
}
_ALIAS_STATE = obj(["version", "weights"], {"version": STRING, "weights": {"type": "object",
                                                                             "additionalProperties": NUMBER}})
_ALIAS_PROPS: dict[str, Schema] = {
    "function": STRING, "alias": STRING, "version": STRING,
    "weights": {"type": "object", "additionalProperties": NUMBER},
    "previous": nullable(_ALIAS_STATE), "updated_at": nullable(TIME),
}
_FUNCTION_PROPS: dict[str, Schema] = {
    "name": STRING, "version": STRING, "runtime": STRING, "handler": STRING, "memory": INTEGER,
    "timeout": NUMBER, "concurrency": nullable(INTEGER), "description": STRING, "triggers": array(STRING),
    "code_hash": STRING, "deployed_at": TIME, "aliases": {"type": "object", "additionalProperties": STRING},
}
_RIGHTS = ("admin", "deploy", "invoke", "read")
_A_RIGHT = f"({'|'.join(_RIGHTS)})"
_TOKEN_PROPS: dict[str, Schema] = {
    "name": STRING, "rights": array({"type": "string", "enum": list(_RIGHTS)}),
    "created_at": TIME, "created_by": nullable(STRING), "revoked_at": nullable(TIME),
}
_INVOCATION_PROPS: dict[str, Schema] = {
    "id": STRING, "function": STRING, "version": nullable(STRING), "qualifier": nullable(STRING), "status": STRING,
    "trigger": nullable(STRING), "invocation_type": nullable(STRING), "received_at": nullable(TIME),
    "started_at": nullable(TIME), "ended_at": nullable(TIME), "duration_ms": nullable(NUMBER),
    "billed_ms": nullable(INTEGER), "memory_mb": nullable(INTEGER), "max_memory_mb": nullable(INTEGER),
    "init_ms": nullable(NUMBER), "cold": nullable(BOOLEAN), "node": nullable(STRING),
    "error_type": nullable(STRING), "error_message": nullable(STRING), "payload_size": nullable(INTEGER),
    "result_size": nullable(INTEGER),
}
_ATTEMPT = obj(["attempt", "outcome"], {
    "attempt": INTEGER, "node": nullable(STRING), "worker": nullable(STRING), "started_at": nullable(TIME),
    "ended_at": nullable(TIME), "duration_ms": nullable(NUMBER), "billed_ms": nullable(INTEGER),
    "init_ms": nullable(NUMBER), "outcome": STRING, "error_type": nullable(STRING),
    "error_message": nullable(STRING)})
_QUEUE_PROPS: dict[str, Schema] = {"name": STRING, "available": INTEGER, "in_flight": INTEGER, "delayed": INTEGER,
                                   "consumers": {**array(STRING), "description": "functions consuming the queue"}}
_PEEKED_PROPS: dict[str, Schema] = {
    "id": STRING, "body": {**ANY_JSON, "description": "the message as sent"}, "receive_count": INTEGER,
    "sent_at": nullable(TIME), "state": {"type": "string", "enum": ["available", "in_flight", "delayed"]},
    "first_received_at": nullable(TIME), "attributes": {"type": "object", "additionalProperties": STRING},
}
_BILL_LINE: dict[str, Schema] = {"requests": INTEGER, "gb_seconds": NUMBER, "request_cost": NUMBER,
                                 "compute_cost": NUMBER, "cost": NUMBER}
_BILL_MONTH = obj(["month", "requests", "gb_seconds", "cost"], {
    "month": STRING, "requests": INTEGER, "gb_seconds": NUMBER, "cost": NUMBER,
    "free_requests": NUMBER, "free_gb_seconds": NUMBER, "billed_cost": NUMBER})
_FREE_TIER = obj(["applied", "requests_per_month", "gb_seconds_per_month", "requests", "gb_seconds", "credit"], {
    "applied": BOOLEAN, "requests_per_month": NUMBER, "gb_seconds_per_month": NUMBER, "requests": NUMBER,
    "gb_seconds": NUMBER, "credit": NUMBER})

SCHEMAS: dict[str, Schema] = {
    "Error": obj(["error", "code"], {"error": STRING, "code": STRING}),
    "Health": obj(["status", "redis"], {
        "status": {"type": "string", "enum": ["ok", "starting", "degraded"]}, "redis": STRING, "database": STRING,
        "triggers": {"anyOf": [{"const": "ok"}, {"type": "object", "additionalProperties": STRING}],
                     "description": "problems of trigger sources by source (shown, not failed)"},
        "sandbox": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": STRING},
                    "description": "each live node's sandbox: isolation, cgroup level (v2, v1 or none), network"}},
        additional=STRING),
    "Function": obj(list(_FUNCTION_PROPS), _FUNCTION_PROPS),
    "FunctionDetail": obj([*_FUNCTION_PROPS, "versions", "spec"], {
        **_FUNCTION_PROPS, "versions": array(ref("Version")),
        "spec": {"type": "object", "description": "the newest version's settings as deployed, with its triggers "
                                                  "in full; env values are masked ('***')"}}),
    "Version": obj(list(_VERSION_PROPS), _VERSION_PROPS),
    "VersionListed": obj([*_VERSION_PROPS, "latest", "aliases"],
                         {**_VERSION_PROPS, "latest": BOOLEAN, "aliases": array(STRING)}),
    "Deployed": obj(["function", "version", "created", "code_hash", "message"],
                    {"function": STRING, "version": STRING, "created": BOOLEAN, "code_hash": STRING,
                     "message": STRING}),
    "Accepted": obj(["id", "function", "version"], {"id": STRING, "function": STRING, "version": STRING}),
    "Alias": obj(list(_ALIAS_PROPS), _ALIAS_PROPS),
    "AliasChanged": obj([*_ALIAS_PROPS, "message"], {**_ALIAS_PROPS, "message": STRING}),
    "AliasSet": obj(["version"], {"version": VERSION_NUMBER,
                                   "weights": {"type": "object", "propertyNames": {"pattern": "^[1-9][0-9]{0,8}$"},
                                               "additionalProperties": {"type": "number", "minimum": 0,
                                                                        "maximum": 1},
                                               "description": "version -> share; the shares add up to 1 at most"}}),
    "RollbackRequest": obj([], {"alias": nullable(ALIAS), "to": nullable(VERSION_NUMBER)}),
    "RolledBack": obj(["function", "alias", "version", "previous", "weights", "created", "changed", "message"],
                      {"function": STRING, "alias": nullable(STRING), "version": STRING, "previous": STRING,
                       "weights": {"type": "object", "additionalProperties": NUMBER}, "created": nullable(STRING),
                       "changed": BOOLEAN, "message": STRING}),
    "Deleted": obj(["function", "versions", "latest", "bundles_removed", "message"],
                   {"function": STRING, "versions": array(STRING), "latest": nullable(STRING),
                    "bundles_removed": INTEGER, "message": STRING}),
    "Token": obj(list(_TOKEN_PROPS), _TOKEN_PROPS),
    "TokenCreated": obj([*_TOKEN_PROPS, "token"], {**_TOKEN_PROPS, "token": STRING}),
    "TokenRequest": obj(["name", "rights"], {
        "name": {"type": "string", "pattern": "^(?!admin$)[A-Za-z0-9_.-]{1,64}$"},
        "rights": {"anyOf": [{**array({"type": "string", "enum": list(_RIGHTS)}), "minItems": 1},
                             {"type": "string", "pattern": f"^ *{_A_RIGHT}( *, *{_A_RIGHT})* *$",
                              "description": "the same, comma-separated"}]}}),
    "Invocation": obj([*_INVOCATION_PROPS, "attempts"], {**_INVOCATION_PROPS, "attempts": nullable(INTEGER)}),
    "InvocationDetail": obj([*_INVOCATION_PROPS, "attempts", "attempt_count", "payload", "payload_truncated",
                             "result", "result_truncated", "logs"], {
        **_INVOCATION_PROPS, "attempts": array(_ATTEMPT), "attempt_count": nullable(INTEGER),
        "payload": nullable(STRING), "payload_truncated": BOOLEAN, "result": nullable(STRING),
        "result_truncated": BOOLEAN, "logs": array(STRING)}),
    "Pruned": obj(["before", "invocations", "attempts", "dry_run"], {
        "before": {**TIME, "description": "rows received before this were deleted (or counted)"},
        "invocations": INTEGER, "attempts": {**INTEGER, "description": "0 on a dry run: only invocations are counted"},
        "dry_run": BOOLEAN}),
    "LogLine": obj(["timestamp", "request_id", "message"], {"timestamp": INTEGER, "request_id": nullable(STRING),
                                                             "message": STRING}),
    "Logs": obj(["lines", "next"], {"lines": array(ref("LogLine")), "next": nullable(STRING)}),
    "Queue": obj(list(_QUEUE_PROPS), _QUEUE_PROPS),
    "MessageSent": obj(["id", "queue"], {"id": STRING, "queue": STRING}),
    "MessagesSent": obj(["ids", "queue"], {"ids": array(STRING), "queue": STRING}),
    "QueuedMessage": obj(list(_PEEKED_PROPS), {
        **_PEEKED_PROPS,
        "visible_at": {**TIME, "description": "delayed messages: when they become visible"},
        "dead_letter": obj(["queue", "receive_count", "at"], {"queue": STRING, "receive_count": INTEGER,
                                                              "at": nullable(TIME)})}),
    "MessageAttributes": {"type": "object", "maxProperties": 10,
                          "propertyNames": {"pattern": "^(?![Aa][Ww][Ss]\\.|[Aa][Mm][Aa][Zz][Oo][Nn]\\.)"
                                                       "[A-Za-z0-9_.-]{1,256}$"},
                          "additionalProperties": {"anyOf": [STRING, NUMBER, obj(["DataType", "StringValue"], {
                              "DataType": {"type": "string", "pattern": "^(String|Number)(\\..*)?$"},
                              "StringValue": STRING})]}},
    "Purged": obj(["purged"], {"purged": INTEGER}),
    "QueueRedriven": obj(["moved", "skipped_in_flight", "skipped_no_source"], {
        "moved": INTEGER, "skipped_in_flight": INTEGER,
        "skipped_no_source": {**INTEGER, "description": "messages with no source queue to go back to (give `to`)"}}),
    "CronSchedule": obj(["schedule", "function", "expression", "timezone", "missed", "qualifier", "last_fired",
                         "leader", "next", "next_local"], {
        "schedule": {**STRING, "description": "function/name"}, "function": STRING, "expression": STRING,
        "timezone": STRING, "missed": {"type": "string", "enum": ["skip", "once"]}, "qualifier": nullable(STRING),
        "last_fired": nullable(TIME), "leader": nullable(STRING),
        "next": {**array(TIME), "description": "the next ticks, UTC"},
        "next_local": {**array(TIME), "description": "the same ticks in the schedule's time zone"}}),
    "DeadLetter": obj(["id", "entry", "function", "version", "qualifier", "trigger", "attempts", "reason", "error",
                       "payload", "failed_at"], {
        "id": {**STRING, "description": "the invocation id"}, "entry": STRING, "function": nullable(STRING),
        "version": STRING, "qualifier": nullable(STRING), "trigger": nullable(STRING),
        "attempts": nullable(INTEGER), "reason": nullable(STRING),
        "error": nullable({"type": "object", "description": "the last error, as Lambda reports it"}),
        "payload": {**ANY_JSON, "description": "the event (as text when it is not JSON)"},
        "failed_at": nullable(TIME)}),
    "DeadLettersRedriven": obj(["redriven", "count"], {
        "redriven": array(obj(["id", "new_id"], {"id": STRING, "new_id": STRING})), "count": INTEGER}),
    "RedriveRequest": obj([], {"id": {**STRING, "description": "one dead letter's invocation id; empty: all"}}),
    "Bill": obj(["since", "until", "by", "prices", "free_tier", "months", "requests", "gb_seconds", "subtotal",
                 "total_cost"], {
        "since": TIME, "until": TIME, "by": {"type": "string", "enum": ["function", "day"]},
        "prices": obj(["per_million_requests", "per_gb_second"], {"per_million_requests": NUMBER,
                                                                   "per_gb_second": NUMBER}),
        "free_tier": _FREE_TIER,
        "functions": {**array(obj(["function", *_BILL_LINE], {"function": STRING, **_BILL_LINE})),
                      "description": "with by=function"},
        "days": {**array(obj(["day", *_BILL_LINE], {"day": {"type": "string", "format": "date"}, **_BILL_LINE})),
                 "description": "with by=day"},
        "months": array(_BILL_MONTH), "requests": INTEGER, "gb_seconds": NUMBER, "subtotal": NUMBER,
        "total_cost": NUMBER}),
}

#: the status codes each error means, as every route answers them (JSON `Error`)
ERRORS = {
    "400": "bad input: malformed JSON or a value out of range",
    "401": "no token, or one that is not valid",
    "403": "the token lacks the right this operation needs",
    "404": "no such function, version, alias or invocation",
    "409": "the operation conflicts with the current state",
    "413": "the body is over its size limit",
    "429": "throttled: over a concurrency limit",
    "503": "Redis or the database is not reachable",
    "504": "no answer within the function's timeout (and a grace period): see the ledger for its fate",
}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


class Content(dict[str, Any]):
    """A response's content by media type, for an answer that is not (only) JSON:
    `Content({"application/x-ndjson": {"schema": ...}})` in place of a schema."""


ZIP = Content({"application/zip": {"schema": {"type": "string", "format": "binary"}}})


def operation(summary: str, right: str | None, responses: dict[str, tuple[str, Schema | None]],
              errors: tuple[str, ...] = (), parameters: list[dict[str, Any]] | None = None,
              body: dict[str, Any] | None = None, tag: str = "functions",
              headers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """One operation. `right`: the token right needed (None: no token). `errors`: status codes
    beyond 401/403 (added when a right is needed) that this operation answers with `Error`.
    `headers`: status -> response header -> what it says."""
    out: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {}}
    if right is None:
        out["security"] = []
    else:
        out["description"] = f"Needs a token with the `{right}` right (or `admin`)."
    for status, (text, schema) in responses.items():
        response: dict[str, Any] = {"description": text}
        if schema is not None:
            response["content"] = schema if isinstance(schema, Content) else json_content(schema)
        if headers and status in headers:
            response["headers"] = {name: {"description": what, "schema": STRING}
                                   for name, what in headers[status].items()}
        out["responses"][status] = response
    codes = (*errors, *(("401", "403") if right is not None else ()), "503")
    for status in sorted(set(codes)):
        out["responses"][status] = {"description": ERRORS[status], "content": json_content(ref("Error"))}
    if parameters:
        out["parameters"] = parameters
    if body is not None:
        out["requestBody"] = body
    return out


def path_param(name: str, schema: Schema | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STRING, "description": description}


def query_param(name: str, schema: Schema | None = None, description: str = "",
                required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or STRING,
            "description": description}


def header_param(name: str, schema: Schema | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": schema or STRING, "description": description}


def json_body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def build_spec(route_modules: list[str], server_url: str | None = None) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for name in route_modules:
        for path, methods in getattr(importlib.import_module(name), "openapi", {}).items():
            paths.setdefault(path, {}).update(methods)
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "stoker", "version": __version__,
                 "description": "The management API of stoker, a self-hosted function platform. Send "
                                "`Authorization: Bearer <token>`; the admin token is in $STOKER_HOME/endpoint.json "
                                "and `stoker token create` makes others."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec
