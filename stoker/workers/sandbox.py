"""The process sandbox, applied in a new worker between fork and the handler's import.

What every worker gets (the `process` level):
  - its own session and process group, so a timeout kills everything it started;
  - death with its parent (PR_SET_PDEATHSIG), so no worker outlives its node agent;
  - stdout and stderr on the node's log pipe, stdin on /dev/null, no other inherited fd;
  - a scrubbed environment: the function's variables and the documented Lambda ones;
  - its own empty working directory and TMPDIR;
  - resource limits: address space from `memory`, open files.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def set_process_name(name: str) -> None:
    libc().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def vm_size_bytes() -> int:
    """This process's current address space (VmSize), the base the memory limit adds to."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def apply(spec: dict[str, Any], log_fd: int, keep_fds: tuple[int, ...]) -> None:
    """Confine the current (new) process. Runs in the child after fork; raises on failure."""
    os.setsid()
    die_with_parent()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    keep = sorted({0, 1, 2, *keep_fds})
    lo = 3
    for fd in keep:
        if fd >= lo:
            os.closerange(lo, fd)
            lo = fd + 1
    os.closerange(lo, 65536)

    workdir = spec["workdir"]
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    tmpdir = spec.get("tmpdir") or workdir
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    os.chdir(workdir)

    os.environ.clear()
    os.environ.update(spec["env"])
    os.environ["TMPDIR"] = tmpdir

    limits = spec.get("limits", {})
    if limits.get("address_space_mb"):
        _set_limit(resource.RLIMIT_AS, vm_size_bytes() + int(limits["address_space_mb"]) * 1024 * 1024)
    if limits.get("open_files"):
        _set_limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    set_process_name(spec.get("process_name", "stoker-worker"))
