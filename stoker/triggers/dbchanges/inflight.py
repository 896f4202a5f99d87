"""The batch in flight, in Redis: published with its event in one step, cleared after its outcome.

A batch is the changes read from one cursor position. It is published as one async
invocation (one "part"); with `bisect_on_error`, a part that ends dead-lettered is split
in halves that are published one after the other, until the failing records stand alone.
When every part has an outcome, the tailer advances the cursor to `next` and clears this.

Invocation ids are derived from the cursor (its token and version) and the part, so a
batch published again after Redis lost its state gets the same id, and the ledger, which
upserts by id, keeps one row.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.platform.outcomes import Outcome, decode_outcome
from stoker.triggers.dbchanges.changelog import Cursor, Position

_ID_NS = uuid.UUID("0b7f3c1e-8d2a-4f61-9a7e-3c5d1e2f4a6b")


@dataclass(frozen=True)
class Inflight:
    id: str
    token: str
    version: int
    seqs: tuple[int, ...]
    part: tuple[int, int]  # [lo, hi) indexes into seqs: what `id` carries
    next: Position
    todo: tuple[tuple[int, int], ...] = ()
    dead_lettered: int = 0  # records of this batch that ended in the dead letters
    published_at: float = field(default_factory=time.time)

    @classmethod
    def plan(cls, cursor: Cursor, seqs: Sequence[int], next_position: Position) -> Inflight:
        part = (0, len(seqs))
        return cls(id=part_id(cursor.token, cursor.version, part), token=cursor.token, version=cursor.version,
                   seqs=tuple(seqs), part=part, next=next_position)

    @property
    def part_seqs(self) -> tuple[int, ...]:
        return self.seqs[self.part[0]:self.part[1]]

    def then(self, part: tuple[int, int], todo: tuple[tuple[int, int], ...], dead_lettered: int) -> Inflight:
        return replace(self, id=part_id(self.token, self.version, part), part=part, todo=todo,
                       dead_lettered=dead_lettered, published_at=time.time())

    def encode(self) -> bytes:
        return orjson.dumps({"id": self.id, "token": self.token, "version": self.version, "seqs": self.seqs,
                             "part": self.part, "next": self.next.to_json(), "todo": self.todo,
                             "dead_lettered": self.dead_lettered, "published_at": self.published_at})

    @classmethod
    def decode(cls, data: bytes) -> Inflight:
        d = orjson.loads(data)
        return cls(id=d["id"], token=d["token"], version=int(d["version"]), seqs=tuple(d["seqs"]),
                   part=(int(d["part"][0]), int(d["part"][1])), next=Position.from_json(d["next"]),
                   todo=tuple((int(a), int(b)) for a, b in d.get("todo") or ()),
                   dead_lettered=int(d.get("dead_lettered", 0)), published_at=float(d.get("published_at", 0)))


def part_id(token: str, version: int, part: tuple[int, int]) -> str:
    return str(uuid.uuid5(_ID_NS, f"{token}:{version}:{part[0]}:{part[1]}"))


Entry = tuple[str, dict[str, bytes | str]]


class BatchState:
    """One consumer's in-flight batch and outcome stream."""

    def __init__(self, redis: aioredis.Redis, lease_key: str, inflight_key: str, outcomes_key: str) -> None:
        self.redis = redis
        self.lease_key = lease_key
        self.inflight_key = inflight_key
        self.outcomes_key = outcomes_key
        script = (resources.files("stoker.triggers.dbchanges") / "handoff.lua").read_text()
        self._handoff = redis.register_script(script)

    async def load(self) -> bytes:
        """The batch in flight as stored (b"" for none): compare-and-set compares these bytes."""
        raw: Any = await self.redis.get(self.inflight_key)
        return bytes(raw) if raw else b""

    async def handoff(self, token: str, expect: bytes, new: bytes, appends: Sequence[Entry] = (),
                      consumed_outcome: str = "") -> int:
        """Set the in-flight batch from `expect` to `new` (b"": none) and append the entries, atomically.

        1: done; 0: the lease is not held; -1: the batch in flight is not `expect`."""
        keys: list[str] = [self.lease_key, self.inflight_key, self.outcomes_key]
        args: list[Any] = [token, expect, new, consumed_outcome]
        for stream, fields in appends:
            keys.append(stream)
            args.append(len(fields))
            for k, v in fields.items():
                args.extend((k, v))
        return int(await self._handoff(keys=keys, args=args))

    async def next_outcome(self, after: str, block_ms: int) -> tuple[str, Outcome] | None:
        """The first outcome entry after entry id `after` ("0": from the start), waiting up to block_ms."""
        reply: Any = await self.redis.xread({self.outcomes_key: after}, count=1, block=block_ms)
        if not reply:
            return None
        _stream, entries = reply[0]
        entry_id, fields = entries[0]
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"o") or fields.get("o")
        return entry, decode_outcome(raw)

    async def drop_outcome(self, entry: str) -> None:
        """An outcome of an earlier batch, reported twice (e.g. its node died after reporting)."""
        await self.redis.xdel(self.outcomes_key, entry)
