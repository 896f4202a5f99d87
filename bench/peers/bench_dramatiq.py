"""The Dramatiq side of the benchmark: a no-op actor that counts itself done (Redis broker, defaults)."""

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
dramatiq.set_broker(RedisBroker(url=URL))
_r = redis.Redis.from_url(URL)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    _r.incr(os.environ.get("BENCH_COUNTER", "bench:dramatiq:done"))
