"""Hostile requests against a running gateway: no token, wrong tokens, oversize bodies,
headers and URLs, deep and broken JSON. Each gets a clear 4xx JSON error that carries no
stack trace and no secret, and the platform keeps working."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from stoker.platform.gateway.app import collect_routes
from stoker.platform.gateway.console.sessions import COOKIE
from tests.conftest import RunningPlatform
from tests.console_session import sign_in

#: routes that answer without a token, on purpose; a new public route must be added here
PUBLIC = {"/healthz", "/openapi.json", "/metrics",
          # the console's sign-in form and its own files (CSS, script, chart library): a browser
          # needs them before it has a session; every other /console route wants one
          "/console/login", "/console/static/console.css"}

PARAM_VALUES = {"name": "nosuchfunction", "id": str(uuid.uuid4()), "hash": "a" * 64, "asset": "console.css"}


def gateway_routes() -> list[tuple[str, str, bool]]:
    """(method, concrete path, catch-all) for every route the gateway serves. A catch-all
    (a `{...:path}` parameter) serves functions' own HTTP routes, which may be public."""
    out = []
    for route in collect_routes():
        path = getattr(route, "path", None)
        if not path:
            continue
        concrete = re.sub(r"{(\w+)(:\w+)?}", lambda m: PARAM_VALUES.get(m.group(1), "nosuchroute"), path)
        methods = getattr(route, "methods", None) or {"GET", "POST"}
        out += [(m, concrete, ":path}" in path) for m in sorted(methods) if m != "HEAD"]
    return out


def assert_clean_error(response: httpx.Response, platform: RunningPlatform, status: int | None = None) -> None:
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    body = response.json()
    # the Lambda API answers in AWS's error shape ({"Type", "message"}), as boto3 expects
    message = body.get("message") if response.request.url.path.startswith("/2015-03-31/") else body.get("error")
    assert isinstance(message, str) and message, body
    text = response.text
    assert "Traceback" not in text and 'File "' not in text
    assert platform.token not in text and str(platform.home) not in text


def test_every_management_route_needs_a_valid_token(platform: RunningPlatform) -> None:
    everything = gateway_routes()
    routes = [(m, p, catch_all) for m, p, catch_all in everything if p not in PUBLIC]
    assert ("POST", "/api/functions", False) in routes and ("GET", "/api/invocations", False) in routes
    assert ("GET", "/console", False) in routes and ("POST", "/console/logout", False) in routes
    bad_headers = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": "Bearer " + platform.token[:-1]},
        {"Authorization": "Bearer " + platform.token + "x"},
        {"Authorization": f"Basic {platform.token}"},
        {"Authorization": platform.token},
        {"Authorization": ("Bearer " + "\u00e9" * 40).encode("utf-8")},  # type: ignore[dict-item]
    ]
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        for method, path, catch_all in routes:
            for headers in bad_headers:
                r = http.request(method, path, headers=headers, content=b"{}")
                # a function's own route that does not exist says so; everything else wants a token
                expected = (401, 403, 404) if catch_all else (401,)
                assert r.status_code in expected, (method, path, headers, r.status_code, r.text[:300])
                assert_clean_error(r, platform)
            if path.startswith("/console"):
                # the console wants its session cookie, never a bearer token (nor a forged cookie)
                for cookie in (COOKIE + "=" + "A" * 43, COOKIE + "=" + platform.token):
                    r = http.request(method, path, headers={"Cookie": cookie}, content=b"{}")
                    assert r.status_code == 401, (method, path, cookie, r.status_code, r.text[:300])
                    assert_clean_error(r, platform)
                good = sign_in(platform.url, platform.token).headers  # afresh: this may be the sign-out
            else:
                good = {"Authorization": f"Bearer {platform.token}"}
            r = http.request(method, path, headers=good, content=b"{}")
            assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code, r.text[:300])
        for method, path, _ in everything:
            if path in PUBLIC and method == "GET":
                assert http.get(path).status_code == 200, path


