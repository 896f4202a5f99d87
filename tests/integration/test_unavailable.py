"""While Redis is unreachable every gateway route answers 503 with a clear message and
Retry-After, at once, and everything works again when it is back, without a restart.

The test runs a redis-server of its own (AOF on, so the deployed function survives its
restart) and stops it; the session's Redis and the shared one are never touched."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from stoker.platform.embedded_redis import redis_server_binary
from tests.conftest import RedisServer, RunningPlatform, free_port, start_platform, wait_until

ECHO = "def handler(event, context):\n    return {'echo': event}\n"


class OwnRedis:
    """A redis-server on a fixed port that the test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port)

        def up() -> bool:
            with contextlib.suppress(redis.exceptions.RedisError):
                return bool(client.ping())
            return False

        wait_until(up, timeout=20, message="the test's redis-server to start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def on_own_redis(tmp_path: Path, own_redis: OwnRedis, prefix: str, make_function) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "home", own_redis.url, prefix, deploy=[make_function("echo", ECHO)])
    try:
        yield running
    finally:
        running.stop()


#: (method, path, body, needs Redis): routes that cannot answer without Redis must say 503; the
#: others (the registry is in the database) may answer from what they have, but never 500
ROUTES = [
    ("POST", "/api/functions/echo/invoke", b'{"n": 1}', True),
    ("POST", "/api/functions/echo/invoke?async=true", b'{"n": 1}', True),
    ("POST", "/api/queues/q1/messages", b'{"n": 1}', True),
    ("GET", "/api/queues", None, True),
    ("POST", "/2015-03-31/functions/echo/invocations", b'{"n": 1}', True),
    ("POST", "/fn/echo", b'{"n": 1}', True),
    ("GET", "/metrics", None, True),
    ("GET", "/healthz", None, True),
    ("GET", "/api/functions", None, False),
    ("GET", "/api/functions/echo", None, False),
    ("GET", "/2015-03-31/functions/echo", None, False),
    ("GET", "/api/invocations", None, False),
]


def test_every_route_answers_503_while_redis_is_down_and_recovers(on_own_redis: RunningPlatform,
                                                                  own_redis: OwnRedis) -> None:
    headers = {"Authorization": f"Bearer {on_own_redis.token}", "content-type": "application/json"}
    with httpx.Client(base_url=on_own_redis.url, headers=headers, timeout=30) as http:
        def invoke_ok() -> bool:
            r = http.post("/api/functions/echo/invoke", content=b'{"n": 1}')
            return r.status_code == 200 and r.json() == {"echo": {"n": 1}}

        wait_until(invoke_ok, timeout=60, message="a first invoke to work")
        own_redis.stop()
        time.sleep(1)
        for _ in range(2):  # twice: the first failure and the ones after it
            for method, path, body, needs_redis in ROUTES:
                started = time.monotonic()
                r = http.request(method, path, content=body)
                took = time.monotonic() - started
                allowed = (503,) if needs_redis else (200, 503)
                assert r.status_code in allowed, f"{method} {path} answered {r.status_code}: {r.text[:300]}"
                assert took < 15, f"{method} {path} took {took:.1f} s to answer {r.status_code}"
                if r.status_code == 503 and path != "/healthz":
                    error = r.json().get("error", "")
                    assert "Redis" in error and "reachable" in error, f"{method} {path}: {r.text[:300]}"
                    assert r.headers.get("retry-after", "").isdigit(), f"{method} {path}: no Retry-After"
        assert "internal error" not in on_own_redis.logs_text()

        own_redis.start()
        wait_until(invoke_ok, timeout=60, message="an invoke to work again once Redis is back")
        r = http.post("/api/functions/echo/invoke?async=true", content=b'{"n": 2}')
        assert r.status_code == 202
        invocation = r.json()["id"]

        def ran() -> bool:
            got = http.get(f"/api/invocations/{invocation}")
            return got.status_code == 200 and got.json().get("status") == "succeeded"

        wait_until(ran, timeout=60, message="an async invoke accepted after Redis came back to succeed")
        assert http.post("/api/queues/q1/messages", content=b'{"n": 3}').status_code in (200, 201, 202)
        assert http.get("/healthz").status_code == 200


class Cut:
    """A TCP proxy to a server that the test can cut (every connection dropped, new ones
    refused) and restore on the same port: a database that becomes unreachable, without
    touching the database server itself."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            if self.listener is not None:
                with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.mark.postgres
def test_routes_answer_503_while_the_database_is_unreachable_and_recover(
        tmp_path: Path, redis_server: RedisServer, prefix: str, postgres_url: str, make_function) -> None:
    parts = urllib.parse.urlsplit(postgres_url)
    proxy = Cut((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.open()
    url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    running = start_platform(tmp_path / "home", redis_server.url, prefix, extra_env={"STOKER_DB_URL": url},
                             deploy=[make_function("echo", ECHO)])
    headers = {"Authorization": f"Bearer {running.token}", "content-type": "application/json"}
    try:
        with httpx.Client(base_url=running.url, headers=headers, timeout=30) as http:
            r = http.post("/api/functions/echo/invoke", content=b'{"n": 1}')
            assert r.status_code == 200, r.text
            wait_until(lambda: http.get("/api/invocations?function=echo").status_code == 200, timeout=30,
                       message="the ledger to answer")
            proxy.cut()
            for method, path in (("GET", "/api/invocations?function=echo"), ("GET", "/api/functions"),
                                 ("GET", "/api/bill")):
                for _ in range(2):
                    started = time.monotonic()
                    r = http.request(method, path)
                    assert r.status_code == 503, f"{method} {path} answered {r.status_code}: {r.text[:300]}"
                    assert time.monotonic() - started < 15
                    assert "the database is unreachable" in r.json()["error"], r.text[:300]
                    assert r.headers.get("retry-after", "").isdigit()
            # invoking needs no database: it keeps working, and its rows are written later
            r = http.post("/api/functions/echo/invoke", content=b'{"n": 2}')
            assert r.status_code == 200 and r.json() == {"echo": {"n": 2}}, r.text
            assert "internal error" not in running.logs_text()
            proxy.open()
            wait_until(lambda: http.get("/api/invocations?function=echo").status_code == 200, timeout=30,
                       message="the ledger to answer again once the database is back")
            wait_until(lambda: len(http.get("/api/invocations?function=echo").json()) >= 2, timeout=60,
                       message="the invocation made while the database was away to reach the ledger")
    finally:
        running.stop()
        proxy.cut()
