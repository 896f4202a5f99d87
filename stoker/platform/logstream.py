"""Function logs: chunks of an invocation's lines on the stream `{p}:logs:{function}`.

A node writes one chunk per invocation (START ... END, REPORT), in the same atomic
hand-off as the result. Each stream is trimmed by length as it is written and by age
by the scheduler (STOKER_LOG_RETENTION), so logs survive a restart with the Redis AOF.
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


async def read_logs(redis: aioredis.Redis, keys: Keys, function: str, *, since_ms: int | None = None,
                    until_ms: int | None = None, tail: int | None = None,
                    request_id: str | None = None, max_entries: int = 10_000) -> tuple[list[LogLine], str]:
    """Lines oldest first, and the stream id to follow from."""
    stream = keys.logs(function)
    start = str(since_ms) if since_ms is not None else "-"
    end = str(until_ms) if until_ms is not None else "+"
    entries: Any
    if tail is not None and since_ms is None and request_id is None:
        # enough chunks from the end to hold `tail` lines (a chunk holds at least 3)
        newest_first: Any = await redis.xrevrange(stream, end, start, count=max(1, tail))
        entries = list(reversed(newest_first))
    else:
        entries = await redis.xrange(stream, start, end, count=max_entries)
    lines = [line for e in entries for line in _lines_of(e, request_id)]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    last = entries[-1][0].decode() if entries else (await _last_id(redis, stream))
    return lines, last


async def _last_id(redis: aioredis.Redis, stream: str) -> str:
    last: Any = await redis.xrevrange(stream, "+", "-", count=1)
    return last[0][0].decode() if last else "0-0"


async def follow(redis: aioredis.Redis, keys: Keys, function: str, after: str,
                 request_id: str | None = None) -> AsyncIterator[LogLine]:
    """New lines as they are written, forever (the caller stops iterating to end it)."""
    stream = keys.logs(function)
    last = after
    while True:
        response: Any = await redis.xread({stream: last}, count=500, block=5000)
        for _stream, entries in response or ():
            for entry in entries:
                last = entry[0].decode()
                for line in _lines_of(entry, request_id):
                    yield line
