"""What a Python function prints reaches its own invocation's logs: quick invocations run
back to back on one worker, one that outlives its timeout, and one that uses SIGALRM itself."""

from __future__ import annotations

import json

from tests.conftest import RunningPlatform, wait_until


def logs_of(platform: RunningPlatform, function: str, request_id: str) -> list[str]:
    out = platform.cli("logs", function, "--request-id", request_id, check=True).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]


def test_each_invocation_keeps_its_own_output(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(make_function("talk", 'def handler(event, context):\n'
                                                     '    print("line", event["i"])\n'
                                                     '    return event["i"]\n')), check=True)
    c = platform.client()
    ids = {c.invoke_async("talk", {"i": i}): i for i in range(40)}
    wait_until(lambda: len([r for r in c.invocations(function="talk", limit=100)
                            if r["status"] == "succeeded"]) == 40, timeout=60, message="40 invocations")
    for request_id, i in list(ids.items())[::7]:
        lines = logs_of(platform, "talk", request_id)
        assert f"line {i}" in lines, lines
        assert [line for line in lines if line.startswith("line ")] == [f"line {i}"]


def test_output_before_a_timeout_is_kept(platform: RunningPlatform, make_function) -> None:
    source = 'import sys, time\ndef handler(event, context):\n' \
             '    print("before the hang", flush=True)\n    sys.stderr.write("on stderr\\n")\n    time.sleep(30)\n'
    platform.cli("deploy", str(make_function("hang", source, "timeout = 1")), check=True)
    r = platform.cli("invoke", "hang")
    assert r.returncode == 1 and "timed out" in r.stdout
    row = wait_until(lambda: next(iter(platform.client().invocations(function="hang")), None), message="the row")
    lines = logs_of(platform, "hang", row["id"])
    assert "before the hang" in lines and "on stderr" in lines, lines
    assert any("Task timed out after 1.00 seconds" in line for line in lines)


def test_a_function_may_use_sigalrm_itself(platform: RunningPlatform, make_function) -> None:
    source = ('import signal, time\n'
              'class Late(Exception):\n    pass\n'
              'def _alarm(*_):\n    raise Late()\n'
              'signal.signal(signal.SIGALRM, _alarm)\n'
              'def handler(event, context):\n'
              '    print("working")\n'
              '    signal.setitimer(signal.ITIMER_REAL, 0.5)\n'
              '    try:\n        time.sleep(0.2)\n        finished = True\n'
              '    except Late:\n        finished = False\n'
              '    signal.setitimer(signal.ITIMER_REAL, 0)\n'
              '    return {"finished": finished}\n')
    platform.cli("deploy", str(make_function("alarmed", source, "timeout = 5")), check=True)
    for _ in range(3):  # its own alarm is never fired early by the platform
        out = platform.cli("invoke", "alarmed", check=True).stdout
        assert json.loads(out) == {"finished": True}
    row = wait_until(lambda: next(iter(platform.client().invocations(function="alarmed")), None), message="rows")
    assert "working" in logs_of(platform, "alarmed", row["id"])
