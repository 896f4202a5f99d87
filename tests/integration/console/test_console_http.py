"""The console over plain HTTP: signing in and out, its cookie, refusals, forged requests, and
pages that load nothing from other sites."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from stoker.platform.gateway.console.sessions import COOKIE, LOGIN_COOKIE
from tests.conftest import RunningPlatform, wait_until
from tests.console_session import login_form, post_login, sign_in

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def set_cookie(response: httpx.Response, name: str) -> str:
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def client(platform: RunningPlatform) -> httpx.Client:
    return httpx.Client(base_url=platform.url, timeout=30)


def test_signing_in_sets_a_session_cookie_and_signing_out_ends_it(console_platform: RunningPlatform) -> None:
    p = console_platform
    with client(p) as http:
        r = http.get("/console", headers=HTML)  # a browser without a session goes to the sign-in form
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        r = http.get("/console/functions/mix?window=24h", headers=HTML)
        assert r.headers["location"] == "/console/login?next=%2Fconsole%2Ffunctions%2Fmix%3Fwindow%3D24h"
        r = http.get("/console")  # a script or API client gets a clear JSON refusal
        assert r.status_code == 401 and "sign in to the console" in r.json()["error"]

        form = http.get("/console/login")
        assert form.status_code == 200
        assert re.search(r'<form method="post" action="/console/login"', form.text)
        assert re.search(r'<input type="password" id="token" name="token"', form.text)
        nonce_cookie = set_cookie(form, LOGIN_COOKIE)
        assert "HttpOnly" in nonce_cookie and "SameSite=strict" in nonce_cookie
        assert "Path=/console/login" in nonce_cookie

        r = post_login(http, p.token, "/console/functions/mix")
        assert r.status_code == 303 and r.headers["location"] == "/console/functions/mix"
        cookie = set_cookie(r, COOKIE)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over HTTPS the cookie is Secure
        session_id = r.cookies[COOKIE]
        assert p.token not in cookie and p.token not in r.headers["location"]
        auth = {"Cookie": f"{COOKIE}={session_id}"}

        page = http.get("/console", headers={**auth, **HTML})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for name in ("mix", "hello", "doomed", "jobs"):
            assert f'href="/console/functions/{name}?window=1h">{name}</a>' in page.text
        assert page.headers["cache-control"] == "no-store"
        assert p.token not in page.text
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert csrf
        assert http.get("/console/login", headers={**auth, **HTML}).headers["location"] == "/console"

        r = http.post("/console/logout", data={"csrf": "wrong"}, headers={**auth, **HTML})
        assert r.status_code == 403  # a forged sign-out is refused too
        r = http.post("/console/logout", data={"csrf": csrf.group(1)}, headers={**auth, **HTML})
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        assert "Max-Age=0" in set_cookie(r, COOKIE)
        assert http.get("/console", headers=auth).status_code == 401
        assert http.get("/console/live/overview", headers=auth).status_code == 401


def test_sign_in_refusals(console_platform: RunningPlatform) -> None:
    p = console_platform
    invoker = p.client().create_token("invoker-" + uuid.uuid4().hex[:6], ["invoke"])["token"]  # type: ignore[attr-defined]
    with client(p) as http:
        for token, status, says in (("", 400, "Enter a token"), ("stk_" + "x" * 43, 401, "not valid"),
                                    (p.token + "x", 401, "not valid"), (invoker, 403, "does not have the read right")):
            r = post_login(http, token)
            assert r.status_code == status and says in r.text, (token, r.status_code)
            assert COOKIE + "=" not in ";".join(r.headers.get_list("set-cookie"))
            assert 'name="token"' in r.text  # the form again, to try once more
        nonce, cookie = login_form(http)
        r = http.post("/console/login", data={"token": p.token, "nonce": "forged"},
                      headers={"Cookie": f"{LOGIN_COOKIE}={cookie}"})
        assert r.status_code == 403 and "expired or did not come from this console" in r.text
        r = http.post("/console/login", data={"token": p.token, "nonce": nonce})  # no nonce cookie: another site
        assert r.status_code == 403
        # a token in the URL signs nobody in
        r = http.get(f"/console/login?token={p.token}", headers=HTML)
        assert r.status_code == 200 and COOKIE + "=" not in ";".join(r.headers.get_list("set-cookie"))
        assert http.get(f"/console?token={p.token}").status_code == 401
        # after signing in, only this console's own pages: never another site
        r = post_login(http, p.token, "https://evil.example/console")
        assert r.status_code == 303 and r.headers["location"] == "/console"
        r = http.post("/console/login", content=b"x" * (65 * 1024),
                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413


def test_the_cookie_grants_the_console_only_and_bearer_tokens_grant_the_api_only(
        console_platform: RunningPlatform) -> None:
    p = console_platform
    session = sign_in(p.url, p.token)
    bearer = {"Authorization": f"Bearer {p.token}"}
    with client(p) as http:
        assert http.get("/api/functions", headers=session.cookie).status_code == 401
        assert http.get("/api/functions", headers=bearer).status_code == 200
        assert http.get("/console", headers=bearer).status_code == 401
        assert http.get("/console", headers=session.cookie).status_code == 200
        for forged in ("x" * 43, session.session_id[:-1] + ("A" if session.session_id[-1] != "A" else "B"), "",
                       session.session_id + "x"):
            assert http.get("/console", headers={"Cookie": f"{COOKIE}={forged}"}).status_code == 401


def test_a_revoked_token_ends_its_sessions(console_platform: RunningPlatform) -> None:
    p = console_platform
    admin = p.client()
    name = "reader-" + uuid.uuid4().hex[:6]
    reader = admin.create_token(name, ["read"])["token"]  # type: ignore[attr-defined]
    session = sign_in(p.url, reader)
    with client(p) as http:
        page = http.get("/console/functions/doomed", headers=session.cookie)
        assert page.status_code == 200
        assert "Redrive" not in page.text  # reading is not acting: no redrive for a read-only token
        admin.revoke_token(name)  # type: ignore[attr-defined]
        wait_until(lambda: http.get("/console", headers=session.cookie).status_code == 401, timeout=10,
                   message="the revoked token's session to end")


def doomed_dead_letters(p: RunningPlatform, count: int) -> list[dict[str, Any]]:
    admin = p.client()
    for i in range(count):
        admin.invoke_async("doomed", {"n": i})  # type: ignore[attr-defined]
    return wait_until(lambda: len(admin.dead_letters("doomed")) >= count and admin.dead_letters("doomed"),  # type: ignore[attr-defined]
                      timeout=60, message="dead letters of doomed")  # type: ignore[no-any-return]


def test_redrive_needs_the_session_its_right_and_the_anti_forgery_token(console_platform: RunningPlatform) -> None:
    p = console_platform
    letters = doomed_dead_letters(p, 2)
    url = "/console/functions/doomed/dlq/redrive"
    admin = sign_in(p.url, p.token)
    reader = sign_in(p.url, p.client().create_token("ro-" + uuid.uuid4().hex[:6], ["read"])["token"])  # type: ignore[attr-defined]
    with client(p) as http:
        page = http.get("/console/functions/doomed", headers=admin.cookie)
        assert letters[0]["id"] in page.text and "Redrive all" in page.text
        refused = [
            (http.post(url, headers=admin.cookie), 403),  # no anti-forgery token
            (http.post(url, headers={**admin.cookie, "X-CSRF-Token": reader.csrf}), 403),  # another session's
            (http.post(url, data={"csrf": admin.csrf + "x"}, headers=admin.cookie), 403),
            (http.post(url, headers={"Authorization": f"Bearer {p.token}", "X-CSRF-Token": admin.csrf}), 401),
            (http.post(url, headers=reader.headers), 403),  # the read right does not redrive
        ]
        for r, status in refused:
            assert r.status_code == status, (r.status_code, r.text)
            assert r.json()["error"]
        assert len(p.client().dead_letters("doomed")) == len(letters)  # type: ignore[attr-defined]

        # one letter, as the page's script sends it (header token, JSON answer)
        r = http.post(url, data={"id": letters[0]["id"]}, headers={**admin.headers, "Accept": "application/json"})
        assert r.status_code == 200 and r.json()["count"] == 1
        assert r.json()["redriven"][0]["id"] == letters[0]["id"]
        # the rest, as a plain form post without the script (token in the form, back to the page)
        r = http.post(url, data={"csrf": admin.csrf}, headers={**admin.cookie, **HTML})
        assert r.status_code == 303 and r.headers["location"].startswith("/console/functions/doomed?redriven=")
        r = http.post("/console/functions/nosuch/dlq/redrive", headers={**admin.headers, "Accept": "application/json"})
        assert r.status_code == 404 and "nosuch" in r.json()["error"]


class Links(HTMLParser):
    """Every address a page refers to (src, href, action, and url() in inline styles)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data", "formaction") and value is not None:
                self.urls.append(value)
            if name == "style" and value and "url(" in value:
                self.urls.append(value)
        if tag == "script" and not dict(attrs).get("src"):
            self.inline_scripts += 1


