"""The platform's roles, each run in its own process: gateway, scheduler, node, ledger writer,
triggers. `stoker up` starts them all on one machine; a cluster runs them separately.

Every role stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

from stoker.settings import Settings


def configure_logging(role: str) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s {role:<9} %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "alembic", "uvicorn.error", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(role: str, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a role's main coroutine until SIGTERM/SIGINT sets its stop event."""
    configure_logging(role)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(_main())
    except ImportError:
        asyncio.run(_main())


async def gateway(settings: Settings, sock: socket.socket, advertise_url: str | None, stop: asyncio.Event) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.platform.gateway.app import create_app
    from stoker.platform.gateway.server import serve

    ctx = PlatformContext.create(settings)
    try:
        app = create_app(ctx, settings.admin_token(), advertise_url=advertise_url)
        await serve(app, sock, stop)
    finally:
        await ctx.close()


async def scheduler(settings: Settings, stop: asyncio.Event, with_ledger: bool = True,
                    with_triggers: bool = True) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.platform.scheduler import Scheduler

    ctx = PlatformContext.create(settings, with_db=with_ledger or with_triggers)
    tasks = [asyncio.create_task(Scheduler(ctx).run(stop))]
    if with_ledger:
        from stoker.platform.ledger.writer import LedgerWriter

        tasks.append(asyncio.create_task(LedgerWriter(ctx).run(stop)))
    if with_triggers:
        from stoker.triggers.runner import TriggerRunner

        tasks.append(asyncio.create_task(TriggerRunner(ctx).run(stop)))
    try:
        await _until_stop_or_failure(tasks, stop)
    finally:
        await ctx.close()


async def ledger_writer(settings: Settings, stop: asyncio.Event) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.platform.ledger.writer import LedgerWriter

    ctx = PlatformContext.create(settings)
    try:
        await LedgerWriter(ctx).run(stop)
    finally:
        await ctx.close()


async def triggers(settings: Settings, stop: asyncio.Event) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.triggers.runner import TriggerRunner

    ctx = PlatformContext.create(settings)
    try:
        await TriggerRunner(ctx).run(stop)
    finally:
        await ctx.close()


async def node(settings: Settings, stop: asyncio.Event, name: str | None, slots: int | None) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.workers.node import NodeAgent

    # a node needs no database; it reads the local bundle store when it shares STOKER_HOME
    ctx = PlatformContext.create(settings, with_db=False)
    from stoker.platform.registry.bundles import BundleStore

    ctx.bundles = BundleStore(settings.bundle_dir)
    try:
        await NodeAgent(ctx, name=name, slots=slots).run(stop)
    finally:
        await ctx.close()


async def _until_stop_or_failure(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Wait for the stop event; if a component dies on its own, stop the others and fail."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
