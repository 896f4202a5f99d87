"""What the Celery and RQ bridges share: routes, running tasks at least once, calling functions.

A bridge takes items from a list in the producer's Redis (`ListConsumer`), hands each to
its protocol handler (Celery or RQ), and the handler calls the routed function
synchronously through the bus and writes the result where the producer looks for it.
Up to `concurrency` tasks run at once per bridge. Platform trouble (throttled, no node
answering, Redis unreachable) is waited out and retried, never reported as the task's
failure; a function that fails is the task's failure.

A bridge runs from the command line (`stoker bridge celery|rq`, routes given with
--route) or as a trigger declared in a function's manifest (`[[triggers]] type =
"celery"` or `"rq"`, routes collected from every deployed function that declares one for
the same broker and queue), started by the trigger runner of `stoker up` or a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from stoker.errors import InvalidInput, NotFound, PayloadTooLarge, StokerError
from stoker.platform.context import PlatformContext
from stoker.platform.gateway.invoker import Invoker, Reply
from stoker.platform.registry.projection import FunctionDirectory, split_qualified
from stoker.triggers.bridges.lists import ListConsumer
from stoker.triggers.invoking import shared_invoker

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
#: how long running tasks may finish at a stop before they are handed back (the trigger
#: runner gives its sources 5 s, `stoker up` its roles 7 s)
STOP_GRACE_S = 3.0


def redis_url(url: str) -> str:
    """A Celery (kombu) broker URL as redis-py takes it: redis+socket:// and virtual_host become unix:// and db."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix", "redis+socket"):
        raise InvalidInput(f"{url!r} is not a Redis URL: the bridges read Redis brokers only "
                           "(redis://[:password@]host:port/db, rediss://, unix:// or redis+socket://)")
    if parts.scheme != "redis+socket":
        return url
    query = urllib.parse.parse_qs(parts.query)
    db = query.pop("virtual_host", query.pop("db", ["0"]))[0] or "0"
    rest = urllib.parse.urlencode({**{k: v[0] for k, v in query.items()}, "db": db})
    return f"unix://{parts.netloc}{parts.path}?{rest}"


def instance_name(kind: str) -> str:
    return f"stoker-bridge.{kind}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Route:
    function: str
    qualifier: str | None

    @classmethod
    def parse(cls, target: str) -> Route:
        name, qualifier = split_qualified(target)
        return cls(name, qualifier)


class Routes(Protocol):
    async def lookup(self, task: str) -> Route | None: ...


class StaticRoutes:
    """Routes given on the command line: TASK=FUNCTION[:QUALIFIER]."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes

    async def lookup(self, task: str) -> Route | None:
        return self.routes.get(task)

    @classmethod
    def parse(cls, pairs: tuple[str, ...] | list[str], what: str) -> StaticRoutes:
        routes: dict[str, Route] = {}
        for pair in pairs:
            task, sep, target = pair.partition("=")
            if not sep or not task.strip() or not target.strip():
                raise InvalidInput(f"--route {pair!r} is not {what}=FUNCTION (e.g. tasks.add=add)")
            routes[task.strip()] = Route.parse(target.strip())
        if not routes:
            raise InvalidInput(f"no routes: give at least one --route {what}=FUNCTION")
        return cls(routes)


class ManifestRoutes:
    """Routes declared by deployed functions: every `[[triggers]]` of one kind that `matches`."""

    REFRESH_S = 30.0
    #: at most this often, an unknown task triggers a fresh look at the registry
    MISS_REFRESH_S = 2.0

    def __init__(self, directory: FunctionDirectory, kind: str, task_key: str,
                 matches: Callable[[dict[str, Any]], bool]) -> None:
        self.directory = directory
        self.kind = kind
        self.task_key = task_key
        self.matches = matches
        self._routes: dict[str, Route] = {}
        self._loaded_at = -1e9

    async def _load(self) -> None:
        routes: dict[str, Route] = {}
        self.directory.forget()
        for name in await self.directory.names():
            entry = await self.directory.entry(name)
            if entry is None:
                continue
            spec = await self.directory.spec(name, entry.latest)
            for trigger in spec.get("triggers") or []:
                if trigger.get("type") == self.kind and self.matches(trigger):
                    routes[str(trigger[self.task_key])] = Route(name, trigger.get("qualifier"))
        self._routes = routes
        self._loaded_at = time.monotonic()

    async def lookup(self, task: str) -> Route | None:
        age = time.monotonic() - self._loaded_at
        if age > self.REFRESH_S or (task not in self._routes and age > self.MISS_REFRESH_S):
            await self._load()
        return self._routes.get(task)


class Failed(Exception):
    """The task cannot run: its function is missing, or its arguments are too large."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Interrupted(Exception):
    """The bridge is stopping; the task stays in the processing list and is handed back."""