def test_pages_refer_to_this_gateway_only(console_platform: RunningPlatform) -> None:
    p = console_platform
    admin = p.client()
    admin.invoke("mix", {"i": 1})  # type: ignore[attr-defined]
    invocation = wait_until(lambda: admin.invocations(function="mix", limit=1), timeout=30,  # type: ignore[attr-defined]
                            message="a ledger row of mix")[0]["id"]
    session = sign_in(p.url, p.token)
    pages = ["/console", "/console?window=7d", "/console/functions/mix", "/console/functions/jobs?status=failed",
             f"/console/invocations/{invocation}", "/console/nodes", "/console/functions/nosuch",
             "/console/live/overview", "/console/live/functions/jobs", f"/console/live/invocations/{invocation}",
             "/console/live/nodes"]
    with client(p) as http:
        for path in [*pages, "/console/login"]:
            r = http.get(path, headers={**session.cookie, **HTML} if path != "/console/login" else HTML)
            assert r.status_code in (200, 404), (path, r.status_code)
            assert "default-src 'self'" in r.headers["content-security-policy"], path
            assert r.headers["x-frame-options"] == "DENY"
            links = Links()
            links.feed(r.text)
            assert links.inline_scripts == 0, path
            for url in links.urls:
                assert url.startswith(("/", "#", "data:")) and not url.startswith("//"), (path, url)
                assert "url(" not in url, (path, url)
        for url in set(re.findall(r'(?:src|href)="(/console/static/[^"]+)"', http.get("/console",
                                                                                        headers=session.cookie).text)):
            asset = http.get(url)
            assert asset.status_code == 200 and asset.headers["cache-control"].endswith("immutable"), url
            assert http.get(url, headers={"If-None-Match": asset.headers["etag"]}).status_code == 304
            assert not re.search(rb"https?://(?!github\.com/leeoniya/uPlot)", asset.content), url
        assert http.get("/console/static/console.js").headers["cache-control"] == "no-cache"  # no version: revalidate
        for missing in ("/console/static/nosuch.js", "/console/static/../routes.py",
                        "/console/static/%2e%2e/sessions.py", "/console/static/vendor/../../__init__.py"):
            assert http.get(missing).status_code == 404, missing


