"""Which isolation a node gives its workers: decided once at start, reported, applied per function.

    STOKER_ISOLATION         auto (default): `namespace` where this machine allows it, else
                             `process`; `namespace`: the node refuses to start without it;
                             `process`: never namespaces
    STOKER_WORKER_UID_BASE   when stoker runs as root, each worker runs as uid and gid
                             BASE + its pid (default 2000000000, a range no distribution uses)
    STOKER_WORKER_TMP_MB     the size of a namespace worker's /tmp (default 512, as Lambda)
    STOKER_SANDBOX_BINDS     more host directories namespace workers see read-only
                             (colon-separated), e.g. a language runtime installed elsewhere

STOKER_ISOLATION is the operator's floor. A function's manifest may ask for more, never for
less: `"namespace"` (then a node without namespaces refuses to run it rather than silently
give less) and `network = false` (a network namespace with only `lo`); `isolation =
"process"` is refused at deploy unless the platform runs with STOKER_ISOLATION=process,
and a node runs such a function at its own level all the same.

The node probes namespaces by running `python -m stoker.workers.isolation --probe DIR`,
which builds the same view a worker gets and reports what worked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stoker.errors import ConfigError
from stoker.workers import linux, mountview, sandbox

LEVELS = ("auto", "namespace", "process")
PROBE_TIMEOUT_S = 30.0


class IsolationUnavailable(Exception):
    """A function asks for isolation this node cannot give."""


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} is not valid: give a whole number from {low} to {high}")
    return int(raw)


@dataclass(frozen=True)
class NodeIsolation:
    """What this node can give; `for_function` turns it into a spawn spec's `isolation`."""

    level: str  # the strongest available: namespace | process
    network_namespaces: bool
    reason: str = ""  # why namespaces are not used, when they are not
    uid_base: int | None = sandbox.DEFAULT_UID_BASE
    root_dir: str = ""
    hidden: tuple[str, ...] = ()
    tmp_mb: int = 512
    binds: tuple[str, ...] = field(default_factory=tuple)

    @property
    def drops_privileges(self) -> bool:
        return self.uid_base is not None and os.geteuid() == 0

    def describe(self) -> str:
        who = (f"workers run as their own uid (from {self.uid_base})" if self.drops_privileges
               else "workers run as the node's user (start stoker as root to give each worker its own uid)")
        if self.level == "namespace":
            net = "network namespaces for network = false" if self.network_namespaces else \
                "no network namespaces: functions with network = false cannot run here"
            return f"namespace (private mount, PID and IPC namespaces; {net}; {who})"
        return f"process ({self.reason}; {who})"

    def for_function(self, requested: str, network: bool) -> dict[str, Any]:
        # the node's level is the floor: a manifest may ask for more, never for less (a function
        # asking for `process` on a namespace node runs in namespaces; deploys refuse it first)
        level = self.level if requested in ("auto", "", None, "process") else requested
        if level == "namespace" and self.level != "namespace":
            raise IsolationUnavailable(
                f"the function asks for isolation = \"namespace\", which this node cannot give ({self.reason}); "
                "deploy it with isolation = \"auto\" to run it with process isolation, or run it on a node "
                "with namespaces")
        if not network and not self.network_namespaces:
            raise IsolationUnavailable(
                "the function asks for network = false, but this node cannot create network namespaces "
                f"({self.reason or 'unshare(CLONE_NEWNET) is refused'})")
        return {"level": level, "network": network, "uid_base": self.uid_base, "root_dir": self.root_dir,
                "hidden": list(self.hidden), "tmp_mb": self.tmp_mb, "binds": list(self.binds)}


def settings_from_env(home: Path) -> dict[str, Any]:
    mode = os.environ.get("STOKER_ISOLATION", "auto") or "auto"
    if mode not in LEVELS:
        raise ConfigError(f"STOKER_ISOLATION={mode!r} is not valid: use one of {', '.join(LEVELS)}")
    binds = tuple(b for b in os.environ.get("STOKER_SANDBOX_BINDS", "").split(":") if b)
    for b in binds:
        if not os.path.isabs(b):
            raise ConfigError(f"STOKER_SANDBOX_BINDS: {b!r} is not an absolute path")
    return {
        "mode": mode,
        "uid_base": _env_int("STOKER_WORKER_UID_BASE", sandbox.DEFAULT_UID_BASE, 1000, 2**32 - 2**23),
        "tmp_mb": _env_int("STOKER_WORKER_TMP_MB", 512, 1, 1024 * 1024),
        "binds": binds,
        "hidden": (str(home.resolve()),),
    }


