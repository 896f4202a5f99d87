"""One sync Invoker per process, shared by the trigger sources that wait for a function's answer.

The event source mapping of a queue and the Celery and RQ bridges call functions
synchronously, as Lambda's pollers do. An Invoker owns a reply list and a task that
reads it, so the sources of one process share one (counted: it stops with the last).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from stoker.platform.context import PlatformContext
from stoker.platform.gateway.invoker import Invoker

_shared: dict[int, tuple[Invoker, int]] = {}


@contextlib.asynccontextmanager
async def shared_invoker(ctx: PlatformContext) -> AsyncIterator[Invoker]:
    key = id(ctx)
    invoker, users = _shared.get(key, (None, 0))
    if invoker is None:
        invoker = Invoker(ctx)
        await invoker.start()
    _shared[key] = (invoker, users + 1)
    try:
        yield invoker
    finally:
        invoker, users = _shared[key]
        if users <= 1:
            del _shared[key]
            await invoker.stop()
        else:
            _shared[key] = (invoker, users - 1)
