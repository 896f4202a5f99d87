"""Problems of trigger sources, as /healthz shows them: reported, refreshed, expired, cleared."""

from __future__ import annotations

import asyncio
import time

import fakeredis

from stoker.platform.keys import Keys
from stoker.triggers.health import REPORT_TTL_S, clear_problem, report_problem, source_problems


def test_reports_expire_unless_refreshed_and_clear() -> None:
    async def scenario() -> None:
        redis = fakeredis.FakeAsyncRedis()
        keys = Keys("t")
        assert await source_problems(redis, keys) == {}
        await report_problem(redis, keys, "dbchanges audit (orders)", "database unreachable", since=0.0)
        await report_problem(redis, keys, "dbchanges old (x)", "gone", since=0.0)
        # a source that stopped without clearing: its report expires
        await redis.hset(keys.custom("triggers", "health"), "dbchanges old (x)",
                         b'{"problem": "gone", "since": 0, "expires": %d}' % int(time.time() - REPORT_TTL_S))
        problems = await source_problems(redis, keys)
        assert problems == {"dbchanges audit (orders)": "database unreachable (since 1970-01-01T00:00:00Z)"}
        assert await redis.hkeys(keys.custom("triggers", "health")) == [b"dbchanges audit (orders)"]
        await clear_problem(redis, keys, "dbchanges audit (orders)")
        assert await source_problems(redis, keys) == {}

    asyncio.run(scenario())
