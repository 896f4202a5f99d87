"""The `http` trigger: routes served by the gateway, with API Gateway proxy events.

    [[triggers]]
    type = "http"
    route = "GET /users/{id}"   # METHOD /path; ANY for every method; {name} is one segment,
                                # a last {name+} is greedy (one or more segments)
    public = false              # true: no token needed (default: a token with the invoke right)
    qualifier = "prod"          # the version or alias that serves it (default $LATEST)

Without `route`, the entry sets `public` and `qualifier` for the function's own routes,
`ANY /fn/{name}` and `ANY /fn/{name}/{proxy+}`, which every function has.

This module checks manifest entries and matches request paths against the routes of
every deployed function (`RouteTable`); the gateway serves them
(stoker.platform.gateway.routes.function_routes). Routes are those the function's
newest version declares; `qualifier` chooses the version that runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stoker.errors import ConfigError
from stoker.platform.manifest import register_trigger_type

log = logging.getLogger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")
#: paths the gateway serves itself; a manifest route may not take them
RESERVED = ("/api", "/fn", "/2015-03-31", "/metrics", "/healthz", "/openapi.json", "/console")
PARAM_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\+?)\}$")
LITERAL_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*,;=:@%-]+$")
QUALIFIER_RE = re.compile(r"^(\$LATEST|[0-9]+|[A-Za-z0-9_-]{1,128})$")

LITERAL, PARAM, GREEDY = 0, 1, 2


@dataclass(frozen=True)
class RoutePattern:
    method: str
    path: str
    #: (kind, literal text or parameter name) per segment
    segments: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, route: str) -> RoutePattern:
        parts = route.split()
        if len(parts) != 2:
            raise ConfigError(f"route {route!r} must be 'METHOD /path', e.g. \"GET /users/{{id}}\"")
        method, path = parts[0].upper(), parts[1]
        if method not in METHODS:
            raise ConfigError(f"route {route!r}: method {parts[0]!r} is not one of {', '.join(METHODS)}")
        if not path.startswith("/"):
            raise ConfigError(f"route {route!r}: the path must start with '/'")
        if path != "/" and path.endswith("/"):
            raise ConfigError(f"route {route!r}: drop the trailing '/'")
        for reserved in RESERVED:
            if path == reserved or path.startswith(reserved + "/"):
                raise ConfigError(f"route {route!r}: {reserved} belongs to the gateway; choose another path")
        segments: list[tuple[int, str]] = []
        names: set[str] = set()
        raw = [] if path == "/" else path[1:].split("/")
        for i, seg in enumerate(raw):
            if not seg:
                raise ConfigError(f"route {route!r}: empty path segment ('//')")
            m = PARAM_RE.match(seg)
            if m:
                name, greedy = m.group(1), bool(m.group(2))
                if name in names:
                    raise ConfigError(f"route {route!r}: parameter {{{name}}} appears twice")
                if greedy and i != len(raw) - 1:
                    raise ConfigError(f"route {route!r}: a greedy {{{name}+}} must be the last segment")
                names.add(name)
                segments.append((GREEDY if greedy else PARAM, name))
            elif "{" in seg or "}" in seg:
                raise ConfigError(f"route {route!r}: segment {seg!r}: a parameter must be a whole segment, "
                                  "like /users/{id}")
            elif not LITERAL_RE.match(seg):
                raise ConfigError(f"route {route!r}: segment {seg!r} has characters a URL path cannot hold")
            else:
                segments.append((LITERAL, seg))
        return cls(method=method, path=path, segments=tuple(segments))

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def specificity(self) -> tuple[tuple[int, ...], int]:
        """Sort key: literal segments before parameters before greedy ones; a method before ANY."""
        return tuple(kind for kind, _ in self.segments), int(self.method == "ANY")

    def match_path(self, parts: list[str]) -> dict[str, str] | None:
        """Path parameters if the path's segments match (whatever the method), else None."""
        params: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind == GREEDY:
                rest = parts[i:]
                if not rest or any(not p for p in rest):
                    return None
                params[text] = "/".join(rest)
                return params
            if i >= len(parts):
                return None
            if kind == LITERAL:
                if parts[i] != text:
                    return None
            elif not parts[i]:
                return None
            else:
                params[text] = parts[i]
        return params if len(parts) == len(self.segments) else None

    def allows(self, method: str) -> bool:
        return self.method == "ANY" or self.method == method or (method == "HEAD" and self.method == "GET")


