"""Console sessions in Redis: opened by a token, found by the cookie's id, ended by sign-out or time."""

from __future__ import annotations

import asyncio
import hashlib

import fakeredis
import pytest

from stoker.errors import ConfigError
from stoker.platform.gateway.console.sessions import SessionSettings, SessionStore
from stoker.platform.keys import Keys

KEYS = Keys("t")


def store(settings: SessionSettings | None = None) -> tuple[SessionStore, fakeredis.FakeAsyncRedis]:
    redis = fakeredis.FakeAsyncRedis()
    return SessionStore(redis, KEYS, settings), redis  # type: ignore[arg-type]


def test_open_load_close() -> None:
    sessions, redis = store()

    async def run() -> None:
        session_id, opened = await sessions.open("ab" * 32, "ops", frozenset({"read", "invoke"}))
        assert len(session_id) == 43
        # Redis holds the id's hash only, and never the token
        (key,) = await redis.keys("*")
        assert key.decode() == f"t:console:session:{hashlib.sha256(session_id.encode()).hexdigest()}"
        stored = await redis.hgetall(key)
        assert session_id.encode() not in b"".join(stored.values())
        loaded = await sessions.load(session_id)
        assert loaded == opened
        assert loaded.may("invoke") and not loaded.may("deploy")
        assert loaded.csrf_matches(opened.csrf) and not loaded.csrf_matches(opened.csrf[:-1] + "x")
        assert not loaded.csrf_matches(None) and not loaded.csrf_matches("")
        await sessions.close(session_id)
        assert await sessions.load(session_id) is None

    asyncio.run(run())


@pytest.mark.parametrize("session_id", [None, "", "short", "x" * 43 + "y", "../" * 15, "a" * 42 + "!"])
def test_ids_that_cannot_be_sessions_are_not_looked_up(session_id: str | None) -> None:
    sessions, _ = store()
    assert asyncio.run(sessions.load(session_id)) is None


def test_idle_expiry_is_renewed_and_the_lifetime_is_capped() -> None:
    sessions, redis = store(SessionSettings(idle_s=600, max_s=3600))

    async def run() -> None:
        session_id, _ = await sessions.open("cd" * 32, "ops", frozenset({"read"}))
        key = sessions.key(session_id)
        assert 590_000 < await redis.pttl(key) <= 600_000
        await redis.pexpire(key, 1000)
        assert await sessions.load(session_id) is not None
        assert await redis.pttl(key) > 590_000  # renewed by use
        await redis.hset(key, "created", 1)  # opened long ago: past its maximum lifetime
        assert await sessions.load(session_id) is None
        assert not await redis.exists(key)

    asyncio.run(run())


def test_a_damaged_session_is_dropped() -> None:
    sessions, redis = store()

    async def run() -> None:
        session_id, _ = await sessions.open("ef" * 32, "ops", frozenset({"read"}))
        await redis.hdel(sessions.key(session_id), "csrf")
        assert await sessions.load(session_id) is None
        assert not await redis.exists(sessions.key(session_id))

    asyncio.run(run())


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SessionSettings.from_env() == SessionSettings(8 * 3600, 7 * 86400)
    monkeypatch.setenv("STOKER_CONSOLE_SESSION_IDLE", "30m")
    monkeypatch.setenv("STOKER_CONSOLE_SESSION_MAX", "1d")
    assert SessionSettings.from_env() == SessionSettings(1800, 86400)
    monkeypatch.setenv("STOKER_CONSOLE_SESSION_IDLE", "soon")
    with pytest.raises(ConfigError, match="STOKER_CONSOLE_SESSION_IDLE 'soon' is not a duration"):
        SessionSettings.from_env()
