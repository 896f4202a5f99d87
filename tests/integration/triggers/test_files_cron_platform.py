"""Files and cron end to end on a running platform: real workers, outcomes after retries,
restarts of the whole platform, and the CLI a user runs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

INGEST = '''import json
def handler(event, context):
    record = event["Records"][0]
    key = record["s3"]["object"]["key"]
    print("FILE", key, record["s3"]["object"]["size"], record["s3"]["bucket"]["name"], record["file"]["path"])
    if "bad" in key:
        raise ValueError("cannot read " + key)
    return {"rows": open(record["file"]["path"]).read().count("\\n")}
'''

FILES_TRIGGER = '''retries = 0
[[triggers]]
type = "files"
path = "inbox"
pattern = "*.csv"
on_success = "move:done"
on_failure = "move:failed"
'''


def ledger(platform: RunningPlatform, *args: str) -> list[dict]:
    return json.loads(platform.cli("ledger", "--format", "json", "--limit", "100000", *args, check=True).stdout)


def rows_when(platform: RunningPlatform, function: str, n: int) -> list[dict] | None:
    """The function's ledger rows once there are at least n (the writer works in batches)."""
    rows = ledger(platform, "--function", function)
    return rows if len(rows) >= n else None


def atomic_write(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    os.rename(tmp, folder / name)


def count(folder: Path) -> int:
    return len(os.listdir(folder)) if folder.exists() else 0


def test_dropped_files_run_once_and_move_after_their_final_outcome(platform: RunningPlatform, make_function,
                                                                    tmp_path: Path) -> None:
    folder = make_function("ingest", INGEST, FILES_TRIGGER)
    platform.cli("deploy", str(folder), check=True)
    inbox = folder / "inbox"  # relative to the function's folder, resolved at deploy
    wait_until(inbox.is_dir, message="the watched folder to be created")
    for i in range(30):
        atomic_write(inbox, f"ok{i}.csv", "a,b\n" * (i + 1))
    for i in range(2):
        (inbox / f"bad{i}.csv").write_text("oops\n")
    (inbox / "readme.txt").write_text("not a csv")
    wait_until(lambda: count(folder / "done") == 30 and count(folder / "failed") == 2, timeout=60,
               message="30 files moved to done and 2 to failed")
    assert sorted(os.listdir(inbox)) == ["readme.txt"]
    rows = wait_until(lambda: rows_when(platform, "ingest", 32), message="32 ledger rows")
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["dead_lettered"] * 2 + ["succeeded"] * 30  # no retries: straight to the DLQ
    assert {r["trigger"] for r in rows} == {"files"}
    logs = platform.cli("logs", "ingest").stdout
    seen = re.findall(r"FILE (\S+) (\d+) (\S+) (\S+)", logs)
    assert sorted(k for k, *_ in seen) == sorted([f"ok{i}.csv" for i in range(30)] + ["bad0.csv", "bad1.csv"])
    for key, size, bucket, path in seen:
        assert bucket == "inbox" and path == str(inbox / key)
        if key.startswith("ok"):
            assert int(size) == 4 * (int(key[2:-4]) + 1)

    # the deploy API takes the folder as an absolute path only
    from stoker.platform.registry.deploy import read_deployable

    refused = httpx.post(f"{platform.url}/api/functions", params={"source_dir": "relative/dir"},
                         content=read_deployable(folder), headers={"Authorization": f"Bearer {platform.token}"})
    assert refused.status_code == 400 and "must be an absolute path" in refused.json()["error"]

    # the same code deployed from another folder watches that folder: a new version
    assert "unchanged" in platform.cli("deploy", str(folder), check=True).stdout
    copy = tmp_path / "elsewhere" / "ingest"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("inbox", "done", "failed"))
    assert "version 2" in platform.cli("deploy", str(copy), check=True).stdout
    wait_until((copy / "inbox").is_dir, message="the new version's folder to be watched")
    (copy / "inbox" / "new.csv").write_text("x\n")
    wait_until(lambda: count(copy / "done") == 1, timeout=30, message="a file in the new folder to be processed")


def _files_function(root: Path, done: Path) -> Path:
    folder = root / "fn"
    folder.mkdir(parents=True)
    (folder / "handler.py").write_text(INGEST)
    (folder / "stoker.toml").write_text(
        f'[function]\nname = "ingest"\n[[triggers]]\ntype = "files"\npath = "inbox"\npattern = "*.csv"\n'
        f'on_success = "move:{done}"\n')
    return folder