def validate(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    known = {"route", "public", "qualifier"}
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key {key!r}; an http trigger takes {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    if "route" in table:
        if not isinstance(table["route"], str):
            raise ConfigError("route must be a string like \"GET /users/{id}\"")
        out["route"] = RoutePattern.parse(table["route"]).route
    public = table.get("public", False)
    if not isinstance(public, bool):
        raise ConfigError(f"public = {public!r} must be true or false")
    out["public"] = public
    if "qualifier" in table:
        q = table["qualifier"]
        if not isinstance(q, str) or not QUALIFIER_RE.match(q):
            raise ConfigError(f"qualifier = {q!r} must be a version number, an alias name or $LATEST")
        out["qualifier"] = q
    return out


register_trigger_type("http", validate)


# -- matching requests --------------------------------------------------------------------

@dataclass(frozen=True)
class HttpRoute:
    function: str
    pattern: RoutePattern
    public: bool
    qualifier: str | None


@dataclass(frozen=True)
class FunctionRouteSettings:
    """How `/fn/{name}` behaves for one function."""

    public: bool = False
    qualifier: str | None = None


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    params: dict[str, str]


@dataclass
class RouteTable:
    routes: list[HttpRoute] = field(default_factory=list)
    functions: dict[str, FunctionRouteSettings] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Iterable[dict[str, Any]]) -> RouteTable:
        """From the newest version's spec of every function (sorted by name for determinism)."""
        routes: list[HttpRoute] = []
        functions: dict[str, FunctionRouteSettings] = {}
        seen: dict[str, str] = {}
        for spec in sorted(specs, key=lambda s: str(s["function"])):
            name = str(spec["function"])
            for trigger in spec.get("triggers") or []:
                if trigger.get("type") != "http":
                    continue
                public, qualifier = bool(trigger.get("public", False)), trigger.get("qualifier")
                if "route" not in trigger:
                    functions[name] = FunctionRouteSettings(public=public, qualifier=qualifier)
                    continue
                try:
                    pattern = RoutePattern.parse(str(trigger["route"]))
                except ConfigError as e:  # deployed before a rule tightened: skip it, loudly
                    log.warning("function %s: http route skipped: %s", name, e.message)
                    continue
                shape = f"{pattern.method} " + "/".join("{}" if k != LITERAL else t for k, t in pattern.segments)
                if shape in seen:
                    log.warning("route %s of %s is also declared by %s, which serves it", pattern.route, name,
                                seen[shape])
                    continue
                seen[shape] = name
                routes.append(HttpRoute(function=name, pattern=pattern, public=public, qualifier=qualifier))
        routes.sort(key=lambda r: r.pattern.specificity())
        return cls(routes=routes, functions=functions)

    def match(self, method: str, path: str) -> tuple[RouteMatch | None, list[str]]:
        """The route serving (method, path), or None and the methods the path does allow."""
        parts = [] if path in ("", "/") else path.lstrip("/").split("/")
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]  # one trailing slash is tolerated, as API Gateway does
        allowed: list[str] = []
        for route in self.routes:
            params = route.pattern.match_path(parts)
            if params is None:
                continue
            if route.pattern.allows(method):
                return RouteMatch(route=route, params=params), []
            allowed.append(route.pattern.method)
        return None, sorted(set(allowed))

    def settings(self, function: str) -> FunctionRouteSettings:
        return self.functions.get(function, FunctionRouteSettings())
