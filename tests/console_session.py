"""Signing in to the web console as a browser does, for tests that speak plain HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from stoker.platform.gateway.console.sessions import COOKIE, LOGIN_COOKIE


@dataclass(frozen=True)
class ConsoleSession:
    session_id: str
    csrf: str

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.session_id}"}

    @property
    def headers(self) -> dict[str, str]:
        """What the console's own script sends: the session cookie and the anti-forgery token."""
        return {**self.cookie, "X-CSRF-Token": self.csrf}


def login_form(http: httpx.Client) -> tuple[str, str]:
    """(the form's nonce field, the nonce cookie) from GET /console/login."""
    form = http.get("/console/login")
    assert form.status_code == 200, form.text[:300]
    found = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert found, form.text[:500]
    return found.group(1), form.cookies[LOGIN_COOKIE]


def post_login(http: httpx.Client, token: str, next_path: str = "/console") -> httpx.Response:
    nonce, cookie = login_form(http)
    return http.post("/console/login", data={"token": token, "nonce": nonce, "next": next_path},
                     headers={"Cookie": f"{LOGIN_COOKIE}={cookie}"})


def sign_in(url: str, token: str) -> ConsoleSession:
    """A fresh session (its own client, so that no cookie leaks into the caller's)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        r = post_login(http, token)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        session_id = r.cookies[COOKIE]
        page = http.get("/console", headers={"Cookie": f"{COOKIE}={session_id}"})
        assert page.status_code == 200, page.text[:300]
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        return ConsoleSession(session_id, csrf.group(1))
