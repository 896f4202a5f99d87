"""The sandbox, applied in a new worker between fork and the handler's import (or exec).

Every worker (both levels):
  - its own session and process group, so a timeout kills everything it started;
  - death with its parent (PR_SET_PDEATHSIG), so no worker outlives its node agent;
  - stdout and stderr on the node's log pipe, stdin on /dev/null, no other inherited fd;
  - a scrubbed environment: the function's variables and the documented Lambda ones;
  - its own empty working directory and TMPDIR;
  - resource limits: address space from `memory`, open files, processes, CPU time, no core
    files; set-uid programs cannot raise its rights (PR_SET_NO_NEW_PRIVS);
  - when stoker runs as root, an unprivileged uid and gid of its own (`uid_base` + its
    pid): it cannot signal, trace or read another worker, and the data directory (mode
    0700, owned by root) is closed to it.

`process` level: the above, on the host's file system. The worker reaches its bundle and
working directory through descriptors opened before the uid was dropped
(`/proc/<pid>/fd/<n>`, only where the real path is closed to it).

`namespace` level: the above, plus private mount, PID and IPC namespaces (and a network
namespace with only `lo` when `network = false`): the worker sees the view described in
`stoker.workers.mountview`. The zygote forks the worker as PID 1 of a new PID namespace;
that process stays a small init that reaps orphans and exits with the worker's status, and
the worker itself is its child. Killing the init (the pid the node holds) ends every
process of the namespace, whatever it did to escape its process group.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
from typing import Any

from stoker.workers import cgroups, linux, mountview
from stoker.workers.mountview import TASK_ROOT, MountViewError

DEFAULT_UID_BASE = 2_000_000_000
#: an init reports a worker killed by signal N as exit status 128 + N (it cannot die of it)
SIGNAL_EXIT_BASE = 128


class SandboxError(Exception):
    """The sandbox cannot be applied as asked; the message says why and what to do."""


# kept for the modules that import them from here
die_with_parent = linux.die_with_parent
set_process_name = linux.set_process_name


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


def _set_limit(which: int, soft: int, hard: int | None = None) -> None:
    _soft, current_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard) if hard != resource.RLIM_INFINITY else current_hard
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def worker_uid(uid_base: int | None, host_pid: int) -> int | None:
    """The uid a worker runs as when stoker runs as root; None when it keeps the node's."""
    if uid_base is None or os.geteuid() != 0:
        return None
    return int(uid_base) + host_pid


# -- what every worker gets -----------------------------------------------------------------

def _own_session_and_fds(log_fd: int, keep_fds: tuple[int, ...]) -> None:
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


def drop_privileges(uid: int | None) -> None:
    """To the worker's own uid (root), or to no capabilities (a user namespace)."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif mountview.in_user_namespace():
        linux.drop_capabilities()
    linux.no_new_privileges()
    die_with_parent()  # a change of credentials clears it


def _parent_alive(expected: int, stat_fd: int | None = None) -> bool:
    """Whether our parent is still the process that forked us (it may have died before we
    asked to die with it). Reads the host's /proc, through `stat_fd` once /proc is replaced."""
    if not expected:
        return True
    if stat_fd is None:
        return os.getppid() == expected
    data = os.pread(stat_fd, 4096, 0).decode()
    return int(data[data.rindex(")") + 2:].split()[1]) == expected


def cpu_life(per_invocation: int) -> int:
    """CPU seconds a worker may use over its whole life (its hard RLIMIT_CPU, which the function
    cannot raise): a Python worker retires itself before reaching it, and a new one starts."""
    return max(3600, 20 * per_invocation)


