"""Before a node starts an event it says so in Redis, atomically with a check that it is
still registered (start.lua): the one rule that keeps a stalled node from racing the reclaim.

An event the node has started counts an attempt if the node is lost (`Runtime.NodeLost`);
one it had only read goes back to intake as it was. A node that was declared dead while it
stalled finds, at its next start, that it may start nothing of what it held: those events
were placed again elsewhere. Claims made in the same turn of the event loop share one
round trip.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from stoker.platform.bus import Bus

log = logging.getLogger(__name__)

RETRY_S = 0.2


class StartClaims:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._pending: dict[str, list[tuple[str, asyncio.Future[bool]]]] = {}
        self._flushing = False

    async def claim(self, node_id: str, entry_id: str) -> bool:
        """True: start the event. False: this node was declared dead; leave it (it runs elsewhere)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._pending.setdefault(node_id, []).append((entry_id, fut))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await fut

    async def _flush(self) -> None:
        self._flushing = False
        batch, self._pending = self._pending, {}
        for node_id, items in batch.items():
            live = [(e, f) for e, f in items if not f.done()]
            if not live:
                continue
            keys = self.bus.keys
            allowed: object = 0
            while not all(f.done() for _, f in live):  # a cancelled event stops waiting
                try:
                    allowed = await self.bus.start(keys=[keys.nodes, keys.node_started(node_id)],
                                                   args=[node_id, *(e for e, _ in live)])
                    break
                except RedisError as e:  # cannot tell yet: the events wait, as their results would
                    log.warning("cannot record that %d events start: %s", len(live), e)
                    await asyncio.sleep(RETRY_S)
            for _, fut in live:
                if not fut.done():
                    fut.set_result(bool(allowed))
