"""/metrics: cluster-wide counters and live gauges read from Redis into Prometheus families."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import msgpack
from prometheus_client.parser import text_string_to_metric_families

from stoker.platform.envelope import Envelope
from stoker.platform.gateway.prometheus import render, take_snapshot
from stoker.platform.keys import Keys
from stoker.platform.metrics import MetricsRecorder

KEYS = Keys("t")


async def populate(redis: fakeredis.FakeAsyncRedis) -> None:
    recorder = MetricsRecorder()
    recorder.invocation("shop", "succeeded", 3.0, cold=True)
    recorder.invocation("shop", "succeeded", 700.0, cold=False)
    recorder.invocation("shop", "failed", 1.0, cold=False)
    recorder.throttle("shop")
    await recorder.flush(redis, KEYS)  # type: ignore[arg-type]
    now_ms = int(time.time() * 1000)
    await redis.sadd(KEYS.functions, "shop", "idle")
    await redis.zadd(KEYS.nodes, {"live": now_ms, "dead": now_ms - 60_000})
    await redis.hset(KEYS.node("live"), mapping={"busy": 3, "slots": 8})
    await redis.hset(KEYS.node("dead"), mapping={"busy": 5, "slots": 8})
    await redis.xadd(KEYS.intake_async, {"i": "x"}, id=f"{now_ms - 30_000}-0")
    await redis.xadd(KEYS.intake_async, {"i": "y"})
    old = Envelope(id="w", function="shop", version="1", payload=b"{}", invocation_type="async",
                   enqueued_at=time.time() - 120)
    # packed as place.lua packs it (Lua strings become msgpack str, never bin)
    await redis.rpush(KEYS.waiting("shop"), msgpack.packb(["w", "shop:1", "a", old.encode()], use_bin_type=False))
    await redis.sadd(KEYS.waiting_set, "shop")
    await redis.zadd(KEYS.delayed, {"r1": 1, "r2": 2})


def samples() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    redis = fakeredis.FakeAsyncRedis()

    async def run() -> bytes:
        await populate(redis)
        snap = await take_snapshot(redis, KEYS, node_dead_after=10)  # type: ignore[arg-type]
        return render(snap, None)[0]

    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(asyncio.run(run()).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_counters_and_histogram() -> None:
    m = samples()
    inv = m["stoker_invocations_total"]
    assert inv[(("function", "shop"), ("status", "succeeded"))] == 2
    assert inv[(("function", "shop"), ("status", "failed"))] == 1
    assert inv[(("function", "idle"), ("status", "succeeded"))] == 0  # every deployed function has its series
    assert m["stoker_cold_starts_total"][(("function", "shop"),)] == 1
    assert m["stoker_throttles_total"][(("function", "shop"),)] == 1
    buckets = m["stoker_invocation_duration_seconds_bucket"]
    assert buckets[(("function", "shop"), ("le", "0.001"))] == 1
    assert buckets[(("function", "shop"), ("le", "0.005"))] == 2
    assert buckets[(("function", "shop"), ("le", "+Inf"))] == 3
    assert m["stoker_invocation_duration_seconds_count"][(("function", "shop"),)] == 3
    assert abs(m["stoker_invocation_duration_seconds_sum"][(("function", "shop"),)] - 0.704) < 1e-9


def test_live_gauges() -> None:
    m = samples()
    assert m["stoker_concurrent_executions"][()] == 3  # the dead node's busy workers do not count
    assert m["stoker_nodes"][()] == 1 and m["stoker_node_slots"][()] == 8
    depth = {dict(k)["queue"]: v for k, v in m["stoker_queue_depth"].items()}
    assert depth == {"intake_sync": 0, "intake_async": 2, "waiting": 1, "retry": 2}
    age = {dict(k)["queue"]: v for k, v in m["stoker_event_age_seconds"].items()}
    assert 29 < age["intake_async"] < 90 and 119 < age["waiting"] < 200 and age["intake_sync"] == 0


def test_openmetrics_when_asked() -> None:
    redis = fakeredis.FakeAsyncRedis()
    snap = asyncio.run(take_snapshot(redis, KEYS, 10))  # type: ignore[arg-type]
    body, content_type = render(snap, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
