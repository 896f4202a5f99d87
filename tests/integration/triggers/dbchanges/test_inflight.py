"""The batch in flight on a real Redis: published atomically with its event, fenced by the lease."""

from __future__ import annotations

import asyncio

from stoker.platform.bus import connect
from stoker.platform.keys import Keys
from stoker.triggers.dbchanges.changelog import Cursor, Position
from stoker.triggers.dbchanges.inflight import BatchState, Inflight
from stoker.triggers.dbchanges.lease import Lease
from tests.conftest import RedisServer


def test_handoff_is_fenced_by_the_lease_and_compares_the_batch_in_flight(redis_server: RedisServer,
                                                                         prefix: str) -> None:
    async def scenario() -> None:
        redis = connect(redis_server.url)
        keys = Keys(prefix)
        try:
            lease = Lease(redis, keys.lock("dbchanges:t"), ttl_s=5)
            rival = Lease(redis, lease.key, ttl_s=5)
            state = BatchState(redis, lease.key, keys.custom("dbchanges", "t", "inflight"),
                               keys.custom("dbchanges", "t", "outcomes"))
            intake = keys.intake_async
            assert await lease.acquire() and not await rival.acquire()

            batch = Inflight.plan(Cursor("p/f", "tok", 3, Position()), [5, 6, 7], Position(after_seq=7))
            event = [(intake, {"i": batch.id, "e": b"payload"})]
            assert await state.handoff(rival.token, b"", batch.encode(), event) == 0  # not the holder
            assert await redis.xlen(intake) == 0 and await state.load() == b""
            assert await state.handoff(lease.token, b"", batch.encode(), event) == 1
            assert await redis.xlen(intake) == 1 and await state.load() == batch.encode()
            # a second publish from the same starting point (a retry after a lost reply) does nothing
            assert await state.handoff(lease.token, b"", batch.encode(), event) == -1
            assert await redis.xlen(intake) == 1

            half = batch.then((0, 1), ((1, 3),), 0)
            assert half.id != batch.id and half.part_seqs == (5,)
            assert Inflight.decode(half.encode()) == half
            assert await state.handoff(lease.token, batch.encode(), half.encode(), []) == 1
            assert await state.handoff(lease.token, half.encode(), b"", []) == 1
            assert await state.load() == b""

            await lease.release()
            assert await rival.acquire() and not await lease.renew()
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_batch_ids_are_derived_from_the_cursor() -> None:
    cursor = Cursor("p/f", "tok", 3, Position())
    a = Inflight.plan(cursor, [1, 2], Position(after_seq=2))
    b = Inflight.plan(cursor, [1, 2], Position(after_seq=2))
    assert a.id == b.id  # published again after Redis lost its state: the ledger keeps one row
    assert Inflight.plan(Cursor("p/f", "tok", 4, Position()), [3], Position()).id != a.id
    assert Inflight.plan(Cursor("p/f", "new", 3, Position()), [1, 2], Position()).id != a.id
