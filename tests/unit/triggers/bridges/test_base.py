"""Bridge plumbing that needs no Redis: broker URLs, routes, manifest entries."""

from __future__ import annotations

import asyncio
import time

import pytest

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.manifest import parse_manifest
from stoker.triggers.bridges.base import Bridge, Done, Route, StaticRoutes, redis_url


def test_kombu_socket_urls_become_redis_py_urls() -> None:
    assert redis_url("redis+socket:///tmp/r.sock?virtual_host=3") == "unix:///tmp/r.sock?db=3"
    assert redis_url("redis://:pw@host:6380/2") == "redis://:pw@host:6380/2"
    with pytest.raises(InvalidInput, match="Redis brokers only"):
        redis_url("amqp://guest@localhost//")


def test_static_routes() -> None:
    routes = StaticRoutes.parse(["tasks.add=add", "tasks.mul=mul:prod"], "TASK")
    assert asyncio.run(routes.lookup("tasks.mul")) == Route("mul", "prod")
    assert asyncio.run(routes.lookup("tasks.nope")) is None
    with pytest.raises(InvalidInput, match="TASK=FUNCTION"):
        StaticRoutes.parse(["tasks.add"], "TASK")
    with pytest.raises(InvalidInput, match="no routes"):
        StaticRoutes.parse([], "TASK")


def test_bridge_triggers_in_manifests() -> None:
    spec = parse_manifest('[function]\nname = "add"\n[[triggers]]\ntype = "celery"\ntask = "tasks.add"\n'
                          '[[triggers]]\ntype = "rq"\nfunc = "tasks.add"\nredis = "redis://r:6379/1"\n')
    assert spec.triggers == ({"type": "celery", "task": "tasks.add", "queue": "celery", "concurrency": 4},
                             {"type": "rq", "func": "tasks.add", "queue": "default", "redis": "redis://r:6379/1",
                              "concurrency": 4})


@pytest.mark.parametrize("trigger, message", [
    ('type = "celery"', "task is missing"),
    ('type = "celery"\ntask = "t"\nbroker = "amqp://x"', "Redis brokers only"),
    ('type = "celery"\ntask = "t"\nconcurrency = 0', "concurrency = 0"),
    ('type = "rq"', "func is missing"),
    ('type = "rq"\nfunc = "f"\nbroker = "redis://x"', "unknown key 'broker'"),
])
def test_bad_bridge_triggers(trigger: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_manifest(f'[function]\nname = "add"\n[[triggers]]\n{trigger}\n')


class _Items:
    """A consumer holding `n` items, handed out at once, that records what was finished."""

    def __init__(self, n: int) -> None:
        self.items = [str(i).encode() for i in range(n)]
        self.finished: list[bytes] = []

    async def take(self, timeout_s: float) -> bytes | None:
        if self.items:
            return self.items.pop(0)
        await asyncio.sleep(min(timeout_s, 0.01))
        return None

    async def done(self, item: bytes) -> None:
        self.finished.append(item)


class _Quick:
    kind = "test"

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def handle(self, item: bytes, call: object) -> Done:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.005)
        self.running -= 1
        return Done()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_busy_bridge_takes_the_next_item_as_soon_as_a_slot_frees(concurrency: int) -> None:
    """Items that take 5 ms each go through at slot speed, never more than `concurrency` at once
    (waiting on a busy bridge by polling every 0.2 s made 60 items take 12 s with one slot)."""
    consumer, handler = _Items(60), _Quick()
    bridge = Bridge(None, consumer, handler, concurrency)  # type: ignore[arg-type]

    async def main() -> float:
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        taking = asyncio.create_task(bridge._take(stop, None, tasks))  # type: ignore[arg-type]
        while len(consumer.finished) < 60 and time.monotonic() - started < 10:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(taking, 5)  # a stop ends the wait for a slot at once
        return elapsed

    elapsed = asyncio.run(main())
    assert sorted(consumer.finished, key=int) == [str(i).encode() for i in range(60)]
    assert handler.most == concurrency
    assert elapsed < 3.0, f"60 items of 5 ms took {elapsed:.1f} s with {concurrency} slot(s)"


def test_a_stop_ends_the_wait_for_a_busy_slot() -> None:
    consumer = _Items(5)

    class Stuck(_Quick):
        async def handle(self, item: bytes, call: object) -> Done:
            await asyncio.sleep(30)
            return Done()

    bridge = Bridge(None, consumer, Stuck(), 1)  # type: ignore[arg-type]

    async def main() -> None:
        stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        taking = asyncio.create_task(bridge._take(stop, None, tasks))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert len(tasks) == 1 and len(consumer.items) == 4  # one held, the rest left in the queue
        stop.set()
        await asyncio.wait_for(taking, 1)
        for t in tasks:
            t.cancel()

    asyncio.run(main())
