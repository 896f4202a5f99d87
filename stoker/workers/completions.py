"""Handing finished work back to the bus, in batches, atomically with the inbox acks.

Each finished invocation becomes one `Completion`; the batcher sends whatever has
accumulated as one `complete.lua` call per inbox (the ack, capacity release, ledger
record, log chunk, sync reply and any retry or dead letter of each item happen
together or not at all). Under load batches grow by themselves; when idle an item
goes out at once. A failed send is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from stoker.platform import keys as K
from stoker.platform.bus import Bus

log = logging.getLogger(__name__)

MAX_BATCH = 256
#: async results wait at most this long for others to share their Redis call
GATHER_S = 0.002
#: idle-worker changes with no completion to ride on go out after this long
IDLE_DELAY_S = 0.02


@dataclass(slots=True)
class Completion:
    node_id: str
    entry_id: str
    function: str
    function_version: str
    ledger: bytes = b""
    reply_key: str = ""
    reply: bytes = b""
    logs: bytes = b""
    action: str = ""
    arg1: bytes | str = ""
    arg2: bytes | str = ""
    idle_delta: int = 0
    notify: str = ""
    outcome: bytes = b""

    def args(self) -> list[bytes | str | int]:
        return [self.entry_id, self.function, self.function_version, self.idle_delta, self.ledger,
                self.reply_key, self.reply, self.logs, self.action, self.arg1, self.arg2, self.notify, self.outcome]


class CompletionBatcher:
    def __init__(self, bus: Bus, log_max_entries: int) -> None:
        self.bus = bus
        self.log_max_entries = log_max_entries
        self._items: list[Completion] = []
        self._idle: dict[tuple[str, str], int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._idle_flushed = asyncio.Event()
        self._idle_flushed.set()
        self._urgent = False
        self._urgent_added = asyncio.Event()
        self._last_flush = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def add(self, item: Completion) -> None:
        self._items.append(item)
        self._idle_flushed.clear()
        if item.reply_key:
            self._urgent = True  # a sync caller waits: no gathering
            self._urgent_added.set()
        self._wake.set()

    def idle_delta(self, node_id: str, function_version: str, delta: int) -> None:
        """Changes in idle workers ride with the next completion (a lease and its release cancel
        out); alone, they go out within IDLE_DELAY_S."""
        self._idle[(node_id, function_version)] += delta
        self._idle_flushed.clear()
        if self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(IDLE_DELAY_S, self._idle_due)

    def _idle_due(self) -> None:
        self._idle_timer = None
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._items)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            since = time.monotonic() - self._last_flush
            if not self._urgent and since < GATHER_S:
                # only async results: let a few more join this call (each call has a fixed cost),
                # unless a sync result arrives meanwhile
                self._urgent_added.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent_added.wait(), GATHER_S - since)
            self._urgent = False
            self._last_flush = time.monotonic()
            await self.flush()

    async def flush(self) -> None:
        while self._items or any(self._idle.values()):
            items, self._items = self._items[:MAX_BATCH], self._items[MAX_BATCH:]
            deltas, self._idle = self._idle, defaultdict(int)
            # idle-worker deltas ride on an item of the same node and version when there is one
            for item in items:
                d = deltas.pop((item.node_id, item.function_version), 0)
                item.idle_delta += d
            for (node_id, fv), d in deltas.items():
                if d:
                    items.append(Completion(node_id=node_id, entry_id="", function=fv.rsplit(":", 1)[0],
                                            function_version=fv, idle_delta=d))
            try:
                await self._send(items)
            except Exception as e:
                log.warning("could not hand completions to Redis (%s); retrying", e)
                self._items[:0] = [i for i in items if i.entry_id or i.ledger or i.reply_key or i.logs]
                for i in items:
                    if not (i.entry_id or i.ledger or i.reply_key or i.logs):
                        self._idle[(i.node_id, i.function_version)] += i.idle_delta
                await asyncio.sleep(0.5)
        self._idle_flushed.set()

    async def _send(self, items: list[Completion]) -> None:
        by_node: dict[str, list[Completion]] = defaultdict(list)
        for item in items:
            by_node[item.node_id].append(item)
        keys = self.bus.keys
        for node_id, group in by_node.items():
            args: list[bytes | str | int] = [keys.prefix, K.NODE_GROUP, self.log_max_entries]
            for item in group:
                args.extend(item.args())
            await self.bus.complete(
                keys=[keys.concurrency, keys.ledger, keys.intake_async, keys.waiting_set, keys.node(node_id),
                      keys.node_idle(node_id), keys.inbox(node_id), keys.delayed, keys.capacity,
                      keys.node_started(node_id)],
                args=args,
            )

    async def drain(self, timeout: float) -> None:
        """Send everything pending (at shutdown)."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._wait_empty(), timeout)
        except TimeoutError:
            log.error("%d completions could not be handed back before shutdown", len(self._items))

    async def _wait_empty(self) -> None:
        while self._items:
            await asyncio.sleep(0.01)
        await self.flush()
