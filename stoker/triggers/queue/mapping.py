"""The event source mapping: a function consumes a named queue in SQS-shaped batches.

    [[triggers]]
    type = "queue"
    queue = "orders"
    batch_size = 10                    # 1 to 10,000 messages per invocation
    batch_window = 0                   # seconds to wait to fill a batch (fractions allowed, up to 300)
    max_receive = 5                    # receives before a message moves to "<queue>-dlq"
    visibility_timeout = 18            # seconds; default 6 x the function's timeout
    max_concurrency = 10               # batches in flight, across every trigger runner
    report_batch_item_failures = false # read {"batchItemFailures": [...]} from the answer
    qualifier = "prod"                 # a version or alias to invoke (default $LATEST)
    enabled = true

Every trigger runner runs a poller per mapping; pollers share the queue's consumer group,
so each message is in one batch at a time, and take leases for `max_concurrency`. A
batch is invoked synchronously, as Lambda's SQS poller does. While the call runs, its
messages are kept invisible; if the runner dies, they become visible again one
visibility timeout after its last sign of life. A success deletes the batch; a raised
error or a timeout leaves every message to be received again one visibility timeout
later; with `report_batch_item_failures`, only the items named in `batchItemFailures`
stay. A throttled batch is given back at once without counting a receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from stoker.errors import ConfigError, StokerError, Throttled
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT
from stoker.platform.gateway.invoker import Invoker
from stoker.triggers.base import TriggerBinding
from stoker.triggers.invoking import shared_invoker
from stoker.triggers.queue.messages import Received, check_queue_name, dlq_name
from stoker.triggers.queue.records import batch_payload, failed_items, record
from stoker.triggers.queue.store import QueueStore

log = logging.getLogger(__name__)

KEYS = ("queue", "batch_size", "batch_window", "max_receive", "visibility_timeout", "max_concurrency",
        "report_batch_item_failures", "qualifier", "enabled")
DEFAULT_MAX_CONCURRENCY = 10
#: the longest a poller blocks on Redis at once, so that it notices stop and expired messages
POLL_S = 1.0
#: room left in the payload for the envelope around the records
PAYLOAD_MARGIN = 64 * 1024
#: a batch's lease (one of max_concurrency) lasts this long unless renewed, so that the
#: leases of a runner that died free up soon
LEASE_MS = 15_000
#: how long batches in flight may finish at a stop (the trigger runner gives a source 5 s)
STOP_GRACE_S = 3.0


def _number(table: dict[str, Any], key: str, lo: float, hi: float, integer: bool) -> float | int | None:
    if key not in table:
        return None
    v = table[key]
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        kind = "a whole number" if integer else "a number of seconds"
        raise ConfigError(f"{key} = {v!r} is not valid: give {kind} from {lo:g} to {hi:g}")
    return int(v) if integer else float(v)


def validate(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"unknown key '{key}'. Known keys: {', '.join(KEYS)}")
    queue = table.get("queue")
    if not isinstance(queue, str):
        raise ConfigError("queue is missing: name the queue to consume, e.g. queue = \"orders\"")
    try:
        check_queue_name(queue)
    except StokerError as e:
        raise ConfigError(e.message) from None
    out: dict[str, Any] = {"queue": queue}
    out["batch_size"] = _number(table, "batch_size", 1, 10_000, True) or 10
    out["batch_window"] = _number(table, "batch_window", 0, 300, False) or 0.0
    out["max_receive"] = _number(table, "max_receive", 1, 1000, True) or 5
    visibility = _number(table, "visibility_timeout", 0.1, 12 * 3600, False)
    if visibility is not None:
        out["visibility_timeout"] = visibility
    concurrency = _number(table, "max_concurrency", 1, 1000, True)
    if concurrency is not None:
        out["max_concurrency"] = concurrency
    for key, default in (("report_batch_item_failures", False), ("enabled", True)):
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} is not valid: write true or false")
        out[key] = value
    if "qualifier" in table:
        if not isinstance(table["qualifier"], str) or not table["qualifier"]:
            raise ConfigError("qualifier must be a version number or an alias, e.g. qualifier = \"prod\"")
        out["qualifier"] = table["qualifier"]
    return out


@dataclass(frozen=True)
class MappingSettings:
    queue: str
    batch_size: int
    batch_window: float
    max_receive: int
    visibility_ms: int
    max_concurrency: int
    report_failures: bool
    qualifier: str | None
    enabled: bool

    @classmethod
    def of(cls, binding: TriggerBinding) -> MappingSettings:
        c = binding.config
        timeout = float(binding.spec.get("timeout", 3.0))
        concurrency = int(c.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY)
        if binding.spec.get("concurrency"):  # batches beyond the function's own cap would only be throttled
            concurrency = min(concurrency, int(binding.spec["concurrency"]))
        return cls(queue=c["queue"], batch_size=int(c.get("batch_size", 10)),
                   batch_window=float(c.get("batch_window", 0.0)), max_receive=int(c.get("max_receive", 5)),
                   visibility_ms=int(1000 * float(c.get("visibility_timeout") or 6 * timeout)),
                   max_concurrency=concurrency, report_failures=bool(c.get("report_batch_item_failures")),
                   qualifier=binding.qualifier, enabled=bool(c.get("enabled", True)))


class QueueSource:
    """Polls one queue for one function (one `[[triggers]] type = "queue"` entry)."""

    def __init__(self, ctx: PlatformContext, binding: TriggerBinding) -> None:
        self.ctx = ctx
        self.binding = binding
        self.function = binding.function
        self.settings = MappingSettings.of(binding)
        self.store = QueueStore(ctx.redis, ctx.keys)
        self.consumer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self.lease_key = ctx.keys.custom("esm", binding.key, "leases")
        self._paused_until = 0.0
        self._throttle_backoff = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if not s.enabled:
            await stop.wait()
            return
        await self.store.ensure(s.queue)
        async with shared_invoker(self.ctx) as invoker:
            in_flight: set[asyncio.Task[None]] = set()
            try:
                await self._poll(invoker, in_flight, stop)
            finally:
                await self._finish(in_flight)

    async def _poll(self, invoker: Invoker, in_flight: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
        s = self.settings
        while not stop.is_set():
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await _wait(stop, pause)
                continue
            if len(in_flight) >= s.max_concurrency:
                await _wait(stop, POLL_S, in_flight)
                continue
            token = secrets.token_hex(8)
            if not await self.store.take_lease(self.lease_key, s.max_concurrency, token, LEASE_MS):
                await _wait(stop, 0.2, in_flight)
                continue
            try:
                batch = await self._collect(stop)
            except BaseException:
                await self.store.drop_lease(self.lease_key, token)
                raise
            if not batch:
                await self.store.drop_lease(self.lease_key, token)
                continue
            task = asyncio.create_task(self._process(invoker, batch, token), name=f"queue-batch-{s.queue}")
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _collect(self, stop: asyncio.Event) -> list[Received]:
        """Receive up to batch_size messages, waiting up to batch_window to fill the batch."""
        s = self.settings
        batch: list[Received] = []
        first_at: float | None = None
        budget = SYNC_PAYLOAD_LIMIT - PAYLOAD_MARGIN
        while len(batch) < s.batch_size and budget > 0:
            if batch:  # what was received stays invisible while the batch fills (the window may pass it)
                await self.store.hold(s.queue, self.consumer, [r.entry_id for r in batch], 0)
            result = await self.store.receive(s.queue, self.consumer, s.batch_size - len(batch), s.visibility_ms,
                                              s.max_receive, budget)
            budget -= sum(_size(r) for r in result.messages)
            if result.dead_lettered:
                log.warning("queue %s: %d message(s) received %d times moved to %s", s.queue, result.dead_lettered,
                            s.max_receive, dlq_name(s.queue))
            batch.extend(result.messages)
            if batch and first_at is None:
                first_at = time.monotonic()
            if len(batch) >= s.batch_size or budget <= 0:
                break
            waited = time.monotonic() - first_at if first_at is not None else 0.0
            if batch and waited >= s.batch_window:
                break
            if stop.is_set():
                if batch:  # never invoked: give them back without spending a receive
                    await self.store.hold(s.queue, self.consumer, [r.entry_id for r in batch], s.visibility_ms,
                                          uncount=True)
                return []
            wait_s = min(POLL_S, s.batch_window - waited, s.visibility_ms / 2000) if batch else POLL_S
            if result.next_due_ms is not None:
                wait_s = min(wait_s, max(0.01, result.next_due_ms / 1000 - time.time()))
            await self.store.wait_for_new(s.queue, result.last_delivered_id, int(wait_s * 1000))
        return batch

    async def _process(self, invoker: Invoker, batch: list[Received], token: str) -> None:
        s = self.settings
        done = asyncio.Event()
        batch, overflow = split_to_fit(batch)
        keeper = asyncio.create_task(self._keep_invisible([r.entry_id for r in batch], token, done))
        try:
            if overflow:  # for the next batch, without spending a receive
                await self.store.hold(s.queue, self.consumer, [r.entry_id for r in overflow], s.visibility_ms,
                                      uncount=True)
            await self._invoke(invoker, batch)
        except Exception:
            log.exception("queue %s: handling a batch for %s failed; its messages will be received again",
                          s.queue, self.function)
        finally:
            done.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            with contextlib.suppress(RedisError, OSError):
                await self.store.drop_lease(self.lease_key, token)

    async def _invoke(self, invoker: Invoker, batch: list[Received]) -> None:
        s = self.settings
        entry_ids = [r.entry_id for r in batch]
        try:
            resolved = await invoker.resolve(self.function, s.qualifier)
            reply = await invoker.invoke(resolved, batch_payload(batch), trigger="queue")
        except Throttled:
            # give the batch back at once, without spending a receive, and slow down
            await self.store.hold(s.queue, self.consumer, entry_ids, s.visibility_ms, uncount=True)
            self._throttle_backoff = min(10.0, max(0.25, self._throttle_backoff * 2))
            self._paused_until = time.monotonic() + self._throttle_backoff
            log.info("queue %s: %s is throttled; polling again in %.2f s", s.queue, self.function,
                     self._throttle_backoff)
            return
        except (StokerError, RedisError, OSError) as e:  # not found, unavailable, no answer in time
            log.warning("queue %s: invoking %s failed (%s); the batch is visible again in %.0f s", s.queue,
                        self.function, getattr(e, "message", e), s.visibility_ms / 1000)
            return
        self._throttle_backoff = 0.0
        failed: set[str] | None
        if not reply.ok:
            failed = None
            log.info("queue %s: %s failed on a batch of %d (%s); it is visible again in %.0f s", s.queue,
                     self.function, len(batch), _error_type(reply.body), s.visibility_ms / 1000)
        elif s.report_failures:
            failed = failed_items(reply.body, [r.message.id for r in batch])
            if failed is None:
                log.warning("queue %s: %s answered batchItemFailures that cannot be read (an itemIdentifier "
                            "missing or not in the batch): the whole batch counts as failed", s.queue, self.function)
        else:
            failed = set()
        done = [r.entry_id for r in batch if failed is not None and r.message.id not in failed]
        retry = [r.entry_id for r in batch if failed is None or r.message.id in failed]
        await self.store.delete(s.queue, done)
        if retry:  # visible again one visibility timeout from now
            await self.store.hold(s.queue, self.consumer, retry, 0)

    async def _keep_invisible(self, entry_ids: list[str], token: str, done: asyncio.Event) -> None:
        """While the call runs, its messages stay invisible and its lease held (a dead runner stops this)."""
        s = self.settings
        period = max(0.05, min(s.visibility_ms, LEASE_MS) / 3000)
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), period)
                return
            with contextlib.suppress(RedisError, OSError):
                await self.store.hold(s.queue, self.consumer, entry_ids, 0)
                await self.store.renew_lease(self.lease_key, token, LEASE_MS)

    async def _finish(self, in_flight: set[asyncio.Task[None]]) -> None:
        """Let batches in flight finish briefly; the rest become visible after the visibility timeout."""
        if in_flight:
            await asyncio.wait(list(in_flight), timeout=STOP_GRACE_S)
        for task in list(in_flight):
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)


def split_to_fit(batch: list[Received]) -> tuple[list[Received], list[Received]]:
    """The records that fit in one sync payload (at least one), and the rest."""
    size, limit = 0, SYNC_PAYLOAD_LIMIT - PAYLOAD_MARGIN
    for i, r in enumerate(batch):
        size += len(orjson.dumps(record(r))) + 1
        if size > limit and i > 0:
            return batch[:i], batch[i:]
    return batch, []


async def _wait(stop: asyncio.Event, seconds: float, tasks: set[asyncio.Task[None]] | None = None) -> None:
    """Sleep until stop, a task finishing, or `seconds`."""
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([waiter, *(tasks or ())], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _size(received: Received) -> int:
    """About what a message adds to the payload (as queue_receive.lua counts it)."""
    m = received.message
    return 512 + len(m.id) + len(m.body) + sum(len(n) + len(a["stringValue"]) for n, a in m.attributes.items())


def _error_type(body: bytes) -> str:
    try:
        error = orjson.loads(body)
        return f"{error.get('errorType')}: {str(error.get('errorMessage'))[:200]}"
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode("utf-8", "replace")
