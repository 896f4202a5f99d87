"""Watching a folder with watchdog, and handing its events to asyncio.

On Linux this is inotify with full move events, so that each kind of arrival is told
apart: a file closed after writing (IN_CLOSE_WRITE) and a file renamed into the folder
(IN_MOVED_TO, from inside or outside it) are whole at once; a created or modified file
waits for one of those, or for its size to settle. `poll = true` uses watchdog's
polling observer (network file systems, where inotify sees nothing of other machines).

When the kernel's inotify queue overflows, events were lost: the watcher reports an
`overflow` so that the source rescans the folder. (watchdog rebuilds its watches on
overflow but does not tell its handlers; the emitter below adds that, defensively: if a
future watchdog changes its internals the periodic rescan still catches what was lost.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdog.events import FileSystemEvent
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

#: kinds of FileEvent
CHANGED = "changed"  # created or written: whole once closed, renamed in, or settled
WHOLE = "whole"  # closed after writing, or renamed into the folder
GONE = "gone"  # deleted, or renamed away
RESCAN = "rescan"  # events were lost (inotify overflow) or a folder moved in: rescan


@dataclass(frozen=True)
class FileEvent:
    kind: str
    path: str = ""


def _str(path: bytes | str) -> str:
    return os.fsdecode(path) if isinstance(path, bytes) else path


def translate(event: FileSystemEvent) -> list[FileEvent]:
    """What a watchdog event means for arrivals (directories matter only by what they hold)."""
    kind = event.event_type
    if kind == "overflow":
        return [FileEvent(RESCAN)]
    if event.is_directory:
        return [FileEvent(RESCAN)] if kind == "moved" and event.dest_path and not event.src_path else []
    src, dest = _str(event.src_path), _str(event.dest_path)
    if kind in ("created", "modified"):
        return [FileEvent(CHANGED, src)]
    if kind == "closed":
        return [FileEvent(WHOLE, src)]
    if kind == "deleted":
        return [FileEvent(GONE, src)]
    if kind == "moved":
        out = [FileEvent(GONE, src)] if src else []
        if dest:
            out.append(FileEvent(WHOLE, dest))
        return out
    return []  # opened, closed without writing, attributes


class QueueOverflowEvent(FileSystemEvent):
    event_type = "overflow"


class _Handler:
    """Runs in watchdog's thread: passes each event to the asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[FileEvent], None]) -> None:
        self.loop = loop
        self.deliver = deliver

    def dispatch(self, event: FileSystemEvent) -> None:
        for item in translate(event):
            try:
                self.loop.call_soon_threadsafe(self.deliver, item)
            except RuntimeError:  # the loop is closing
                return


def _inotify_observer() -> BaseObserver:
    from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver

    class OverflowReportingEmitter(InotifyFullEmitter):
        def on_thread_start(self) -> None:
            super().on_thread_start()
            group: Any = getattr(self, "_inotify", None)
            rebuild = getattr(group, "on_queue_overflow", None)
            if group is None or rebuild is None:
                log.warning("this watchdog does not report inotify overflows; relying on periodic rescans")
                return

            def overflowed() -> None:
                rebuild()
                self.queue_event(QueueOverflowEvent(self.watch.path))

            group.on_queue_overflow = overflowed

    observer = InotifyObserver(generate_full_events=True)
    if hasattr(observer, "_emitter_class"):
        observer._emitter_class = OverflowReportingEmitter
    return observer


class FolderWatcher:
    """A watchdog observer on one folder, delivering FileEvents on the running loop."""

    def __init__(self, folder: str, recursive: bool, poll: bool, deliver: Callable[[FileEvent], None],
                 poll_interval: float = 1.0) -> None:
        self.folder = folder
        self.recursive = recursive
        self.poll = poll
        self.deliver = deliver
        self.poll_interval = poll_interval
        self._observer: BaseObserver | None = None

    @property
    def mode(self) -> str:
        return type(self._observer).__name__ if self._observer else "stopped"

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.poll:
            observer: BaseObserver = PollingObserver(timeout=self.poll_interval)
        elif sys.platform.startswith("linux"):
            observer = _inotify_observer()
        else:
            from watchdog.observers import Observer

            observer = Observer()
        handler = _Handler(loop, lambda event: self.deliver(event))
        observer.schedule(handler, self.folder, recursive=self.recursive)  # type: ignore[arg-type]
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def simulate_overflow(self) -> None:
        """Call the emitters' overflow hook as the kernel's IN_Q_OVERFLOW does (for tests)."""
        observer = self._observer
        for emitter in list(getattr(observer, "emitters", ())):
            group = getattr(emitter, "_inotify", None)
            if group is not None:
                group.on_queue_overflow()
