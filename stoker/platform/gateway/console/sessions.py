"""Console sign-in sessions: an opaque id in an HttpOnly cookie, the session itself in Redis.

Signing in with a token opens a session: a random id (256 bits) goes to the browser in
the `stoker_console` cookie (HttpOnly, SameSite=Lax, Path=/console, Secure over HTTPS);
Redis keeps the session under the SHA-256 of that id, so a copy of Redis holds nothing a
browser could sign in with, and the token itself is kept nowhere (only its SHA-256, to
check on every request that it was not revoked since):

    {p}:console:session:{sha256 of the session id}
        hash: token (sha256 hex of the token signed in with), name, rights (json list),
        csrf (the session's anti-forgery token), created (ms)

A session ends at sign-out, after STOKER_CONSOLE_SESSION_IDLE without a request (default
8h; each request renews it), STOKER_CONSOLE_SESSION_MAX after sign-in (default 7d), or
as soon as its token is revoked. Any gateway serves any session: they share Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.keys import Keys
from stoker.platform.timeparse import parse_duration

COOKIE = "stoker_console"
#: the sign-in form's own anti-forgery value (double submit: cookie and hidden field)
LOGIN_COOKIE = "stoker_console_login"
COOKIE_PATH = "/console"
#: what token_urlsafe(32) makes: anything else is not worth a Redis round trip
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class SessionSettings:
    idle_s: float = 8 * 3600
    max_s: float = 7 * 86400

    @classmethod
    def from_env(cls) -> SessionSettings:
        def read(name: str, default: float) -> float:
            raw = os.environ.get(name, "").strip()
            if not raw:
                return default
            try:
                return parse_duration(raw, name)
            except InvalidInput as e:
                raise ConfigError(str(e)) from None

        return cls(idle_s=read("STOKER_CONSOLE_SESSION_IDLE", cls.idle_s),
                   max_s=read("STOKER_CONSOLE_SESSION_MAX", cls.max_s))


@dataclass(frozen=True)
class Session:
    name: str
    rights: frozenset[str]
    csrf: str
    token_hash: str
    created_ms: int

    def may(self, right: str) -> bool:
        return "admin" in self.rights or right in self.rights

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent).encode(), self.csrf.encode())


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SessionStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: SessionSettings | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings or SessionSettings()

    def key(self, session_id: str) -> str:
        return self.keys.custom("console", "session", _digest(session_id))

    async def open(self, token_hash: str, name: str, rights: frozenset[str]) -> tuple[str, Session]:
        """A new session for the token with this hash; returns the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        session = Session(name=name, rights=rights, csrf=secrets.token_urlsafe(32), token_hash=token_hash,
                          created_ms=int(time.time() * 1000))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key(session_id), mapping={
            "token": token_hash, "name": name, "rights": orjson.dumps(sorted(rights)), "csrf": session.csrf,
            "created": session.created_ms})
        pipe.pexpire(self.key(session_id), int(min(self.settings.idle_s, self.settings.max_s) * 1000))
        await pipe.execute()
        return session_id, session

    async def load(self, session_id: str | None) -> Session | None:
        """The live session with this id (renewing its idle expiry), or None."""
        if not session_id or not SESSION_ID_RE.match(session_id):
            return None
        key = self.key(session_id)
        raw: Any = await self.redis.hgetall(key)
        if not raw:
            return None
        h = {_text(k): v for k, v in raw.items()}
        try:
            session = Session(name=_text(h["name"]), rights=frozenset(orjson.loads(h["rights"])),
                              csrf=_text(h["csrf"]), token_hash=_text(h["token"]), created_ms=int(h["created"]))
        except (KeyError, ValueError, orjson.JSONDecodeError):
            await self.redis.delete(key)
            return None
        left_ms = session.created_ms + int(self.settings.max_s * 1000) - int(time.time() * 1000)
        if left_ms <= 0:
            await self.redis.delete(key)
            return None
        await self.redis.pexpire(key, min(int(self.settings.idle_s * 1000), left_ms))
        return session

    async def close(self, session_id: str | None) -> None:
        if session_id and SESSION_ID_RE.match(session_id):
            await self.redis.delete(self.key(session_id))
