"""A cgroup per worker: memory, CPU and processes bounded for its whole process tree.

The node agent (root) makes one cgroup per worker under `stoker/<node tag>/` in each
hierarchy it uses, sets its limits, and the new worker joins it right after fork, before
it drops its rights, so everything it ever starts is inside. The node then reads the
cgroup to
  - kill what an invocation left running (`stragglers`: every process that was not there
    when the worker became ready),
  - tell an out-of-memory kill of any process of the tree (`oom_kills`),
  - report the tree's peak memory (`peak_kb`), the ledger's max_memory_mb.

Levels, chosen once per node (`detect`):
  v2    the unified hierarchy, where its root offers the memory controller (memory.max,
        memory.swap.max = 0, cpu.weight + cpu.max, pids.max);
  v1    the memory, cpu and pids hierarchies, where they are writable (memory.limit_in_bytes
        and memsw, cpu.shares + cfs quota, pids.max);
  none  neither (not root, or no controllers): the rlimits of the sandbox alone.

CPU is shared as on Lambda: a share in proportion to memory (1,769 MB = one full CPU)
when CPUs are contended, and a quota of whole CPUs, at least one and at most the node's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
MB_PER_CPU = 1769
V1_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD_US = 100_000


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = right.split()
                if len(fields) >= 3 and fields[0] in ("cgroup", "cgroup2"):
                    out.append((left.split()[4], fields[0], fields[2].split(",")))
    except OSError:
        pass
    return out


def _v2_root() -> Path | None:
    for mnt, fstype, _ in _mounts():
        if fstype != "cgroup2":
            continue
        try:
            controllers = (Path(mnt) / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if "memory" in controllers and os.access(mnt, os.W_OK):
            return Path(mnt)
    return None


def _v1_roots() -> dict[str, Path] | None:
    found: dict[str, Path] = {}
    for mnt, fstype, opts in _mounts():
        if fstype != "cgroup":
            continue
        for controller in V1_CONTROLLERS:
            if controller in opts and controller not in found and os.access(mnt, os.W_OK):
                found[controller] = Path(mnt)
    return found if "memory" in found else None


@dataclass
class Hierarchy:
    """Where this node's worker cgroups live, at the level the host offers."""

    level: str  # v2 | v1 | none
    #: controller -> this node's directory ("unified" for v2)
    bases: dict[str, Path]
    reason: str = ""

    def describe(self) -> str:
        if self.level == "none":
            return f"none ({self.reason}; memory, CPU and processes are bounded per process by rlimits)"
        return f"{self.level} ({', '.join(sorted(self.bases))})"

    def make(self, name: str, memory_mb: int, processes: int) -> WorkerCgroup | None:
        """A new cgroup for one worker, its limits set; None at level none."""
        if self.level == "none":
            return None
        cg = WorkerCgroup(self.level, {c: base / name for c, base in self.bases.items()})
        try:
            cg.create(memory_mb, processes)
        except OSError:
            cg.remove()
            raise
        return cg

    def remove(self) -> None:
        for base in self.bases.values():
            _remove_tree(base)


def detect(tag: str) -> Hierarchy:
    """The cgroup level this node uses, with its own directory made (`stoker/TAG`)."""
    if os.geteuid() != 0:
        return Hierarchy("none", {}, "the node is not root")
    v2 = _v2_root()
    if v2 is not None:
        try:
            return Hierarchy("v2", {"unified": _v2_node_dir(v2, tag)})
        except OSError as e:
            log.warning("cgroup v2 is there but unusable (%s); trying v1", e)
    v1 = _v1_roots()
    if v1 is not None:
        bases = {}
        try:
            for controller, root in v1.items():
                base = root / "stoker" / tag
                base.mkdir(parents=True, exist_ok=True)
                if controller == "memory":
                    with contextlib.suppress(OSError):  # always 1 on recent kernels
                        (root / "stoker" / "memory.use_hierarchy").write_text("1")
                bases[controller] = base
            return Hierarchy("v1", bases)
        except OSError as e:
            return Hierarchy("none", {}, f"the cgroup v1 hierarchies are not writable: {e}")
    return Hierarchy("none", {}, "no cgroup hierarchy with the memory controller is writable")


def _v2_node_dir(root: Path, tag: str) -> Path:
    parent = root / "stoker"
    parent.mkdir(exist_ok=True)
    for directory in (root, parent):
        (directory / "cgroup.subtree_control").write_text("+memory +cpu +pids")
    base = parent / tag
    base.mkdir(exist_ok=True)
    (base / "cgroup.subtree_control").write_text("+memory +cpu +pids")
    return base


def _remove_tree(path: Path) -> None:
    """rmdir a cgroup and the ones below it, killing what is left in them first."""
    if not path.is_dir():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        _remove_tree(child)
    for _ in range(50):
        kill_all(path)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)  # its last processes are still exiting