def close_data_directory(home: Path, node_dir: Path) -> None:
    """The data directory and the node's folders are the platform's alone (mode 0700)."""
    for d in (home, node_dir, node_dir / "bundles", node_dir / "work"):
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)


def detect(home: Path, node_dir: Path) -> NodeIsolation:
    """Probe this machine and decide the node's isolation (raises ConfigError if
    STOKER_ISOLATION=namespace cannot be had)."""
    conf = settings_from_env(home)
    close_data_directory(home, node_dir)
    common = {"uid_base": conf["uid_base"], "root_dir": str(node_dir / "sandbox-root"), "hidden": conf["hidden"],
              "tmp_mb": conf["tmp_mb"], "binds": conf["binds"]}
    if conf["mode"] == "process":
        return NodeIsolation(level="process", network_namespaces=_network_namespaces_work(),
                             reason="STOKER_ISOLATION=process", **common)
    result = probe(node_dir, conf["uid_base"])
    if result.get("namespace"):
        return NodeIsolation(level="namespace", network_namespaces=bool(result.get("network")), **common)
    reason = f"namespaces are not available: {result.get('error') or 'the probe failed'}"
    if conf["mode"] == "namespace":
        raise ConfigError(f"STOKER_ISOLATION=namespace, but {reason}. Run the node as root, allow user "
                          "namespaces (sysctl kernel.unprivileged_userns_clone=1), or set STOKER_ISOLATION=auto")
    return NodeIsolation(level="process", network_namespaces=False, reason=reason, **common)


def probe(node_dir: Path, uid_base: int) -> dict[str, Any]:
    """Build a worker's view in a throwaway process; {"namespace", "network", "error"}."""
    work = Path(tempfile.mkdtemp(prefix=".probe-", dir=node_dir))
    try:
        done = subprocess.run([sys.executable, "-m", "stoker.workers.isolation", "--probe", str(work), str(uid_base)],
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"namespace": False, "error": (done.stderr.strip().splitlines() or ["the probe crashed"])[-1]}
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return {"namespace": False, "error": f"the probe failed: {e}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _network_namespaces_work() -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            linux.unshare(linux.CLONE_NEWNET)
            linux.loopback_up()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _try_worker_view(shared: mountview.SharedRoot, uid_base: int, network: bool) -> str:
    """In a child that is PID 1 of a new PID namespace, do what a namespace worker does."""
    r, w = os.pipe()
    if mountview.in_user_namespace():
        pid = os.fork()
    else:
        with linux.children_in_new_pid_namespace():
            pid = os.fork()
    if pid == 0:
        message = b"ok"
        try:
            os.close(r)
            if os.getpid() != 1:
                sandbox.fork_into_new_pid_namespace()  # returns in the new namespace's init
            host_pid = linux.host_pid_and_parent()[0]
            uid = sandbox.worker_uid(uid_base, host_pid)
            linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWIPC | (linux.CLONE_NEWNET if network else 0))
            mountview.enter(shared, "/usr", uid if uid is not None else os.getuid(),
                            uid if uid is not None else os.getgid(), tmp_mb=1, shm_mb=1)
            if network:
                linux.loopback_up()
            sandbox.drop_privileges(uid)
            if not os.path.isdir(mountview.TASK_ROOT) or os.path.exists("/root/.stoker"):
                message = b"the private view is not what it should be"
        except BaseException as e:
            message = str(e).encode()[:500] or type(e).__name__.encode()
        finally:
            os.write(w, message)
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return answer.decode(errors="replace") or "the probe's child died"


def _probe_main(root_dir: str, uid_base: int) -> dict[str, Any]:
    try:
        shared = mountview.shared_root(root_dir, hidden=())
    except (OSError, mountview.MountViewError) as e:
        return {"namespace": False, "network": False, "error": str(e)}
    error = ""
    for network in (True, False):
        try:
            answer = _try_worker_view(shared, uid_base, network)
        except OSError as e:
            answer = str(e)
        if answer == "ok":
            return {"namespace": True, "network": network, "error": error}
        error = answer
    return {"namespace": False, "network": False, "error": error}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        print(json.dumps(_probe_main(sys.argv[2], int(sys.argv[3]))))
    else:
        print("usage: python -m stoker.workers.isolation --probe DIR UID_BASE", file=sys.stderr)
        sys.exit(2)
