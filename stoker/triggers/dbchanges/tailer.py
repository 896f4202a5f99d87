"""The dbchanges source: tails one table's change log for one function and publishes batches.

While it holds its lease (one tailer per database, table and function in a cluster):

  1. A batch in flight (Redis)? Wait for its final outcome (after the function's retries).
     Then publish its next part (bisect_on_error), or advance the cursor in the user's
     database, clear the batch in flight, and trim what every consumer has read.
  2. Otherwise read the changes after the cursor and publish them as one async invocation,
     in the same atomic step that records them as the batch in flight (handoff.lua).
  3. Nothing to read: wait for PostgreSQL's NOTIFY, or poll.

At least once, in order per table: one batch in flight at a time, and the cursor moves
only after the batch's outcome. A batch that ends dead-lettered is in the function's
dead letters and the stream goes on. A database that goes away is retried with backoff
and reported in the logs and in /healthz; so is a table that is not watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from stoker.errors import ConfigError, StokerError
from stoker.platform.context import PlatformContext
from stoker.platform.envelope import Envelope
from stoker.platform.outcomes import Outcome
from stoker.platform.registry.projection import Resolved
from stoker.triggers.base import TriggerBinding
from stoker.triggers.dbchanges.changelog import Batch, Change, Cursor, DatabaseError, open_changelog
from stoker.triggers.dbchanges.config import DbChangesConfig
from stoker.triggers.dbchanges.events import batch_envelope, event_payload, publish_entries
from stoker.triggers.dbchanges.inflight import BatchState, Entry, Inflight
from stoker.triggers.dbchanges.lease import Lease
from stoker.triggers.health import clear_problem, report_problem

log = logging.getLogger(__name__)

SQLITE_POLL_S = 0.25
#: with LISTEN/NOTIFY a PostgreSQL tailer still reads this often, should a notification be lost
POSTGRES_POLL_S = 5.0
#: an idle tailer moves its cursor this often, so that trimming goes on and it counts as live
IDLE_ADVANCE_S = 60.0
TRIM_EVERY_S = 5.0
#: while waiting for an outcome, ask the ledger this often (in case the report was lost)
LEDGER_CHECK_S = 60.0
MAX_BACKOFF_S = 30.0
#: after LISTEN failed, poll this long before listening again
LISTEN_RETRY_S = 60.0
FINAL = frozenset({"succeeded", "failed", "timed_out", "dead_lettered"})


class LeaseLost(Exception):
    pass


def consumer_id(function: str, location: str, table: str) -> str:
    digest = hashlib.sha256(f"{location}|{table}".encode()).hexdigest()[:12]
    return f"{function}:{digest}"


class ChangeTailer:
    def __init__(self, ctx: PlatformContext, binding: TriggerBinding) -> None:
        self.ctx = ctx
        self.binding = binding
        self.cfg = DbChangesConfig.from_config(binding.config)
        self.target = self.cfg.target
        self.changelog = open_changelog(self.target)
        cid = consumer_id(binding.function, self.target.location, self.target.table)
        #: the cursor's owner in the user's database: one function of one platform
        self.consumer = f"{ctx.keys.prefix}/{binding.function}"
        self.name = f"dbchanges {binding.function} ({self.target.table})"
        self.lease = Lease(ctx.redis, ctx.keys.lock(f"dbchanges:{cid}"))
        self.outcomes_key = ctx.keys.custom("dbchanges", cid, "outcomes")
        self.state = BatchState(ctx.redis, self.lease.key, ctx.keys.custom("dbchanges", cid, "inflight"),
                                self.outcomes_key)
        self.notifier: Any = None
        if self.target.dialect == "postgresql":
            from stoker.triggers.dbchanges.postgres import Notifier, PostgresChangeLog

            assert isinstance(self.changelog, PostgresChangeLog)
            self.notifier = Notifier(self.changelog)
        self._cursor: Cursor | None = None
        self._problem_since: float | None = None
        self._last_idle_advance = 0.0
        self._last_trim = 0.0
        self._first_seen: float | None = None
        self._listen_again_at = 0.0
        self._trim_pending = False

    # -- the source ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        log.info("%s: tailing %s", self.name, self.target.describe())
        try:
            while not stop.is_set():
                if not await self._acquire(stop):
                    continue
                lost = asyncio.Event()
                keeper = asyncio.create_task(self._keep_lease(lost, stop), name=f"lease-{self.name}")
                try:
                    await self._lead(stop, lost)
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await keeper
                    with contextlib.suppress(RedisError, OSError):
                        await self.lease.release()
                if lost.is_set() and not stop.is_set():
                    log.warning("%s: lost its lease; another runner may go on", self.name)
        finally:
            if self.notifier is not None:
                await self.notifier.close()
            await asyncio.to_thread(self.changelog.dispose)
            with contextlib.suppress(RedisError, OSError):
                await clear_problem(self.ctx.redis, self.ctx.keys, self.name)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        try:
            if await self.lease.acquire():
                return True
        except (RedisError, OSError) as e:
            log.warning("%s: Redis: %s", self.name, e)
        await _wait(stop, self.lease.renew_every)
        return False

    async def _keep_lease(self, lost: asyncio.Event, stop: asyncio.Event) -> None:
        failing_since: float | None = None
        while not stop.is_set():
            await _wait(stop, self.lease.renew_every)
            try:
                if not await self.lease.renew():
                    lost.set()
                    return
                failing_since = None
            except (RedisError, OSError):
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.lease.ttl_ms / 1000:
                    lost.set()
                    return

    async def _lead(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        self._cursor = None
        backoff = 1.0
        while not (stop.is_set() or lost.is_set()):
            try:
                await self._step(stop, lost)
                backoff = 1.0
                await self._recovered()
                continue
            except LeaseLost:
                lost.set()
                return
            except DatabaseError as e:
                await asyncio.to_thread(self.changelog.dispose)
                if self.notifier is not None:
                    await self.notifier.close()
                self._cursor = None
                await self._problem(f"{e.message}; retrying in {backoff:.0f} s")
            except StokerError as e:  # the table is not watched, the function is gone, ...
                self._cursor = None
                await self._problem(f"{e.message}; retrying in {backoff:.0f} s")
            except (RedisError, OSError) as e:
                log.warning("%s: Redis: %s; retrying in %.0f s", self.name, e, backoff)
            await _wait_any(stop, lost, backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _step(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        if self._cursor is None:
            await asyncio.to_thread(self.changelog.check_watched)
            self._cursor = await asyncio.to_thread(self.changelog.cursor, self.consumer, self.cfg.starting_position)
        raw = await self.state.load()
        if raw:
            await self._settle(raw, stop, lost)
            return
        batch = await asyncio.to_thread(self.changelog.read, self._cursor.position, self.cfg.batch_size,
                                        self.cfg.events)
        if not batch.changes:
            self._first_seen = None
            await self._idle(batch)
            await self._wait_for_changes(stop, lost, POSTGRES_POLL_S if self.notifier else SQLITE_POLL_S)
            return
        if self.cfg.batch_window and len(batch.changes) < self.cfg.batch_size:
            now = time.monotonic()
            self._first_seen = self._first_seen or now
            left = self.cfg.batch_window - (now - self._first_seen)
            if left > 0:  # a fuller batch may come: wait for it up to batch_window
                await self._wait_for_changes(stop, lost, min(left, 1.0))
                return
        self._first_seen = None
        await self._publish(batch)

    # -- publishing ---------------------------------------------------------------------
    async def _resolve(self) -> Resolved:
        return await self.ctx.directory.resolve(self.binding.function, self.cfg.qualifier)

    def _payload(self, changes: list[Change]) -> tuple[bytes, int]:
        return event_payload(changes, self.target, self.cfg.image_format)

    def _envelope(self, resolved: Resolved, invocation_id: str, payload: bytes, seqs: tuple[int, ...]) -> Envelope:
        return batch_envelope(resolved, invocation_id, payload, seqs, self.target, self.outcomes_key)

    def _entries(self, envelope: Envelope) -> list[Entry]:
        return publish_entries(self.ctx.keys, envelope, self.outcomes_key, self.name)

    async def _publish(self, batch: Batch) -> None:
        assert self._cursor is not None
        resolved = await self._resolve()
        payload, fitted = self._payload(batch.changes)
        next_position = self.changelog.position_after(self._cursor.position, batch, fitted)
        inflight = Inflight.plan(self._cursor, [c.seq for c in batch.changes[:fitted]], next_position)
        envelope = self._envelope(resolved, inflight.id, payload, inflight.seqs)
        done = await self.state.handoff(self.lease.token, b"", inflight.encode(), self._entries(envelope))
        if done == 0:
            raise LeaseLost()
        if done == 1:
            log.debug("%s: published %s as %s", self.name, _span(inflight.seqs), inflight.id)

    # -- outcomes -----------------------------------------------------------------------
    async def _settle(self, raw: bytes, stop: asyncio.Event, lost: asyncio.Event) -> None:
        assert self._cursor is not None
        inflight = Inflight.decode(raw)
        if inflight.token != self._cursor.token or inflight.version != self._cursor.version:
            # planned on a cursor that has moved since (the tailer stopped after advancing it),
            # or on one re-created by unwatch and watch: nothing of it is left to do
            await self._handoff(raw, b"")
            return
        got = await self._await_outcome(inflight, stop, lost)
        if got is None:
            return
        entry, outcome = got
        lo, hi = inflight.part
        todo = list(inflight.todo)
        dead = inflight.dead_lettered
        seqs = inflight.part_seqs
        if not outcome.succeeded:
            why = f"{outcome.status} after {outcome.attempts} attempt(s)" + (
                f", {outcome.error_type}" if outcome.error_type else "")
            if self.cfg.bisect_on_error and hi - lo > 1:
                mid = (lo + hi) // 2
                todo = [(lo, mid), (mid, hi), *todo]
                log.warning("%s: the batch of %s failed (%s); splitting it in halves", self.name, _span(seqs), why)
            else:
                dead += hi - lo
                log.warning("%s: %s went to the dead letters of %s (%s); later changes go on", self.name,
                            _span(seqs), self.binding.function, why)
        if todo:
            await self._publish_part(raw, inflight, todo, dead, entry)
            return
        advanced = await asyncio.to_thread(self.changelog.advance, self._cursor, inflight.next)
        if advanced is None:  # moved by someone else meanwhile: read it again
            self._cursor = await asyncio.to_thread(self.changelog.cursor, self.consumer, self.cfg.starting_position)
        else:
            self._cursor = advanced
        await self._handoff(raw, b"", consumed=entry)
        await self._maybe_trim()

    async def _publish_part(self, raw: bytes, inflight: Inflight, todo: list[tuple[int, int]], dead: int,
                            consumed: str) -> None:
        part, rest = todo[0], tuple(todo[1:])
        nxt = inflight.then(part, rest, dead)
        changes = await asyncio.to_thread(self.changelog.read_seqs, nxt.part_seqs)
        if not changes:  # trimmed under us (the table was unwatched meanwhile): nothing left to send
            log.warning("%s: changes %s are no longer in the change log; skipping them", self.name, nxt.part_seqs)
            await self._handoff(raw, b"", consumed=consumed)
            self._cursor = None
            return
        payload, _ = self._payload(changes)
        envelope = self._envelope(await self._resolve(), nxt.id, payload, nxt.part_seqs)
        await self._handoff(raw, nxt.encode(), self._entries(envelope), consumed=consumed)

    async def _handoff(self, expect: bytes, new: bytes, appends: list[Entry] | None = None,
                       consumed: str = "") -> None:
        done = await self.state.handoff(self.lease.token, expect, new, appends or (), consumed)
        if done == 0:
            raise LeaseLost()

    async def _await_outcome(self, inflight: Inflight, stop: asyncio.Event,
                             lost: asyncio.Event) -> tuple[str, Outcome] | None:
        after = "0"
        checked = time.monotonic()
        while not (stop.is_set() or lost.is_set()):
            try:
                got = await self.state.next_outcome(after, block_ms=1000)
            except (ValueError, KeyError, TypeError) as e:
                log.error("%s: an undecodable outcome entry after %s: %s", self.name, after, e)
                got = None
            if got is not None:
                entry, outcome = got
                if outcome.id == inflight.id:
                    return entry, outcome
                await self.state.drop_outcome(entry)  # of an earlier batch, reported again
                after = entry
                continue
            if time.monotonic() - checked > LEDGER_CHECK_S:
                checked = time.monotonic()
                status = await asyncio.to_thread(self._ledger_status, inflight.id)
                if status in FINAL:
                    log.warning("%s: no outcome was reported for %s; the ledger says %s", self.name,
                                inflight.id, status)
                    return "", Outcome(id=inflight.id, function=self.binding.function, version="", status=status,
                                       attempts=0, error_type=None, body=b"", meta={})
        return None

    def _ledger_status(self, invocation_id: str) -> str | None:
        if self.ctx.engine is None:
            return None
        from sqlalchemy.orm import Session

        from stoker.platform.ledger.models import Invocation

        try:
            with Session(self.ctx.engine) as session:
                row = session.get(Invocation, invocation_id)
                return row.status if row is not None else None
        except Exception as e:  # the ledger is only a fallback here
            log.debug("%s: reading the ledger failed: %s", self.name, e)
            return None

    # -- idle ---------------------------------------------------------------------------
    async def _idle(self, batch: Batch) -> None:
        """Nothing to send: now and then move the cursor past what was read (and filtered out)."""
        assert self._cursor is not None
        now = time.monotonic()
        if now - self._last_idle_advance < IDLE_ADVANCE_S:
            if self._trim_pending:
                await self._maybe_trim()
            return
        self._last_idle_advance = now
        position = self.changelog.position_after(self._cursor.position, batch, 0)
        advanced = await asyncio.to_thread(self.changelog.advance, self._cursor, position)
        self._cursor = advanced or await asyncio.to_thread(self.changelog.cursor, self.consumer,
                                                           self.cfg.starting_position)
        await self._maybe_trim()

    async def _maybe_trim(self) -> None:
        """Trim after the cursor moved, at most every TRIM_EVERY_S (a burst is trimmed in a few steps)."""
        self._trim_pending = True
        if time.monotonic() - self._last_trim < TRIM_EVERY_S:
            return
        self._last_trim = time.monotonic()
        trimmed = await asyncio.to_thread(self.changelog.trim)
        self._trim_pending = False
        if trimmed:
            log.debug("%s: trimmed %d changes every consumer has read", self.name, trimmed)

    async def _wait_for_changes(self, stop: asyncio.Event, lost: asyncio.Event, limit: float) -> None:
        if self.notifier is None or time.monotonic() < self._listen_again_at:
            await _wait_any(stop, lost, limit if self.notifier is None else min(limit, 1.0))
            return
        deadline = time.monotonic() + limit
        try:
            while not (stop.is_set() or lost.is_set()) and (left := deadline - time.monotonic()) > 0:
                if await self.notifier.wait(min(1.0, left)):
                    return
        except DatabaseError as e:
            # reading may still work (e.g. through a pooler without LISTEN): poll every second a while
            log.warning("%s: %s; polling instead for %.0f s", self.name, e.message, LISTEN_RETRY_S)
            self._listen_again_at = time.monotonic() + LISTEN_RETRY_S

    # -- health -------------------------------------------------------------------------
    async def _problem(self, message: str) -> None:
        if self._problem_since is None:
            self._problem_since = time.time()
        log.warning("%s: %s", self.name, message)
        with contextlib.suppress(RedisError, OSError):
            await report_problem(self.ctx.redis, self.ctx.keys, self.name, message, self._problem_since)

    async def _recovered(self) -> None:
        if self._problem_since is None:
            return
        log.info("%s: %s is reachable again", self.name, self.target.describe())
        self._problem_since = None
        with contextlib.suppress(RedisError, OSError):
            await clear_problem(self.ctx.redis, self.ctx.keys, self.name)


def _span(seqs: tuple[int, ...]) -> str:
    """Change-log sequences as a person reads them: "change 13", "changes 9..16 (8)"."""
    if len(seqs) == 1:
        return f"change {seqs[0]}"
    return f"changes {seqs[0]}..{seqs[-1]} ({len(seqs)})"


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(a: asyncio.Event, b: asyncio.Event, seconds: float) -> None:
    waits = [asyncio.create_task(a.wait()), asyncio.create_task(b.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def make_source(ctx: PlatformContext, binding: TriggerBinding) -> ChangeTailer:
    try:
        return ChangeTailer(ctx, binding)
    except ConfigError as e:  # deployed before a check existed: say which trigger
        raise ConfigError(f"function {binding.function}, dbchanges trigger: {e.message}") from None
