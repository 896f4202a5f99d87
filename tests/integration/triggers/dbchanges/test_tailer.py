"""The dbchanges trigger end to end: a running platform, a real SQLite or PostgreSQL database,
real worker processes. Changes reach the function once, in order per row, across a tailer
killed with SIGKILL, a database that goes away, failing batches, and two trigger runners."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import psutil
import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL, RunningPlatform, wait_until

AUDIT = '''import json, os, time

def handler(event, context):
    records = event["Records"]
    for r in records:
        if (r["dynamodb"].get("NewImage") or {}).get("qty") == int(os.environ.get("POISON", "-1")):
            raise ValueError("poison")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    for r in records:
        d = r["dynamodb"]
        print("CHANGE " + json.dumps({"table": r["table"], "name": r["eventName"], "seq": d["SequenceNumber"],
                                      "keys": d["Keys"], "new": d.get("NewImage"), "old": d.get("OldImage"),
                                      "arn": r["eventSourceARN"], "source": r["eventSource"]}))
'''


def trigger(url: str, table: str, extra: str = "") -> str:
    return f'[[triggers]]\ntype = "dbchanges"\nurl = "{url}"\ntable = "{table}"\n{extra}\n'


def seen(platform: RunningPlatform, function: str) -> list[dict]:
    out = platform.cli("logs", function, check=True).stdout
    return [json.loads(line[line.index("CHANGE ") + 7:]) for line in out.splitlines() if "CHANGE {" in line]


def key(record: dict) -> str:
    return json.dumps(record["keys"], sort_keys=True)


@pytest.fixture
def user_db(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text("create table orders (id integer primary key, item text not null, qty integer not null)"))
        c.execute(text("create table lines (order_id integer not null, line integer not null, sku text, "
                       "primary key (order_id, line))"))
    yield engine
    engine.dispose()


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def watch(platform: RunningPlatform, url: str, table: str) -> None:
    out = platform.cli("db", "watch", "--url", url, "--table", table, "--format", "json", check=True)
    assert json.loads(out.stdout)["changed"] is True


def test_changes_arrive_once_in_order_with_images(platform: RunningPlatform, make_function, user_db: Engine) -> None:
    url = url_of(user_db)
    watch(platform, url, "orders")
    watch(platform, url, "lines")
    folder = make_function("audit", AUDIT, trigger(url, "orders", "batch_size = 500") + trigger(url, "lines"))
    platform.cli("deploy", str(folder), check=True)

    with user_db.begin() as c:  # a burst of thousands in one transaction
        c.execute(text("insert into orders (id, item, qty) values (:id, :item, 1)"),
                  [{"id": i, "item": f"item{i}"} for i in range(1, 3001)])
    with user_db.connect() as c:  # rolled back: never seen
        c.execute(text("insert into orders values (9999, 'ghost', 1)"))
        c.execute(text("update orders set qty = 99"))
        c.rollback()
    with user_db.begin() as c:
        c.execute(text("update orders set qty = 2 where id <= 100"))
        c.execute(text("delete from orders where id > 2990"))
        c.execute(text("insert into lines values (1, 1, 'tea'), (1, 2, 'cake')"))
    with user_db.begin() as c:  # moves a composite primary key
        c.execute(text("update lines set line = 3, sku = 'scone' where order_id = 1 and line = 2"))

    def complete() -> list[dict] | None:
        records = seen(platform, "audit")
        return records if len(records) >= 3000 + 100 + 10 + 2 + 2 else None

    records = wait_until(complete, timeout=180, interval=1.0,
                         message="every change to reach the function")
    assert len(records) == 3114
    assert len({(r["table"], r["seq"]) for r in records}) == len(records)  # each once
    orders = [r for r in records if r["table"] == "orders"]
    assert Counter(r["name"] for r in orders) == {"INSERT": 3000, "MODIFY": 100, "REMOVE": 10}
    assert all(r["new"]["qty"] == 2 and r["old"]["qty"] == 1 for r in orders if r["name"] == "MODIFY")
    assert all(r["old"]["item"] == f"item{r['keys']['id']}" and r["new"] is None
               for r in orders if r["name"] == "REMOVE")
    assert not any(r["keys"] == {"id": 9999} or (r["new"] or {}).get("qty") == 99 for r in orders)
    position: dict[str, list[str]] = {}
    for r in orders:  # each row's changes in the order they were made
        position.setdefault(key(r), []).append(r["name"])
    assert position['{"id": 1}'] == ["INSERT", "MODIFY"] and position['{"id": 3000}'] == ["INSERT", "REMOVE"]
    lines = [(r["name"], r["keys"]) for r in records if r["table"] == "lines"]
    assert lines == [("INSERT", {"order_id": 1, "line": 1}), ("INSERT", {"order_id": 1, "line": 2}),
                     ("REMOVE", {"order_id": 1, "line": 2}), ("INSERT", {"order_id": 1, "line": 3})]
    assert {r["source"] for r in records} == {"stoker:db"}
    assert all(r["arn"].endswith(f":table/{r['table']}/stream") for r in records)

    ledger = json.loads(platform.cli("ledger", "--function", "audit", "--format", "json", "--limit", "1000",
                                     check=True).stdout)
    assert ledger and all(r["trigger"] == "dbchanges" and r["status"] == "succeeded" for r in ledger)
    # once read by its only consumer, the change log is trimmed
    wait_until(lambda: all(w["retained"] == 0 for w in json.loads(platform.cli(
        "db", "watches", "--url", url, "--format", "json", check=True).stdout)), timeout=60,
        interval=1.0, message="the change log to be trimmed")


def triggers_process(platform: RunningPlatform) -> psutil.Process | None:
    """The triggers role under stoker up (None while it is being restarted)."""
    for child in psutil.Process(platform.proc.pid).children():
        if "triggers" in child.cmdline():
            return child
    return None


def test_a_tailer_killed_mid_batch_resumes_without_loss_or_repeat(platform: RunningPlatform, make_function,
                                                                  user_db: Engine, redis_client: redis.Redis,
                                                                  prefix: str) -> None:
    url = url_of(user_db)
    watch(platform, url, "orders")
    folder = make_function("slow", AUDIT, trigger(url, "orders", "batch_size = 10") +
                           '[function.env]\nSLEEP = "0.3"\n')
    platform.cli("deploy", str(folder), check=True)
    with user_db.begin() as c:
        c.execute(text("insert into orders (id, item, qty) values (:id, 'x', 1)"),
                  [{"id": i} for i in range(1, 301)])

    wait_until(lambda: len(seen(platform, "slow")) >= 30, timeout=60, interval=0.5, message="a few batches")
    wait_until(lambda: redis_client.keys(f"{prefix}:dbchanges:*:inflight"), message="a batch in flight")
    tailer = triggers_process(platform)
    assert tailer is not None
    tailer.send_signal(signal.SIGKILL)
    tailer.wait(10)
    wait_until(lambda: (p := triggers_process(platform)) is not None and p.pid != tailer.pid,
               message="stoker up to restart the triggers")

    records = wait_until(lambda: (r := seen(platform, "slow")) and len(r) >= 300 and r, timeout=180,
                         interval=1.0, message="every change after the restart")
    counts = Counter(r["keys"]["id"] for r in records)
    assert sorted(counts) == list(range(1, 301)) and set(counts.values()) == {1}
    assert [r["keys"]["id"] for r in records] == list(range(1, 301))


def test_bisect_isolates_a_failing_record_and_later_changes_go_on(platform: RunningPlatform, make_function,
                                                                  user_db: Engine, redis_client: redis.Redis,
                                                                  prefix: str) -> None:
    url = url_of(user_db)
    watch(platform, url, "orders")
    folder = make_function("picky", AUDIT, "retries = 0\n" +
                           trigger(url, "orders", "batch_size = 8\nbatch_window = 1\nbisect_on_error = true") +
                           '[function.env]\nPOISON = "13"\n')
    platform.cli("deploy", str(folder), check=True)
    with user_db.begin() as c:
        c.execute(text("insert into orders (id, item, qty) values (:id, 'x', :id)"), [{"id": i} for i in range(1, 17)])

    def delivered() -> list[int]:
        return sorted(r["keys"]["id"] for r in seen(platform, "picky"))

    wait_until(lambda: len(delivered()) >= 15, timeout=120, interval=1.0, message="every good record")
    assert delivered() == [i for i in range(1, 17) if i != 13]  # each once, the poison never
    letters = [msgpack.unpackb(f[b"d"], raw=False) for _, f in redis_client.xrange(f"{prefix}:dlq:picky")]
    smallest = json.loads(letters[-1]["payload"])["Records"]
    assert [r["dynamodb"]["Keys"]["id"] for r in smallest] == [13]
    assert letters[-1]["meta"]["table"] == "orders" and "url" not in letters[-1]["meta"]

    with user_db.begin() as c:  # the dead-lettered batch does not hold the stream up
        c.execute(text("insert into orders values (17, 'later', 1)"))
    wait_until(lambda: 17 in delivered(), timeout=60, interval=1.0, message="a change made after the failure")


def make_unreachable(user_db: Engine, db_url: str) -> tuple[object, object]:
    """Take the user's database away (and give back): rename the SQLite file, or close PostgreSQL to connections."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        return (lambda: path.rename(path.with_suffix(".away"))), (lambda: path.with_suffix(".away").rename(path))
    import psycopg

    name = url.database

    def admin(sql: str) -> None:
        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
            c.execute(sql)

    def away() -> None:
        admin(f'alter database "{name}" allow_connections false')
        admin(f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'")

    return away, (lambda: admin(f'alter database "{name}" allow_connections true'))


def test_a_database_that_goes_away_is_reported_and_retried_without_showing_credentials(
        platform: RunningPlatform, make_function, user_db: Engine, db_url: str) -> None:
    secret = "s3cret-pw"
    url = url_of(user_db)
    if user_db.url.get_backend_name() == "postgresql":  # trust auth ignores the password; it must not show
        url = user_db.url.set(password=secret).render_as_string(hide_password=False)
    watch(platform, url, "orders")
    platform.cli("deploy", str(make_function("audit", AUDIT, trigger(url, "orders"))), check=True)
    with user_db.begin() as c:
        c.execute(text("insert into orders values (1, 'before', 1)"))
    wait_until(lambda: len(seen(platform, "audit")) == 1, timeout=60, interval=0.5, message="the first change")

    away, back = make_unreachable(user_db, db_url)
    user_db.dispose()
    away()
    try:
        def reported() -> dict | None:
            r = httpx.get(f"{platform.url}/healthz", timeout=5)
            body = r.json()
            return body if r.status_code == 200 and isinstance(body.get("triggers"), dict) else None

        health = wait_until(reported, timeout=90, interval=0.5, message="/healthz to report the database")
        (problem,) = health["triggers"].values()
        assert "dbchanges audit (orders)" in health["triggers"] and "orders" in problem
    finally:
        back()
    with user_db.begin() as c:
        c.execute(text("insert into orders values (2, 'after', 1)"))
    wait_until(lambda: len(seen(platform, "audit")) == 2, timeout=120, interval=1.0,
               message="the change made after the outage")
    wait_until(lambda: httpx.get(f"{platform.url}/healthz", timeout=5).json().get("triggers") == "ok",
               timeout=60, interval=0.5, message="/healthz to clear the problem")

    assert "retrying" in platform.logs_text() and "dbchanges audit (orders)" in platform.logs_text()
    shown = [platform.logs_text(), json.dumps(health), platform.cli("logs", "audit").stdout,
             platform.cli("ledger", "--format", "json").stdout, platform.cli("functions", "--format", "json").stdout]
    assert not any(secret in text_ for text_ in shown)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_two_trigger_runners_publish_each_change_once(platform: RunningPlatform, make_function,
                                                      user_db: Engine) -> None:
    url = url_of(user_db)
    watch(platform, url, "orders")
    platform.cli("deploy", str(make_function("audit", AUDIT, trigger(url, "orders", "batch_size = 7"))), check=True)
    second = subprocess.Popen([sys.executable, "-m", "stoker", "triggers"], env=platform.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for first in range(1, 301, 30):
            with user_db.begin() as c:
                c.execute(text("insert into orders (id, item, qty) values (:id, 'x', 1)"),
                          [{"id": i} for i in range(first, first + 30)])
        records = wait_until(lambda: (r := seen(platform, "audit")) and len(r) >= 300 and r, timeout=120,
                             interval=1.0, message="every change")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)
    assert sorted(r["keys"]["id"] for r in records) == list(range(1, 301))


def test_watch_from_the_cli_refuses_bad_input(platform: RunningPlatform, user_db: Engine, tmp_path: Path) -> None:
    url = url_of(user_db)
    r = platform.cli("db", "watch", "--url", url, "--table", "nope")
    assert r.returncode == 2 and "no such table" in r.stderr
    r = platform.cli("db", "watch", "--url", url, "--table", "orders", "--columns", "qty,colour")
    assert r.returncode == 2 and "no column colour" in r.stderr
    r = platform.cli("db", "watch", "--url", "oracle://scott:tiger@db/x", "--table", "orders")
    assert r.returncode == 2 and "not supported" in r.stderr and "tiger" not in r.stderr
    r = platform.cli("db", "unwatch", "--url", url, "--table", "orders")
    assert r.returncode == 0 and "was not watched" in r.stdout
    out = platform.cli("db", "watch", "--url", url, "--table", "orders", check=True).stdout
    assert out.startswith("watching table orders")
    out = platform.cli("db", "watch", "--url", url, "--table", "orders", check=True).stdout
    assert "already watched" in out
    assert "no longer watching" in platform.cli("db", "unwatch", "--url", url, "--table", "orders",
                                                check=True).stdout
    if make_url(url).get_backend_name() == "sqlite":
        missing = tmp_path / "missing.db"
        r = platform.cli("db", "watch", "--url", f"sqlite:///{missing}", "--table", "orders")
        assert r.returncode == 2 and "no SQLite database" in r.stderr and not missing.exists()
