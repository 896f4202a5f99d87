"""Tokens: stored hashed, looked up through the Redis projection, revoked at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest

from stoker.errors import Conflict, InvalidInput, NotFound, Unauthorized
from stoker.platform.db import make_engine, migrate
from stoker.platform.gateway.auth import ADMIN, TokenVerifier
from stoker.platform.keys import Keys
from stoker.platform.tokens import store as T

KEYS = Keys("t")


@pytest.fixture
def token_store(tmp_path: Path) -> Iterator[T.TokenStore]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    yield T.TokenStore(engine)
    engine.dispose()


def test_only_the_hash_is_stored(token_store: T.TokenStore) -> None:
    info, secret = token_store.create("ci", ["deploy", "read", "deploy"], "admin")
    assert secret.startswith("stk_") and info.rights == ["deploy", "read"] and info.created_by == "admin"
    live = token_store.live()
    assert list(live) == [T.token_hash(secret)] and secret not in str(live)


@pytest.mark.parametrize(("name", "rights", "error", "words"), [
    ("ci", [], InvalidInput, "at least one right"),
    ("ci", ["root"], InvalidInput, "unknown right"),
    ("bad name", ["read"], InvalidInput, "not valid"),
    ("admin", ["read"], InvalidInput, "admin token"),
])
def test_bad_tokens_are_refused(token_store: T.TokenStore, name: str, rights: list[str],
                                error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        token_store.create(name, rights, None)
    assert token_store.all(include_revoked=True) == []


def test_names_are_unique_among_live_tokens(token_store: T.TokenStore) -> None:
    token_store.create("ci", ["read"], None)
    with pytest.raises(Conflict, match="exists already"):
        token_store.create("ci", ["read"], None)
    token_store.revoke("ci")
    token_store.create("ci", ["invoke"], None)  # a revoked token's name may be used again
    listed = token_store.all(include_revoked=True)
    assert [(t.name, t.rights, t.revoked_at is None) for t in listed] == [("ci", ["read"], False),
                                                                          ("ci", ["invoke"], True)]
    assert [t.rights for t in token_store.all()] == [["invoke"]]
    with pytest.raises(NotFound):
        token_store.revoke("nobody")


def verifier(token_store: T.TokenStore) -> tuple[TokenVerifier, fakeredis.FakeAsyncRedis]:
    redis = fakeredis.FakeAsyncRedis()
    return TokenVerifier("stk_admin", redis, KEYS, token_store), redis  # type: ignore[arg-type]


def test_verify_admin_and_named_tokens(token_store: T.TokenStore) -> None:
    v, _ = verifier(token_store)
    _, secret = token_store.create("ci", ["deploy"], None)

    async def run() -> None:
        assert await v.verify("stk_admin") == ADMIN
        # the projection is empty: the verifier rebuilds it from SQL on first use
        principal = await v.verify(secret)
        assert principal is not None and principal.name == "ci"
        assert principal.may("deploy") and not principal.may("invoke") and not principal.may("admin")
        assert await v.verify("stk_wrong") is None and await v.verify("wrong") is None
        with pytest.raises(Unauthorized, match="needs a token"):
            await v.principal(None)
        with pytest.raises(Unauthorized, match="not valid"):
            await v.principal("stk_wrong")

    asyncio.run(run())


def test_a_revoked_token_stops_working_at_once(token_store: T.TokenStore) -> None:
    v, redis = verifier(token_store)
    _, secret = token_store.create("ci", ["read"], None)

    async def run() -> None:
        assert await v.verify(secret) is not None  # now cached
        _, digest = token_store.revoke("ci")
        await T.unproject_one(redis, KEYS, digest)  # type: ignore[arg-type]
        v.forget()  # what the pub/sub notice does on every gateway
        assert await v.verify(secret) is None

    asyncio.run(run())


def test_verify_by_hash_for_sessions_that_keep_no_token(token_store: T.TokenStore) -> None:
    v, redis = verifier(token_store)
    _, secret = token_store.create("ops", ["read"], None)

    async def run() -> None:
        assert await v.verify_hash(T.token_hash("stk_admin")) == ADMIN
        principal = await v.verify_hash(T.token_hash(secret))
        assert principal is not None and principal.name == "ops" and principal.may("read")
        assert await v.verify_hash(T.token_hash("stk_unknown")) is None
        assert await v.verify_hash("not a hash") is None
        _, digest = token_store.revoke("ops")
        await T.unproject_one(redis, KEYS, digest)  # type: ignore[arg-type]
        v.forget()
        assert await v.verify_hash(T.token_hash(secret)) is None

    asyncio.run(run())


def test_the_listener_drops_the_cache_on_a_change(token_store: T.TokenStore) -> None:
    v, redis = verifier(token_store)
    _, secret = token_store.create("ci", ["read"], None)

    async def run() -> None:
        await v.start()
        try:
            assert await v.verify(secret) is not None
            _, digest = token_store.revoke("ci")
            await T.unproject_one(redis, KEYS, digest)  # type: ignore[arg-type]
            for _ in range(100):  # the notice arrives asynchronously
                if await v.verify(secret) is None:
                    break
                await asyncio.sleep(0.02)
            assert await v.verify(secret) is None
        finally:
            await v.stop()

    asyncio.run(run())
