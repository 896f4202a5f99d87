"""Log lines of one invocation: assembled from raw output, timestamped, capped in size.

A function that floods its output never blocks or crashes the node: past the cap
(`output_limit`, 1 MB by default) bytes are counted and dropped, and one marker line
says how much was lost.
"""

from __future__ import annotations

import time

MAX_LINE = 256 * 1024


class LogBuffer:
    __slots__ = ("_partial", "dropped", "limit", "lines", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[tuple[int, str]] = []
        self.size = 0
        self.dropped = 0
        self._partial = b""

    def add_line(self, text: str, ts_ms: int | None = None) -> None:
        """A platform line (START, END, REPORT): always kept, never counted against the cap."""
        self.lines.append((ts_ms if ts_ms is not None else int(time.time() * 1000), text))

    def feed(self, data: bytes) -> None:
        if self.size >= self.limit:
            self.dropped += len(data)
            return
        room = self.limit - self.size
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self.size += len(data)
        buf = self._partial + data
        *complete, self._partial = buf.split(b"\n")
        now = int(time.time() * 1000)
        for raw in complete:
            self._append(raw, now)
        if len(self._partial) > MAX_LINE:
            self._append(self._partial, now)
            self._partial = b""

    def _append(self, raw: bytes, ts_ms: int) -> None:
        if len(raw) > MAX_LINE:
            raw = raw[:MAX_LINE] + b" [line truncated]"
        self.lines.append((ts_ms, raw.decode("utf-8", "replace").rstrip("\r")))

    def finish(self) -> None:
        """Flush a last line without newline, and say if anything was dropped."""
        if self._partial:
            self._append(self._partial, int(time.time() * 1000))
            self._partial = b""
        if self.dropped:
            self.add_line(f"[stoker] output truncated: {self.dropped:,} bytes over the {self.limit:,}-byte "
                          "limit of one invocation were dropped (output_limit in stoker.toml)")
            self.dropped = 0

    def take(self) -> list[tuple[int, str]]:
        lines, self.lines = self.lines, []
        return lines

    def tail_text(self, max_bytes: int = 4096) -> str:
        text = "\n".join(line for _, line in self.lines) + "\n"
        data = text.encode()
        return data[-max_bytes:].decode("utf-8", "ignore")
