"""Bridge plumbing that needs no Redis: broker URLs, routes, manifest entries."""

from __future__ import annotations

import asyncio

import pytest

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.manifest import parse_manifest
from stoker.triggers.bridges.base import Route, StaticRoutes, redis_url


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
