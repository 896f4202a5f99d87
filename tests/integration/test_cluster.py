"""A cluster of separate processes on a real Redis: placement, limits, retries, and failures.

Every test starts a gateway, schedulers and nodes as their own processes (as on several
machines) with one Redis and one ledger database, and checks what a user would see:
invocation results, the ledger, dead letters, and that nothing is lost or duplicated when
a process is killed with SIGKILL.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stoker.errors import Throttled
from tests.cluster import Cluster, alive, process_tree
from tests.conftest import RedisServer, wait_until

WORK = """import time
def handler(event, context):
    time.sleep(event.get("s", 0))
    return {"i": event.get("i")}
"""


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer, prefix: str, sqlite_url: str) -> Iterator[Cluster]:
    c = Cluster(home=tmp_path / "home", redis_url=redis_server.url, db_url=sqlite_url, prefix=prefix)
    try:
        yield c
    finally:
        c.stop()


def rows(c: Cluster, function: str) -> list[dict]:
    return c.client().invocations(function=function, limit=100_000)  # type: ignore[no-any-return]


def rows_once(c: Cluster, function: str, count: int, ids: list[str] | None = None, status: str | None = None,
              timeout: float = 30) -> list[dict]:
    """Wait until exactly `count` rows (of these ids, with this status) are in the ledger."""

    def ready() -> list[dict] | None:
        found = [r for r in rows(c, function) if (ids is None or r["id"] in ids)
                 and (status is None or r["status"] == status)]
        return found if len(found) == count else None

    return wait_until(ready, timeout=timeout, message=f"{count} rows of {function}")  # type: ignore[no-any-return]


def test_sequential_calls_reuse_a_warm_worker_and_a_burst_scales_out(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=3, slots=2)
    cluster.cli("deploy", str(make_function("work", WORK, "timeout = 10")), check=True)
    c = cluster.client()
    for i in range(12):
        assert c.invoke("work", {"i": i}) == {"i": i}
    done = rows_once(cluster, "work", 12)
    assert sum(r["cold"] for r in done) == 1, "sequential calls must land on the warm worker"

    # six concurrent 1-second calls: more than one node's two slots are needed
    results: list[object] = []
    threads = [threading.Thread(target=lambda i=i: results.append(c.invoke("work", {"i": 100 + i, "s": 1})))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["i"] for r in results) == list(range(100, 106))  # type: ignore[index]
    burst = [r for r in rows_once(cluster, "work", 18) if r["duration_ms"] > 900]
    assert len(burst) == 6
    assert len({r["node"] for r in burst}) >= 2, "a burst beyond one node's slots must use more nodes"


def test_reserved_concurrency_throttles_sync_and_holds_async(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=2, slots=2)
    cluster.cli("deploy", str(make_function("one", WORK, "timeout = 10\nconcurrency = 1")), check=True)
    c = cluster.client()
    c.invoke("one", {"i": 0})  # warm it
    first = threading.Thread(target=lambda: c.invoke("one", {"i": 1, "s": 2}))
    first.start()
    rows_once(cluster, "one", 1)
    time.sleep(0.5)  # the first call holds the only slot for 2 s
    with pytest.raises(Throttled, match="throttled"):
        c.invoke("one", {"i": 2})
    first.join()
    throttled = wait_until(lambda: [r for r in rows(cluster, "one") if r["status"] == "throttled"],
                           message="a throttled row")
    assert throttled[0]["error_type"] == "TooManyRequestsException"

    # async events over the limit wait their turn: all run, never two at once
    ids = [c.invoke_async("one", {"i": 10 + i, "s": 0.3}) for i in range(5)]
    done = rows_once(cluster, "one", 5, ids=ids, status="succeeded", timeout=60)
    spans = sorted((r["started_at"], r["ended_at"]) for r in done)
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans)), spans


def test_failures_are_retried_then_dead_lettered_and_redriven(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=1, slots=2)
    folder = make_function("flaky", 'def handler(event, context):\n    raise RuntimeError("always")\n',
                           "retries = 2\nretry_delay = 0.2")
    cluster.cli("deploy", str(folder), check=True)
    invocation_id = cluster.cli("invoke", "flaky", "--async", "--data", '{"k": 1}', check=True).stdout.strip()
    row = wait_until(lambda: next((r for r in rows(cluster, "flaky") if r["status"] == "dead_lettered"), None),
                     timeout=30, message="the event to be dead-lettered")
    assert row["id"] == invocation_id and row["attempts"] == 3 and row["error_type"] == "RuntimeError"
    detail = cluster.client().invocation(invocation_id)
    assert [a["attempt"] for a in detail["attempts"]] == [1, 2, 3]
    assert all(a["outcome"] == "failed" for a in detail["attempts"])

    letters = json.loads(cluster.cli("dlq", "flaky", "--format", "json", check=True).stdout)
    assert [d["id"] for d in letters] == [invocation_id]
    assert letters[0]["payload"] == {"k": 1} and letters[0]["error"]["errorType"] == "RuntimeError"

    folder = make_function("flaky", 'def handler(event, context):\n    return "fixed"\n',
                           "retries = 2\nretry_delay = 0.2")
    cluster.cli("deploy", str(folder), check=True)
    assert "redriven: 1" in cluster.cli("dlq", "redrive", "flaky", check=True).stdout
    fixed = wait_until(lambda: next((r for r in rows(cluster, "flaky") if r["status"] == "succeeded"), None),
                       message="the redriven event to succeed")
    assert fixed["version"] == "2"
    assert json.loads(cluster.cli("dlq", "flaky", "--format", "json", check=True).stdout) == []
    # a sync call is never retried by the platform
    r = cluster.cli("invoke", "flaky")
    assert r.returncode == 0


def test_sync_failure_is_not_retried(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=1, slots=1)
    folder = make_function("boom", 'def handler(event, context):\n    raise ValueError("x")\n', "retry_delay = 0")
    cluster.cli("deploy", str(folder), check=True)
    assert cluster.cli("invoke", "boom").returncode == 1
    row = wait_until(lambda: next(iter(rows(cluster, "boom")), None), message="the row")
    time.sleep(1)
    assert len(rows(cluster, "boom")) == 1 and row["attempts"] == 1 and row["status"] == "failed"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_node_killed_mid_burst_loses_nothing(tmp_path: Path, redis_server: RedisServer, prefix: str,
                                             make_function, backend: str, request: pytest.FixtureRequest) -> None:
    db_url = (f"sqlite:///{tmp_path / 'ledger.db'}" if backend == "sqlite"
              else str(request.getfixturevalue("postgres_url")))
    cluster = Cluster(home=tmp_path / "home", redis_url=redis_server.url, db_url=db_url, prefix=prefix)
    try:
        cluster.start(nodes=3, slots=2)
        cluster.cli("deploy", str(make_function("work", WORK, "timeout = 10")), check=True)
        c = cluster.client()
        c.invoke("work", {"i": -1})
        ids = [c.invoke_async("work", {"i": i, "s": 0.2}) for i in range(60)]
        wait_until(lambda: len([r for r in rows(cluster, "work") if r["status"] == "succeeded"]) >= 10,
                   message="the burst to be under way")
        orphans = cluster.kill("n2")
        done = rows_once(cluster, "work", 60, ids=ids, status="succeeded", timeout=90)
        assert len({r["id"] for r in done}) == 60
        all_ids = [r["id"] for r in rows(cluster, "work")]
        assert len(all_ids) == len(set(all_ids)), "one invocation, one row"
        # the killed node's workers and zygote end by themselves
        wait_until(lambda: not any(alive(p) for p in orphans), timeout=10, message="the killed node's workers to exit")
    finally:
        cluster.stop()


def test_scheduler_killed_mid_burst_loses_nothing(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=2, slots=2, schedulers=2)
    cluster.cli("deploy", str(make_function("work", WORK, "timeout = 10")), check=True)
    c = cluster.client()
    ids = [c.invoke_async("work", {"i": i, "s": 0.05}) for i in range(80)]
    cluster.kill("scheduler1")
    ids += [c.invoke_async("work", {"i": 100 + i, "s": 0.05}) for i in range(20)]
    rows_once(cluster, "work", 100, ids=ids, status="succeeded", timeout=90)
    all_ids = [r["id"] for r in rows(cluster, "work")]
    assert len(all_ids) == len(set(all_ids))


def test_worker_killed_mid_invocation(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=1, slots=2)
    source = 'import time\ndef handler(event, context):\n' \
             '    if not event.get("quick"):\n        time.sleep(30)\n    return "ok"\n'
    cluster.cli("deploy", str(make_function("victim", source, "timeout = 60")), check=True)
    c = cluster.client()
    assert c.invoke("victim", {"quick": True}) == "ok"
    node = cluster.procs["n1"].pid

    def victims() -> list[int]:
        found = []
        for p in process_tree(node):
            try:
                if Path(f"/proc/{p}/comm").read_text().startswith("stoker-victim"):
                    found.append(p)
            except OSError:
                pass
        return found

    assert victims(), "a warm worker of victim runs"
    result: dict[str, object] = {}
    caller = threading.Thread(target=lambda: result.update(r=cluster.cli("invoke", "victim", "--data", "{}")))
    caller.start()
    # kill whatever worker of victim runs until the call returns: whenever the call starts
    # (the CLI may be slow to start), the worker running it is killed mid-invocation
    deadline = time.monotonic() + 60
    while caller.is_alive() and time.monotonic() < deadline:
        for p in victims():
            os.kill(p, signal.SIGKILL)
        time.sleep(0.2)
    caller.join()
    out = result["r"]
    assert out.returncode == 1 and "Runtime.ExitError" in out.stdout  # type: ignore[attr-defined]
    # the node survives and serves again
    assert c.invoke("victim", {"quick": True}) == "ok"


def test_min_warm_keeps_workers_started_ahead_of_demand(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=2, slots=3)
    cluster.cli("deploy", str(make_function("ready", WORK, "min_warm = 2")), check=True)

    def warm_workers() -> int:
        import redis

        r = redis.Redis.from_url(cluster.redis_url)
        total = 0
        for node_id in r.zrange(f"{cluster.prefix}:nodes", 0, -1):
            warm = json.loads(r.hget(f"{cluster.prefix}:node:{node_id.decode()}", "warm") or b"{}")
            total += warm.get("ready:1", {}).get("workers", 0)
        return total

    wait_until(lambda: warm_workers() == 2, timeout=30, message="two provisioned workers")
    time.sleep(3)
    assert warm_workers() == 2, "no more than min_warm are started"
    assert cluster.client().invoke("ready", {"i": 1}) == {"i": 1}
    row = wait_until(lambda: next(iter(rows(cluster, "ready")), None), message="the row")
    assert row["cold"] is False


def test_a_node_on_another_machine_fetches_bundles_from_the_gateway(cluster: Cluster, make_function,
                                                                   tmp_path: Path) -> None:
    cluster.start(nodes=0)
    elsewhere = tmp_path / "other-machine"
    cluster.start_node("far", slots=2, home=elsewhere)
    cluster.cli("deploy", str(make_function("work", WORK)), check=True)
    assert cluster.client().invoke("work", {"i": 7}) == {"i": 7}
    cached = list((elsewhere / "node" / "bundles").iterdir())
    assert len(cached) == 1 and (cached[0] / "code" / "handler.py").exists()
    assert not (elsewhere / "bundles").exists(), "the node has no bundle store of its own"


def _final(c: Cluster, function: str, ids: list[str], timeout: float = 90) -> list[dict]:
    final = ("succeeded", "failed", "timed_out", "dead_lettered")
    return wait_until(lambda: (found := [r for r in rows(c, function) if r["id"] in ids
                                         and r["status"] in final]) and len(found) == len(ids) and found,
                      timeout=timeout, message=f"{len(ids)} final rows of {function}")  # type: ignore[no-any-return]


def test_a_lost_nodes_unstarted_events_run_once_elsewhere_unspent(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=2, slots=2)
    cluster.cli("deploy", str(make_function("slow", WORK, "timeout = 20\nretries = 0")), check=True)
    c = cluster.client()
    c.invoke("slow", {"i": -1})  # both nodes know the function
    ids = [c.invoke_async("slow", {"i": i, "s": 3}) for i in range(12)]
    # every slot busy (the events started a second ago), each node holding more behind them
    time.sleep(1.5)
    cluster.kill("n1")
    done = _final(cluster, "slow", ids)
    lost = [r for r in done if r["status"] != "succeeded"]
    assert all(r["error_type"] == "Runtime.NodeLost" for r in lost), lost
    # only what was running on the lost node (two slots) was lost; what it held unstarted ran elsewhere
    assert len(lost) <= 2, f"{len(lost)} events were lost, more than n1 was running: {lost}"
    for r in done:
        detail = c.invocation(r["id"])
        assert detail["attempt_count"] == 1, detail  # an unstarted event spent no attempt


def test_a_stalled_node_runs_nothing_twice(cluster: Cluster, make_function) -> None:
    cluster.start(nodes=2, slots=2)
    cluster.cli("deploy", str(make_function("slow", WORK, "timeout = 20\nretries = 0")), check=True)
    c = cluster.client()
    c.invoke("slow", {"i": -1})
    ids = [c.invoke_async("slow", {"i": i, "s": 2}) for i in range(12)]
    time.sleep(1.0)  # every slot busy, each node holding more behind them
    stalled = process_tree(cluster.procs["n1"].pid)
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(8)  # past STOKER_NODE_DEAD_AFTER (3 s): the scheduler places its events again
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    done = _final(cluster, "slow", ids)
    time.sleep(5)  # the stalled node's late results arrive now, and must change nothing
    again = {r["id"]: r for r in rows(cluster, "slow") if r["id"] in ids}
    assert {i: again[i]["status"] for i in ids} == {r["id"]: r["status"] for r in done}, "a late result changed a row"
    for r in done:
        detail = c.invocation(r["id"])
        ran = [a for a in detail["attempts"] if a["outcome"] in ("succeeded", "failed", "timed_out")]
        assert detail["attempt_count"] == 1 and len(ran) <= 1, detail
    assert all(r["status"] == "succeeded" or r["error_type"] == "Runtime.NodeLost" for r in done), done
