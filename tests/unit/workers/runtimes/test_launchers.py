"""What the nodejs and provided launchers give a worker, and what they refuse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stoker.workers.apiworker import RuntimeApiWorker
from stoker.workers.launch import LAUNCHERS
from stoker.workers.runtimes import make_worker, nodejs
from stoker.workers.runtimes.execspec import exec_spec
from stoker.workers.runtimes.provided import check_bootstrap
from stoker.workers.worker import InitFailed, Worker


def test_the_runtimes_are_registered_and_get_their_worker_class() -> None:
    assert {"nodejs", "provided"} <= set(LAUNCHERS)

    async def make(runtime: str) -> Worker:
        return make_worker("w1", "f:1", {"runtime": runtime}, 1024)

    assert type(asyncio.run(make("python"))) is Worker
    assert isinstance(asyncio.run(make("nodejs")), RuntimeApiWorker)
    assert isinstance(asyncio.run(make("provided")), RuntimeApiWorker)


def test_node_heap_is_sized_from_memory_as_on_lambda() -> None:
    assert nodejs.memory_flags(128) == ["--max-semi-space-size=2", "--max-old-space-size=123"]
    assert nodejs.memory_flags(1024) == ["--max-semi-space-size=20", "--max-old-space-size=984"]
    assert nodejs.BOOTSTRAP.is_file()


def test_exec_spec_keeps_the_sandbox_but_not_the_address_space_limit() -> None:
    base = {"env": {"A": "1"}, "limits": {"address_space_mb": 128, "open_files": 1024}, "mode": "fork",
            "workdir": "/w"}
    spec = exec_spec(base, ["/bin/true"], {"B": "2"})
    assert spec["mode"] == "exec" and spec["argv"] == ["/bin/true"] and spec["control"] is False
    assert spec["limits"] == {"open_files": 1024} and spec["env"] == {"A": "1", "B": "2"}
    assert spec["workdir"] == "/w" and base["limits"]["address_space_mb"] == 128


def test_a_bootstrap_that_cannot_be_executed_is_refused_with_the_fix(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    with pytest.raises(InitFailed, match="no file named bootstrap"):
        check_bootstrap(bootstrap)
    bootstrap.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(InitFailed, match="chmod \\+x bootstrap") as e:
        check_bootstrap(bootstrap)
    assert e.value.error["errorType"] == "Runtime.InvalidEntrypoint"
    bootstrap.chmod(0o755)
    check_bootstrap(bootstrap)
    bootstrap.write_text("echo no shebang\n")
    with pytest.raises(InitFailed, match="#! line"):
        check_bootstrap(bootstrap)
