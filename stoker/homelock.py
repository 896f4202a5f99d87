"""One platform per STOKER_HOME: `stoker up` holds an exclusive flock on STOKER_HOME/up.lock.

The lock dies with its process (even on SIGKILL), so a crashed platform never blocks the
next start. The file also says who holds it (pid), so that a second start can say where the
first one runs; endpoint.json is written and removed only by the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from stoker.errors import StokerError

LOCK_FILE = "up.lock"


class AlreadyRunning(StokerError):
    """Another `stoker up` holds this home."""


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, endpoint_file: Path) -> None:
        """Take the lock or raise AlreadyRunning saying where the holder runs; changes nothing if held."""
        from stoker.preflight import not_writable

        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise not_writable(self.home, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self._holder_message(endpoint_file)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                              time.gmtime())}).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def _holder_message(self, endpoint_file: Path) -> str:
        pid: object = "unknown"
        with contextlib.suppress(OSError, ValueError, AttributeError):
            pid = json.loads(self.path.read_text()).get("pid", "unknown")
        url = "still starting"
        with contextlib.suppress(OSError, ValueError, AttributeError, KeyError):
            url = str(json.loads(endpoint_file.read_text())["url"])
        return (f"stoker is already running on STOKER_HOME={self.home}: {url} (pid {pid}); use that one, "
                f"stop it first (Ctrl-C in its terminal, or kill {pid}), or set STOKER_HOME to another folder")