def _procs(path: Path) -> set[int]:
    try:
        return {int(p) for p in (path / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def kill_all(path: Path) -> None:
    for pid in _procs(path):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class WorkerCgroup:
    """One worker's cgroup (one directory per v1 controller, or one v2 directory)."""

    def __init__(self, level: str, dirs: dict[str, Path]) -> None:
        self.level = level
        self.dirs = dirs
        self.memory_mb = 0
        self._oom_seen = 0
        self._final_oom: int | None = None
        self._final_peak: int | None = None
        self.baseline: set[int] = set()

    @property
    def _main(self) -> Path:
        return self.dirs.get("memory") or self.dirs["unified"]

    @property
    def join_files(self) -> list[str]:
        """The files a new process writes its pid to, to join (every hierarchy)."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def create(self, memory_mb: int, processes: int) -> None:
        self.memory_mb = memory_mb
        limit = memory_mb * 1024 * 1024
        cpus = os.cpu_count() or 1
        quota = min(cpus, max(1, math.ceil(memory_mb / MB_PER_CPU)))
        shares = max(2, memory_mb * 1024 // MB_PER_CPU)
        for d in self.dirs.values():
            d.mkdir(exist_ok=True)
        if self.level == "v2":
            d = self.dirs["unified"]
            _write(d / "memory.max", limit)
            _write(d / "memory.swap.max", 0, optional=True)
            _write(d / "memory.oom.group", 0, optional=True)
            _write(d / "cpu.weight", max(1, min(10000, 1 + (shares - 2) * 9999 // 262142)))
            _write(d / "cpu.max", f"{quota * CFS_PERIOD_US} {CFS_PERIOD_US}")
            _write(d / "pids.max", processes)
            return
        mem = self.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", limit)
        _write(mem / "memory.memsw.limit_in_bytes", limit, optional=True)  # no swap: there when swap accounting is on
        _write(mem / "memory.swappiness", 0, optional=True)
        if "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.shares", shares)
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", CFS_PERIOD_US)
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", quota * CFS_PERIOD_US)
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", processes)

    def adopt(self, pid: int) -> None:
        """Move a running process in (a worker forked from a warm template)."""
        for f in self.join_files:
            _write(Path(f), pid)

    def ready(self) -> None:
        """The worker has started: what runs now is the worker itself, never killed between invocations."""
        self.baseline = self.procs()
        self._oom_seen = self.oom_kill_count()

    def procs(self) -> set[int]:
        return _procs(self._main)

    def stragglers(self) -> list[int]:
        """Kill every process that joined after the worker was ready; their pids."""
        extra = [p for p in self.procs() if p not in self.baseline]
        for pid in extra:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return extra

    def oom_kill_count(self) -> int:
        if self._final_oom is not None:
            return self._final_oom
        name = "memory.events" if self.level == "v2" else "memory.oom_control"
        try:
            for line in (self._main / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def new_oom_kills(self) -> int:
        """Processes of the tree the kernel killed for memory since the last call."""
        count = self.oom_kill_count()
        new, self._oom_seen = count - self._oom_seen, count
        return max(0, new)

    def peak_kb(self) -> int:
        if self._final_peak is not None:
            return self._final_peak
        name = "memory.peak" if self.level == "v2" else "memory.max_usage_in_bytes"
        try:
            return int((self._main / name).read_text()) // 1024
        except (OSError, ValueError):
            return 0

    def remove(self) -> None:
        count = self.oom_kill_count()
        peak = self.peak_kb()
        self._final_oom, self._final_peak = count, peak  # still asked for after the worker is gone
        for d in self.dirs.values():
            _remove_tree(d)


def _write(path: Path, value: object, optional: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except FileNotFoundError:
        if not optional:
            raise
    except OSError:
        if not optional:
            raise


RCU_EXPEDITED = Path("/sys/kernel/rcu_expedited")


def expedite_migrations() -> None:
    """Moving a process into a cgroup waits for an RCU grace period when no other move was
    made lately (the kernel's cgroup_threadgroup_rwsem): 5 to 10 ms of every cold start.
    With expedited grace periods it takes a fraction of a millisecond; the node turns them
    on (a host-wide kernel setting, logged), unless STOKER_RCU_EXPEDITED=0."""
    if os.environ.get("STOKER_RCU_EXPEDITED", "1") == "0":
        log.info("STOKER_RCU_EXPEDITED=0: moving each new worker into its cgroup may add 5-10 ms to cold starts")
        return
    try:
        if RCU_EXPEDITED.read_text().strip() == "0":
            RCU_EXPEDITED.write_text("1")
            log.info("set kernel rcu_expedited = 1 (a worker joins its cgroup in a fraction of a millisecond, not "
                     "an RCU grace period); STOKER_RCU_EXPEDITED=0 leaves the kernel as it is")
    except OSError as e:
        log.info("could not expedite cgroup migrations (%s): cold starts may take 5-10 ms more", e)


def join_fds(fds: list[int]) -> None:
    """In a new worker (still root): join the cgroup the node made for it, through its
    cgroup.procs files opened earlier (the sandbox's view has no /sys)."""
    pid = str(os.getpid()).encode()
    for fd in fds:
        os.write(fd, pid)
