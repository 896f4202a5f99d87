"""The node agent: one per machine. Reads its inbox, runs events on warm workers, hands back results.

A node registers under a fresh incarnation id (`name.epoch`) with its slots, heart-beats
every second, and publishes how many idle warm workers it has per function version so
the scheduler can place events where a worker is already warm. If the scheduler ever
declares it dead (a long stall), it notices on its next heartbeat and registers again
as a new incarnation; it starts none of the events it held (claims.py), and the late
results of what was already running change nothing (complete.lua). On SIGTERM it stops reading, lets running
invocations finish for a short grace period, and gives everything else back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from stoker.platform import keys as K
from stoker.platform.bus import fields_of, now_ms
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope
from stoker.platform.metrics import MetricsRecorder
from stoker.workers import isolation
from stoker.workers.bundlecache import BundleCache
from stoker.workers.claims import StartClaims
from stoker.workers.completions import CompletionBatcher
from stoker.workers.execution import Executor
from stoker.workers.launch import Launcher
from stoker.workers.pool import WarmPool
from stoker.workers.runtimes import make_worker
from stoker.workers.worker import Worker
from stoker.workers.zygote import ZygoteClient

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
PREFETCH_WORK_MS = 200.0
REAP_EVERY_S = 5.0


class NodeAgent:
    def __init__(self, ctx: PlatformContext, name: str | None = None, slots: int | None = None,
                 drain_timeout: float = 4.0) -> None:
        self.ctx = ctx
        self.name = name or socket.gethostname()
        self.slots = slots or max(8, 4 * (os.cpu_count() or 1))
        #: the most events held per slot; the node holds fewer when its functions run long
        self.max_prefetch = ctx.settings.prefetch
        self.drain_timeout = drain_timeout
        self.node_id = ""
        self._new_incarnation()
        self.batcher = CompletionBatcher(ctx.bus, ctx.settings.log_max_entries)
        self.zygote = ZygoteClient(on_exit=self._worker_exited)
        local_store = ctx.bundles if ctx.bundles is not None and ctx.bundles.root.exists() else None
        self.bundles = BundleCache(ctx.settings.node_dir / "bundles", local_store, ctx.redis, ctx.keys,
                                   ctx.settings.token)
        self.launcher = Launcher(self.zygote, self.bundles, ctx.settings.node_dir / "work", self.name)
        self.pool = WarmPool(self.slots, self.launcher.start,
                             on_idle_delta=lambda fv, d: self.batcher.idle_delta(self.node_id, fv, d),
                             worker_factory=make_worker)
        self._running: dict[str, asyncio.Task[None]] = {}
        #: entries whose event holds a worker (from then on an interruption spends an attempt)
        self._leased: set[str] = set()
        self.metrics = MetricsRecorder()
        self.claims = StartClaims(ctx.bus)
        self.executor = Executor(self.name, self.pool, ctx.directory.spec, self.batcher.add,
                                 self.batcher.idle_delta, started=self._leased.add, metrics=self.metrics,
                                 claim=self.claims.claim)
        self._room = asyncio.Event()
        self._stopping = False

    @property
    def prefetch(self) -> int:
        """Async events held per slot: about PREFETCH_WORK_MS of work queued behind each slot, so
        that short functions keep workers busy and long ones stay free for other nodes."""
        average = max(self.executor.average_ms, 0.05)
        return max(2, min(self.max_prefetch, int(PREFETCH_WORK_MS / average)))

    def _new_incarnation(self) -> None:
        self.node_id = f"{self.name}.{secrets.token_hex(4)}"

    # -- registration ---------------------------------------------------------------------
    async def register(self) -> None:
        keys = self.ctx.keys
        await self.ctx.bus.ensure_group(keys.inbox(self.node_id), K.NODE_GROUP)
        pipe = self.ctx.redis.pipeline(transaction=True)
        pipe.delete(keys.node(self.node_id), keys.node_idle(self.node_id))
        pipe.hset(keys.node(self.node_id), mapping={
            "name": self.name, "slots": self.slots, "load": 0, "host": socket.gethostname(),
            "pid": os.getpid(), "started": now_ms(), "warm": b"{}", "prefetch": self.prefetch,
            "isolation": self.launcher.isolation.level,
            "sandbox": orjson.dumps(self.launcher.confiner.describe()),
        })
        pipe.zadd(keys.nodes, {self.node_id: now_ms()})
        await pipe.execute()
        log.info("node %s registered as %s with %d slots", self.name, self.node_id, self.slots)

    async def _heartbeat(self) -> None:
        keys = self.ctx.keys
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                pipe = self.ctx.redis.pipeline(transaction=False)
                pipe.zadd(keys.nodes, {self.node_id: now_ms()}, xx=True, ch=True)
                pipe.hset(keys.node(self.node_id), mapping={
                    "warm": orjson.dumps(self.pool.summary()), "busy": self.pool.busy, "prefetch": self.prefetch,
                    "running": len(self._running), "heartbeat": now_ms()})
                alive, _ = await pipe.execute()
                if not alive:
                    old = self.node_id
                    self._new_incarnation()
                    log.warning("node %s was declared dead (a stall?); registering again as %s", old, self.node_id)
                    await self.ctx.redis.delete(keys.node(old))
                    await self.register()
                    self._room.set()
            except RedisError as e:
                log.warning("heartbeat failed: %s", e)

    # -- the inbox ------------------------------------------------------------------------
    async def _read_inbox(self) -> None:
        redis = self.ctx.redis
        while not self._stopping:
            buffer = self.slots * self.prefetch
            room = buffer - len(self._running)
            # read in batches: wait until half the buffer is free (or nothing is running)
            if room <= 0 or (room < buffer // 2 and self._running):
                self._room.clear()
                await self._room.wait()
                continue
            node_id = self.node_id
            try:
                response: Any = await redis.xreadgroup(K.NODE_GROUP, node_id, {self.ctx.keys.inbox(node_id): ">"},
                                                  count=room, block=500)
            except ResponseError as e:
                # NOGROUP, or Redis 7's "UNBLOCKED the stream key no longer exists": our inbox was
                # reclaimed (we were declared dead); the heartbeat registers us again
                if ("NOGROUP" in str(e) or "UNBLOCKED" in str(e)) and not self._stopping:
                    await asyncio.sleep(HEARTBEAT_S)
                    await self._inbox_lost(node_id)
                    continue
                log.warning("reading the inbox failed: %s", e)  # OOM, MISCONF, READONLY, BUSY: wait it out
                await asyncio.sleep(1.0)
                continue
            except (RedisError, OSError) as e:
                log.warning("reading the inbox failed: %s", e)
                await asyncio.sleep(1.0)
                continue
            for _stream, entries in response or ():
                for entry in entries:
                    self._start(node_id, entry)

    async def _inbox_lost(self, node_id: str) -> None:
        """Our inbox stream or its group is gone. Declared dead: the heartbeat registers a new
        incarnation. Still registered (Redis lost the stream: a restart without its last
        writes): make the group again, reading from the start what was placed meanwhile."""
        try:
            if node_id == self.node_id and await self.ctx.redis.zscore(self.ctx.keys.nodes, node_id) is not None:
                await self.ctx.bus.ensure_group(self.ctx.keys.inbox(node_id), K.NODE_GROUP)
                log.warning("node %s: its inbox was gone while it was registered; made it again", node_id)
        except RedisError as e:
            log.warning("node %s: could not make its inbox again: %s", node_id, e)

    def _start(self, node_id: str, entry: Any) -> None:
        entry_id = entry[0].decode()
        fields = fields_of(entry)
        if fields.get("t") == b"w":
            task = asyncio.create_task(self._provision(node_id, entry_id, fields["f"].decode()))
            self._running[entry_id] = task
            return
        try:
            envelope = Envelope.decode(fields["e"])
        except Exception as e:
            log.error("dropping an undecodable inbox entry %s: %s", entry_id, e)
            return
        reserved = fields.get("w") == b"1"
        task = asyncio.create_task(self._run(node_id, entry_id, envelope, reserved), name=f"event-{envelope.id}")
        self._running[entry_id] = task

    async def _run(self, node_id: str, entry_id: str, envelope: Envelope, reserved: bool) -> None:
        try:
            await self.executor.run(node_id, entry_id, envelope, reserved)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("running %s failed inside the node agent", envelope.id)
        finally:
            self._running.pop(entry_id, None)
            self._leased.discard(entry_id)
            self._room.set()

    async def _provision(self, node_id: str, entry_id: str, function_version: str) -> None:
        """A scheduler asked for a worker ahead of demand (the function's min_warm)."""
        try:
            keys = self.ctx.keys
            pipe = self.ctx.redis.pipeline(transaction=True)
            pipe.xack(keys.inbox(node_id), K.NODE_GROUP, entry_id)
            pipe.xdel(keys.inbox(node_id), entry_id)
            await pipe.execute()
            name, _, version = function_version.rpartition(":")
            spec = await self.ctx.directory.spec(name, version)
            await self.pool.provision(function_version, spec)
            log.info("provisioned a warm worker for %s", function_version)
        except Exception as e:
            log.warning("could not provision a worker for %s: %s", function_version, e)
        finally:
            self._running.pop(entry_id, None)
            self._room.set()

    def _worker_exited(self, pid: int, returncode: int) -> None:
        worker = self.pool.exited(pid, returncode)
        if worker is not None:
            Launcher.cleanup(worker)
        self.launcher.exited(pid)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                latest = await self._latest_versions()

                def keep_warm(w: Worker, latest: set[str] = latest) -> float:
                    if w.provisioned and w.function_version in latest:
                        return float("inf")  # min_warm: kept while its version is the newest
                    return float(w.spec.get("keep_warm", 300))

                await self.pool.reap(keep_warm)
                self.launcher.templates.reap({w.function_version for w in self.pool.workers.values()})
            except Exception:
                log.exception("reaping idle workers failed")

    async def _latest_versions(self) -> set[str]:
        out = set()
        for name in {w.function_version.rpartition(":")[0] for w in self.pool.workers.values() if w.provisioned}:
            entry = await self.ctx.directory.entry(name)
            if entry is not None:
                out.add(f"{name}:{entry.latest}")
        return out

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        settings = self.ctx.settings
        self.launcher.isolation = await asyncio.to_thread(isolation.detect, settings.home, settings.node_dir)
        log.info("node %s isolation: %s", self.name, self.launcher.isolation.describe())
        confiner = self.launcher.confiner
        await asyncio.to_thread(confiner.setup, secrets.token_hex(3)[:5], [settings.redis_url or "", settings.db_url],
                                self.launcher.isolation.level == "namespace")
        try:
            await self._serve(stop)
        finally:
            await asyncio.to_thread(confiner.teardown)

    async def _serve(self, stop: asyncio.Event) -> None:
        self.zygote.start()
        await self.register()
        background = [
            asyncio.create_task(self.launcher.confiner.run(), name="network-pool"),
            asyncio.create_task(self.batcher.run(), name="completions"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._reaper(), name="reaper"),
            asyncio.create_task(self.metrics.run(self.ctx.redis, self.ctx.keys), name="metrics"),
        ]
        inbox = asyncio.create_task(self._read_inbox(), name="inbox")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([inbox, stopped], return_when=asyncio.FIRST_COMPLETED)
        failure = inbox.exception() if inbox.done() and not inbox.cancelled() else None
        if failure is not None:
            log.error("the inbox reader failed: %s", failure)
        await self.shutdown(inbox, background)
        if failure is not None:  # exit non-zero, so that a supervisor restarts the node
            raise RuntimeError(f"node {self.name} stopped: its inbox reader failed: {failure}") from failure

    async def shutdown(self, inbox: asyncio.Task[None], background: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        inbox.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inbox
        # events that never got a worker go back untouched; running ones get a grace period
        waiting = [eid for eid in self._running if eid not in self._leased]
        for eid in waiting:
            self._running[eid].cancel()
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=self.drain_timeout)
        self.pool.kill_all()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=2.0)
        await self.batcher.drain(timeout=3.0)
        with contextlib.suppress(Exception):
            await self.metrics.flush(self.ctx.redis, self.ctx.keys)
        await self._give_back(waiting)
        for task in background:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*background, return_exceptions=True)
        self.launcher.templates.stop_all()
        self.zygote.stop()

    async def _give_back(self, unstarted: list[str]) -> None:
        """Deregister, returning whatever is left in our inbox to intake (atomically)."""
        keys = self.ctx.keys
        try:
            n = await self.ctx.bus.reclaim(
                keys=[keys.nodes, keys.node(self.node_id), keys.node_idle(self.node_id), keys.inbox(self.node_id),
                      keys.intake_sync, keys.intake_async, keys.concurrency, keys.capacity,
                      keys.node_started(self.node_id)],
                args=[self.node_id, K.NODE_GROUP, now_ms() + 10**12, *unstarted],
            )
            if n and n > 0:
                log.info("gave %d events back to intake", n)
        except RedisError as e:
            log.error("could not give the inbox back (the scheduler will reclaim it): %s", e)

