"""Redis under pressure: a pool at its limit waits instead of failing, and a Redis that refuses
writes (maxmemory) is an outage the platform rides out, not a reason to declare nodes dead.
Each test runs its own redis-server: they change its limits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis

from stoker.errors import ConfigError
from stoker.platform import bus
from tests.conftest import start_platform, start_redis, wait_until


def test_a_pool_at_its_limit_waits_for_a_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_redis(tmp_path / "redis")
    monkeypatch.setenv("STOKER_REDIS_MAX_CONNECTIONS", "3")
    monkeypatch.setenv("STOKER_REDIS_POOL_TIMEOUT", "60")
    try:
        async def scenario() -> tuple[list[object], int]:
            client = bus.connect(server.url)
            peak = 0

            async def one(i: int) -> object:
                # each holds its connection for 50 ms, as a blocking read does
                return await client.blpop([f"nothing-{i}"], timeout=0.05)

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, sum(1 for c in server.client().client_list() if c.get("cmd") != "client|list"))
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            results = await asyncio.gather(*(one(i) for i in range(60)))
            watcher.cancel()
            await client.aclose()
            return results, peak

        results, peak = asyncio.run(scenario())
        assert results == [None] * 60, "every command got its answer; none failed for want of a connection"
        assert peak <= 3, f"the pool opened {peak} connections, over its limit of 3"
    finally:
        server.stop()


def test_pool_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("STOKER_REDIS_MAX_CONNECTIONS", "1"), ("STOKER_REDIS_POOL_TIMEOUT", "soon")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError) as e:
            bus.pool_settings()
        assert name in e.value.message
        monkeypatch.delenv(name)
    assert bus.pool_settings() == (bus.DEFAULT_MAX_CONNECTIONS, bus.DEFAULT_POOL_TIMEOUT_S)


def test_redis_refusing_writes_declares_no_node_dead_and_everything_resumes(
        tmp_path: Path, make_function) -> None:  # type: ignore[no-untyped-def]
    server = start_redis(tmp_path / "redis", "--maxmemory-policy", "noeviction")
    prefix = "tp" + str(int(time.time() * 1000) % 10**8)
    running = start_platform(tmp_path / "home", server.url, prefix, {"STOKER_NODE_DEAD_AFTER": "2"})
    admin = server.client()
    try:
        echo = make_function("echo", "def handler(event, context):\n    return event\n")
        running.cli("deploy", str(echo), check=True)
        assert json.loads(running.cli("invoke", "echo", "--data", '{"n": 0}', check=True).stdout) == {"n": 0}
        nodes_before = admin.zrange(f"{prefix}:nodes", 0, -1)
        assert len(nodes_before) == 1
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(max(1, used // 2)))  # every denyoom write is refused now
        with pytest.raises(redis.exceptions.ResponseError):
            admin.set("probe", "x")
        time.sleep(8)  # four times STOKER_NODE_DEAD_AFTER
        assert admin.zrange(f"{prefix}:nodes", 0, -1) == nodes_before, "a node was declared dead while Redis " \
                                                                        "refused its heartbeats"
        assert running.proc.poll() is None
        admin.config_set("maxmemory", "0")
        out = wait_until(lambda: (r := running.cli("invoke", "echo", "--data", '{"n": 1}')).returncode == 0 and r,
                         timeout=30, message="invocations to work again once Redis accepts writes")
        assert json.loads(out.stdout) == {"n": 1}
        assert admin.zrange(f"{prefix}:nodes", 0, -1) == nodes_before, "the node had to register again"
        assert "registering again" not in running.logs_text()  # the node never found itself declared dead
        assert "Redis refuses writes" in running.logs_text()
    finally:
        admin.config_set("maxmemory", "0")
        running.stop()
        server.stop()


def test_a_node_whose_inbox_vanishes_keeps_serving(tmp_path: Path, make_function) -> None:  # type: ignore[no-untyped-def]
    server = start_redis(tmp_path / "redis")
    prefix = "tq" + str(int(time.time() * 1000) % 10**8)
    running = start_platform(tmp_path / "home", server.url, prefix)
    admin = server.client()
    try:
        running.cli("deploy", str(make_function("echo", "def handler(event, context):\n    return event\n")),
                    check=True)
        assert json.loads(running.cli("invoke", "echo", "--data", '{"n": 0}', check=True).stdout) == {"n": 0}
        [node] = [n.decode() for n in admin.zrange(f"{prefix}:nodes", 0, -1)]
        inbox = f"{prefix}:inbox:{node}"
        assert admin.exists(inbox)
        admin.delete(inbox)  # Redis 7 answers the node's blocked read with UNBLOCKED
        time.sleep(3)
        assert running.proc.poll() is None and "inbox reader failed" not in running.logs_text()
        for n in range(1, 4):
            assert json.loads(running.cli("invoke", "echo", "--data", json.dumps({"n": n}), check=True,
                                          timeout=60).stdout) == {"n": n}
            assert running.cli("invoke", "echo", "--async", "--data", "{}", check=True).stdout.strip()

        def all_ran() -> bool:
            rows = json.loads(running.cli("ledger", "--function", "echo", "--format", "json", check=True).stdout)
            return len(rows) == 7 and all(r["status"] == "succeeded" for r in rows)

        wait_until(all_ran, timeout=30, message="the sync and async calls after the loss to run")
    finally:
        running.stop()
        server.stop()