def test_a_platform_restart_fires_files_dropped_while_down_once(tmp_path: Path, redis_server: RedisServer,
                                                                prefix: str) -> None:
    done = tmp_path / "done"
    folder = _files_function(tmp_path, done)
    inbox = folder / "inbox"
    running = start_platform(tmp_path / "home", redis_server.url, prefix, deploy=[folder])
    try:
        wait_until(inbox.is_dir, message="the watched folder to be created")
        for i in range(40):
            atomic_write(inbox, f"a{i}.csv", f"{i}\n")
        wait_until(lambda: count(done) == 40, timeout=60, message="the first 40 files to be processed")
    finally:
        running.stop()
    for i in range(25):
        (inbox / f"b{i}.csv").write_text(f"{i}\n")
    running = start_platform(tmp_path / "home", redis_server.url, prefix, deploy=[folder])
    try:
        wait_until(lambda: count(done) == 65, timeout=60, message="files dropped while down to be processed")
        rows = wait_until(lambda: rows_when(running, "ingest", 65), message="65 ledger rows")
        assert len(rows) == 65 and {r["status"] for r in rows} == {"succeeded"}
        assert count(inbox) == 0
    finally:
        running.stop()


CRON = '''import json
def handler(event, context):
    print("TICK", event["time"], json.dumps(event["detail"]), event["resources"][0], event["detail-type"])
'''


def test_a_rate_schedule_fires_each_tick_once_and_is_listed(platform: RunningPlatform, make_function) -> None:
    folder = make_function("tick", CRON, '''[[triggers]]
type = "cron"
schedule = "rate(1 second)"
payload = { job = "heartbeat" }
[[triggers]]
type = "cron"
name = "nightly"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
missed = "once"
''')
    platform.cli("deploy", str(folder), check=True)
    def ticks() -> list[tuple[str, str, str]] | None:
        found = re.findall(r"TICK (\S+) (.*) (\S+) Scheduled Event", platform.cli("logs", "tick").stdout)
        return found if len(found) >= 4 else None

    lines = wait_until(ticks, timeout=30, message="four ticks")
    times = [t for t, _, _ in lines]
    assert len(times) == len(set(times))  # never twice
    assert all(json.loads(detail) == {"job": "heartbeat"} and res == "tick/cron-1" for _, detail, res in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in times)

    listed = json.loads(platform.cli("cron", "ls", "--next", "4", "--format", "json", check=True).stdout)
    by_id = {s["schedule"]: s for s in listed}
    assert set(by_id) == {"tick/cron-1", "tick/nightly"}
    nightly = by_id["tick/nightly"]
    assert nightly["timezone"] == "Europe/Berlin" and nightly["missed"] == "once" and len(nightly["next"]) == 4
    assert all(t.endswith("02:30:00+01:00") or t.endswith("02:30:00+02:00") or t.endswith("03:00:00+02:00")
               for t in nightly["next_local"])
    assert by_id["tick/cron-1"]["last_fired"] is not None and by_id["tick/cron-1"]["leader"]
    table = platform.cli("cron", "ls", check=True).stdout
    assert "tick/nightly" in table and "30 2 * * *" in table and "Europe/Berlin" in table
    assert "NEXT FIRE TIMES" in table and table.count("+0") >= 3

    # bad schedules and time zones refuse the deploy, quoting what was wrong, and change nothing
    for name, bad, quoted in [
        ("badcron", 'schedule = "61 * * * *"', '"61 * * * *"'),
        ("badzone", 'schedule = "@daily"\ntimezone = "Europe/Atlantis"', '"Europe/Atlantis"'),
        ("badrate", 'schedule = "rate(5 fortnights)"', '"rate(5 fortnights)"'),
    ]:
        folder = make_function(name, "def handler(event, context):\n    return 1\n",
                               f'[[triggers]]\ntype = "cron"\n{bad}\n')
        result = platform.cli("deploy", str(folder))
        assert result.returncode == 2, result
        assert quoted in result.stderr and "trigger #1 (cron)" in result.stderr
    assert [f["name"] for f in json.loads(platform.cli("functions", "--format", "json", check=True).stdout)] == ["tick"]
    assert len(json.loads(platform.cli("cron", "ls", "--format", "json", check=True).stdout)) == 2
