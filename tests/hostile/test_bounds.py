"""A worker's whole process tree is bounded, and nothing it starts outlives its invocation.

Real functions at the default isolation on a root node: children that together hold more
than `memory`, a double-forked daemon spinning the CPU, attempts to raise hard limits and
to lower the isolation in the manifest. Each asserts what the user sees: the error, the
ledger row, the refusal, and that the node keeps serving.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import RunningPlatform, wait_until

TREE = '''import os, select, time

def handler(event, context):
    r, w = os.pipe()
    kids = []
    for _ in range(event["children"]):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                held = b"\\x01" * (event["mb"] << 20)
                os.write(w, b"+")
                time.sleep(event["hold"])
            finally:
                os._exit(0)
        kids.append(pid)
    os.close(w)
    together, end = 0, time.time() + event["hold"] + 10
    while together < len(kids) and time.time() < end:
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            got = os.read(r, 64)
            if not got:
                break
            together += len(got)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids]
    return {"held_together": together, "exit_codes": codes}
'''

SPAWNER = '''import os, sys, time

def handler(event, context):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a daemon: a new session, a second fork
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "while True: pass", event["marker"]])
        os._exit(0)
    os.waitpid(pid, 0)
    end = time.time() + 5
    while time.time() < end:
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if event["marker"].encode() in open("/proc/%s/cmdline" % p, "rb").read():
                        return {"daemon_running": True}
                except OSError:
                    pass
        time.sleep(0.05)
    return {"daemon_running": False}
'''

LIMITS = '''import resource

def handler(event, context):
    out = {}
    for name in ("RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC"):
        which = getattr(resource, name)
        soft, hard = resource.getrlimit(which)
        if hard == resource.RLIM_INFINITY:
            out[name] = "unlimited"
            continue
        try:
            resource.setrlimit(which, (hard + 1, hard + 1))
            out[name] = "raised"
        except (ValueError, OSError):
            out[name] = "refused"
    return out
'''


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("cgroups are the node's when it runs as root")


def invoke(platform: RunningPlatform, name: str, event: dict[str, Any]) -> tuple[int, Any]:
    r = platform.cli("invoke", name, "--data", json.dumps(event), timeout=90)
    return r.returncode, json.loads(r.stdout)


def ledger(platform: RunningPlatform, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        platform.cli("ledger", "--function", name, "--format", "json", check=True).stdout)
    return rows


def hello_serves(platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    platform.cli("deploy", str(make_function("hello", "def handler(event, context):\n    return event\n")),
                 check=True)
    assert invoke(platform, "hello", {"n": 1}) == (0, {"n": 1})


def test_memory_bounds_the_whole_tree(platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    require_root()
    platform.cli("deploy", str(make_function("brood", TREE, "memory = 128\ntimeout = 30")), check=True)
    code, error = invoke(platform, "brood", {"children": 4, "mb": 60, "hold": 3})
    assert code == 1 and error["errorType"] == "Runtime.OutOfMemory", error
    assert re.search(r"\b128 MB\b", error["errorMessage"]), error
    row = wait_until(lambda: (rows := ledger(platform, "brood")) and rows[0]["status"] == "failed" and rows[0],
                     message="the failed row of brood")
    assert row["error_type"] == "Runtime.OutOfMemory"
    hello_serves(platform, make_function)

    platform.cli("deploy", str(make_function("swarm", TREE, "memory = 512\ntimeout = 30")), check=True)
    code, out = invoke(platform, "swarm", {"children": 4, "mb": 50, "hold": 2})
    assert code == 0 and out["held_together"] == 4 and out["exit_codes"] == [0, 0, 0, 0], out
    row = wait_until(lambda: (rows := ledger(platform, "swarm")) and rows[0]["max_memory_mb"] and rows[0],
                     message="the ledger row of swarm, with its memory")
    assert row["max_memory_mb"] >= 200, f"max_memory_mb must count the tree's children (4 x 50 MB): {row}"


def test_nothing_outlives_its_invocation(platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    require_root()
    marker = "spin-" + secrets.token_hex(6)
    platform.cli("deploy", str(make_function("spawner", SPAWNER, "timeout = 10")), check=True)
    code, out = invoke(platform, "spawner", {"marker": marker})
    assert code == 0 and out == {"daemon_running": True}, out

    def left() -> list[str]:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        return [line for line in ps.splitlines() if marker in line]

    wait_until(lambda: not left(), timeout=5, message="the daemon to be gone after its invocation returned")
    # and it stays gone: no CPU used by that function outside its invocation
    time.sleep(1)
    assert not left()
    hello_serves(platform, make_function)


def test_hard_limits_cannot_be_raised(platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    platform.cli("deploy", str(make_function("limits", LIMITS)), check=True)
    code, out = invoke(platform, "limits", {})
    assert code == 0 and out == {"RLIMIT_CPU": "refused", "RLIMIT_NOFILE": "refused", "RLIMIT_NPROC": "refused"}, out


def test_a_manifest_cannot_lower_the_isolation(platform: RunningPlatform, platform_at,  # type: ignore[no-untyped-def]
                                               make_function) -> None:
    lowered = make_function("lowered", "def handler(e, c):\n    return 1\n", 'isolation = "process"')
    r = platform.cli("deploy", str(lowered))
    said = r.stderr + r.stdout
    assert r.returncode != 0 and 'isolation = "process"' in said and "STOKER_ISOLATION" in said, said
    assert platform.cli("functions").stdout.count("lowered") == 0, "a refused deploy changed nothing"
    # the operator may lower it, for every function of the platform
    operator = platform_at("process")
    operator.cli("deploy", str(lowered), check=True)
    assert invoke(operator, "lowered", {}) == (0, 1), operator.logs_text()[-3000:]


def test_a_manifest_cannot_ask_for_more_processes_than_the_operator_allows(
        platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    many = make_function("many", "def handler(e, c):\n    return 1\n", "processes = 5000")
    r = platform.cli("deploy", str(many))
    assert r.returncode != 0 and "STOKER_MAX_PROCESSES" in r.stderr + r.stdout


def test_healthz_reports_the_cgroup_level_in_use(platform: RunningPlatform) -> None:
    from stoker.workers import cgroups

    offered = "v2" if cgroups._v2_root() else "v1" if cgroups._v1_roots() else "none"
    expected = offered if os.geteuid() == 0 else "none"

    def sandbox() -> dict[str, Any] | None:
        with urllib.request.urlopen(platform.url + "/healthz", timeout=5) as r:
            body: dict[str, Any] = json.load(r)
        return body.get("sandbox") or None

    nodes = wait_until(sandbox, message="/healthz to list the node's sandbox")
    assert [n["cgroup"] for n in nodes.values()] == [expected], nodes
    assert all(n["isolation"] == "namespace" for n in nodes.values()), nodes
    assert all(n["network"] == ("egress" if os.geteuid() == 0 else "host (the node is not root)")
               for n in nodes.values()), nodes
