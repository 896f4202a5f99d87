"""The namespace view through the node's own launch path (zygote, sandbox, runtime), without
Redis: a function sees the folders its files triggers watch, read-only, and no other
function does; the view holds no data directory; killing the worker's init ends every
process in its namespace."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from stoker.workers import isolation
from stoker.workers.launch import lambda_environment, trigger_folders
from stoker.workers.worker import Worker
from stoker.workers.zygote import ZygoteClient

READER = '''
import os, subprocess, time

def handler(event, context):
    if event.get("spawn"):
        subprocess.Popen(["sleep", "300"], start_new_session=True)  # leaves the process group
        time.sleep(0.3)
    out = {}
    for p in event["read"]:
        try:
            with open(p) as f:
                out[p] = f.read()
        except OSError as e:
            out[p] = type(e).__name__
    try:
        with open(event["write"], "w") as f:
            f.write("x")
        out["write"] = "WRITTEN"
    except OSError as e:
        out["write"] = type(e).__name__
    return out
'''


def spawn_spec(node: isolation.NodeIsolation, home: Path, task_root: Path, n: int,
               function_spec: dict[str, Any]) -> dict[str, Any]:
    fn = {"function": function_spec["function"], "version": "1", "handler": "handler.handler", "memory": 128}
    workdir = home / "node" / "work" / f"w{n}"
    iso = node.for_function("namespace", True)
    iso["function_binds"] = trigger_folders(function_spec)
    return {**fn, "runtime": "python", "task_root": str(task_root), "workdir": str(workdir),
            "tmpdir": str(workdir / "tmp"), "log_stream": "t", "mode": "fork", "process_name": "stoker-view",
            "env": lambda_environment(fn, str(task_root), str(workdir), "t"), "isolation": iso,
            "limits": {"address_space_mb": 256, "open_files": 256, "processes": 64, "cpu_seconds": 10}}


async def run_worker(zygote: ZygoteClient, spec: dict[str, Any], event: dict[str, Any]) -> tuple[Worker, Any]:
    worker = Worker(spec["function"], f"{spec['function']}:1", {"memory": 128}, 1 << 20)
    await worker.start(zygote, spec, 10.0)
    outcome = await worker.invoke("r1", json.dumps(event).encode(), 10.0, {})
    assert outcome.status == "succeeded", outcome.body
    return worker, json.loads(outcome.body)


def test_a_function_sees_its_watched_folders_read_only_and_no_one_elses(tmp_path: Path) -> None:
    home = tmp_path / "home"
    node = isolation.detect(home, home / "node")
    if node.level != "namespace":
        pytest.fail(f"namespaces are not available on this machine: {node.reason}")
    task_root = home / "node" / "bundles" / "x" / "code"
    task_root.mkdir(parents=True)
    (task_root / "handler.py").write_text(READER)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("1,2,3\n")
    secret = home / "token"
    secret.write_text("stk_secret\n")
    event = {"read": [str(inbox / "a.csv"), str(secret)], "write": str(inbox / "planted.csv")}
    exits: dict[int, int] = {}

    async def scenario() -> tuple[Any, Any, list[int]]:
        zygote = ZygoteClient(on_exit=lambda pid, code: exits.__setitem__(pid, code))
        zygote.start()
        try:
            watcher = {"function": "ingest", "triggers": [{"type": "files", "path": str(inbox), "pattern": "*.csv"}]}
            other = {"function": "other", "triggers": []}
            w1, seen_by_watcher = await run_worker(zygote, spawn_spec(node, home, task_root, 1, watcher),
                                                   {**event, "spawn": True})
            w2, seen_by_other = await run_worker(zygote, spawn_spec(node, home, task_root, 2, other), event)
            sleepers = [p.pid for p in psutil.process_iter(["name", "cmdline"])
                        if p.info["cmdline"] == ["sleep", "300"] and w1.pid in _ancestors(p)]
            for w in (w1, w2):
                w.kill()
                w.close_logs()
            for _ in range(100):
                if w1.pid in exits and w2.pid in exits:
                    break
                await asyncio.sleep(0.05)
            return seen_by_watcher, seen_by_other, sleepers
        finally:
            zygote.stop()

    seen_by_watcher, seen_by_other, sleepers = asyncio.run(scenario())
    assert seen_by_watcher[str(inbox / "a.csv")] == "1,2,3\n"
    assert seen_by_watcher["write"] != "WRITTEN" and not (inbox / "planted.csv").exists()
    assert seen_by_other[str(inbox / "a.csv")] == "FileNotFoundError"
    for seen in (seen_by_watcher, seen_by_other):
        assert seen[str(secret)] == "FileNotFoundError"
    assert sleepers, "the worker's detached child was not found"
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in sleepers)


def _ancestors(p: psutil.Process) -> list[int]:
    try:
        return [a.pid for a in p.parents()]
    except psutil.Error:
        return []


def test_trigger_folders_are_the_files_triggers_paths() -> None:
    spec = {"triggers": [{"type": "files", "path": "/srv/inbox"}, {"type": "cron", "schedule": "rate(1 minute)"},
                         {"type": "files", "paths": ["/srv/a", "relative"]}]}
    assert trigger_folders(spec) == ["/srv/inbox", "/srv/a"]
    assert trigger_folders({}) == []
    assert os.path.isabs(trigger_folders(spec)[0])


LAZY_IMPORTER = '''
def handler(event, context):
    import lazylib  # imported by the worker, not by the zygote
    try:
        with open(lazylib.__file__, "a") as f:
            f.write("# planted")
        wrote = "WRITTEN"
    except OSError as e:
        wrote = type(e).__name__
    return {"answer": lazylib.ANSWER, "write": wrote}
'''


def test_runtime_directories_under_tmp_stay_visible_beneath_the_workers_own_tmp(tmp_path: Path) -> None:
    # a virtualenv made in /tmp is on the zygote's import path; the worker's private /tmp
    # must not hide it (it did: Node.js's bootstrap and lazy imports failed)
    assert str(tmp_path).startswith("/tmp/")
    home = tmp_path / "home"
    node = isolation.detect(home, home / "node")
    if node.level != "namespace":
        pytest.fail(f"namespaces are not available on this machine: {node.reason}")
    lib = tmp_path / "venvlike" / "site-packages"
    lib.mkdir(parents=True)
    (lib / "lazylib.py").write_text("ANSWER = 42\n")
    task_root = home / "node" / "bundles" / "y" / "code"
    task_root.mkdir(parents=True)
    (task_root / "handler.py").write_text(LAZY_IMPORTER)

    async def scenario() -> Any:
        from stoker.workers.zygote import scrubbed_environment

        env = {**scrubbed_environment(), "PYTHONPATH": str(lib)}
        zygote = ZygoteClient(on_exit=lambda pid, code: None, env=env)
        zygote.start()
        try:
            worker, seen = await run_worker(zygote, spawn_spec(node, home, task_root, 1, {"function": "lazy"}), {})
            worker.kill()
            worker.close_logs()
            return seen
        finally:
            zygote.stop()

    seen = asyncio.run(scenario())
    assert seen["answer"] == 42 and seen["write"] in ("OSError", "PermissionError")
    assert (lib / "lazylib.py").read_text() == "ANSWER = 42\n"
