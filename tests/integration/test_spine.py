"""The spine end to end: a running platform, real workers, real Redis and SQLite."""

from __future__ import annotations

import json

from tests.conftest import RunningPlatform, wait_until


def ledger(platform: RunningPlatform, *args: str) -> list[dict]:
    result = platform.cli("ledger", "--format", "json", *args, check=True)
    return json.loads(result.stdout)


def test_sync_async_ledger_and_logs(platform: RunningPlatform, make_function) -> None:
    folder = make_function("greet", 'def handler(event, context):\n'
                                    '    print("hi from", context.function_name)\n'
                                    '    return {"message": "Hello, " + event["name"] + "!"}\n')
    assert platform.cli("deploy", str(folder), check=True).stdout.startswith("deployed greet: version 1")

    out = platform.cli("invoke", "greet", "--data", '{"name": "stoker"}', check=True)
    assert json.loads(out.stdout) == {"message": "Hello, stoker!"}

    invocation_id = platform.cli("invoke", "greet", "--async", "--data", '{"name": "later"}', check=True).stdout.strip()
    rows = wait_until(lambda: [r for r in ledger(platform, "--function", "greet")
                               if r["id"] == invocation_id and r["status"] == "succeeded"],
                      message="the async invocation to succeed in the ledger")
    row = rows[0]
    assert row["invocation_type"] == "async" and row["attempts"] == 1 and row["version"] == "1"
    assert row["billed_ms"] >= row["duration_ms"]
    all_rows = ledger(platform, "--function", "greet")
    assert len(all_rows) == 2 and sum(r["cold"] for r in all_rows) == 1

    text = wait_until(lambda: (t := platform.cli("logs", "greet").stdout).count("REPORT") == 2 and t,
                      message="two REPORT lines")
    assert "hi from greet" in text and "Init Duration" in text and "START RequestId: " in text


def test_errors_timeouts_and_broken_bundles(platform: RunningPlatform, make_function) -> None:
    boom = make_function("boom", 'def handler(event, context):\n    raise ValueError("kaboom")\n')
    sleepy = make_function("sleepy", "import time\ndef handler(event, context):\n    time.sleep(30)\n", "timeout = 1")
    broken = make_function("broken", "import no_such_module_anywhere\ndef handler(e, c):\n    return 1\n")
    missing = make_function("missing", "def other(e, c):\n    return 1\n")
    for folder in (boom, sleepy, broken, missing):
        platform.cli("deploy", str(folder), check=True)

    r = platform.cli("invoke", "boom")
    assert r.returncode == 1
    error = json.loads(r.stdout)
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "kaboom" and error["stackTrace"]

    r = platform.cli("invoke", "sleepy")
    assert r.returncode == 1 and "Task timed out after 1.00 seconds" in r.stdout

    r = platform.cli("invoke", "broken")
    assert r.returncode == 1 and json.loads(r.stdout)["errorType"] == "Runtime.ImportModuleError"

    r = platform.cli("invoke", "missing")
    assert r.returncode == 1 and json.loads(r.stdout)["errorType"] == "Runtime.HandlerNotFound"

    statuses = wait_until(lambda: {r["function"]: (r["status"], r["error_type"]) for r in ledger(platform)
                                   if r["status"] != "queued"} if len(ledger(platform)) >= 4 else None,
                          message="four ledger rows")
    assert statuses["boom"] == ("failed", "ValueError")
    assert statuses["sleepy"] == ("timed_out", "Sandbox.Timedout")
    assert statuses["broken"] == ("failed", "Runtime.ImportModuleError")


def test_bad_input_changes_nothing(platform: RunningPlatform, tmp_path) -> None:
    r = platform.cli("invoke", "nope", "--data", "{}")
    assert r.returncode == 2 and "nope" in r.stderr
    r = platform.cli("invoke", "nope", "--data", "{bad")
    assert r.returncode == 2 and "JSON" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = platform.cli("deploy", str(empty))
    assert r.returncode == 2 and "stoker.toml" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "handler.py").write_text("def handler(e, c): return 1\n")
    (bad / "stoker.toml").write_text('[function]\nname = "bad"\nmemroy = 256\n')
    r = platform.cli("deploy", str(bad))
    assert r.returncode == 2 and "memroy" in r.stderr
    (bad / "stoker.toml").write_text('[function]\nname = "bad"\ntimeout = "long"\n')
    r = platform.cli("deploy", str(bad))
    assert r.returncode == 2 and "timeout" in r.stderr
    assert json.loads(platform.cli("functions", "--format", "json", check=True).stdout) == []
