"""The Celery side of the benchmark: a no-op task that counts itself done.

Its fastest sane configuration: prefork, acks_late, a tuned prefetch; no result backend.
"""

import os

import redis
from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]
COUNTER = os.environ.get("BENCH_COUNTER", "bench:celery:done")
app = Celery("bench_celery", broker=URL)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "16")),
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)
_r = None


@app.task(name="noop")
def noop() -> None:
    global _r
    if _r is None:
        _r = redis.Redis.from_url(URL)
    _r.incr(COUNTER)
