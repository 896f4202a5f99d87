"""Running a dependency installer (pip, npm) at deploy time: its output read line by line, handed to
a progress callback as it comes (streamed to `stoker deploy`) and kept for the error message, with
a deadline after which it is killed."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: receives the installer's output, line by line, while a deploy builds
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Installed:
    returncode: int
    output: list[str]
    timed_out: bool

    def tail(self, lines: int) -> list[str]:
        return self.output[-lines:]


def run_installer(command: list[str], env: dict[str, str], timeout: float, progress: Progress | None = None,
                  cwd: Path | None = None) -> Installed:
    """Run `command` (stdout and stderr as one stream); raises OSError when it cannot start."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    output: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            output.append(line)
            if progress is not None:
                progress(line)
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Installed(code, output, expired.is_set())
