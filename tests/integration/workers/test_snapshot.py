"""`snapshot = true`: workers forked from a warm template that ran the function's init once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import RunningPlatform, wait_until

SOURCE = '''\
import os, random, signal, time

INIT_PID = os.getpid()
TOKEN = random.random()
print("init ran in", INIT_PID)
time.sleep(0.3)  # a slow import: what the template pays once


def handler(event, context):
    if event.get("kill_template"):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(5)
    time.sleep(event.get("sleep", 0))
    return {"init_pid": INIT_PID, "pid": os.getpid(), "token": TOKEN, "rand": random.random(),
            "stream": context.log_stream_name}
'''


def ledger(platform: RunningPlatform, *args: str) -> list[dict[str, Any]]:
    return json.loads(platform.cli("ledger", "--format", "json", *args, check=True).stdout)


def invoke_together(platform: RunningPlatform, name: str, count: int, sleep: float) -> list[dict[str, Any]]:
    def one(_: int) -> dict[str, Any]:
        client: Any = platform.client()
        with client:
            return dict(client.invoke(name, {"sleep": sleep}))

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("isolation", ["auto", "process"])
def test_workers_fork_from_a_template_that_ran_init_once(platform_at, make_function,  # type: ignore[no-untyped-def]
                                                         isolation: str) -> None:
    platform = platform_at(isolation)
    snap = make_function("snap", SOURCE, 'snapshot = true')
    plain = make_function("plain", SOURCE)
    platform.cli("deploy", str(snap), check=True)
    platform.cli("deploy", str(plain), check=True)

    results = invoke_together(platform, "snap", 2, sleep=1.5)
    pids = {r["pid"] for r in results}
    assert len(pids) == 2, "two invocations at once need two workers"
    # both ran the one init of their template: same module state, made before the fork
    assert {r["init_pid"] for r in results} == {results[0]["init_pid"]}
    assert {r["token"] for r in results} == {results[0]["token"]}
    assert results[0]["init_pid"] not in pids
    # each worker has its own random sequence and its own log stream
    assert results[0]["rand"] != results[1]["rand"]
    assert results[0]["stream"] != results[1]["stream"]

    # without snapshot each worker imports the handler itself
    results = invoke_together(platform, "plain", 2, sleep=1.5)
    assert len({r["token"] for r in results}) == 2
    assert all(r["init_pid"] == r["pid"] for r in results)

    def succeeded() -> list[dict[str, Any]] | None:
        rows = [r for r in ledger(platform, "--function", "snap") if r["status"] == "succeeded"]
        return rows if len(rows) == 2 else None

    rows = wait_until(succeeded, message="two snap rows in the ledger")
    assert all(r["cold"] for r in rows)
    assert all(r["init_ms"] is not None and r["init_ms"] > 0 for r in rows)

    # what init printed is in the logs once, with the first invocation
    text = wait_until(lambda: (t := platform.cli("logs", "snap").stdout).count("REPORT") == 2 and t,
                      message="two REPORT lines")
    assert text.count("init ran in") == 1


def test_an_init_error_in_a_template_reaches_the_caller(platform: RunningPlatform, make_function) -> None:
    folder = make_function("badinit", 'print("about to fail")\nraise RuntimeError("no database")\n'
                                      'def handler(e, c):\n    return 1\n', "snapshot = true")
    platform.cli("deploy", str(folder), check=True)
    for _ in range(2):  # a failed template is not kept: the second cold start tries again
        r = platform.cli("invoke", "badinit")
        assert r.returncode == 1
        error = json.loads(r.stdout)
        assert error["errorType"] == "RuntimeError" and error["errorMessage"] == "no database"
    text = wait_until(lambda: (t := platform.cli("logs", "badinit").stdout).count("about to fail") == 2 and t,
                      message="the init output of both attempts in the logs")
    assert "no database" in text


def test_a_dead_template_is_replaced_on_the_next_cold_start(platform: RunningPlatform, make_function) -> None:
    folder = make_function("phoenix", SOURCE, "snapshot = true")
    platform.cli("deploy", str(folder), check=True)
    client: Any = platform.client()
    with client:
        first = client.invoke("phoenix", {})
        # the worker kills its template; it dies with it, and the invocation fails as a crash
        crashed = client.invoke_result("phoenix", {"kill_template": True})
        assert not crashed.ok and crashed.value()["errorType"] == "Runtime.ExitError"
        after = client.invoke("phoenix", {})
    assert after["token"] != first["token"], "a new template ran init again"


def test_a_template_that_dies_during_init_is_an_exit_error_with_its_output(platform: RunningPlatform,
                                                                           make_function) -> None:
    folder = make_function("dies", 'import os\nos.write(1, b"last words\\n")\nos._exit(3)\n'
                                   'def handler(e, c):\n    return 1\n', "snapshot = true")
    platform.cli("deploy", str(folder), check=True)
    r = platform.cli("invoke", "dies")
    assert r.returncode == 1
    error = json.loads(r.stdout)
    assert error["errorType"] == "Runtime.ExitError" and "during init" in error["errorMessage"]
    wait_until(lambda: "last words" in platform.cli("logs", "dies").stdout,
               message="what the template wrote before it died, in the logs")
