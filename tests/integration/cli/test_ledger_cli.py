"""Asking the ledger as a user does: `stoker ledger`, `ledger show`, `bill`, `logs --follow`,
export and prune, and the same over HTTP, against a running platform (real Redis, real
workers, SQLite and PostgreSQL ledgers)."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

MIX = '''
def handler(event, context):
    print("working on", event["i"])
    if event["i"] % 4 == 0:
        raise RuntimeError("every fourth fails")
    return event["i"]
'''
FLOOD = '''
def handler(event, context):
    for i in range(400):
        print("line", i, "x" * 40)
    return "flooded"
'''


def make(root: Path, name: str, source: str, extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(source)
    (folder / "stoker.toml").write_text(f'[function]\nname = "{name}"\nhandler = "handler.handler"\n{extra}\n')
    return folder


def ledger(p: RunningPlatform, *args: str) -> list[dict]:
    return json.loads(p.cli("ledger", "--format", "json", *args, check=True).stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def busy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         redis_server: RedisServer) -> Iterator[RunningPlatform]:
    """A platform with `mix` invoked 12 times (3 failures) and `flood` once, on each database."""
    root = tmp_path_factory.mktemp("ledger-cli")
    env = {"STOKER_DB_URL": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    p = start_platform(root / "home", redis_server.url, "t" + uuid.uuid4().hex[:10], env)
    try:
        p.cli("deploy", str(make(root, "mix", MIX, "memory = 512\nretain_payloads = true")), check=True)
        p.cli("deploy", str(make(root, "flood", FLOOD, "output_limit = 2048")), check=True)
        for i in range(1, 13):
            p.cli("invoke", "mix", "--data", json.dumps({"i": i}))
        p.cli("invoke", "flood", check=True)
        wait_until(lambda: len([r for r in ledger(p, "--limit", "100") if r["status"] != "queued"]) == 13,
                   timeout=60, message="13 finished rows in the ledger")
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL database for the module's platform (the conftest one is per test)."""
    from tests.conftest import PG_ADMIN_URL, _pg_admin

    try:
        admin = _pg_admin()
    except Exception as e:
        if os.environ.get("STOKER_REQUIRE_PG"):
            raise
        pytest.skip(f"PostgreSQL is not reachable ({e}); CI sets STOKER_REQUIRE_PG=1 and starts it")
    name = "stoker_test_" + secrets.token_hex(6)
    with admin:  # type: ignore[attr-defined]
        admin.execute(f'create database "{name}"')  # type: ignore[attr-defined]
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://")
    finally:
        with _pg_admin() as admin:  # type: ignore[attr-defined]
            admin.execute(f'drop database if exists "{name}" with (force)')


def test_filters_and_formats(busy: RunningPlatform) -> None:
    failed = ledger(busy, "--function", "mix", "--status", "failed")
    assert len(failed) == 3 and all(r["error_type"] == "RuntimeError" for r in failed)
    everything = ledger(busy, "--since", "10m")
    assert len(everything) == 13
    received = [r["received_at"] for r in everything]
    assert received == sorted(received, reverse=True)  # newest first
    assert ledger(busy, "--since", "2099-01-01T00:00:00Z") == []
    assert ledger(busy, "--until", "2000-01-01") == []
    assert [r["id"] for r in ledger(busy, "--limit", "2")] == [r["id"] for r in everything[:2]]
    assert len(ledger(busy, "--function", "mix", "--version", "1")) == 12
    assert ledger(busy, "--function", "mix", "--version", "2") == []
    cold = ledger(busy, "--cold")
    assert sorted(r["function"] for r in cold) == ["flood", "mix"] and all(r["cold"] for r in cold)
    assert len(ledger(busy, "--warm")) == 11
    assert len(ledger(busy, "--trigger", "api")) == 13 and ledger(busy, "--trigger", "cron") == []
    node = everything[0]["node"]
    assert len(ledger(busy, "--node", node)) == 13 and ledger(busy, "--node", "elsewhere") == []
    assert ledger(busy, "--function", "mix", "--status", "succeeded", "--limit", "3", "--since", "1h")[0]["status"] \
        == "succeeded"

    text = busy.cli("ledger", "--function", "mix", "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12 and {"id", "status", "duration_ms", "billed_ms", "memory_mb"} <= set(rows[0])
    assert {r["memory_mb"] for r in rows} == {"512"}
    table = busy.cli("ledger", check=True).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "FUNCTION", "VERSION", "STATUS"] and len(table) == 14
    assert any(" mix " in line and "RuntimeError" in line for line in table)


