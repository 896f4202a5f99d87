"""`stoker bridge celery|rq`: serve existing Celery or RQ producers with stoker functions.

A bridge is a long-running process, like a role: it stops cleanly on SIGTERM or Ctrl-C,
handing the tasks it has not finished back to their queue. It reaches the platform
through its Redis (STOKER_REDIS_URL, else the `redis_url` of STOKER_HOME/endpoint.json)
under STOKER_PREFIX, as the roles do.
"""

from __future__ import annotations

import asyncio

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors
from stoker.errors import ConfigError, NotFound, StokerError
from stoker.settings import Settings, discover_endpoint

CONCURRENCY = click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
                           help="tasks run at once")
DEAD_AFTER = click.option("--dead-after", type=click.FloatRange(1, 3600), default=30, show_default=True,
                          help="seconds without a heartbeat after which another bridge runs a bridge's tasks again")


def _platform_redis(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    try:
        url = discover_endpoint().redis_url
    except StokerError:
        url = None
    if not url:
        raise ConfigError("cannot find the platform's Redis: set STOKER_REDIS_URL (and STOKER_PREFIX if the "
                          "platform uses one), or run where `stoker up` wrote STOKER_HOME/endpoint.json")
    return url


async def _check_routes(settings: Settings, redis_url: str, routes: object) -> None:
    """Every routed function must exist, so that a wrong name or prefix fails now, not per task."""
    from stoker.platform.context import PlatformContext
    from stoker.triggers.bridges.base import StaticRoutes

    assert isinstance(routes, StaticRoutes)
    ctx = PlatformContext.create(settings, redis_url, with_db=False)
    try:
        for route in routes.routes.values():
            try:
                await ctx.directory.resolve(route.function, route.qualifier)
            except NotFound as e:
                raise NotFound(f"{e.message} (on the platform with key prefix {settings.prefix!r}: set "
                               "STOKER_PREFIX if it uses another)") from None
    finally:
        await ctx.close()


def _run(kind: str, redis_url: str, settings: Settings, main: object) -> None:
    from stoker import roles
    from stoker.platform.context import PlatformContext

    async def role(stop: asyncio.Event) -> None:
        ctx = PlatformContext.create(settings, redis_url, with_db=False)
        try:
            await main(ctx, stop)  # type: ignore[operator]
        finally:
            await ctx.close()

    roles.run(f"bridge-{kind}", role)


@cli.group()
def bridge() -> None:
    """Run stoker functions for existing Celery or RQ producers."""


@bridge.command()
@click.option("--broker", required=True, help="the Celery broker URL (a Redis broker)")
@click.option("--queue", default="celery", show_default=True, help="the Celery queue to consume")
@click.option("--route", "routes", multiple=True, required=True, metavar="TASK=FUNCTION",
              help="run Celery task TASK with stoker function FUNCTION[:QUALIFIER] (repeatable)")
@click.option("--backend", default=None,
              help="the Redis result backend URL (default: the broker); 'none' stores no results")
@CONCURRENCY
@DEAD_AFTER
@handles_errors
def celery(broker: str, queue: str, routes: tuple[str, ...], backend: str | None, concurrency: int,
           dead_after: float) -> None:
    """Consume Celery tasks from a Redis broker and store their results for AsyncResult.get()."""
    from stoker.triggers.bridges import run_celery
    from stoker.triggers.bridges.base import StaticRoutes, redis_url

    settings = Settings.from_env()
    table = StaticRoutes.parse(routes, "TASK")
    redis_url(broker)
    backend = broker if backend is None else (None if backend.lower() == "none" else backend)
    if backend:
        redis_url(backend)
    platform = _platform_redis(settings)
    asyncio.run(_check_routes(settings, platform, table))
    _run("celery", platform, settings,
         lambda ctx, stop: run_celery(ctx, broker, queue, table, backend, concurrency, stop, dead_after))


@bridge.command()
@click.option("--redis", "url", required=True, help="the Redis URL the RQ producers use")
@click.option("--queue", default="default", show_default=True, help="the RQ queue to consume")
@click.option("--route", "routes", multiple=True, required=True, metavar="FUNC_NAME=FUNCTION",
              help="run jobs calling FUNC_NAME (e.g. tasks.add) with stoker function FUNCTION (repeatable)")
@CONCURRENCY
@DEAD_AFTER
@handles_errors
def rq(url: str, queue: str, routes: tuple[str, ...], concurrency: int, dead_after: float) -> None:
    """Run RQ jobs (enqueued with JSONSerializer) and record them in RQ's registries."""
    from stoker.triggers.bridges import rq_installed, run_rq
    from stoker.triggers.bridges.base import StaticRoutes, redis_url

    if not rq_installed():
        raise ConfigError("the RQ bridge needs the rq library: pip install 'stoker[rq]'")
    settings = Settings.from_env()
    table = StaticRoutes.parse(routes, "FUNC_NAME")
    redis_url(url)
    platform = _platform_redis(settings)
    asyncio.run(_check_routes(settings, platform, table))
    _run("rq", platform, settings, lambda ctx, stop: run_rq(ctx, url, queue, table, concurrency, stop, dead_after))
