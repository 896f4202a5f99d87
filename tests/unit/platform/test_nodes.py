"""Reading back what node agents publish: live and dead nodes, their slots, load and warm workers."""

from __future__ import annotations

import asyncio

import fakeredis
import orjson

from stoker.platform.keys import Keys
from stoker.platform.nodes import WarmCount, read_nodes

KEYS = Keys("t")
NOW = 1_800_000_000_000


def test_nodes_with_their_state_live_ones_first() -> None:
    redis = fakeredis.FakeAsyncRedis()

    async def run():  # type: ignore[no-untyped-def]
        await redis.zadd(KEYS.nodes, {"b.1": NOW - 500, "a.2": NOW - 60_000, "gone.3": NOW})
        await redis.hset(KEYS.node("b.1"), mapping={
            "name": "b", "slots": 8, "load": 3, "busy": 2, "running": 2, "host": "box", "pid": 42,
            "started": NOW - 3_600_000, "isolation": "namespace",
            "warm": orjson.dumps({"shop:3": {"workers": 2, "idle": 1, "busy": 1}, "shop:2": {"workers": 1},
                                  "mail:1": {"workers": 1, "idle": 1, "busy": 0}})})
        await redis.hset(KEYS.node("a.2"), mapping={"name": "a", "slots": 4, "warm": b"not json"})
        # gone.3 has a score but its hash was removed (a node being reclaimed): left out
        return await read_nodes(redis, KEYS, dead_after_s=10, now_ms=NOW)  # type: ignore[arg-type]

    nodes = asyncio.run(run())
    assert [n.id for n in nodes] == ["b.1", "a.2"]
    b, a = nodes
    assert b.alive and not a.alive
    assert (b.name, b.slots, b.load, b.busy, b.host, b.pid, b.isolation) == ("b", 8, 3, 2, "box", 42, "namespace")
    assert b.heartbeat_age(NOW) == 0.5 and b.started_ms == NOW - 3_600_000
    assert b.workers == 4
    assert b.warm_for("shop") == {"3": WarmCount(2, 1, 1), "2": WarmCount(1, 0, 0)}
    assert b.warm_for("sho") == {}
    assert a.warm == {} and a.workers == 0 and a.heartbeat_age(NOW) == 60.0
