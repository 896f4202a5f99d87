"""Named queues on a real Redis: receive, visibility, receive counts, dead letters, redrive, purge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from stoker.errors import InvalidInput, NotFound, PayloadTooLarge
from stoker.platform.bus import connect
from stoker.platform.keys import Keys
from stoker.triggers.queue.messages import MAX_MESSAGE_BYTES
from stoker.triggers.queue.store import QueueStore, ReceiveResult
from tests.conftest import RedisServer

Scenario = Callable[[QueueStore], Awaitable[None]]


@pytest.fixture
def run(redis_server: RedisServer, prefix: str) -> Callable[[Scenario], None]:
    def go(scenario: Scenario) -> None:
        async def main() -> None:
            redis = connect(redis_server.url)
            try:
                await scenario(QueueStore(redis, Keys(prefix)))
            finally:
                await redis.aclose()

        asyncio.run(main())

    return go


async def receive_until(store: QueueStore, consumer: str, want: int, visibility_ms: int = 60_000,
                        max_receive: int = 5, timeout: float = 20) -> ReceiveResult:
    """Receive until something comes (visibility timeouts and delays pass in real time)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await store.receive("q", consumer, want, visibility_ms, max_receive)
        if result.messages or result.dead_lettered or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def bodies(result: ReceiveResult) -> list[Any]:
    return [orjson.loads(r.message.body) for r in result.messages]


