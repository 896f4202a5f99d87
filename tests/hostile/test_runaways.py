"""Runaway functions are contained, at both isolation levels, and the node keeps serving.

Memory exhaustion ends the invocation with an error that says memory; a fork bomb hits the
process limit; spinners, and every process they started (even ones that left the process
group with setsid and a double fork), are gone after the timeout; 50 MB of output is
truncated with a marker and never blocks the node.
"""

from __future__ import annotations

import json
import secrets

import psutil
import pytest

from tests.conftest import RunningPlatform, wait_until

HOG = '''
import ctypes, os, sys, time

libc = ctypes.CDLL(None)


def name_me(tag):
    libc.prctl(15, tag.encode(), 0, 0, 0)  # PR_SET_NAME, so the test can count us


def handler(event, context):
    kind = event["kind"]
    if kind == "memory":
        return len(bytearray(2 * 1024 ** 3))
    if kind == "memory-steps":
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))
    if kind == "fork":
        forked = 0
        try:
            for _ in range(5000):
                if os.fork() == 0:
                    name_me(event["tag"])
                    time.sleep(300)
                    os._exit(0)
                forked += 1
        except OSError:
            pass
        print("forked", forked, flush=True)
        time.sleep(300)
    if kind == "escape":
        for _ in range(3):
            if os.fork() == 0:  # leave the process group, and the parent, then spin
                os.setsid()
                if os.fork() == 0:
                    name_me(event["tag"])
                    while True:
                        pass
                os._exit(0)
        while True:
            pass
    if kind == "shout":
        for _ in range(50):
            sys.stdout.write("x" * 1024 * 1024 + "\\n")
        return "shouted"
'''


def tagged(tag: str) -> list[int]:
    """Live processes (not zombies) that named themselves `tag`."""
    out = []
    for p in psutil.process_iter(["name", "status"]):
        if p.info["name"] == tag and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p.pid)
    return out


def invoke(platform: RunningPlatform, name: str, event: dict[str, object]) -> tuple[int, dict[str, object] | str]:
    r = platform.cli("invoke", name, "--data", json.dumps(event), timeout=120)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        return r.returncode, r.stdout + r.stderr


def still_serving(platform: RunningPlatform) -> None:
    assert json.loads(platform.cli("invoke", "hello", "--data", '{"n": 1}', check=True).stdout) == {"n": 1}


@pytest.mark.parametrize("level", ["namespace", "process"])
def test_runaways_are_contained(level: str, platform_at, make_function) -> None:  # type: ignore[no-untyped-def]
    platform = platform_at(level)
    hog = make_function("hog", HOG, 'memory = 128\ntimeout = 2\nprocesses = 64')
    hello = make_function("hello", "def handler(event, context):\n    return event\n")
    platform.cli("deploy", str(hog), check=True)
    platform.cli("deploy", str(hello), check=True)
    tag = "hk" + secrets.token_hex(5)

    for kind in ("memory", "memory-steps"):
        code, error = invoke(platform, "hog", {"kind": kind})
        assert code == 1 and isinstance(error, dict), error
        assert error["errorType"] == "Runtime.OutOfMemory" and "memory" in str(error["errorMessage"]), error
        still_serving(platform)

    code, error = invoke(platform, "hog", {"kind": "fork", "tag": tag})
    assert code == 1 and isinstance(error, dict) and error["errorType"] == "Sandbox.Timedout", error
    wait_until(lambda: not tagged(tag), timeout=10, message="the fork bomb's children to be gone")
    logs = wait_until(lambda: "forked" in (t := platform.cli("logs", "hog").stdout) and t,
                      message="the fork bomb's count in its log")
    forked = int(logs.split("forked ", 1)[1].split()[0])
    assert 0 < forked < 64, f"the process limit (64) did not stop the fork bomb: it forked {forked} times"
    still_serving(platform)

    code, error = invoke(platform, "hog", {"kind": "escape", "tag": tag})
    assert code == 1 and isinstance(error, dict) and error["errorType"] == "Sandbox.Timedout", error
    wait_until(lambda: not tagged(tag), timeout=10,
               message="the spinners that left the worker's process group to be killed too")
    still_serving(platform)

    code, result = invoke(platform, "hog", {"kind": "shout"})
    assert code == 0 and result == "shouted", result
    text = wait_until(lambda: "output truncated" in (t := platform.cli("logs", "hog", "--tail", "20").stdout) and t,
                      message="the truncation marker in the logs")
    assert "output_limit" in text
    still_serving(platform)

    rows = json.loads(platform.cli("ledger", "--format", "json", "--function", "hog", check=True).stdout)
    assert {r["error_type"] for r in rows} >= {"Runtime.OutOfMemory", "Sandbox.Timedout"}
    assert any(r["status"] == "succeeded" for r in rows)


def test_a_worker_killed_outright_says_it_may_have_run_out_of_memory(platform: RunningPlatform,
                                                                     make_function) -> None:
    killed = make_function("killed", "import os, signal\ndef handler(event, context):\n"
                                     "    os.kill(os.getpid(), signal.SIGKILL)\n", "memory = 256")
    platform.cli("deploy", str(killed), check=True)
    code, error = invoke(platform, "killed", {})
    assert code == 1 and isinstance(error, dict) and error["errorType"] == "Runtime.ExitError", error
    message = str(error["errorMessage"])
    assert "signal: kill" in message and "memory" in message and "256 MB" in message
