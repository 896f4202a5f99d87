"""Arrivals: files that appeared or changed, until they are whole.

A file is whole when it was closed after writing or renamed into the folder (the
watcher says so), or, for writers that keep it open and for polling, when its size and
modification time have held still for the settle time. Until then it is pending here.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

#: a file found by a scan is watched at least this long (or the settle time, if shorter)
MIN_OBSERVE_S = 0.5


@dataclass
class Pending:
    size: int
    mtime_ns: int
    #: when the size or modification time last changed (monotonic seconds)
    since: float


def stat_key(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file (symbolic links are not followed), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class Arrivals:
    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self.pending: dict[str, Pending] = {}

    def changed(self, path: str) -> None:
        """Created or written to: wait until it is whole (restarts its settle time)."""
        key = stat_key(path)
        if key is None:
            self.pending.pop(path, None)
            return
        self.pending[path] = Pending(key[0], key[1], self.clock())

    def settling_since(self, path: str, mtime_ns: int) -> None:
        """A file found by a scan: whole once its modification time is settle seconds old."""
        key = stat_key(path)
        if key is None:
            return
        # however old its modification time (copies may keep the original's), it must still
        # be seen to hold still for a moment before it counts as whole
        age = max(0.0, time.time() - mtime_ns / 1e9)
        observe = min(self.settle, MIN_OBSERVE_S)
        self.pending[path] = Pending(key[0], key[1], self.clock() - min(age, self.settle - observe))

    def forget(self, path: str) -> None:
        self.pending.pop(path, None)

    def forget_below(self, folder: str) -> None:
        prefix = folder.rstrip(os.sep) + os.sep
        for path in [p for p in self.pending if p.startswith(prefix)]:
            del self.pending[path]

    def settled(self) -> list[str]:
        """Pending files whose size and modification time held still for the settle time."""
        now = self.clock()
        out = []
        for path, seen in list(self.pending.items()):
            key = stat_key(path)
            if key is None:
                del self.pending[path]
            elif key != (seen.size, seen.mtime_ns):
                seen.size, seen.mtime_ns, seen.since = key[0], key[1], now
            elif now - seen.since >= self.settle:
                del self.pending[path]
                out.append(path)
        return out