def test_a_received_message_is_invisible_until_deleted_or_timed_out(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        ids = await store.send("q", [b'{"n": 1}', b'{"n": 2}'])
        first = await store.receive("q", "a", 10, 60_000, 5)
        assert [r.message.id for r in first.messages] == ids and bodies(first) == [{"n": 1}, {"n": 2}]
        assert all(r.receive_count == 1 for r in first.messages)
        assert (await store.receive("q", "b", 10, 60_000, 5)).messages == []  # in flight: nobody else gets them
        await store.delete("q", [first.messages[0].entry_id])
        (stats,) = await store.stats(["q"])
        assert (stats.available, stats.in_flight) == (0, 1)
        # the other one times out and is received again, counting a second receive
        again = await receive_until(store, "b", 10, visibility_ms=100)
        assert bodies(again) == [{"n": 2}] and again.messages[0].receive_count == 2
        assert again.messages[0].first_received_ms == first.messages[1].first_received_ms

    run(scenario)


def test_consumers_share_the_queue_without_overlap(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        await store.send("q", [orjson.dumps(n) for n in range(10)])
        got_a = await store.receive("q", "a", 4, 60_000, 5)
        got_b = await store.receive("q", "b", 10, 60_000, 5)
        assert bodies(got_a) == [0, 1, 2, 3] and bodies(got_b) == [4, 5, 6, 7, 8, 9]

    run(scenario)


def test_max_receive_moves_to_the_dead_letter_queue_and_redrive_brings_it_back(
        run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        (poison,) = await store.send("q", [b'{"poison": true}'], attributes={"kind": "bad"})
        for attempt in (1, 2):
            got = await receive_until(store, "a", 1, visibility_ms=50, max_receive=2)
            assert got.messages[0].receive_count == attempt
        moved = await receive_until(store, "a", 1, visibility_ms=50, max_receive=2)
        assert moved.dead_lettered == 1 and moved.messages == []
        assert await store.names() == ["q", "q-dlq"]
        (dead,) = await store.peek("q-dlq")
        assert dead["id"] == poison and dead["body"] == {"poison": True} and dead["attributes"] == {"kind": "bad"}
        assert dead["dead_letter"]["queue"] == "q" and dead["dead_letter"]["receive_count"] == 2
        assert await store.peek("q") == []

        result = await store.redrive("q-dlq")
        assert result.moved == 1 and await store.peek("q-dlq") == []
        back = await store.receive("q", "a", 1, 60_000, 2)
        assert [r.message.id for r in back.messages] == [poison]
        assert back.messages[0].receive_count == 1 and back.messages[0].message.dead_letter is None

    run(scenario)


def test_a_receive_stops_at_its_byte_budget(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        big = b'"' + b"x" * 100_000 + b'"'
        await store.send("q", [big] * 5)
        await store.send("q", [b"1"] * 50)
        first = await store.receive("q", "a", 100, 60_000, 5, budget_bytes=250_000)
        assert len(first.messages) < 5  # not all five 100 KB messages: the first chunk is small
        rest = await store.receive("q", "a", 100, 60_000, 5)
        assert len(first.messages) + len(rest.messages) == 55

    run(scenario)


def test_redrive_leaves_messages_in_flight_and_needs_a_destination(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        await store.send("q", [b"1", b"2"])
        await store.receive("q", "a", 1, 60_000, 5)  # "1" is in flight
        result = await store.redrive("q")
        assert (result.moved, result.in_flight, result.no_source) == (0, 1, 1)  # plain messages have no source
        result = await store.redrive("q", to="elsewhere")
        assert (result.moved, result.in_flight) == (1, 1)
        assert [m["body"] for m in await store.peek("elsewhere")] == [2]
        with pytest.raises(InvalidInput, match="to itself"):
            await store.redrive("q", to="q")

    run(scenario)


def test_a_message_given_back_keeps_its_receive(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        await store.send("q", [b"1"])
        got = await store.receive("q", "a", 1, 60_000, 5)
        assert await store.hold("q", "a", [got.messages[0].entry_id], 60_000, uncount=True) == 1
        (row,) = await store.peek("q")
        assert row["state"] == "available" and row["receive_count"] == 0
        again = await store.receive("q", "b", 1, 60_000, 5)
        assert again.messages[0].receive_count == 1
        # a consumer cannot touch what another one now holds
        assert await store.hold("q", "a", [again.messages[0].entry_id], 0) == 0

    run(scenario)


def test_delayed_messages_arrive_when_due_in_order(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        await store.send("q", [b'"later-1"', b'"later-2"', b'"later-3"'], delay=0.3)
        await store.send("q", [b'"now"'])
        first = await store.receive("q", "a", 10, 60_000, 5)
        assert bodies(first) == ["now"] and first.next_due_ms is not None
        assert [m["state"] for m in await store.peek("q")] == ["in_flight", "delayed", "delayed", "delayed"]
        later = await receive_until(store, "a", 10)
        assert bodies(later) == ["later-1", "later-2", "later-3"]

    run(scenario)


def test_bad_sends_change_nothing(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        with pytest.raises(InvalidInput, match="message #2 is not valid JSON"):
            await store.send("q", [b"1", b"{nope", b"3"])
        biggest = b'"' + b"x" * (MAX_MESSAGE_BYTES - 2) + b'"'
        with pytest.raises(PayloadTooLarge, match="256 KB"):
            await store.send("q", [biggest + b" "])
        with pytest.raises(InvalidInput, match="valid queue name"):
            await store.send("no way", [b"1"])
        assert await store.names() == []
        await store.send("q", [biggest])
        (stats,) = await store.stats(["q"])
        assert stats.available == 1

    run(scenario)


def test_purge_empties_the_queue_and_voids_receipts(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        await store.send("q", [b"1", b"2"])
        await store.send("q", [b"3"], delay=60)
        got = await store.receive("q", "a", 1, 60_000, 5)
        assert await store.purge("q") == 3
        await store.delete("q", [got.messages[0].entry_id])  # a late ack of a purged message changes nothing
        (stats,) = await store.stats(["q"])
        assert (stats.available, stats.in_flight, stats.delayed) == (0, 0, 0)
        await store.send("q", [b"4"])
        assert bodies(await store.receive("q", "a", 10, 60_000, 5)) == [4]
        with pytest.raises(NotFound, match="does not exist"):
            await store.purge("nope")

    run(scenario)


def test_leases_bound_batches_in_flight(run: Callable[[Scenario], None]) -> None:
    async def scenario(store: QueueStore) -> None:
        key = store.keys.custom("esm", "test", "leases")
        assert await store.take_lease(key, 2, "a", 60_000)
        assert await store.take_lease(key, 2, "b", 60_000)
        assert not await store.take_lease(key, 2, "c", 60_000)
        await store.drop_lease(key, "a")
        assert await store.take_lease(key, 2, "c", 60_000)
        assert await store.take_lease(key, 3, "short", 1)
        await asyncio.sleep(0.01)
        assert await store.take_lease(key, 3, "d", 60_000)  # the expired lease no longer counts
        await store.renew_lease(key, "short", 60_000)  # too late: an expired lease is not taken back
        assert await store.redis.zscore(key, "short") is None
        await store.renew_lease(key, "d", 1)
        await asyncio.sleep(0.01)
        assert await store.take_lease(key, 3, "e", 60_000)
        assert not await store.take_lease(key, 3, "f", 60_000)

    run(scenario)
