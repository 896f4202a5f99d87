"""Bearer tokens: who may call the gateway.

The admin token (STOKER_TOKEN, or the one generated for STOKER_HOME) is always
accepted, compared in constant time. Other tokens (`stoker token create`) are looked up
by their SHA-256 in the Redis projection (stoker.platform.tokens.store); answers are
cached in memory and the cache is dropped on every token change (pub/sub) and when the
subscription is lost, so a revoked token stops working at once and no request queries
the database.

A missing or unknown token is 401; a known token without the right is 403 (`authorize`).

Every path under /api/ needs a valid token before it is routed (`ManagementTokens`);
each route then checks its right.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.requests import Request

from stoker.errors import PlatformUnavailable, StokerError, Unauthorized
from stoker.platform.keys import Keys
from stoker.platform.tokens import store as tokens

log = logging.getLogger(__name__)

#: how long a looked-up token is trusted without a change notice (a safety net only)
CACHE_MAX_AGE_S = 60.0
CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Principal:
    name: str
    rights: frozenset[str]

    def may(self, right: str) -> bool:
        return "admin" in self.rights or right in self.rights


ADMIN = Principal(tokens.ADMIN_NAME, frozenset({"admin"}))

MISSING = ("this route needs a token: send 'Authorization: Bearer <token>' "
           "(the admin token is in $STOKER_HOME/endpoint.json; `stoker token create` makes others)")
INVALID = "the token is not valid (unknown or revoked): check STOKER_TOKEN, or see `stoker token list`"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class TokenVerifier:
    def __init__(self, admin_token: str, redis: aioredis.Redis | None = None, keys: Keys | None = None,
                 store: tokens.TokenStore | None = None) -> None:
        self._admin = admin_token.encode()
        self._admin_hash = tokens.token_hash(admin_token).encode()
        self.redis = redis
        self.keys = keys
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        #: bumped by every forget(), so that a lookup that raced a change is not cached
        self._generation = 0
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        self._resync = asyncio.Lock()

    # -- keeping the cache honest ---------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="token-listener")

    async def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            self._listener.cancel()
            # redis-py's pub/sub read can swallow a cancellation; never let that hang a shutdown
            done, _ = await asyncio.wait({self._listener}, timeout=2.0)
            for task in done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
            self._listener = None

    def forget(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def sync(self) -> None:
        """Rebuild the Redis projection from SQL (at start, and when Redis lost it)."""
        assert self.redis is not None and self.keys is not None and self.store is not None
        store = self.store
        await tokens.project_all(self.redis, self.keys, lambda: asyncio.to_thread(store.live))
        self.forget()

    async def _listen(self) -> None:
        assert self.redis is not None and self.keys is not None
        while not self._stopping:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(tokens.tokens_channel(self.keys))
                # whatever changed while we were not listening (a revoke during a Redis outage
                # reached SQL only): read the truth again
                if self.store is not None:
                    await self.sync()
                else:
                    self.forget()
                # short reads rather than listen(): the loop sees `_stopping` even if a
                # cancellation is lost inside redis-py's read
                while not self._stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self.forget()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("token listener: %s; retrying", e)
                self.forget()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- checking -------------------------------------------------------------------------
    async def verify(self, token: str) -> Principal | None:
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN
        if not token.startswith("stk_"):
            return None
        return await self.verify_hash(tokens.token_hash(token))

    async def verify_hash(self, digest: str) -> Principal | None:
        """Who the token with this SHA-256 (hex) is, if it is still valid: for sign-in sessions,
        which keep the hash of the token they were opened with, never the token."""
        if hmac.compare_digest(digest.encode(), self._admin_hash):
            return ADMIN
        if self.redis is None or self.keys is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_MAX_AGE_S:
            return cached[1]
        generation = self._generation
        entry, complete = await tokens.lookup(self.redis, self.keys, digest)
        if not complete and self.store is not None:
            async with self._resync:  # Redis lost the projection: rebuild it once
                entry, complete = await tokens.lookup(self.redis, self.keys, digest)
                if not complete:
                    await self.sync()
                    entry, complete = await tokens.lookup(self.redis, self.keys, digest)
        principal = Principal(str(entry["name"]), frozenset(entry["rights"])) if entry else None
        if generation == self._generation:
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[digest] = (now, principal)
        return principal

    async def principal(self, token: str | None) -> Principal:
        if token is None:
            raise Unauthorized(MISSING)
        try:
            principal = await self.verify(token)
        except (RedisError, OSError) as e:
            raise PlatformUnavailable(f"cannot check the token: Redis is not reachable ({e})") from None
        if principal is None:
            raise Unauthorized(INVALID)
        return principal

    async def authenticate(self, request: Request) -> Principal:
        return await self.principal(bearer_token(request))


#: paths whose every route needs a valid token, checked before routing: a route that
#: forgets to authorize still answers 401
PROTECTED_PREFIXES = ("/api/",)
PRINCIPAL_SCOPE_KEY = "stoker.principal"


class ManagementTokens:
    """ASGI middleware: a valid bearer token for every path under PROTECTED_PREFIXES."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path.startswith(PROTECTED_PREFIXES) or path + "/" in PROTECTED_PREFIXES):
            request = Request(scope)
            verifier: TokenVerifier = scope["app"].state.gateway.tokens
            try:
                scope[PRINCIPAL_SCOPE_KEY] = await verifier.authenticate(request)
            except StokerError as e:  # 401, or 503 when Redis cannot be asked
                body = orjson.dumps(e.to_json())
                await send({"type": "http.response.start", "status": e.status_code,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
