"""Pages from Jinja2 templates (autoescaped), the filters they use, and the static files.

Templates and static files ship inside the package (`templates/`, `static/`), read once
on first use. A static file's URL carries a hash of its content (`?v=`), so browsers may
keep it forever and still get the new one after an upgrade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import mimetypes
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jinja2
import orjson
from starlette.responses import HTMLResponse, Response

PACKAGE = "stoker.platform.gateway.console"

#: every console response says where it may load from: only this gateway
SECURITY_HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


#: shown for a figure that has no value (an en dash)
NONE = "\u2013"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    version: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            out.update(_walk(entry, name + "/"))
        elif not entry.name.startswith("."):
            body = entry.read_bytes()
            media_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            if media_type.startswith("text/") or media_type.endswith("javascript"):
                media_type += "; charset=utf-8"
            out[name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:12])
    return out


@cache
def assets() -> dict[str, Asset]:
    """Relative path -> the file: the only files served (a lookup, so no path can walk out)."""
    return _walk(resources.files(PACKAGE) / "static")


def static_url(name: str) -> str:
    return f"/console/static/{name}?v={assets()[name].version}"


# -- filters ------------------------------------------------------------------------------

def fmt_count(n: Any) -> str:
    if n is None:
        return NONE
    n = float(n)
    for limit, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(n) >= limit:
            return f"{n / unit:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{n:,.0f}"


def fmt_ms(ms: Any) -> str:
    if ms is None:
        return NONE
    ms = float(ms)
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:,.0f} ms"
    return f"{ms / 1000:,.1f} s"


def fmt_pct(share: Any) -> str:
    if share is None:
        return NONE
    pct = float(share) * 100
    if pct == 0 or pct >= 10:
        return f"{pct:.0f}%"
    return f"{pct:.1f}%" if pct >= 0.1 else "<0.1%"


def fmt_cost(dollars: Any) -> str:
    if dollars is None:
        return NONE
    d = float(dollars)
    if d == 0:
        return "$0"
    if d >= 1:
        return f"${d:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(d)))  # two significant figures
    return f"${d:.{min(digits, 10)}f}"


def fmt_bytes(n: Any) -> str:
    if n is None:
        return NONE
    n = float(n)
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MB"


def fmt_age(seconds: Any) -> str:
    if seconds is None:
        return NONE
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def fmt_when(value: Any) -> str:
    """An ISO time or datetime as `2026-01-31 12:00:03Z` (the page's script shows it in local time)."""
    if value is None:
        return NONE
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return str(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))


def iso_attr(value: Any) -> str:
    """The machine-readable form for <time datetime=...>."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def brief_json(value: Any, length: int = 80) -> str:
    """A value as one line of JSON, cut to `length` characters."""
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= length else text[:length - 1] + "…"


STATUS_CLASS = {"succeeded": "ok", "failed": "bad", "timed_out": "bad", "dead_lettered": "bad",
                "throttled": "warn", "queued": "idle", "running": "busy"}


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader(PACKAGE, "templates"),
                             autoescape=jinja2.select_autoescape(["html"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(count=fmt_count, ms=fmt_ms, pct=fmt_pct, cost=fmt_cost, bytes=fmt_bytes, age=fmt_age,
                       when=fmt_when, iso=iso_attr, brief_json=brief_json,
                       status_class=lambda s: STATUS_CLASS.get(s or "", "idle"))
    env.globals.update(static=static_url)
    return env


def render(template: str, context: dict[str, Any], status: int = 200) -> Response:
    body = environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, "cache-control": "no-store"})
