"""A one-line progress indicator on stderr for commands that wait on the platform (a deploy that
installs requirements can take minutes): what is happening and for how long, redrawn in place
on a terminal; elsewhere one line at the start when `announce` (a slow step), else nothing, so
that logs and pipes stay clean."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

FRAMES = "|/-\\"


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.25,
                 announce: bool = False) -> None:
        self.label = label
        self.announce = announce
        self.stream = stream or sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the indicator and the lines printed above it
        self._thread: threading.Thread | None = None
        self.live = self.stream.isatty()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        if self.live:
            self._thread = threading.Thread(target=self._draw, name="progress", daemon=True)
            self._thread.start()
        elif self.announce:
            print(f"{self.label} ...", file=self.stream, flush=True)
        return self

    def _draw(self) -> None:
        frame = 0
        while not self._stop.wait(self.interval):
            frame += 1
            with self._lock:
                self.stream.write(f"\r{FRAMES[frame % len(FRAMES)]} {self.label} ({self.elapsed():.0f} s)\033[K")
                self.stream.flush()

    def line(self, text: str) -> None:
        """Print a line of what is happening (the installer's output) above the indicator."""
        with self._lock:
            if self.live:
                self.stream.write("\r\033[K")
            self.stream.write(f"  {text}\n")
            self.stream.flush()

    def __exit__(self, kind: type[BaseException] | None, _error: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")  # the result line replaces the indicator
            self.stream.flush()
