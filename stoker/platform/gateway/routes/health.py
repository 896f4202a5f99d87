"""GET /healthz: is the gateway ready, and can it reach Redis and the database."""

from __future__ import annotations

import asyncio
import contextlib
import time

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stoker.platform.gateway.httputil import json_response
from stoker.platform.gateway.state import gateway
from stoker.platform.nodes import read_nodes
from stoker.triggers.health import source_problems

_db_checked: dict[str, float | bool] = {"at": 0.0, "ok": False}


def _db_ping(engine: object) -> bool:
    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False


async def healthz(request: Request) -> Response:
    g = gateway(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(g.ctx.redis.ping(), 2)
        checks["redis"] = "ok"
    except Exception as e:
        checks["redis"] = f"unreachable: {type(e).__name__}"
    if g.ctx.engine is not None:
        now = time.monotonic()
        if now - float(_db_checked["at"]) > 2.0:  # at most one database round trip per 2 s
            _db_checked["ok"] = await asyncio.to_thread(_db_ping, g.ctx.engine)
            _db_checked["at"] = now
        checks["database"] = "ok" if _db_checked["ok"] else "unreachable"
    for name, probe in g.extras.get("health_probes", {}).items():
        checks[name] = probe()
    healthy = g.ready and all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ok" if healthy else ("starting" if not g.ready else "degraded"), **checks}
    if checks.get("redis") == "ok":  # problems of trigger sources (a user's database down): shown, not failed
        with contextlib.suppress(Exception):
            body["triggers"] = await asyncio.wait_for(source_problems(g.ctx.redis, g.ctx.keys), 2) or "ok"
        with contextlib.suppress(Exception):  # what each live node's sandbox has (cgroup level, network)
            nodes = await asyncio.wait_for(read_nodes(g.ctx.redis, g.ctx.keys, g.ctx.settings.node_dead_after), 2)
            body["sandbox"] = {n.name: {"isolation": n.isolation or "unknown", **n.sandbox} for n in nodes if n.alive}
    return json_response(body, status=200 if healthy else 503)


routes = [Route("/healthz", healthz, methods=["GET"])]

openapi = {
    "/healthz": {"get": {
        "summary": "Is the gateway ready, and can it reach Redis and the database", "tags": ["platform"],
        "security": [],
        "responses": {code: {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Health"}}}}
            for code, text in (("200", "healthy"), ("503", "starting, or Redis or the database is unreachable"))},
    }},
}
