"""The http trigger: manifest checks and matching request paths to routes."""

from __future__ import annotations

import pytest

from stoker.errors import ConfigError
from stoker.platform.manifest import parse_manifest
from stoker.triggers.http import RoutePattern, RouteTable, validate


def manifest(trigger: str) -> str:
    return f'[function]\nname = "f"\n[[triggers]]\ntype = "http"\n{trigger}\n'


def test_a_route_is_normalised() -> None:
    spec = parse_manifest(manifest('route = "get /users/{id}"\npublic = true\nqualifier = "prod"'))
    assert spec.triggers == ({"type": "http", "route": "GET /users/{id}", "public": True, "qualifier": "prod"},)


def test_without_a_route_it_configures_fn() -> None:
    assert validate({"public": True}, None) == {"public": True}


@pytest.mark.parametrize(("route", "words"), [
    ("/users", "METHOD /path"),
    ("FETCH /users", "not one of"),
    ("GET users", "must start with '/'"),
    ("GET /users/", "trailing"),
    ("GET /api/things", "belongs to the gateway"),
    ("GET /fn/x", "belongs to the gateway"),
    ("GET /metrics", "belongs to the gateway"),
    ("GET /a//b", "empty path segment"),
    ("GET /a/{x}/{x}", "appears twice"),
    ("GET /{p+}/a", "must be the last"),
    ("GET /a/pre{x}", "whole segment"),
    ("GET /a/b c", "METHOD /path"),
    ('GET /a/"', "cannot hold"),
])
def test_bad_routes_are_refused_with_the_reason(route: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_manifest(manifest(f"route = '{route}'"))  # a TOML literal string: no escapes


@pytest.mark.parametrize(("trigger", "words"), [
    ('route = "GET /a"\npath = "/b"', "unknown key 'path'"),
    ('public = "yes"', "true or false"),
    ('qualifier = "a b"', "version number, an alias name"),
    ("route = 3", "must be a string"),
])
def test_bad_settings_are_refused(trigger: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_manifest(manifest(trigger))


def table(*routes: tuple[str, str]) -> RouteTable:
    specs: dict[str, list[dict[str, object]]] = {}
    for function, route in routes:
        specs.setdefault(function, []).append({"type": "http", "route": route, "public": False})
    return RouteTable.build({"function": f, "triggers": t} for f, t in specs.items())


def test_the_most_specific_route_wins() -> None:
    t = table(("any", "ANY /{proxy+}"), ("param", "GET /users/{id}"), ("literal", "GET /users/me"),
              ("deep", "GET /users/{id}/posts"), ("post", "POST /users/{id}"))
    found = {path: t.match("GET", path)[0] for path in ("/users/me", "/users/7", "/users/7/posts", "/other/x")}
    assert {p: m.route.function for p, m in found.items() if m} == {
        "/users/me": "literal", "/users/7": "param", "/users/7/posts": "deep", "/other/x": "any"}
    assert found["/users/7"].params == {"id": "7"}  # type: ignore[union-attr]
    assert found["/other/x"].params == {"proxy": "other/x"}  # type: ignore[union-attr]
    assert t.match("POST", "/users/7")[0].route.function == "post"  # type: ignore[union-attr]


def test_wrong_method_reports_what_is_allowed() -> None:
    t = table(("f", "GET /items/{id}"), ("g", "DELETE /items/{id}"))
    found, allowed = t.match("PUT", "/items/1")
    assert found is None and allowed == ["DELETE", "GET"]
    assert t.match("GET", "/nothing") == (None, [])


def test_head_is_served_by_get_and_a_trailing_slash_is_tolerated() -> None:
    t = table(("f", "GET /items"))
    assert t.match("HEAD", "/items")[0] is not None
    assert t.match("GET", "/items/")[0] is not None


def test_greedy_needs_at_least_one_segment() -> None:
    t = table(("f", "GET /files/{path+}"))
    assert t.match("GET", "/files")[0] is None
    assert t.match("GET", "/files/a/b.txt")[0].params == {"path": "a/b.txt"}  # type: ignore[union-attr]


def test_a_route_declared_twice_is_served_by_one_function() -> None:
    t = table(("b", "GET /x/{a}"), ("a", "GET /x/{b}"))
    assert len(t.routes) == 1 and t.match("GET", "/x/1")[0].route.function == "a"  # type: ignore[union-attr]


def test_fn_settings_come_from_a_trigger_without_route() -> None:
    t = RouteTable.build([{"function": "f", "triggers": [{"type": "http", "public": True, "qualifier": "prod"}]}])
    assert t.settings("f").public and t.settings("f").qualifier == "prod"
    assert not t.settings("other").public


def test_root_route() -> None:
    assert RoutePattern.parse("GET /").match_path([]) == {}
