"""Named queues in Redis: send, receive with a visibility timeout, delete, dead-letter, redrive.

A named queue is a Redis stream read by one consumer group, so that any number of
consumers (trigger runners on any number of machines) share it and each message is in
one batch at a time. A received message stays in the group's pending list until it is
deleted; its delivery count there is its receive count. One that stays in flight longer
than the visibility timeout is received again; one received `max_receive` times moves
to the queue's dead-letter queue (`<queue>-dlq`) on its next receive. Every hand-off
that must not lose or duplicate is one Lua script (`stoker/platform/lua/queue_*.lua`).

Keys (all under the platform's prefix {p}):
    {p}:queues                   set of queue names (made by a send, a consumer, a dead letter)
    {p}:queue:{q}                stream of messages; consumer group "consumers"; fields in
                                 stoker.triggers.queue.messages
    {p}:queue:{q}:delayed        zset of messages sent with a delay: member = msgpack
                                 [field, value, ...], score = when it becomes visible (ms)
    {p}:queue:{q}:received       hash stream entry id -> first receive (ms), for
                                 ApproximateFirstReceiveTimestamp; removed with the message
    {p}:esm:{function}:queue:{digest}:leases
                                 zset of batches in flight of one event source mapping
                                 (lease token -> expiry ms), see stoker.triggers.queue.mapping
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from stoker.errors import InvalidInput, NotFound
from stoker.platform.keys import Keys
from stoker.platform.timeparse import iso
from stoker.triggers.queue.messages import (
    Message,
    Received,
    check_body,
    check_delay,
    check_queue_name,
    check_size,
    dlq_name,
    fields_from_list,
    new_message_id,
    normalise_attributes,
)

GROUP = "consumers"


def _lua(name: str) -> str:
    return (resources.files("stoker.platform") / "lua" / f"{name}.lua").read_text()


def _ms_iso(ms: int | None) -> str | None:
    import datetime as dt

    return iso(dt.datetime.fromtimestamp(ms / 1000, dt.UTC)) if ms else None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class ReceiveResult:
    messages: list[Received]
    dead_lettered: int
    #: when nothing was received: the group's last delivered entry (wait for newer ones) and
    #: when the next delayed message becomes visible (ms, or None)
    last_delivered_id: str
    next_due_ms: int | None


@dataclass(frozen=True)
class QueueStats:
    name: str
    available: int
    in_flight: int
    delayed: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "available": self.available, "in_flight": self.in_flight,
                "delayed": self.delayed}


@dataclass(frozen=True)
class RedriveResult:
    moved: int
    in_flight: int
    no_source: int

    def to_json(self) -> dict[str, int]:
        return {"moved": self.moved, "skipped_in_flight": self.in_flight, "skipped_no_source": self.no_source}


class QueueStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._receive = redis.register_script(_lua("queue_receive"))
        self._hold = redis.register_script(_lua("queue_hold"))
        self._redrive = redis.register_script(_lua("queue_redrive"))
        self._purge = redis.register_script(_lua("queue_purge"))
        self._lease = redis.register_script(_lua("queue_lease"))

    # -- keys -----------------------------------------------------------------------------
    def stream(self, queue: str) -> str:
        return self.keys.custom("queue", queue)

    def delayed(self, queue: str) -> str:
        return self.keys.custom("queue", queue, "delayed")

    def received(self, queue: str) -> str:
        return self.keys.custom("queue", queue, "received")

    @property
    def names_key(self) -> str:
        return self.keys.custom("queues")

    # -- producers ------------------------------------------------------------------------
    async def send(self, queue: str, bodies: Sequence[bytes], *, delay: float = 0.0,
                   attributes: Mapping[str, Any] | None = None) -> list[str]:
        """Enqueue messages (all or none); returns their message ids in order."""
        check_queue_name(queue)
        delay = check_delay(delay)
        attrs = normalise_attributes(attributes)
        if not bodies:
            raise InvalidInput("no messages to send: give at least one")
        for i, body in enumerate(bodies):
            what = "the message" if len(bodies) == 1 else f"message #{i + 1}"
            check_body(body, what)
            check_size(body, attrs, what)
        sent = now_ms()
        messages = [Message(id=new_message_id(), body=body, sent_at_ms=sent, attributes=attrs) for body in bodies]
        pipe = self.redis.pipeline(transaction=True)
        for i, m in enumerate(messages):
            if delay > 0:
                flat = [x for kv in m.fields().items() for x in (kv[0].encode(), kv[1])]
                # a fraction of a ms keeps a batch in order (equal scores sort by member)
                due = sent + int(delay * 1000) + i / 1000
                pipe.zadd(self.delayed(queue), {msgpack.packb(flat, use_bin_type=False): due})
            else:
                pipe.xadd(self.stream(queue), m.fields())  # type: ignore[arg-type]
        pipe.sadd(self.names_key, queue)
        await pipe.execute()
        return [m.id for m in messages]

    # -- consumers ------------------------------------------------------------------------
    async def ensure(self, queue: str) -> None:
        """Make a consumed queue known (its consumer group too) with its dead-letter queue."""
        try:
            await self.redis.xgroup_create(self.stream(queue), GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        await self.redis.sadd(self.names_key, queue, dlq_name(queue))

    async def receive(self, queue: str, consumer: str, count: int, visibility_ms: int, max_receive: int,
                      budget_bytes: int = 2**50) -> ReceiveResult:
        """Up to `count` messages, stopping early once they add up to about `budget_bytes`."""
        dlq = dlq_name(queue)
        raw: Any = await self._receive(
            keys=[self.stream(queue), self.delayed(queue), self.received(queue), self.stream(dlq), self.names_key],
            args=[GROUP, consumer, count, visibility_ms, max_receive, now_ms(), queue, dlq, budget_bytes])
        moved, last, next_due = int(raw[0]), _text(raw[1]), _text(raw[2])
        messages = []
        for entry_id, receive_count, first, flat in raw[3:]:
            entry = _text(entry_id)
            messages.append(Received(queue=queue, entry_id=entry,
                                     message=_message(entry, fields_from_list(flat)),
                                     receive_count=int(receive_count), first_received_ms=int(first)))
        return ReceiveResult(messages, moved, last, int(float(next_due)) if next_due else None)

    async def wait_for_new(self, queue: str, after_id: str, timeout_ms: int) -> None:
        """Block until the stream has an entry newer than `after_id`, or the timeout passes."""
        if timeout_ms <= 0:
            return
        await self.redis.xread({self.stream(queue): after_id or "$"}, count=1, block=timeout_ms)

    async def delete(self, queue: str, entry_ids: Sequence[str]) -> None:
        """Processed messages leave the queue."""
        if not entry_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.stream(queue), GROUP, *entry_ids)
        pipe.xdel(self.stream(queue), *entry_ids)
        pipe.hdel(self.received(queue), *entry_ids)
        await pipe.execute()

    async def hold(self, queue: str, consumer: str, entry_ids: Sequence[str], idle_ms: int,
                   uncount: bool = False) -> int:
        """Reset how long messages have been in flight (0 = a whole visibility timeout from now)."""
        if not entry_ids:
            return 0
        n: Any = await self._hold(keys=[self.stream(queue)],
                                  args=[GROUP, consumer, idle_ms, "1" if uncount else "0", *entry_ids])
        return int(n)

    async def take_lease(self, key: str, limit: int, token: str, lease_ms: int) -> bool:
        now = now_ms()
        return bool(await self._lease(keys=[key], args=[now, limit, token, now + lease_ms]))

    async def renew_lease(self, key: str, token: str, lease_ms: int) -> None:
        expiry = now_ms() + lease_ms
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(key, {token: expiry}, xx=True)
        pipe.pexpire(key, lease_ms + 60_000)
        await pipe.execute()

    async def drop_lease(self, key: str, token: str) -> None:
        await self.redis.zrem(key, token)

    # -- administration -------------------------------------------------------------------
    async def names(self) -> list[str]:
        members: Any = await self.redis.smembers(self.names_key)
        return sorted(_text(m) for m in members)

    async def require(self, queue: str) -> None:
        check_queue_name(queue)
        if not await self.redis.sismember(self.names_key, queue):
            raise NotFound(f"queue {queue!r} does not exist: it is made by the first message sent to it "
                           "(see `stoker queue ls`)")

    async def stats(self, queues: Sequence[str]) -> list[QueueStats]:
        pipe = self.redis.pipeline(transaction=False)
        for q in queues:
            pipe.xlen(self.stream(q))
            pipe.xpending(self.stream(q), GROUP)
            pipe.zcard(self.delayed(q))
        raw = await pipe.execute(raise_on_error=False)
        out = []
        for i, q in enumerate(queues):
            length, pending, delayed = raw[3 * i: 3 * i + 3]
            length = length if isinstance(length, int) else 0
            in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
            out.append(QueueStats(q, max(0, length - in_flight), in_flight, delayed if isinstance(delayed, int) else 0))
        return out

    async def peek(self, queue: str, limit: int = 10) -> list[dict[str, Any]]:
        """The oldest messages, then delayed ones, without receiving them."""
        await self.require(queue)
        stream = self.stream(queue)
        entries: Any = await self.redis.xrange(stream, count=limit)
        pending: dict[str, int] = {}
        firsts: list[Any] = []
        if entries:
            ids = [_text(e[0]) for e in entries]
            try:
                rows: Any = await self.redis.xpending_range(stream, GROUP, min=ids[0], max=ids[-1], count=limit)
                pending = {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}
            except ResponseError:  # no consumer group yet: nothing was received
                pending = {}
            firsts = await self.redis.hmget(self.received(queue), ids)
        out = []
        for (entry_id, raw), first in zip(entries, firsts or [None] * len(entries), strict=True):
            entry = _text(entry_id)
            message = _message(entry, raw)
            # a message given back without spending a receive is pending with count 0: available
            state = "in_flight" if pending.get(entry, 0) > 0 else "available"
            out.append(_peek_row(message, state, pending.get(entry, 0), int(first) if first else None))
        room = limit - len(out)
        if room > 0:
            members: Any = await self.redis.zrange(self.delayed(queue), 0, room - 1, withscores=True)
            for member, due in members:
                message = _message("", fields_from_list(msgpack.unpackb(member, raw=True)))
                row = _peek_row(message, "delayed", 0, None)
                row["visible_at"] = _ms_iso(int(due))
                out.append(row)
        return out

    async def purge(self, queue: str) -> int:
        await self.require(queue)
        n: Any = await self._purge(keys=[self.stream(queue), self.delayed(queue), self.received(queue)], args=[GROUP])
        return int(n)

    async def redrive(self, queue: str, to: str | None = None, limit: int | None = None) -> RedriveResult:
        """Move messages (not in flight) back to their source queue, or to `to`."""
        await self.require(queue)
        if to is not None:
            check_queue_name(to)
            if to == queue:
                raise InvalidInput(f"cannot redrive {queue!r} to itself: give another queue with --to")
        moved = in_flight = no_source = 0
        cursor = "0"
        while limit is None or moved < limit:
            step = 500 if limit is None else min(500, limit - moved)
            raw: Any = await self._redrive(keys=[self.stream(queue), self.names_key],
                                           args=[GROUP, self.keys.custom("queue", ""), to or "", step, cursor])
            moved += int(raw[0])
            in_flight += int(raw[1])
            no_source += int(raw[2])
            if _text(raw[3]) == cursor:
                break
            cursor = _text(raw[3])
        return RedriveResult(moved, in_flight, no_source)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _message(entry_id: str, fields: Mapping[Any, bytes]) -> Message:
    """A stream entry as a message; an entry written by hand (no id or time) still reads."""
    f = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
    if "id" in f and "t" in f and "b" in f:
        return Message.from_fields(f)
    sent = entry_id.split("-", 1)[0] if entry_id else "0"
    rest = {k: v for k, v in f.items() if k not in ("id", "b", "t")}
    return Message.from_fields({"id": f.get("id", entry_id.encode()), "b": f.get("b", b"null"),
                                "t": f.get("t", sent.encode()), **rest})


def _peek_row(message: Message, state: str, receive_count: int, first_ms: int | None) -> dict[str, Any]:
    try:
        body: Any = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        body = message.body.decode("utf-8", "replace")
    row: dict[str, Any] = {
        "id": message.id, "body": body, "receive_count": receive_count, "sent_at": _ms_iso(message.sent_at_ms),
        "state": state, "first_received_at": _ms_iso(first_ms),
        "attributes": {name: a["stringValue"] for name, a in message.attributes.items()},
    }
    if message.dead_letter is not None:
        dead = message.dead_letter
        row["dead_letter"] = {"queue": dead.queue, "receive_count": dead.receive_count, "at": _ms_iso(dead.at_ms)}
    return row
