"""What node agents publish about themselves, read back (for the console and operators).

A node registers `{p}:node:{id}` (name, slots, host, pid, started, isolation) and every
second refreshes its score in `{p}:nodes` and the hash's warm (json: function:version ->
{workers, idle, busy}), busy, running and heartbeat; `load` (events placed on it and not
finished) is kept by the scheduler's and the node's Lua scripts. A node whose heartbeat is
older than STOKER_NODE_DEAD_AFTER is dead: a scheduler reclaims its events and removes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.platform.keys import Keys


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(float(_text(value) or 0))
    except ValueError:
        return 0


@dataclass(frozen=True)
class WarmCount:
    workers: int = 0
    idle: int = 0
    busy: int = 0


@dataclass(frozen=True)
class NodeState:
    id: str
    name: str
    host: str | None
    pid: int | None
    slots: int
    load: int
    busy: int
    running: int
    isolation: str | None
    started_ms: int | None
    heartbeat_ms: int
    alive: bool
    #: function:version -> warm workers of that version on this node
    warm: dict[str, WarmCount] = field(default_factory=dict)
    #: what its workers' sandbox has: {"cgroup": v2|v1|none, "network": egress|host (why)}
    sandbox: dict[str, str] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return sum(w.workers for w in self.warm.values())

    def heartbeat_age(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.heartbeat_ms) / 1000)

    def warm_for(self, function: str) -> dict[str, WarmCount]:
        """This function's warm workers by version."""
        out = {}
        for fv, count in self.warm.items():
            name, _, version = fv.rpartition(":")
            if name == function:
                out[version] = count
        return out


def _warm(raw: Any) -> dict[str, WarmCount]:
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(fv): WarmCount(_int(c.get("workers")), _int(c.get("idle")), _int(c.get("busy")))
            for fv, c in data.items() if isinstance(c, dict)}


def _sandbox(raw: Any) -> dict[str, str]:
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


async def read_nodes(redis: aioredis.Redis, keys: Keys, dead_after_s: float,
                     now_ms: int | None = None) -> list[NodeState]:
    """Every registered node, live ones first, each group by name."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    members: Any = await redis.zrange(keys.nodes, 0, -1, withscores=True)
    pipe = redis.pipeline(transaction=False)
    for node_id, _ in members:
        pipe.hgetall(keys.node(_text(node_id) or ""))
    hashes = await pipe.execute()
    cutoff = now_ms - int(dead_after_s * 1000)
    out = []
    for (raw_id, score), h in zip(members, hashes, strict=True):
        if not h:  # removed between the two reads
            continue
        node_id = _text(raw_id) or ""
        pid = _text(h.get(b"pid"))
        started = _text(h.get(b"started"))
        out.append(NodeState(
            id=node_id, name=_text(h.get(b"name")) or node_id.rpartition(".")[0] or node_id,
            host=_text(h.get(b"host")), pid=int(pid) if pid and pid.isdigit() else None,
            slots=_int(h.get(b"slots")), load=_int(h.get(b"load")), busy=_int(h.get(b"busy")),
            running=_int(h.get(b"running")), isolation=_text(h.get(b"isolation")),
            started_ms=int(started) if started and started.isdigit() else None,
            heartbeat_ms=int(score), alive=int(score) >= cutoff, warm=_warm(h.get(b"warm")),
            sandbox=_sandbox(h.get(b"sandbox")),
        ))
    out.sort(key=lambda n: (not n.alive, n.name, n.id))
    return out