def test_what_the_pages_poll(console_platform: RunningPlatform) -> None:
    p = console_platform
    session = sign_in(p.url, p.token)
    with client(p) as http:
        fragment = http.get("/console/live/functions/jobs", headers=session.cookie)
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'data-part="strip"' in fragment.text and 'data-part="body"' in fragment.text
        # the triggers with their live state
        text = fragment.text
        assert "*/5 * * * * (UTC)" in text and "queue orders" in text and "folder " in text and "*.csv" in text
        assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:[0-5][05]:00Z"', text)  # the next cron fires
        series = http.get("/console/series?window=15m&function=mix", headers=session.cookie)
        assert series.status_code == 200
        data = series.json()
        assert data["step"] == 30 and len(data["t"]) == len(data["invocations"]) == len(data["p99_ms"]) >= 30
        for bad, status in (("?window=2y", 400), ("?function=nosuch", 404), ("?color=red", 400)):
            r = http.get("/console/series" + bad, headers=session.cookie)
            assert r.status_code == status and r.json()["error"], bad
        r = http.get("/console/invocations/" + str(uuid.uuid4()), headers={**session.cookie, **HTML})
        assert r.status_code == 404 and "no invocation" in r.text
        r = http.get("/console/functions/mix?status=exploded", headers={**session.cookie, **HTML})
        assert r.status_code == 400 and "is not a status" in r.text


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_other_methods_are_not_served(console_platform: RunningPlatform, method: str) -> None:
    with client(console_platform) as http:
        r = http.request(method, "/console")
        assert r.status_code == 405 and "GET" in r.headers["allow"]
