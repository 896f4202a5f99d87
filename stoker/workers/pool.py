"""The warm pool: a node's worker processes, per function version, within its slots.

`slots` bounds the worker processes a node keeps (busy or idle). An invocation takes,
in this order: an idle warm worker of its version; a new worker in a free slot (a cold
start: scale out before queueing); a place in the pipeline of a busy worker of its
version (up to the worker's `max_in_flight`: it runs when the ones before it are done);
a new worker in the slot of the least recently used idle worker of another version;
else it waits for room. Idle workers are reaped after their function's `keep_warm`.
Every change in the number of idle workers is reported to `on_idle_delta`, which the
node agent publishes for warm-aware placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from stoker.workers.worker import InitFailed, Worker

log = logging.getLogger(__name__)

#: builds a worker's spawn spec and starts it; returns its init time (ms)
Starter = Callable[[Worker], Awaitable[float]]
#: makes a worker object (not started) for a spec: (id, function_version, spec, output_limit)
WorkerFactory = Callable[[str, str, dict[str, Any], int], Worker]


@dataclass
class Lease:
    worker: Worker
    cold: bool
    init_ms: float | None


class WarmPool:
    def __init__(self, slots: int, starter: Starter, on_idle_delta: Callable[[str, int], None],
                 worker_factory: WorkerFactory = Worker) -> None:
        self.slots = slots
        self._starter = starter
        self._new_worker = worker_factory
        #: workers being started: their exit is reported to them too (a runtime dying during init)
        self._starting_workers: dict[str, Worker] = {}
        self._on_idle_delta = on_idle_delta
        self.workers: dict[str, Worker] = {}
        self._by_pid: dict[int, Worker] = {}
        self._idle: dict[str, list[Worker]] = {}
        #: busy workers that can take another invocation in their pipeline
        self._open: dict[str, set[Worker]] = {}
        self._starting = 0
        self._waiting = 0  # acquirers waiting for a worker to come back
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)

    # -- what the node publishes ----------------------------------------------------------
    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for w in self.workers.values():
            entry = out.setdefault(w.function_version, {"workers": 0, "idle": 0, "busy": 0})
            entry["workers"] += 1
            if w.state == "idle":
                entry["idle"] += 1
            elif w.state == "busy":
                entry["busy"] += 1
        return out

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers.values() if w.state in ("busy", "starting"))

    def idle_count(self, function_version: str) -> int:
        return len(self._idle.get(function_version, ()))

    # -- leasing --------------------------------------------------------------------------
    def _take_idle(self, function_version: str) -> Lease | None:
        idle = self._idle.get(function_version)
        if not idle:
            return None
        worker = idle.pop()
        worker.state = "busy"
        self._on_idle_delta(function_version, -1)
        self._lease(worker)
        return Lease(worker, cold=False, init_ms=None)

    def _take_open(self, function_version: str) -> Lease | None:
        """A place behind the running invocation of a busy worker (the least loaded one)."""
        open_ = [w for w in self._open.get(function_version) or () if w.pipelines]
        if not open_:
            return None
        worker = min(open_, key=lambda w: w.leases)
        self._lease(worker)
        return Lease(worker, cold=False, init_ms=None)

    def _lease(self, worker: Worker) -> None:
        worker.leases += 1
        open_ = self._open.setdefault(worker.function_version, set())
        if worker.leases < worker.max_in_flight:
            open_.add(worker)
        else:
            open_.discard(worker)

    async def acquire(self, function_version: str, spec: dict[str, Any]) -> Lease:
        """An idle warm worker of this version, or a newly started one (cold)."""
        lease = self._take_idle(function_version)  # the hot path: no lock, nothing awaited
        if lease is not None:
            return lease
        async with self._changed:
            while True:
                lease = self._take_idle(function_version)
                if lease is not None:
                    return lease
                if len(self.workers) + self._starting < self.slots:
                    break
                lease = self._take_open(function_version)
                if lease is not None:
                    return lease
                victim = self._least_recently_used_idle()
                if victim is not None:
                    self._discard(victim)
                    break
                self._waiting += 1
                try:
                    await self._changed.wait()
                finally:
                    self._waiting -= 1
            self._starting += 1
        worker = self._new_worker(f"w{next(self._ids)}", function_version, spec, int(spec.get("output_limit", 1 << 20)))
        self._starting_workers[worker.id] = worker
        try:
            init_ms = await self._starter(worker)
        except InitFailed:
            await self._forget(worker)
            raise
        except BaseException:
            await self._forget(worker)
            raise
        finally:
            self._starting -= 1
            self._starting_workers.pop(worker.id, None)
        self.workers[worker.id] = worker
        if worker.pid is not None:
            self._by_pid[worker.pid] = worker
        worker.state = "busy"
        self._lease(worker)
        if self._waiting and worker.leases < worker.max_in_flight:
            self._wake()  # its pipeline has room for those waiting
        return Lease(worker, cold=True, init_ms=init_ms)

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._notify(1))

    async def _forget(self, worker: Worker) -> None:
        worker.kill()
        worker.close_logs()
        async with self._changed:
            self._changed.notify_all()

    async def provision(self, function_version: str, spec: dict[str, Any]) -> Worker:
        """Start a worker ahead of demand (min_warm) and leave it idle; reaped only when stale."""
        lease = await self.acquire(function_version, spec)
        lease.worker.provisioned = True
        await self.release(lease.worker, reusable=True)
        return lease.worker

    def count(self, function_version: str) -> int:
        return sum(1 for w in self.workers.values() if w.function_version == function_version)

    async def release(self, worker: Worker, reusable: bool) -> None:
        worker.leases = max(0, worker.leases - 1)
        if reusable and worker.state != "dead" and worker.id in self.workers:
            if worker.leases == 0:
                self._open.get(worker.function_version, set()).discard(worker)
                worker.state = "idle"
                worker.last_used = time.monotonic()
                self._idle.setdefault(worker.function_version, []).append(worker)
                self._on_idle_delta(worker.function_version, +1)
            elif worker.leases < worker.max_in_flight:
                self._open.setdefault(worker.function_version, set()).add(worker)
        else:
            self._remove(worker)
            worker.kill()
        if self._waiting:
            # one worker came back: wake one waiter (the oldest), not the whole herd
            async with self._changed:
                self._changed.notify(1)

    def _least_recently_used_idle(self) -> Worker | None:
        candidates = [w for ws in self._idle.values() for w in ws]
        return min(candidates, key=lambda w: w.last_used) if candidates else None

    def _discard(self, worker: Worker) -> None:
        """Kill an idle worker (eviction or reaping)."""
        idle = self._idle.get(worker.function_version)
        if idle and worker in idle:
            idle.remove(worker)
            self._on_idle_delta(worker.function_version, -1)
        self._remove(worker)
        worker.kill()

    def _remove(self, worker: Worker) -> None:
        worker.close_logs()
        self._open.get(worker.function_version, set()).discard(worker)
        self.workers.pop(worker.id, None)
        if worker.pid is not None:
            self._by_pid.pop(worker.pid, None)
        idle = self._idle.get(worker.function_version)
        if idle and worker in idle:
            idle.remove(worker)
            self._on_idle_delta(worker.function_version, -1)
        if idle is not None and not idle:
            self._idle.pop(worker.function_version, None)

    # -- housekeeping ---------------------------------------------------------------------
    def exited(self, pid: int, returncode: int) -> Worker | None:
        """The zygote reports a worker's exit; an idle worker that died is dropped at once."""
        worker = self._by_pid.get(pid)
        if worker is None:
            starting = next((w for w in self._starting_workers.values() if w.pid == pid), None)
            if starting is not None:
                starting.exited(returncode)
            return starting
        was_idle = worker.state == "idle"
        worker.exited(returncode)
        if was_idle:
            self._remove(worker)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._notify())
        return worker

    async def _notify(self, n: int | None = None) -> None:
        async with self._changed:
            if n is None:
                self._changed.notify_all()
            else:
                self._changed.notify(n)

    async def reap(self, keep_warm: Callable[[Worker], float]) -> int:
        """Kill idle workers that have waited longer than their function's keep_warm."""
        now = time.monotonic()
        async with self._changed:
            stale = [w for ws in self._idle.values() for w in ws if now - w.last_used > keep_warm(w)]
            for w in stale:
                self._discard(w)
            if stale:
                self._changed.notify_all()
        return len(stale)

    def kill_all(self) -> None:
        for worker in list(self.workers.values()):
            worker.kill()
            worker.close_logs()
        self.workers.clear()
        self._by_pid.clear()
        self._idle.clear()
        self._open.clear()
