"""The processed-files record: what fired for each file, kept durably in Redis.

One hash per function and watched folder, field = the file's path below the folder:

    {p}:files:{function}:{folder_id}            hash: path -> JSON FileRecord
    {p}:files:{function}:{folder_id}:outcomes   stream: final outcomes of its events
                                                (consumer group "files", see source.py)

folder_id is the first 16 hex digits of the SHA-256 of the folder's absolute path. The
embedded Redis keeps an append-only file, so the record survives restarts of stoker and
of Redis. A record is "sent" from the moment its event is published (the record and the
intake entry are written in one atomic step) until the event's final outcome arrives;
then it is "done", or deleted once the file was moved or deleted by on_success /
on_failure (so a new file of the same name fires again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
import redis.asyncio as aioredis

from stoker.platform.bus import Bus, Guard
from stoker.platform.keys import Keys

SENT = "sent"
DONE = "done"


@dataclass(frozen=True)
class FileRecord:
    state: str  # sent | done
    size: int
    mtime_ns: int
    sha256: str
    #: the invocation id of the file's latest event
    id: str
    #: when that event was published (epoch seconds)
    at: float
    #: its final outcome, once done: succeeded | failed | timed_out | dead_lettered
    status: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | None) -> FileRecord | None:
        if not raw:
            return None
        try:
            data: dict[str, Any] = orjson.loads(raw)
            return cls(**data)
        except (orjson.JSONDecodeError, TypeError):
            return None

    def same_file(self, size: int, mtime_ns: int) -> bool:
        return self.size == size and self.mtime_ns == mtime_ns

    def done(self, status: str | None = None, size: int | None = None, mtime_ns: int | None = None) -> FileRecord:
        return replace(self, state=DONE, status=status or self.status,
                       size=self.size if size is None else size,
                       mtime_ns=self.mtime_ns if mtime_ns is None else mtime_ns)


class FileRecords:
    """The record of one function's folder. Every write is a compare-and-set of what was read."""

    def __init__(self, redis: aioredis.Redis, bus: Bus, keys: Keys, function: str, folder_id: str) -> None:
        self.redis = redis
        self.bus = bus
        self.key = keys.custom("files", function, folder_id)
        self.outcomes = keys.custom("files", function, folder_id, "outcomes")

    async def get(self, rel: str) -> tuple[bytes | None, FileRecord | None]:
        raw: Any = await self.redis.hget(self.key, rel)
        return raw, FileRecord.decode(raw)

    async def all(self) -> dict[str, tuple[bytes, FileRecord | None]]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.key)
        return {k.decode(): (v, FileRecord.decode(v)) for k, v in raw.items()}

    def guard(self, rel: str, read: bytes | None, new: FileRecord | None) -> Guard:
        return Guard(self.key, rel, read, new.encode() if new is not None else None)

    async def swap(self, rel: str, read: bytes | None, new: FileRecord | None) -> bool:
        """Replace (or with None delete) the record if it still is what was read."""
        return await self.bus.publish_guarded(self.guard(rel, read, new))
