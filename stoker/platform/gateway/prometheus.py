"""Prometheus metrics for the whole cluster, read from Redis at scrape time.

Counters (invocations, durations, cold starts, throttles) are the cluster-wide sums
nodes and schedulers keep in `{p}:metrics` (stoker.platform.metrics); gauges are read
live: busy workers on live nodes, events waiting in intake, held back by a concurrency
limit or due for a retry, and the age of the oldest waiting event. Each scrape builds a
fresh registry around one snapshot, so nothing is global and any gateway answers for
the whole cluster.

    stoker_invocations_total{function,status}        finished invocations
    stoker_invocation_duration_seconds{function}     histogram of durations
    stoker_cold_starts_total{function}
    stoker_throttles_total{function}                 sync calls refused over a concurrency limit
    stoker_concurrent_executions                     invocations running now
    stoker_queue_depth{queue}                        intake_sync, intake_async, waiting, retry
    stoker_event_age_seconds{queue}                  age of the oldest event in intake_sync,
                                                     intake_async, waiting (0 when empty)
    stoker_nodes, stoker_node_slots                  live nodes and their worker slots
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from stoker.platform.envelope import Envelope
from stoker.platform.keys import Keys
from stoker.platform.metrics import DURATION_BUCKETS, read_counters

#: statuses every deployed function shows (at 0) before it first runs, so series never vanish
STATUSES = ("succeeded", "failed", "timed_out")
QUEUES = ("intake_sync", "intake_async", "waiting", "retry")


@dataclass
class Snapshot:
    counters: dict[str, float] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    busy: float = 0.0
    nodes: int = 0
    slots: float = 0.0
    depth: dict[str, float] = field(default_factory=dict)
    age: dict[str, float] = field(default_factory=dict)


def _stream_age(entries: Any, now_ms: int) -> float:
    if not entries:
        return 0.0
    entry_id = entries[0][0]
    ms = int((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)).split("-", 1)[0])
    return max(0.0, (now_ms - ms) / 1000)


def _waiting_age(raw: bytes | None, now: float) -> float:
    """A held-back event is msgpack [id, function:version, type, envelope]."""
    if not raw:
        return 0.0
    try:
        envelope = Envelope.decode(msgpack.unpackb(raw, raw=True)[3])  # packed by Lua: str, not bin
    except Exception:
        return 0.0
    return max(0.0, now - envelope.enqueued_at)


async def take_snapshot(redis: aioredis.Redis, keys: Keys, node_dead_after: float) -> Snapshot:
    now = time.time()
    now_ms = int(now * 1000)
    snap = Snapshot(counters=await read_counters(redis, keys))
    pipe = redis.pipeline(transaction=False)
    pipe.smembers(keys.functions)
    pipe.zrangebyscore(keys.nodes, now_ms - int(node_dead_after * 1000), "+inf")
    pipe.xlen(keys.intake_sync)
    pipe.xlen(keys.intake_async)
    pipe.xrange(keys.intake_sync, count=1)
    pipe.xrange(keys.intake_async, count=1)
    pipe.smembers(keys.waiting_set)
    pipe.zcard(keys.delayed)
    functions, nodes, sync_len, async_len, sync_head, async_head, waiting, delayed = await pipe.execute()
    snap.functions = sorted(f.decode() for f in functions)
    waiting_names = sorted(w.decode() for w in waiting)
    pipe = redis.pipeline(transaction=False)
    for node in nodes:
        pipe.hmget(keys.node(node.decode()), ["busy", "slots"])
    for name in waiting_names:
        pipe.llen(keys.waiting(name))
        pipe.lindex(keys.waiting(name), 0)
    results = await pipe.execute()
    for busy, slots in results[:len(nodes)]:
        snap.busy += float(busy or 0)
        snap.slots += float(slots or 0)
    snap.nodes = len(nodes)
    rest = results[len(nodes):]
    waiting_depth = sum(int(n or 0) for n in rest[0::2])
    snap.depth = {"intake_sync": float(sync_len), "intake_async": float(async_len), "waiting": float(waiting_depth),
                  "retry": float(delayed)}
    snap.age = {"intake_sync": _stream_age(sync_head, now_ms), "intake_async": _stream_age(async_head, now_ms),
                "waiting": max((_waiting_age(raw, now) for raw in rest[1::2]), default=0.0)}
    return snap


class StokerCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        invocations: dict[tuple[str, str], float] = {(f, s): 0.0 for f in snap.functions for s in STATUSES}
        cold: dict[str, float] = dict.fromkeys(snap.functions, 0.0)
        throttles: dict[str, float] = dict.fromkeys(snap.functions, 0.0)
        buckets: dict[str, dict[str, float]] = defaultdict(dict)
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for key, value in snap.counters.items():
            kind, _, rest = key.partition("|")
            if kind == "inv":
                function, _, status = rest.rpartition("|")
                invocations[(function, status)] = value
            elif kind == "cold":
                cold[rest] = value
            elif kind == "throttle":
                throttles[rest] = value
            elif kind == "dur_bucket":
                function, _, le = rest.rpartition("|")
                buckets[function][le] = value
            elif kind == "dur_sum":
                sums[rest] = value
            elif kind == "dur_count":
                counts[rest] = value

        family = CounterMetricFamily("stoker_invocations", "Finished invocations, by function and status",
                                     labels=["function", "status"])
        for (function, status), value in sorted(invocations.items()):
            family.add_metric([function, status], value)
        yield family

        histogram = HistogramMetricFamily("stoker_invocation_duration_seconds", "Duration of invocations",
                                          labels=["function"])
        for function in sorted(set(counts) | set(buckets)):
            cumulative, points = 0.0, []
            for bound in DURATION_BUCKETS:
                cumulative += buckets[function].get(repr(bound), 0.0)
                points.append((repr(bound), cumulative))
            total = counts.get(function, cumulative + buckets[function].get("+Inf", 0.0))
            points.append(("+Inf", total))
            histogram.add_metric([function], points, sum_value=sums.get(function, 0.0))
        yield histogram

        for name, doc, values in (("stoker_cold_starts", "Cold starts (a new worker process)", cold),
                                  ("stoker_throttles", "Sync calls refused over a concurrency limit", throttles)):
            counter = CounterMetricFamily(name, doc, labels=["function"])
            for function, value in sorted(values.items()):
                counter.add_metric([function], value)
            yield counter

        yield GaugeMetricFamily("stoker_concurrent_executions", "Invocations running now, on all live nodes",
                                value=snap.busy)
        depth = GaugeMetricFamily("stoker_queue_depth", "Events waiting: to be placed (intake), held back by a "
                                  "concurrency limit (waiting), or due for a retry (retry)", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], snap.depth.get(queue, 0.0))
        yield depth
        age = GaugeMetricFamily("stoker_event_age_seconds", "Age of the oldest event waiting in each queue",
                                labels=["queue"])
        for queue in ("intake_sync", "intake_async", "waiting"):
            age.add_metric([queue], snap.age.get(queue, 0.0))
        yield age
        yield GaugeMetricFamily("stoker_nodes", "Live nodes (heartbeat within STOKER_NODE_DEAD_AFTER)",
                                value=snap.nodes)
        yield GaugeMetricFamily("stoker_node_slots", "Worker slots on live nodes", value=snap.slots)


def render(snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
    """The exposition (Prometheus text, or OpenMetrics when the scraper asks for it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StokerCollector(snapshot))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