def _limits(spec: dict[str, Any], extra_processes: int) -> None:
    limits = spec.get("limits") or {}
    if limits.get("address_space_mb"):
        _set_limit(resource.RLIMIT_AS, vm_size_bytes() + int(limits["address_space_mb"]) * 1024 * 1024)
    if limits.get("open_files"):
        _set_limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if limits.get("processes"):
        _set_limit(resource.RLIMIT_NPROC, int(limits["processes"]) + extra_processes)
    if limits.get("cpu_seconds"):
        # the hard limit is the worker's whole life (the function cannot raise it); the Python
        # runtime renews the soft budget before each invocation and retires the worker before
        # it reaches the hard one (see runtime.serve_loaded)
        life = int(limits.get("cpu_seconds_life") or cpu_life(int(limits["cpu_seconds"])))
        per_invocation = int(limits["cpu_seconds"]) if spec.get("mode", "fork") == "fork" else life
        _set_limit(resource.RLIMIT_CPU, per_invocation, life)
    _set_limit(resource.RLIMIT_CORE, 0)


def _remap(value: str, mapping: dict[str, str]) -> str:
    """`value` as the worker sees it; the longest matching host path wins."""
    for host, seen in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
        if value == host or value.startswith(host + "/"):
            return seen + value[len(host):]
    return value


def _environment(spec: dict[str, Any], mapping: dict[str, str]) -> None:
    """The spec's environment and paths as the worker sees them."""
    for key in ("task_root", "workdir", "tmpdir"):
        if spec.get(key):
            spec[key] = _remap(str(spec[key]), mapping)
    if spec.get("argv"):
        spec["argv"] = [_remap(str(a), mapping) for a in spec["argv"]]
    env = {k: _remap(str(v), mapping) for k, v in spec["env"].items()}
    env["TMPDIR"] = spec.get("tmpdir") or spec["workdir"]
    env["HOME"] = spec["workdir"]
    env["LAMBDA_TASK_ROOT"] = spec["task_root"]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(spec["workdir"])


def apply(spec: dict[str, Any], log_fd: int, keep_fds: tuple[int, ...]) -> None:
    """Confine the current (new) process. Runs in the child after fork; raises on failure.

    At the namespace level the process that calls this stays behind as the namespace's
    init and never returns; the worker that returns is its child."""
    isolation = spec.get("isolation") or {}
    _enter_node_network(isolation)
    # opened now, while /sys is in view; joined once the sandbox is set up (see _join_cgroup)
    isolation["_cgroup_fds"] = _open_cgroup(isolation)
    _own_session_and_fds(log_fd, (*keep_fds, *isolation["_cgroup_fds"]))
    os.umask(0o022)
    if isolation.get("level") == "namespace":
        mapping = _enter_namespaces(spec, isolation)
        extra_processes = 1  # the init counts against the worker's uid
    else:
        mapping = _process_level(spec, isolation)
        extra_processes = 0
    _environment(spec, mapping)
    _limits(spec, extra_processes)
    set_process_name(spec.get("process_name", "stoker-worker"))


