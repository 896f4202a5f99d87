"""The OpenAPI document matches the routes the gateway serves."""

from __future__ import annotations

import re

from starlette.routing import Route

from stoker.platform.gateway.app import ROUTE_MODULES, collect_routes
from stoker.platform.gateway.openapi import build_spec


def served() -> set[tuple[str, str]]:
    out = set()
    for route in collect_routes():
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                out.add((path, method.lower()))
    return out


def documented(spec: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(path, method) for path, ops in spec["paths"].items() for method in ops}


def test_every_management_route_is_documented_and_nothing_else() -> None:
    spec = build_spec(ROUTE_MODULES)
    management = {(p, m) for p, m in served() if p.startswith("/api/") or p in ("/healthz", "/metrics",
                                                                                  "/openapi.json")}
    assert documented(spec) == management


def test_references_resolve_and_path_parameters_are_declared() -> None:
    spec = build_spec(ROUTE_MODULES)
    schemas = spec["components"]["schemas"]
    text = str(spec)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in schemas, name
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
            assert op["responses"], (method, path)
