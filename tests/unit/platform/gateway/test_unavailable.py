"""The gateway's error mapping: a real Redis or database that cannot be reached is a 503 with
Retry-After and a message saying which, on any route; other errors stay 500."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from stoker.platform.gateway.httputil import exception_handlers


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


def redis_down() -> None:
    redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=2).ping()


def sqlite_unopenable(tmp: Path) -> Callable[[], None]:
    def run() -> None:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}/missing/dir/ledger.db")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    return run


def postgres_down() -> None:
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://u@127.0.0.1:{closed_port()}/x",
                                      connect_args={"connect_timeout": 2})
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("select 1"))


def redis_disk_full() -> None:
    raise redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently "
                                         "unable to persist to disk")


def disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def wrapped_redis_down() -> None:
    try:
        redis_down()
    except redis.exceptions.ConnectionError as e:
        raise RuntimeError("while reading the registry") from e


def app_raising(fail: Callable[[], None], in_middleware: bool = False) -> Starlette:
    async def route(request: Request) -> Response:
        fail()
        return Response("unreachable")

    class Failing:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                fail()
            await self.app(scope, receive, send)

    return Starlette(routes=[Route("/r", route, methods=["GET", "POST"])], exception_handlers=exception_handlers(),
                     middleware=[Middleware(Failing)] if in_middleware else [])


@pytest.mark.parametrize("name, in_middleware, message", [
    ("redis_down", False, "Redis is unreachable"),
    ("redis_down", True, "Redis is unreachable"),
    ("wrapped_redis_down", False, "Redis is unreachable"),
    ("redis_disk_full", False, "Redis refuses the request for now (MISCONF"),
    ("sqlite_unopenable", False, "the database is unreachable"),
    ("postgres_down", False, "the database is unreachable"),
    ("disk_full", False, "the disk is full"),
])
def test_an_unreachable_backend_is_a_503_with_retry_after(tmp_path: Path, name: str, in_middleware: bool,
                                                          message: str) -> None:
    fail = sqlite_unopenable(tmp_path) if name == "sqlite_unopenable" else globals()[name]
    with TestClient(app_raising(fail, in_middleware), raise_server_exceptions=False) as client:
        r = client.post("/r")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "2"
    assert message in r.json()["error"] and r.json()["code"] == "ServiceException"


def test_other_errors_stay_500() -> None:
    def bug() -> None:
        raise KeyError("x")

    def redis_bug() -> None:
        raise redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    for fail in (bug, redis_bug):
        with TestClient(app_raising(fail), raise_server_exceptions=False) as client:
            r = client.get("/r")
        assert r.status_code == 500 and "retry-after" not in r.headers
        assert r.json()["error"].startswith("internal error")
