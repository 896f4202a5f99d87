"""The RQ side of the benchmark: a no-op job that counts itself done."""

import os

import redis

_r = None


def noop() -> None:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    _r.incr(os.environ.get("BENCH_COUNTER", "bench:rq:done"))
