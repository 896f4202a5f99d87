"""The scheduler: places events from intake on nodes, and keeps the bus healthy.

Any number of schedulers may run; they share the intake streams through one
consumer group, and `place.lua` acks an entry in the same step that puts it in a
node's inbox, so each event is placed exactly once. Sync calls have their own intake
stream and are always read, so a backlog of async events never delays them; async
events are read only while some node has room (backpressure, not an unbounded queue).

Besides placing, every scheduler (idempotently) moves due retries back to intake,
releases held-back events when their function has room, reclaims the events of
nodes that stopped heart-beating, and adopts the unacked entries of schedulers that
died.
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
from redis.exceptions import RedisError, ResponseError

from stoker.platform import keys as K
from stoker.platform.bus import fields_of, now_ms
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope
from stoker.platform.ledger import records as R
from stoker.platform.outcomes import encode_outcome, notify_stream
from stoker.platform.replies import encode_reply
from stoker.platform.retries import decide
from stoker.platform.throttles import record_throttle

log = logging.getLogger(__name__)

BATCH = 256
HELD_PER_ROUND = 128
HELD_PROBE = 8
MAINTENANCE_S = 0.5
ADOPT_IDLE_MS = 10_000  # an unacked intake entry idle this long belongs to a dead scheduler


@dataclass
class IntakeEntry:
    stream: str
    entry_id: str
    fields: dict[str, bytes]
    no_node: bool = False

    @property
    def sync(self) -> bool:
        return self.fields.get("t") == b"s"


class Scheduler:
    def __init__(self, ctx: PlatformContext) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.prefetch = ctx.settings.prefetch
        self.consumer = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self._held: list[IntakeEntry] = []
        self._last_touch = time.monotonic()
        #: since when Redis has accepted writes without a refusal (None: it refuses them now);
        #: at start it is trusted, as nodes have been heart-beating without us
        self._writable_since: float | None = time.monotonic() - ctx.settings.node_dead_after

    async def run(self, stop: asyncio.Event) -> None:
        await self.ctx.bus.ensure_intake_groups()
        tasks = [asyncio.create_task(self._placement_loop(stop), name="placement"),
                 asyncio.create_task(self._maintenance_loop(stop), name="maintenance")]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- placement ------------------------------------------------------------------------
    async def _placement_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                await self._place_once()
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except RedisError as e:
                backoff = min(2.0, backoff * 2 or 0.1)
                log.warning("placement: %s; retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
            except Exception:
                log.exception("placement failed")
                await asyncio.sleep(0.5)

    async def _place_once(self) -> None:
        # Holding events that found no room, wait for a node to free capacity (complete.lua
        # signals it on {p}:capacity) or for a sync call; else for any new event. (A short
        # BLOCK would not do: Redis checks blocking timeouts only every 1/hz s, 100 ms by default.)
        streams = {self.keys.intake_sync: ">"}
        if self._held:
            streams[self.keys.capacity] = ">"
        else:
            streams[self.keys.intake_async] = ">"
        response: Any = await self.ctx.redis.xreadgroup(K.SCHEDULERS, self.consumer, streams,  # type: ignore[arg-type]
                                                   count=BATCH, block=1000 if not self._held else 100)
        wakes = [e for stream, items in response or () if stream.decode() == self.keys.capacity for e in items]
        if wakes:
            await self.ctx.redis.xack(self.keys.capacity, K.SCHEDULERS, *[e[0] for e in wakes])
            response = [(stream, items) for stream, items in response if stream.decode() != self.keys.capacity]
        # held entries wait for room on a node: offer as many as were freed (plus a few, in
        # case another scheduler took the signal), never all of them again and again
        freed = sum(int(e[1].get(b"n", b"1")) for e in wakes)
        offer = min(HELD_PER_ROUND, freed + HELD_PROBE)
        offered, rest = self._held[:offer], self._held[offer:]
        self._held = []
        fresh = [IntakeEntry(stream.decode(), e[0].decode(), fields_of(e))
                 for stream, items in response or () for e in items]
        still_held = await self.place(offered + fresh) if offered or fresh else []
        # oldest first: what was held before, then what arrived now (adopted entries last)
        old_ids = {e.entry_id for e in offered}
        adopted, self._held = self._held, []
        self._held = ([e for e in still_held if e.entry_id in old_ids] + rest
                      + [e for e in still_held if e.entry_id not in old_ids] + adopted)
        if self._held:
            await self._touch_held()
            if any(e.no_node for e in self._held):
                await asyncio.sleep(0.2)  # no live node: do not spin

    async def place(self, entries: list[IntakeEntry]) -> list[IntakeEntry]:
        """Place what can be placed; returns the entries that must wait for room."""
        ready: list[IntakeEntry] = []
        for entry in entries:
            if entry.fields.get("r") == b"interrupted":
                await self._settle_interrupted(entry)
            else:
                ready.append(entry)
        if not ready:
            return []
        settings = self.ctx.settings
        args: list[Any] = [self.keys.prefix, K.SCHEDULERS, now_ms(), int(settings.node_dead_after * 1000),
                           settings.global_concurrency, self.prefetch]
        for e in ready:
            f = e.fields
            args.extend((e.entry_id, f["i"], f["f"], f["t"], f["e"]))
        results = await self.ctx.bus.place(
            keys=[self.keys.intake_sync, self.keys.intake_async, self.keys.concurrency, self.keys.nodes,
                  self.keys.waiting_set],
            args=args,
        )
        held = []
        for entry, result in zip(ready, results, strict=True):
            r = result.decode() if isinstance(result, bytes) else str(result)
            if r in ("F", "N"):
                entry.no_node = r == "N"
                held.append(entry)
            elif r == "T":
                await self._throttled(entry)
        return held

    async def _touch_held(self) -> None:
        """Claim held entries again now and then, so other schedulers do not adopt them."""
        if time.monotonic() - self._last_touch < ADOPT_IDLE_MS / 3000:
            return
        self._last_touch = time.monotonic()
        by_stream: dict[str, list[str]] = {}
        for e in self._held:
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        for stream, ids in by_stream.items():
            await self.ctx.redis.xclaim(stream, K.SCHEDULERS, self.consumer, 0, list[Any](ids), justid=True)

    async def _throttled(self, entry: IntakeEntry) -> None:
        await record_throttle(self.ctx, Envelope.decode(entry.fields["e"]))

    async def _settle_interrupted(self, entry: IntakeEntry) -> None:
        """The node running this event died: the attempt is spent; retry, dead-letter or answer."""
        envelope = Envelope.decode(entry.fields["e"])
        try:
            spec = await self.ctx.directory.spec(envelope.function, envelope.version)
        except Exception:
            spec = {}
        error = {"errorType": "Runtime.NodeLost",
                 "errorMessage": f"RequestId: {envelope.id} Error: the node running this invocation stopped"}
        now = time.time()
        decision = decide(envelope, spec, "failed", error, now, delay=0.0)
        record = R.encode({
            "id": envelope.id, "function": envelope.function, "version": envelope.version,
            "qualifier": envelope.qualifier, "status": decision.status, "trigger": envelope.trigger,
            "invocation_type": envelope.invocation_type, "received_at": envelope.enqueued_at, "ended_at": now,
            "attempts": envelope.attempt, "error_type": error["errorType"], "error_message": error["errorMessage"],
            "rank": R.rank(envelope.attempt, decision.phase),
            "attempt": R.attempt_row(attempt=envelope.attempt, node=None, worker=None, started_at=None,
                                     ended_at=now, duration_ms=None, outcome="interrupted",
                                     error_type=error["errorType"], error_message=error["errorMessage"]),
        })
        reply_key, reply = "", b""
        if envelope.reply_to:
            reply_key = envelope.reply_to
            reply = encode_reply(envelope.id, "error", orjson.dumps(error), {"version": envelope.version})
        arg2: bytes | str = decision.arg2
        if decision.action == "dlq":
            arg2 = self.keys.dlq(envelope.function)
        notify, outcome = notify_stream(envelope), b""
        if notify and decision.action != "retry":
            outcome = encode_outcome(envelope, decision.status, error["errorType"], orjson.dumps(error))
        else:
            notify = ""
        await self.ctx.bus.settle(
            keys=[entry.stream, self.keys.ledger, self.keys.delayed],
            args=[K.SCHEDULERS, entry.entry_id, record, reply_key, reply, decision.action, decision.arg1, arg2,
                  notify, outcome],
        )

    # -- maintenance ----------------------------------------------------------------------
    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        last_trim = 0.0
        while not stop.is_set():
            try:
                await self.maintain()
                if time.monotonic() - last_trim > 60:
                    last_trim = time.monotonic()
                    await self.trim_logs()
            except asyncio.CancelledError:
                raise
            except RedisError as e:
                log.warning("maintenance: %s", e)
            except Exception:
                log.exception("maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MAINTENANCE_S)

    async def maintain(self) -> None:
        keys, bus, settings = self.keys, self.ctx.bus, self.ctx.settings
        can_reclaim = await self._heartbeats_can_land()
        now = now_ms()
        await bus.promote(keys=[keys.delayed, keys.intake_sync, keys.intake_async], args=[now, 1000])
        await bus.drain(keys=[keys.waiting_set, keys.concurrency, keys.intake_async],
                        args=[keys.prefix, settings.global_concurrency, 1000])
        cutoff = now - int(settings.node_dead_after * 1000)
        if not can_reclaim:
            return
        dead: Any = await self.ctx.redis.zrangebyscore(keys.nodes, "-inf", f"({cutoff}")
        for raw in dead:
            node_id = raw.decode()
            n = await bus.reclaim(
                keys=[keys.nodes, keys.node(node_id), keys.node_idle(node_id), keys.inbox(node_id),
                      keys.intake_sync, keys.intake_async, keys.concurrency, keys.capacity,
                      keys.node_started(node_id)],
                args=[node_id, K.NODE_GROUP, cutoff],
            )
            if n is not None and int(n) >= 0:
                log.warning("node %s stopped heart-beating: %d events placed again", node_id, int(n))
        await self._adopt_orphans()
        await self.provision()

    async def _heartbeats_can_land(self) -> bool:
        """Whether nodes' silence means anything: while Redis refuses writes (maxmemory, a failed
        save, a read-only replica, a busy script) their heartbeats are refused too, so no node is
        declared dead until writes have been accepted again for a whole STOKER_NODE_DEAD_AFTER."""
        try:
            await self.ctx.redis.set(self.keys.write_probe, now_ms(), px=60_000)
        except ResponseError as e:
            if self._writable_since is not None:
                log.warning("Redis refuses writes (%s): no node is declared dead until it accepts them again", e)
            self._writable_since = None
            return False
        now = time.monotonic()
        if self._writable_since is None:
            log.warning("Redis accepts writes again: nodes get %.0f s to heart-beat before any is declared dead",
                        self.ctx.settings.node_dead_after)
            self._writable_since = now
        return now - self._writable_since >= self.ctx.settings.node_dead_after

    async def _adopt_orphans(self) -> None:
        """Entries a dead scheduler read but never acked come to us."""
        for stream in (self.keys.intake_sync, self.keys.intake_async):
            with contextlib.suppress(RedisError):
                _next, claimed, *_ = await self.ctx.redis.xautoclaim(
                    stream, K.SCHEDULERS, self.consumer, ADOPT_IDLE_MS, "0-0", count=BATCH)
                held = {e.entry_id for e in self._held}
                for e in claimed:
                    if e and e[1] is not None and e[0].decode() not in held:
                        self._held.append(IntakeEntry(stream, e[0].decode(), fields_of(e)))

    async def provision(self) -> None:
        """Keep `min_warm` workers of each function's newest version started across the cluster.

        One scheduler at a time (a short lease) compares the warm workers the nodes report
        with each function's min_warm and asks the least busy nodes for the difference.
        """
        redis, keys = self.ctx.redis, self.keys
        if not await redis.set(keys.lock("provision"), self.consumer, nx=True, px=int(MAINTENANCE_S * 2000)):
            return
        nodes = await self._live_nodes()
        if not nodes:
            return
        for name in await self.ctx.directory.names():
            entry = await self.ctx.directory.entry(name)
            if entry is None:
                continue
            spec = await self.ctx.directory.spec(name, entry.latest)
            want = int(spec.get("min_warm") or 0)
            if want <= 0:
                continue
            fv = f"{name}:{entry.latest}"
            have = sum(int(n["warm"].get(fv, {}).get("workers", 0)) for n in nodes)
            pending_key = keys.custom("provisioning", fv)
            pending = int(await redis.get(pending_key) or 0)
            missing = want - have - pending
            if missing <= 0:
                continue
            pipe = redis.pipeline(transaction=False)
            for _ in range(missing):
                node = max(nodes, key=lambda n: n["slots"] - n["workers"])
                node["workers"] += 1
                pipe.xadd(keys.inbox(node["id"]), {"t": "w", "f": fv, "i": "", "e": b""})
            pipe.incrby(pending_key, missing)
            pipe.pexpire(pending_key, 5000)  # until the nodes' heartbeats show the new workers
            await pipe.execute()
            log.info("asked for %d warm worker(s) of %s (min_warm %d)", missing, fv, want)

    async def _live_nodes(self) -> list[dict[str, Any]]:
        cutoff = now_ms() - int(self.ctx.settings.node_dead_after * 1000)
        ids: Any = await self.ctx.redis.zrangebyscore(self.keys.nodes, cutoff, "+inf")
        nodes = []
        for raw in ids:
            node_id = raw.decode()
            h: Any = await self.ctx.redis.hgetall(self.keys.node(node_id))
            if not h:
                continue
            warm = orjson.loads(h.get(b"warm") or b"{}")
            nodes.append({"id": node_id, "slots": int(h.get(b"slots", b"1")), "warm": warm,
                          "workers": sum(int(v.get("workers", 0)) for v in warm.values())})
        return nodes

    async def trim_logs(self) -> None:
        """Drop log chunks older than the retention (stream ids are timestamps)."""
        minid = now_ms() - int(self.ctx.settings.log_retention_s * 1000)
        for name in await self.ctx.directory.names():
            await self.ctx.redis.xtrim(self.keys.logs(name), minid=minid, approximate=True)
