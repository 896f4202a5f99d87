"""Function logs: chunks of an invocation's lines on the stream `{p}:logs:{function}`.

A node writes one chunk per try (START ... END, REPORT), in the same atomic hand-off as
the result; its lines are capped per invocation (`output_limit` in stoker.toml, 1 MB by
default) with a marker line saying how much was dropped. Each stream is trimmed by length
as it is written (STOKER_LOG_MAX_ENTRIES chunks) and by age by the scheduler
(STOKER_LOG_RETENTION seconds), so logs survive a restart with the Redis AOF.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis

from stoker.platform.keys import Keys


def encode_logs(request_id: str, lines: list[tuple[int, str]]) -> bytes:
    return msgpack.packb((request_id, lines), use_bin_type=True)


@dataclass(frozen=True)
class LogLine:
    timestamp_ms: int
    request_id: str
    text: str

    def render(self) -> str:
        t = self.timestamp_ms / 1000
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{self.timestamp_ms % 1000:03d}Z"
        return f"{stamp} {self.text}"

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp_ms, "request_id": self.request_id, "message": self.text}


def _lines_of(entry: Any, request_id: str | None = None) -> list[LogLine]:
    _id, fields = entry
    raw = fields.get(b"l") or fields.get("l")
    if raw is None:
        return []
    rid, lines = msgpack.unpackb(raw, raw=False)
    if request_id is not None and rid != request_id:
        return []
    return [LogLine(int(ts), rid, text) for ts, text in lines]


PAGE = 1000


async def read_logs(redis: aioredis.Redis, keys: Keys, function: str, *, since_ms: int | None = None,
                    until_ms: int | None = None, tail: int | None = None,
                    request_id: str | None = None, max_entries: int = 10_000) -> tuple[list[LogLine], str]:
    """Lines oldest first, and the stream id to follow from.

    With `request_id`, the whole range is searched (page by page) for that invocation's
    lines; with `since_ms`, up to `max_entries` chunks from then on; otherwise the newest
    `max_entries` chunks (or just enough for `tail` lines).
    """
    stream = keys.logs(function)
    # stream ids are ms since 1970 and cannot be negative: nothing is older than 0
    start = str(max(0, since_ms)) if since_ms is not None else "-"
    end = str(max(0, until_ms)) if until_ms is not None else "+"
    entries: Any
    lines: list[LogLine] = []
    last: str | None = None
    if request_id is not None:
        while True:
            page: Any = await redis.xrange(stream, start, end, count=PAGE)
            for entry in page:
                lines.extend(_lines_of(entry, request_id))
            if page:
                last = page[-1][0].decode()
                start = "(" + last
            if len(page) < PAGE:
                break
    else:
        if since_ms is None:
            wanted = max(1, tail) if tail is not None else max_entries
            newest_first: Any = await redis.xrevrange(stream, end, start, count=min(wanted, max_entries))
            entries = list(reversed(newest_first))
        else:
            entries = await redis.xrange(stream, start, end, count=max_entries)
        lines = [line for e in entries for line in _lines_of(e)]
        if entries:
            last = entries[-1][0].decode()
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return lines, last if last is not None else await _last_id(redis, stream)


async def _last_id(redis: aioredis.Redis, stream: str) -> str:
    last: Any = await redis.xrevrange(stream, "+", "-", count=1)
    return last[0][0].decode() if last else "0-0"


async def follow(redis: aioredis.Redis, keys: Keys, function: str, after: str, request_id: str | None = None,
                 block_ms: int = 5000) -> AsyncIterator[list[LogLine]]:
    """Batches of new lines as they are written, forever (the caller stops iterating to end it).
    An empty batch means nothing came for `block_ms`: a chance to keep an idle connection alive."""
    stream = keys.logs(function)
    last = after
    while True:
        response: Any = await redis.xread({stream: last}, count=500, block=block_ms)
        batch: list[LogLine] = []
        for _stream, entries in response or ():
            for entry in entries:
                last = entry[0].decode()
                batch.extend(_lines_of(entry, request_id))
        yield batch
