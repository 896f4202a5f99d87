"""How the console's routes sit in the gateway: guarded, before the catch-all, outside the API's document."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from stoker.errors import ConfigError
from stoker.platform.gateway.app import ROUTE_MODULES, collect_routes
from stoker.platform.gateway.console import routes as console
from stoker.platform.gateway.console.guard import safe_next
from stoker.platform.gateway.openapi import build_spec
from stoker.triggers.http import RoutePattern

#: the console routes that answer without a session, on purpose
PUBLIC = {("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console/static/{asset:path}")}


def test_every_console_route_but_sign_in_and_static_files_needs_a_session() -> None:
    built_by = {(m, r.path): r.endpoint.__qualname__.split(".")[0] for r in console.routes if isinstance(r, Route)
                for m in (r.methods or ()) - {"HEAD"}}
    assert {route for route, builder in built_by.items() if builder == "public"} == PUBLIC
    assert {builder for route, builder in built_by.items() if route not in PUBLIC} == {"_guarded"}
    assert all(path.startswith("/console") for _, path in built_by)


def test_console_routes_come_before_the_catch_all() -> None:
    assert ROUTE_MODULES[-1].endswith("function_routes")
    paths = [r.path for r in collect_routes() if isinstance(r, Route)]
    assert paths.index("/console") < paths.index("/{path:path}")


def test_the_console_is_not_part_of_the_management_api_document() -> None:
    spec = build_spec(ROUTE_MODULES)
    assert not [p for p in spec["paths"] if p.startswith("/console")]


def test_functions_cannot_declare_routes_under_console() -> None:
    with pytest.raises(ConfigError, match="/console belongs to the gateway"):
        RoutePattern.parse("GET /console/admin")


@pytest.mark.parametrize(("value", "target"), [
    (None, "/console"), ("", "/console"), ("/console/functions/x?window=7d", "/console/functions/x?window=7d"),
    ("https://evil.example/console", "/console"), ("//evil.example/console", "/console"),
    ("/api/functions", "/console"), ("/console\\..\\x", "/console"), ("javascript:alert(1)", "/console"),
])
def test_where_signing_in_leads(value: str | None, target: str) -> None:
    assert safe_next(value) == target