def test_oversize_requests_are_refused_before_they_are_read(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(make_function("echo", "def handler(event, context):\n    return event\n")),
                 check=True)
    auth = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, timeout=60, headers=auth) as http:
        big = b'{"x": "' + b"a" * (8 * 1024 * 1024) + b'"}'
        assert_clean_error(http.post("/api/functions/echo/invoke", content=big), platform, 413)

        def chunks():  # no Content-Length: the cap counts the streamed bytes
            for _ in range(10):
                yield b"a" * (1024 * 1024)

        r = http.post("/api/functions/echo/invoke", content=chunks())
        assert_clean_error(r, platform, 413)
        assert_clean_error(http.post("/api/functions", content=b"\0" * (101 * 1024 * 1024)), platform, 413)

        many = {f"x-h{i}": "v" for i in range(150)}
        assert_clean_error(http.get("/api/functions", headers=many), platform, 431)
        assert_clean_error(http.get("/api/functions", headers={"x-big": "v" * (40 * 1024)}), platform, 431)
        assert_clean_error(http.get("/api/functions?q=" + "a" * (10 * 1024)), platform, 414)

        deep = "[" * 200 + "]" * 200
        r = http.post("/api/functions/echo/invoke", content=deep)
        assert_clean_error(r, platform, 400)
        assert "deeper than" in r.json()["error"]
        r = http.post("/api/functions/echo/invoke", content=b'{"broken": ')
        assert_clean_error(r, platform, 400)
        assert "not valid JSON" in r.json()["error"]
        r = http.post("/api/functions/echo/invoke?async=true", content=b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}')
        assert_clean_error(r, platform, 413)

        r = http.post("/api/functions/echo/invoke", content=b'{"still": "fine"}')
        assert r.status_code == 200 and r.json() == {"still": "fine"}
    assert httpx.get(f"{platform.url}/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/api/functions/..%2F..%2Fetc%2Fpasswd", "/api/bundles/..%2F..%2Fendpoint.json",
                                  "/api/bundles/" + "0" * 63 + "g", "/api/functions/%00", "/api/invocations/%27--"])
def test_path_tricks_get_clean_errors(path: str, platform: RunningPlatform) -> None:
    auth = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, timeout=30, headers=auth) as http:
        r = http.get(path)
        assert r.status_code in (400, 404), (r.status_code, r.text[:300])
        assert_clean_error(r, platform)
        assert "root:" not in r.text and '"token"' not in r.text


def test_errors_from_the_api_carry_no_secrets(platform: RunningPlatform) -> None:
    auth = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, timeout=30, headers=auth) as http:
        for r in (http.post("/api/functions", content=b"PK\x03\x04garbage"),
                  http.get("/api/invocations?since=yesterday-ish"),
                  http.get("/api/invocations?limit=-1"),
                  http.post("/api/functions/nosuch/invoke", content=b"{}"),
                  http.post("/api/functions/nosuch/dlq/redrive", content=b"[1, 2]")):
            assert_clean_error(r, platform)
            json.dumps(r.json())


def test_values_out_of_range_get_a_400_naming_the_parameter(platform: RunningPlatform, make_function) -> None:
    """Values the fuzzing found making the gateway fail: non-ASCII digits, times before 1970
    or outside what UTC holds, durations reaching before the year 1, the last month of 9999."""
    platform.cli("deploy", str(make_function("echo", "def handler(event, context):\n    return event\n")),
                 check=True)
    auth = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, timeout=30, headers=auth) as http:
        assert http.post("/api/queues/orders/messages", json={"n": 1}).status_code == 202
        for method, path, named in [
            ("GET", "/api/cron?next=\u00b2", "next"),
            ("GET", "/api/queues/orders/messages?limit=\u00b2", "limit"),
            ("POST", "/api/queues/orders/redrive?max=\u00b2", "max"),
            ("GET", "/api/invocations?limit=\u00b2", "limit"),
            ("GET", "/api/invocations?since=0001-01-01T00:00:00%2B01:00", "since"),
            ("DELETE", "/api/invocations?older_than=999999w", "older_than"),
            ("GET", "/api/bill?month=9999-12", "month"),
            ("GET", "/api/bill?until=9999-12-31T23:59:59-01:00", "until"),
        ]:
            r = http.request(method, path)
            assert_clean_error(r, platform, 400)
            assert r.json()["error"].startswith(named), (path, r.json())
        # a log read from before 1970 is a read from the start
        r = http.get("/api/functions/echo/logs?since=1900-01-01T00:00:00Z")
        assert r.status_code == 200 and r.json()["lines"] == []
        # a mistyped field never turns a redrive of one dead letter into a redrive of all
        r = http.post("/api/functions/echo/dlq/redrive", json={"ids": ["x"]})
        assert_clean_error(r, platform, 400)
        assert "unknown field(s) ids" in r.json()["error"]
