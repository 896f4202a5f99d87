"""Shared fixtures: a private redis-server for the session, unique key prefixes, SQLite and
PostgreSQL databases, and a running platform (`stoker up` against that Redis).

Integration tests use real parts: a real redis-server, real worker processes, real
SQLite and PostgreSQL. Each test gets its own key prefix and STOKER_HOME, so tests
never collide. PostgreSQL tests need a reachable server (CI starts one); set
STOKER_TEST_PG_URL to point elsewhere (default postgresql://root@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from stoker.platform.embedded_redis import redis_server_binary

PG_ADMIN_URL = os.environ.get(
    "STOKER_TEST_PG_URL", f"postgresql://{os.environ.get('USER', 'root')}@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_redis(workdir: Path, *extra: str) -> RedisServer:
    """A private redis-server (never the shared one on 6379), for tests that may kill it."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, proc, workdir)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError):
            if server.client().ping():
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError("the test redis-server did not start")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def _pg_admin() -> object:
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                           connect_timeout=3)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    try:
        admin = _pg_admin()
    except Exception as e:
        if os.environ.get("STOKER_REQUIRE_PG"):
            raise
        pytest.skip(f"PostgreSQL is not reachable ({e}); CI sets STOKER_REQUIRE_PG=1 and starts it")
    name = "stoker_test_" + secrets.token_hex(6)
    with admin:  # type: ignore[attr-defined]
        admin.execute(f'create database "{name}"')  # type: ignore[attr-defined]
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    finally:
        with _pg_admin() as admin:  # type: ignore[attr-defined]
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


# -- a running platform -------------------------------------------------------------------

@dataclass
class RunningPlatform:
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path

    def client(self) -> object:
        from stoker.client import Client

        return Client(self.url, self.token)

    def cli(self, *args: str, check: bool = False, input: bytes | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `stoker` CLI against this platform, as a user would."""
        result = subprocess.run([sys.executable, "-m", "stoker", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout, input=input.decode() if input else None)
        if check and result.returncode != 0:
            raise AssertionError(
                f"stoker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logs_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_platform(home: Path, redis_url: str | None, prefix: str, extra_env: dict[str, str] | None = None,
                   deploy: list[Path] | None = None, timeout: float = 90) -> RunningPlatform:
    """`stoker up --port 0` in a subprocess, against the given Redis (None: its embedded one)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update({"STOKER_HOME": str(home), "STOKER_PREFIX": prefix, "PYTHONUNBUFFERED": "1"})
    if redis_url:
        env["STOKER_REDIS_URL"] = redis_url
    env.update(extra_env or {})
    log = home / "up.log"
    args = [sys.executable, "-m", "stoker", "up", "--port", "0"]
    for path in deploy or []:
        args += ["--deploy", str(path)]
    proc = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    endpoint = home / "endpoint.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stoker up exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if endpoint.exists():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(endpoint.read_text())
                client_env = {**env, "STOKER_URL": data["url"], "STOKER_TOKEN": data["token"]}
                return RunningPlatform(home, client_env, proc, data["url"], data["token"], log)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"stoker up did not become healthy within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def platform(tmp_path: Path, redis_server: RedisServer, prefix: str) -> Iterator[RunningPlatform]:
    """The whole platform on this machine, on the session's Redis under a fresh prefix."""
    running = start_platform(tmp_path / "home", redis_server.url, prefix)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def platform_at(tmp_path: Path, redis_server: RedisServer, prefix: str) -> Iterator[object]:
    """platform_at(level) -> the platform with the operator's STOKER_ISOLATION=level (namespace:
    the default, auto). The isolation level is the operator's to lower, never a manifest's."""
    started: list[RunningPlatform] = []

    def start(level: str) -> RunningPlatform:
        env = {"STOKER_ISOLATION": "process"} if level == "process" else {}
        running = start_platform(tmp_path / f"home-{level}", redis_server.url, f"{prefix}{level[0]}", env)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest.fixture
def make_function(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_function(name, source, extra_toml="") -> the function's folder."""

    def make(name: str, source: str, extra: str = "", handler: str = "handler.handler") -> Path:
        folder = tmp_path / "functions" / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / "handler.py").write_text(source)
        (folder / "stoker.toml").write_text(f'[function]\nname = "{name}"\nhandler = "{handler}"\n{extra}\n')
        return folder

    return make


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; returns its value, or fails the test with `message`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value: {last!r})")