class Caller:
    """Calls a function for a task and waits for its answer, riding out platform trouble."""

    def __init__(self, invoker: Invoker, stop: asyncio.Event, trigger: str) -> None:
        self.invoker = invoker
        self.stop = stop
        self.trigger = trigger

    async def __call__(self, route: Route, payload: bytes) -> Reply:
        backoff = 0.5
        while True:
            try:
                resolved = await self.invoker.resolve(route.function, route.qualifier)
                return await self.invoker.invoke(resolved, payload, trigger=self.trigger)
            except (NotFound, InvalidInput) as e:
                raise Failed("FunctionNotFound", e.message) from None
            except PayloadTooLarge as e:
                raise Failed("PayloadTooLarge", e.message) from None
            except (StokerError, RedisError, OSError) as e:  # throttled, no answer in time, Redis away
                if self.stop.is_set():
                    raise Interrupted() from None
                log.warning("%s bridge: calling %s: %s; trying again in %.1f s", self.trigger, route.function,
                            getattr(e, "message", e), backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), backoff)
                backoff = min(10.0, backoff * 2)


@dataclass(frozen=True)
class Done:
    """The item is finished (run, failed, or discarded as the original worker would)."""


@dataclass(frozen=True)
class Reject:
    """The item is refused and kept, unchanged, in the rejected list."""


@dataclass(frozen=True)
class Later:
    """The item is not due yet (a Celery ETA): hold it and try again after `seconds`, or
    at once when `wake` is set (a revoke of the held task)."""

    seconds: float
    wake: asyncio.Event | None = None


Outcome = Done | Reject | Later


class Handler(Protocol):
    kind: str

    async def start(self) -> None: ...

    async def heartbeat(self) -> None: ...

    async def handle(self, item: bytes, call: Caller) -> Outcome: ...

    async def close(self) -> None: ...


class Bridge:
    """Runs a handler over a list, `concurrency` items at a time, until stopped."""

    def __init__(self, ctx: PlatformContext, consumer: ListConsumer, handler: Handler, concurrency: int) -> None:
        self.ctx = ctx
        self.consumer = consumer
        self.handler = handler
        self.concurrency = concurrency

    async def run(self, stop: asyncio.Event) -> None:
        await self.handler.start()
        await self.consumer.heartbeat()
        tasks: set[asyncio.Task[None]] = set()
        try:
            async with shared_invoker(self.ctx) as invoker:
                call = Caller(invoker, stop, self.handler.kind)
                keeper = asyncio.create_task(self._keep_alive(stop))
                try:
                    await self._take(stop, call, tasks)
                finally:
                    await self._settle(tasks)
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await keeper
        finally:
            with contextlib.suppress(RedisError, OSError):
                n = await self.consumer.hand_back()
                if n:
                    log.info("%s bridge: handed %d unfinished task(s) back to the queue", self.handler.kind, n)
            await self.handler.close()

    async def _take(self, stop: asyncio.Event, call: Caller, tasks: set[asyncio.Task[None]]) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if not await _acquire(slots, stopping):  # every slot busy: wait for one, or the stop
                    return
                try:
                    item = await self.consumer.take(1.0)
                except (RedisError, OSError) as e:
                    slots.release()
                    log.warning("%s bridge: reading the queue failed: %s", self.handler.kind, e)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)
                    continue
                if item is None:
                    slots.release()
                    continue
                task = asyncio.create_task(self._run(item, call, slots, stop))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            stopping.cancel()

    async def _run(self, item: bytes, call: Caller, slots: asyncio.Semaphore, stop: asyncio.Event) -> None:
        """Handle one item until it is done; it stays in the processing list until then."""
        held, backoff = True, 1.0
        try:
            while not stop.is_set():
                try:
                    outcome = await self.handler.handle(item, call)
                    if isinstance(outcome, Reject):
                        await self.consumer.reject(item)
                    elif isinstance(outcome, Done):
                        await self.consumer.done(item)
                except Interrupted:
                    return
                except Exception:  # the result store or the broker is away: keep the task and try again
                    log.exception("%s bridge: handling a task failed; trying again in %.0f s", self.handler.kind,
                                  backoff)
                    outcome = Later(backoff)
                    backoff = min(60.0, backoff * 2)
                if not isinstance(outcome, Later):
                    return
                slots.release()  # wait without holding a slot
                held = False
                await _sleep(stop, outcome.seconds, outcome.wake)
                if stop.is_set():
                    return
                await slots.acquire()
                held = True
        finally:
            if held:
                slots.release()

    async def _settle(self, tasks: set[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(list(tasks), timeout=STOP_GRACE_S)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.consumer.heartbeat()
                await self.handler.heartbeat()
                n = await self.consumer.recover_dead()
                if n:
                    log.warning("%s bridge: %d task(s) of a bridge that stopped answering went back to the queue",
                                self.handler.kind, n)
            except (RedisError, OSError) as e:
                log.warning("%s bridge: heartbeat failed: %s", self.handler.kind, e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_S)


async def _acquire(slots: asyncio.Semaphore, stopping: asyncio.Task[Any]) -> bool:
    """Take a slot as soon as one is free (True), or give up when `stopping` ends first (False)."""
    if not slots.locked():
        await slots.acquire()
        return True
    acquiring = asyncio.ensure_future(slots.acquire())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if acquiring.done() and not acquiring.cancelled():
        if not stopping.done():
            return True
        slots.release()
        return False
    acquiring.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        if await acquiring:  # it got the slot while being cancelled
            slots.release()
    return False


async def _sleep(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None) -> None:
    """Wait `seconds`, or less when the bridge stops or `wake` is set."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
