"""The files source: each file that finishes arriving in a folder fires the function once.

    watcher (watchdog thread) ──events──▶ arrivals (until whole) ──▶ evaluate ──publish──▶ intake
    startup scan, rescans ──────────────▶ arrivals                     │ (record "sent", atomically)
    outcome stream ◀── final outcome, after retries ───────────────────┘
         └──▶ on_success / on_failure (keep, delete, move) ──▶ record "done" (or removed)

A file fires when its processed record (records.py) does not already describe it: no
record, or a record of other content. The record moves to "sent" in the same atomic
step that publishes the event, so a crash or a clean stop at any moment neither loses a
file nor fires it twice, and any number of runners watching one shared folder fire each
file once. The record of a file whose content is unchanged (same size and modification
time, or same SHA-256) never fires again; changed content does.

At start, and whenever inotify's queue overflowed, the folder is scanned and every file
without a matching record goes through the same path; a periodic rescan (RESCAN_S)
catches anything else a watcher can miss. Records of files that no longer exist are
dropped then too.

The event is published with `meta={"notify": <outcome stream>, "file": <path>}`; its
final outcome (after the function's retries) arrives on the stream, read in the consumer
group "files" (entries are acknowledged after the action is done; a dead runner's unacked
entries are claimed by another after OUTCOME_CLAIM_IDLE_MS). Only then is the file kept,
deleted or moved. A file that changed while its function ran is left in place, and its
new content fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from redis.exceptions import ResponseError

from stoker.errors import StokerError
from stoker.platform.bus import fields_of
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import new_invocation_id
from stoker.platform.gateway.invoker import Invoker
from stoker.platform.outcomes import Outcome, decode_outcome
from stoker.triggers.base import TriggerBinding
from stoker.triggers.files.actions import apply_action
from stoker.triggers.files.arrivals import Arrivals, stat_key
from stoker.triggers.files.config import FilesConfig
from stoker.triggers.files.events import digest_file, s3_event
from stoker.triggers.files.records import DONE, SENT, FileRecord, FileRecords
from stoker.triggers.files.watcher import CHANGED, GONE, RESCAN, WHOLE, FileEvent, FolderWatcher

log = logging.getLogger(__name__)

GROUP = "files"
#: files evaluated (hashed, published) at once; each holds a Redis connection of the
#: process's pool (100), shared with every other trigger of the runner
CONCURRENCY = 8
#: a full rescan this often, whatever the watcher says
RESCAN_S = 60.0
#: outcomes another runner read but did not acknowledge for this long are taken over
OUTCOME_CLAIM_IDLE_MS = 60_000
#: how long a clean stop waits for files being evaluated or settled
STOP_GRACE_S = 3.0


class FilesSource:
    def __init__(self, ctx: PlatformContext, config: FilesConfig, consumer: str | None = None) -> None:
        self.ctx = ctx
        self.config = config
        self.records = FileRecords(ctx.redis, ctx.bus, ctx.keys, config.function, config.folder_id)
        self.arrivals = Arrivals(config.settle)
        self.invoker = Invoker(ctx)
        self.consumer = consumer or socket.gethostname()
        self.watcher = FolderWatcher(config.folder, config.recursive, config.poll, self.on_event)
        self._rescan = asyncio.Event()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphore = asyncio.Semaphore(CONCURRENCY)

    @classmethod
    def from_binding(cls, ctx: PlatformContext, binding: TriggerBinding) -> FilesSource:
        return cls(ctx, FilesConfig.from_trigger(binding.function, binding.config))

    # -- running ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        folder = self.config.folder
        if not os.path.isdir(folder):
            log.info("files trigger of %s: creating the watched folder %s", self.config.function, folder)
            os.makedirs(folder, exist_ok=True)
        await self.ctx.bus.ensure_group(self.records.outcomes, GROUP, start="0")
        self.watcher.start()  # before the first scan, so that nothing falls between the two
        log.info("files trigger of %s: watching %s for %s (%s)", self.config.function, folder,
                 ", ".join(self.config.patterns), self.watcher.mode)
        loops = [asyncio.create_task(c) for c in (self._settle_loop(stop), self._outcome_loop(stop),
                                                   self._scan_loop(stop))]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*loops, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.watcher.stop()
            for task in [*loops, stopper]:
                task.cancel()
            await asyncio.gather(*loops, stopper, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
                for task in self._tasks:
                    task.cancel()

    def on_event(self, event: FileEvent) -> None:
        """A watcher event, on the loop's thread."""
        if event.kind == RESCAN:
            self._rescan.set()
            return
        if event.kind == GONE:
            self.arrivals.forget(event.path)
            self.arrivals.forget_below(event.path)
            self._spawn(self.forget_gone(event.path))
            return
        rel = self.config.relative(event.path)
        if rel is None or not self.config.wants(rel):
            return
        if event.kind == CHANGED:
            self.arrivals.changed(event.path)
        elif event.kind == WHOLE:
            self.arrivals.forget(event.path)
            self._spawn(self.evaluate(event.path))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("files trigger of %s: %s", self.config.function, task.exception(), exc_info=task.exception())
            self._rescan.set()  # whatever it was working on is picked up again

    async def _settle_loop(self, stop: asyncio.Event) -> None:
        tick = min(0.25, self.config.settle / 4)
        while not stop.is_set():
            for path in self.arrivals.settled():
                self._spawn(self.evaluate(path))
            await asyncio.sleep(tick)

    async def _scan_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._rescan.clear()
            await self.scan()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rescan.wait(), RESCAN_S)

    # -- finding files -----------------------------------------------------------------------
    def _walk(self) -> dict[str, tuple[str, int, int]]:
        """rel -> (absolute path, size, mtime_ns) of every file the trigger wants."""
        found: dict[str, tuple[str, int, int]] = {}
        for dirpath, dirnames, filenames in os.walk(self.config.folder):
            if self.config.recursive:
                dirnames[:] = [d for d in dirnames if self.config.relative(os.path.join(dirpath, d, "x"))]
            else:
                dirnames[:] = []
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = self.config.relative(path)
                key = stat_key(path) if rel is not None and self.config.wants(rel) else None
                if rel is not None and key is not None:
                    found[rel] = (path, key[0], key[1])
        return found

    async def scan(self) -> int:
        """Queue every file without a matching record; drop records of files that are gone."""
        records = await self.records.all()
        found = await asyncio.to_thread(self._walk)
        queued = 0
        for rel, (path, size, mtime_ns) in found.items():
            record = records.get(rel, (b"", None))[1]
            if record is not None and (record.state == SENT or record.same_file(size, mtime_ns)):
                continue
            if path not in self.arrivals.pending and rel not in self._busy:
                self.arrivals.settling_since(path, mtime_ns)
                queued += 1
        for rel, (raw, record) in records.items():
            gone = rel not in found and stat_key(os.path.join(self.config.folder, *rel.split("/"))) is None
            if gone and (record is None or record.state == DONE):
                await self.records.swap(rel, raw, None)
        if queued:
            log.info("files trigger of %s: %d file(s) in %s not processed yet", self.config.function, queued,
                     self.config.folder)
        return queued

    async def forget_gone(self, path: str) -> None:
        """A file was deleted or moved away: a new file of its name is a new file."""
        rel = self.config.relative(path)
        if rel is None or not self.config.wants(rel):
            return
        async with self._semaphore:
            raw, record = await self.records.get(rel)
            if record is not None and record.state == DONE and stat_key(path) is None:
                await self.records.swap(rel, raw, None)

    # -- firing -------------------------------------------------------------------------------
    async def evaluate(self, path: str) -> None:
        """Fire the file if it is whole and its record does not already describe it."""
        rel = self.config.relative(path)
        if rel is None or not self.config.wants(rel):
            return
        if rel in self._busy:
            self._again.add(rel)
            return
        self._busy.add(rel)
        try:
            async with self._semaphore:
                await self._evaluate(path, rel)
        finally:
            self._busy.discard(rel)
        if rel in self._again:
            self._again.discard(rel)
            await self.evaluate(path)

    async def _evaluate(self, path: str, rel: str) -> None:
        for _ in range(5):  # a lost compare-and-set means someone else moved the record: look again
            key = stat_key(path)
            if key is None:
                return
            raw, record = await self.records.get(rel)
            if record is not None and (record.state == SENT or record.same_file(*key)):
                return
            try:
                digests = await asyncio.to_thread(digest_file, path)
            except OSError:
                return  # gone or unreadable meanwhile
            if stat_key(path) != key or digests.size != key[0]:
                self.arrivals.changed(path)  # still being written: wait until it is whole
                return
            if record is not None and record.sha256 == digests.sha256 and record.size == digests.size:
                # the same content with a new modification time (touched, copied over): not new
                if await self.records.swap(rel, raw, record.done(size=key[0], mtime_ns=key[1])):
                    return
                continue
            try:
                resolved = await self.invoker.resolve(self.config.function, self.config.qualifier)
            except StokerError as e:
                log.warning("files trigger: %s not fired: %s", path, e.message)
                return
            invocation_id = new_invocation_id()
            sent = FileRecord(SENT, key[0], key[1], digests.sha256, invocation_id, time.time())
            event = s3_event(self.config.bucket, self.config.folder, rel, path, key[0], key[1], digests)
            published = await self.invoker.invoke_async_guarded(
                self.records.guard(rel, raw, sent), resolved, orjson.dumps(event), trigger="files",
                meta={"notify": self.records.outcomes, "file": rel}, invocation_id=invocation_id)
            if published:
                log.debug("files trigger of %s: %s fired as %s", self.config.function, rel, invocation_id)
                return
        log.warning("files trigger of %s: %s changed hands too often; the next scan looks again",
                    self.config.function, rel)

    # -- outcomes -----------------------------------------------------------------------------
    async def _outcome_loop(self, stop: asyncio.Event) -> None:
        redis, stream = self.ctx.redis, self.records.outcomes
        backlog = True  # first what this consumer read and did not acknowledge before a restart
        last_claim = 0.0
        while not stop.is_set():
            try:
                reply: Any = await redis.xreadgroup(GROUP, self.consumer, {stream: "0" if backlog else ">"},
                                                    count=100, block=None if backlog else 1000)
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                await self.ctx.bus.ensure_group(stream, GROUP, start="0")
                continue
            entries = reply[0][1] if reply else []
            if backlog and not entries:
                backlog = False
            await self._settle_entries(entries)
            if time.monotonic() - last_claim > OUTCOME_CLAIM_IDLE_MS / 2000:
                last_claim = time.monotonic()
                claimed: Any = await redis.xautoclaim(stream, GROUP, self.consumer, OUTCOME_CLAIM_IDLE_MS,
                                                      start_id="0-0", count=100)
                await self._settle_entries(claimed[1] if claimed else [])

    async def _settle_entries(self, entries: list[Any]) -> None:
        for entry in entries:
            entry_id = entry[0]
            fields = fields_of(entry) if entry[1] else {}
            if "o" in fields:
                try:
                    await self.settle(decode_outcome(fields["o"]))
                except (ValueError, KeyError, TypeError) as e:
                    log.error("files trigger of %s: an undecodable outcome was dropped: %s", self.config.function, e)
            pipe = self.ctx.redis.pipeline(transaction=True)
            pipe.xack(self.records.outcomes, GROUP, entry_id)
            pipe.xdel(self.records.outcomes, entry_id)
            await pipe.execute()

    async def settle(self, outcome: Outcome) -> None:
        """Apply on_success or on_failure for a file whose event reached its final outcome."""
        rel = outcome.meta.get("file")
        if not isinstance(rel, str):
            return
        raw, record = await self.records.get(rel)
        if record is None or record.id != outcome.id or record.state != SENT:
            return  # settled already (an outcome can be reported twice)
        path = os.path.join(self.config.folder, *rel.split("/"))
        key = stat_key(path)
        if key is None:
            await self.records.swap(rel, raw, None)  # gone meanwhile: nothing to keep, move or delete
            return
        if not record.same_file(*key):
            # changed while the function ran: leave it where it is, and let its new content fire
            await self.records.swap(rel, raw, record.done(outcome.status))
            self._spawn(self.evaluate(path))
            return
        action = self.config.on_success if outcome.succeeded else self.config.on_failure
        try:
            where = await asyncio.to_thread(apply_action, action, path, rel)
        except OSError as e:
            log.error("files trigger of %s: %s could not be handled (%s after %s): %s", self.config.function,
                      path, action, outcome.status, e)
            await self.records.swap(rel, raw, record.done(outcome.status))
            return
        if action == "keep":
            await self.records.swap(rel, raw, record.done(outcome.status))
        else:
            await self.records.swap(rel, raw, None)
            log.debug("files trigger of %s: %s %s -> %s", self.config.function, rel, outcome.status, where)
