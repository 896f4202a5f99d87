"""The console's templates, display filters and shipped files."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from stoker.platform.gateway.console import render as R

EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""",
                      re.IGNORECASE)


def test_the_shipped_files_include_the_chart_library_and_its_license() -> None:
    assets = R.assets()
    for name in ("console.css", "console.js", "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css",
                 "vendor/uplot/LICENSE"):
        assert name in assets, name
    assert b"MIT License" in assets["vendor/uplot/LICENSE"].body
    assert assets["console.js"].media_type.endswith("javascript; charset=utf-8")
    assert assets["console.css"].media_type == "text/css; charset=utf-8"
    assert sum(len(a.body) for a in assets.values()) < 300 * 1024  # well under a megabyte
    assert re.fullmatch(r"/console/static/console\.js\?v=[0-9a-f]{12}", R.static_url("console.js"))


def test_nothing_in_templates_or_static_files_loads_from_another_site() -> None:
    root = resources.files(R.PACKAGE)
    texts = {f"templates/{p.name}": p.read_text() for p in (root / "templates").iterdir() if p.is_file()}
    texts.update({f"templates/partials/{p.name}": p.read_text() for p in (root / "templates" / "partials").iterdir()})
    texts.update({name: a.body.decode() for name, a in R.assets().items() if name.endswith((".js", ".css"))})
    for name, text in texts.items():
        assert not EXTERNAL.search(text), (name, EXTERNAL.search(text))
    # the script fetches only this gateway's own paths
    script = R.assets()["console.js"].body.decode()
    assert not re.search(r"fetch\(\s*['\"]https?:", script)
    csp = R.SECURITY_HEADERS["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp


@pytest.mark.parametrize(("value", "shown"), [
    (None, "\u2013"), (0, "$0"), (0.0000012, "$0.0000012"), (0.000123456, "$0.00012"), (0.05, "$0.050"),
    (0.5, "$0.50"), (12.345, "$12.35"), (1234.5, "$1,234.50"),
])
def test_cost(value: float | None, shown: str) -> None:
    assert R.fmt_cost(value) == shown


def test_other_figures() -> None:
    assert [R.fmt_ms(v) for v in (None, 0.123, 12.34, 1234, 61_000)] == ["\u2013", "0.12 ms", "12.3 ms", "1,234 ms",
                                                                         "61.0 s"]
    assert [R.fmt_pct(v) for v in (None, 0, 0.0004, 0.05, 1 / 3, 1)] == ["\u2013", "0%", "<0.1%", "5.0%", "33%",
                                                                        "100%"]
    assert [R.fmt_count(v) for v in (None, 7, 1234, 12_345, 2_500_000)] == ["\u2013", "7", "1,234", "12.3k", "2.5M"]
    assert [R.fmt_age(v) for v in (None, 0.25, 42, 600, 7200, 3 * 86400)] == ["\u2013", "0.2 s", "42 s", "10 min",
                                                                              "2.0 h", "3.0 d"]
    assert R.fmt_bytes(2048) == "2.0 KB" and R.fmt_bytes(12) == "12 B"
    assert R.fmt_when("2026-01-31T12:00:03.5+00:00") == "2026-01-31 12:00:03Z"
    assert R.iso_attr(0) == "1970-01-01T00:00:00Z"
    assert R.brief_json({"a": "x" * 100}, 20) == '{"a":"xxxxxxxxxxxxx…'


def test_templates_escape_what_users_wrote() -> None:
    env = R.environment()
    html = env.from_string("<p>{{ text }}</p>").render(text='<script>alert("x")</script>')
    assert "<script>" not in html and "&lt;script&gt;" in html