def test_export_as_csv_and_parquet(busy: RunningPlatform, tmp_path: Path) -> None:
    text = busy.cli("ledger", "export", "--function", "mix", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12 and [r["received_at"] for r in rows] == sorted(r["received_at"] for r in rows)
    assert len([r for r in rows if r["status"] == "failed"]) == 3

    import pyarrow.parquet as pq

    target = tmp_path / "ledger.parquet"
    r = busy.cli("ledger", "export", "--format", "parquet", "--output", str(target), check=True)
    assert "exported 13 invocations" in r.stderr
    table = pq.read_table(target)
    assert table.num_rows == 13 and str(table.schema.field("received_at").type) == "timestamp[ms, tz=UTC]"
    assert sorted(set(table.column("function").to_pylist())) == ["flood", "mix"]
    assert table.column("memory_mb").to_pylist().count(512) == 12
    empty = tmp_path / "none.parquet"
    busy.cli("ledger", "export", "--format", "parquet", "-o", str(empty), "--function", "nobody", check=True)
    assert pq.read_table(empty).num_rows == 0


def test_the_same_filters_over_http(busy: RunningPlatform) -> None:
    headers = {"Authorization": f"Bearer {busy.token}"}
    r = httpx.get(f"{busy.url}/api/invocations", params={"function": "mix", "status": "failed"}, headers=headers)
    assert r.status_code == 200 and len(r.json()) == 3
    r = httpx.get(f"{busy.url}/api/invocations", params={"cold": "false", "limit": "5"}, headers=headers)
    assert len(r.json()) == 5 and not any(row["cold"] for row in r.json())
    for params, named in (({"functon": "mix"}, "functon"), ({"since": "yesterday-ish"}, "since"),
                          ({"limit": "-1"}, "limit"), ({"status": "done"}, "status"), ({"cold": "sometimes"}, "cold")):
        r = httpx.get(f"{busy.url}/api/invocations", params=params, headers=headers)
        assert r.status_code == 400 and named in r.json()["error"], (params, r.text)
    assert httpx.get(f"{busy.url}/api/invocations").status_code == 401


def test_one_invocation_in_full(busy: RunningPlatform) -> None:
    failed = ledger(busy, "--function", "mix", "--status", "failed", "--limit", "1")[0]
    shown = json.loads(busy.cli("ledger", "show", failed["id"], "--format", "json", check=True).stdout)
    assert shown["id"] == failed["id"] and shown["attempt_count"] == 1
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "failed" and attempt["error_type"] == "RuntimeError"
    assert attempt["node"] == failed["node"] and attempt["billed_ms"] == failed["billed_ms"]
    assert attempt["started_at"] and attempt["ended_at"] and attempt["worker"]
    i = json.loads(shown["payload"])["i"]
    assert any(f"working on {i}" in line for line in shown["logs"])
    assert any(line.split(" ", 1)[1].startswith("REPORT RequestId: " + failed["id"]) for line in shown["logs"])
    assert json.loads(shown["result"])["errorType"] == "RuntimeError" and not shown["payload_truncated"]

    text = busy.cli("ledger", "show", failed["id"], check=True).stdout
    assert "attempts:" in text and f"working on {i}" in text and "payload:" in text

    flood = ledger(busy, "--function", "flood")[0]
    shown = json.loads(busy.cli("ledger", "show", flood["id"], "--format", "json", check=True).stdout)
    assert shown["payload"] is None  # flood does not retain payloads
    logs = shown["logs"]
    assert any("[stoker] output truncated" in line and "output_limit" in line for line in logs)
    assert sum(len(line) for line in logs) < 2048 + 2000  # the cap, plus START/END/REPORT and the marker
    assert logs[-1].split(" ", 1)[1].startswith("REPORT RequestId:")

    r = busy.cli("ledger", "show", "no-such-invocation")
    assert r.returncode == 2 and "no-such-invocation" in r.stderr


def test_the_bill_adds_up_from_the_ledger(busy: RunningPlatform) -> None:
    bill = json.loads(busy.cli("bill", "--format", "json", "--no-free-tier", check=True).stdout)
    rows = ledger(busy, "--function", "mix")
    mix = next(f for f in bill["functions"] if f["function"] == "mix")
    gb_seconds = sum(r["memory_mb"] / 1024 * r["billed_ms"] / 1000 for r in rows)
    assert mix["requests"] == 12
    assert abs(mix["gb_seconds"] - gb_seconds) < 1e-9
    assert abs(mix["cost"] - (12 * 0.20 / 1e6 + gb_seconds * 0.0000166667)) < 1e-12
    assert bill["total_cost"] == pytest.approx(sum(f["cost"] for f in bill["functions"]), abs=1e-12)

    free = json.loads(busy.cli("bill", "--format", "json", check=True).stdout)
    assert free["total_cost"] == 0 and free["free_tier"]["requests"] == 13
    by_day = json.loads(busy.cli("bill", "--by", "day", "--since", "1h", "--format", "json", check=True).stdout)
    assert sum(d["requests"] for d in by_day["days"]) == 13
    table = busy.cli("bill", check=True).stdout
    assert "mix" in table and "flood" in table and "total: $0.00" in table and "free tier" in table


def test_bad_values_change_nothing(busy: RunningPlatform) -> None:
    # every option is checked by the CLI itself (tests/unit/cli); here, end to end, and what only the
    # platform can tell
    r = busy.cli("ledger", "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr and "ISO 8601" in r.stderr
    r = busy.cli("logs", "nobody")
    assert r.returncode == 2 and "nobody" in r.stderr
    headers = {"Authorization": f"Bearer {busy.token}"}
    for path, params, named in (("/api/bill", {"by": "week"}, "by"), ("/api/bill", {"month": "soon"}, "month"),
                                ("/api/bill", {"free_tier": "perhaps"}, "free_tier"),
                                ("/api/invocations/export", {"limit": "5"}, "limit"),
                                ("/api/functions/mix/logs", {"tail": "x"}, "tail"),
                                ("/api/functions/mix/logs", {"request": "x"}, "request")):
        r = httpx.get(f"{busy.url}{path}", params=params, headers=headers)
        assert r.status_code == 400 and named in r.json()["error"], (path, params, r.text)
    r = httpx.delete(f"{busy.url}/api/invocations", headers=headers)
    assert r.status_code == 400 and "older_than" in r.json()["error"]
    r = httpx.delete(f"{busy.url}/api/invocations", params={"older_than": "ages"}, headers=headers)
    assert r.status_code == 400 and "older_than" in r.json()["error"]
    assert len(ledger(busy, "--limit", "100")) == 13  # nothing changed


def test_logs_follow_streams_new_invocations(platform: RunningPlatform, tmp_path: Path) -> None:
    platform.cli("deploy", str(make(tmp_path, "mix", MIX)), check=True)
    out_path = tmp_path / "follow.txt"
    with out_path.open("w") as out:
        follower = subprocess.Popen([sys.executable, "-m", "stoker", "logs", "mix", "--follow"], env=platform.env,
                                    stdout=out, stderr=subprocess.STDOUT)
    try:
        n = iter(range(5001, 6000))

        def seen() -> bool:
            platform.cli("invoke", "mix", "--data", json.dumps({"i": next(n)}))
            return "working on 5" in out_path.read_text()

        wait_until(seen, timeout=60, interval=0.5, message="the follower to print a new invocation")
        assert follower.poll() is None, "stoker logs --follow exited instead of following"
        platform.cli("invoke", "mix", "--data", '{"i": 4243}', check=True)
        wait_until(lambda: "working on 4243" in out_path.read_text(), timeout=30,
                   message="the follower to print a later invocation")
        assert "REPORT RequestId:" in out_path.read_text()
        assert follower.poll() is None
    finally:
        follower.terminate()
        follower.wait(10)


def test_prune_deletes_old_rows(platform: RunningPlatform, tmp_path: Path) -> None:
    platform.cli("deploy", str(make(tmp_path, "mix", MIX)), check=True)
    for i in (1, 2, 3):
        platform.cli("invoke", "mix", "--data", json.dumps({"i": i}))
    wait_until(lambda: len([r for r in ledger(platform) if r["status"] != "queued"]) == 3, timeout=60,
               message="three finished rows")
    r = platform.cli("ledger", "prune", "--older-than", "1d", check=True)
    assert r.stdout.startswith("deleted 0 invocations")
    wait_until(lambda: "would delete 3 " in platform.cli("ledger", "prune", "--older-than", "1s", "--dry-run",
                                                         check=True).stdout, message="the rows to be a second old")
    assert len(ledger(platform)) == 3
    r = platform.cli("ledger", "prune", "--older-than", "1s", check=True)
    assert r.stdout.startswith("deleted 3 invocations (3 attempts)")
    assert ledger(platform) == []