def _enter_node_network(isolation: dict[str, Any]) -> None:
    """The network namespace the node prepared for this worker (still root here)."""
    if not isolation.get("netns"):
        return
    try:
        fd = os.open(str(isolation["netns"]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        finally:
            os.close(fd)
    except OSError as e:
        raise SandboxError(f"cannot join the network the node prepared for the worker: {e}") from None


def _open_cgroup(isolation: dict[str, Any]) -> list[int]:
    try:
        return [os.open(str(f), os.O_WRONLY | os.O_CLOEXEC) for f in isolation.get("cgroup") or ()]
    except OSError as e:
        raise SandboxError(f"cannot join the cgroup the node made for the worker: {e}") from None


def _join_cgroup(isolation: dict[str, Any]) -> None:
    """The cgroup the node made for this worker (still root here), joined before the worker
    proper exists, so that everything it ever starts is inside; but after the sandbox's own
    set-up (mounts, namespaces), whose kernel memory would otherwise be charged to the worker
    and cost every cold start milliseconds of memory-cgroup accounting."""
    fds = isolation.pop("_cgroup_fds", None) or []
    try:
        cgroups.join_fds(fds)
    except OSError as e:
        raise SandboxError(f"cannot join the cgroup the node made for the worker: {e}") from None
    finally:
        for fd in fds:
            os.close(fd)


def _needs_own_network(isolation: dict[str, Any]) -> bool:
    """network = false and the node made no namespace for it: unshare one with only `lo`."""
    return not isolation.get("network", True) and not isolation.get("netns")


# -- process level ---------------------------------------------------------------------------

def _open_path(path: str) -> int | None:
    try:
        return os.open(path, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None


def _process_level(spec: dict[str, Any], isolation: dict[str, Any]) -> dict[str, str]:
    if _needs_own_network(isolation):
        try:
            linux.unshare(linux.CLONE_NEWNET)
            linux.loopback_up()
        except OSError as e:
            raise SandboxError(f"network = false needs a network namespace, which this node cannot create ({e})"
                               ) from None
    pid = os.getpid()
    uid = worker_uid(isolation.get("uid_base"), pid)
    workdir = spec["workdir"]
    tmpdir = spec.get("tmpdir") or workdir
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    if uid is not None:
        for d in {workdir, tmpdir}:
            os.chown(d, uid, uid)
    # paths the worker may not be able to walk to once it has its own uid (the data
    # directory is closed to it): held open now, reached later through /proc/<pid>/fd
    reachable = [spec["task_root"], workdir] if uid is not None else []
    if uid is not None and spec.get("mode", "fork") == "fork":
        reachable += [p for p in sys.path if p and os.path.isdir(p)]
    elif uid is not None and spec.get("argv"):
        reachable.append(os.path.dirname(os.path.abspath(str(spec["argv"][0]))))
    held = {p: fd for p in dict.fromkeys(reachable) if (fd := _open_path(p)) is not None}
    os.chdir(workdir)
    _join_cgroup(isolation)
    drop_privileges(uid)
    if uid is not None:
        linux.prctl(linux.PR_SET_DUMPABLE, 1)  # lets the worker's processes read /proc/<pid>/fd
    if not _parent_alive(int(spec.get("_parent_pid") or 0)):
        os._exit(1)
    mapping: dict[str, str] = {}
    for path, fd in held.items():
        if os.access(path, os.R_OK | os.X_OK):
            os.close(fd)
            continue
        os.set_inheritable(fd, True)
        mapping[path] = f"/proc/{pid}/fd/{fd}"
    if mapping and spec.get("mode", "fork") == "fork":
        _reroute_imports(mapping)
    return mapping


_package_paths: list[list[str]] | None = None


def package_paths() -> list[list[str]]:
    """The `__path__` of every package imported so far. Gathered once, in the zygote: walking
    every module in each new worker would copy much of the shared heap (copy-on-write)."""
    global _package_paths
    if _package_paths is None:
        _package_paths = [p for m in list(sys.modules.values()) if isinstance(p := getattr(m, "__path__", None), list)]
    return _package_paths


def _reroute_imports(mapping: dict[str, str]) -> None:
    """Point the import system at the held descriptors for directories the uid cannot walk to."""
    sys.path[:] = [_remap(p, mapping) for p in sys.path]
    for path in package_paths():
        path[:] = [_remap(p, mapping) for p in path]
    for stale in [p for p in sys.path_importer_cache if _remap(p, mapping) != p]:
        del sys.path_importer_cache[stale]


# -- namespace level -------------------------------------------------------------------------

def _enter_namespaces(spec: dict[str, Any], isolation: dict[str, Any]) -> dict[str, str]:
    shared = mountview.current()
    if shared is None:
        raise SandboxError("namespace isolation needs the zygote to prepare the workers' file system view")
    parent = int(spec.get("_parent_pid") or 0)
    if os.getpid() != 1:
        # without root the zygote cannot fork straight into a new PID namespace (it could
        # not come back to its own): this process makes one, and waits for its init
        parent = fork_into_new_pid_namespace()
    stat_fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)  # the host's view, kept past the pivot
    host_pid = int(os.pread(stat_fd, 64, 0).split(b" ", 1)[0])
    uid = worker_uid(isolation.get("uid_base"), host_pid)
    own_uid, own_gid = (uid, uid) if uid is not None else (os.getuid(), os.getgid())
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWIPC
    if _needs_own_network(isolation):
        flags |= linux.CLONE_NEWNET
    try:
        linux.unshare(flags)
        memory = int(spec.get("memory", 128))
        mountview.enter(shared, spec["task_root"], own_uid, own_gid, tmp_mb=int(isolation.get("tmp_mb", 512)),
                        shm_mb=min(memory, 64), binds=isolation.get("function_binds") or ())
        if flags & linux.CLONE_NEWNET:
            linux.loopback_up()
    except (OSError, MountViewError) as e:
        raise SandboxError(f"cannot isolate the worker in namespaces: {e}") from None
    _join_cgroup(isolation)
    worker = os.fork()
    if worker:
        _serve_as_init(worker, uid, parent, stat_fd)
    os.close(stat_fd)
    die_with_parent()
    drop_privileges(uid)
    return {spec["task_root"]: TASK_ROOT, spec["workdir"]: "/tmp", spec.get("tmpdir") or spec["workdir"]: "/tmp"}


def fork_into_new_pid_namespace() -> int:
    """Fork the namespace's init and wait for it, passing on its exit status. Returns (in the
    init) the pid of this process, the init's parent."""
    try:
        linux.unshare(linux.CLONE_NEWPID)
    except OSError as e:
        raise SandboxError(f"cannot create a PID namespace: {e}") from None
    me = os.getpid()
    init = os.fork()
    if init == 0:
        die_with_parent()
        if linux.host_pid_and_parent()[1] != me:  # getppid() says 0 across the namespace boundary
            os._exit(1)
        return me
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 65536)
    code = 1
    try:
        while True:
            try:
                _, status = os.waitpid(init, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            code = os.waitstatus_to_exitcode(status)
            code = SIGNAL_EXIT_BASE - code if code < 0 else code
            break
    finally:
        os._exit(code)


def _serve_as_init(worker: int, uid: int | None, parent: int, stat_fd: int) -> None:
    """PID 1 of the worker's namespace: reap whatever is orphaned, end with the worker."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, stat_fd)
    os.closerange(stat_fd + 1, 65536)
    set_process_name("stoker-init")
    code = 1
    try:
        drop_privileges(uid)
        if not _parent_alive(parent, stat_fd):
            os._exit(1)
        os.close(stat_fd)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            if pid == worker:
                code = os.waitstatus_to_exitcode(status)
                code = SIGNAL_EXIT_BASE - code if code < 0 else min(code, SIGNAL_EXIT_BASE - 1)
                break
    finally:
        os._exit(code)


def init_exit_to_returncode(code: int) -> int:
    """The exit status of a namespace's init, as the worker's own (negative: killed by signal)."""
    if SIGNAL_EXIT_BASE < code < SIGNAL_EXIT_BASE + 65:
        return SIGNAL_EXIT_BASE - code
    return code


@contextlib.contextmanager
def forking_for(spec: dict[str, Any]) -> Any:
    """Around the zygote's fork: prepares what the spec's isolation level needs first, and
    makes the child PID 1 of a new PID namespace at the namespace level."""
    isolation = spec.get("isolation") or {}
    spec["_parent_pid"] = os.getpid()
    if isolation.get("level") != "namespace":
        if os.geteuid() == 0 and spec.get("mode", "fork") == "fork":
            package_paths()
        yield
        return
    extra = [str(b) for b in isolation.get("binds") or ()]
    if spec.get("mode") == "exec" and spec.get("argv"):
        extra.append(runtime_prefix(str(spec["argv"][0])))
    shared = mountview.shared_root(str(isolation["root_dir"]), isolation.get("hidden") or (), extra)
    isolation["function_binds"] = shared.add_mountpoints(isolation.get("function_binds") or ())
    if mountview.in_user_namespace():
        yield  # the child makes its PID namespace itself (see fork_into_new_pid_namespace)
        return
    with linux.children_in_new_pid_namespace():
        yield


def runtime_prefix(executable: str) -> str:
    """The installation a program belongs to: /x/node/bin/node -> /x/node."""
    real = os.path.realpath(executable)
    parent = os.path.dirname(real)
    return os.path.dirname(parent) if os.path.basename(parent) in ("bin", "sbin") else parent


def sweep_uid(uid: int) -> None:
    """Kill every process left running as a worker's uid (process level: children that
    left the worker's process group). Runs in a short-lived child that takes the uid."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal: its own
        finally:
            os._exit(0)
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue
        except ChildProcessError:
            return
