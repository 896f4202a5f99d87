"""Reading function logs by time."""

from __future__ import annotations

import asyncio

import fakeredis

from stoker.platform.keys import Keys
from stoker.platform.logstream import encode_logs, read_logs

KEYS = Keys("t")


def test_times_before_1970_read_from_the_start_of_the_stream() -> None:
    redis = fakeredis.FakeAsyncRedis()

    async def run() -> tuple[list[str], list[str]]:
        await redis.xadd(KEYS.logs("shop"), {"l": encode_logs("r1", [(1_000, "hello")])}, id="1000-0")
        before_1970 = -86_400_000
        since, _ = await read_logs(redis, KEYS, "shop", since_ms=before_1970)  # type: ignore[arg-type]
        until, _ = await read_logs(redis, KEYS, "shop", until_ms=before_1970,  # type: ignore[arg-type]
                                   request_id="r1")
        return [line.text for line in since], [line.text for line in until]

    assert asyncio.run(run()) == (["hello"], [])
