"""The file system a namespace-isolated worker sees: runtimes read-only, its bundle, its /tmp.

    /usr /bin /lib* /sbin        the host's, read-only (symbolic links stay links)
    <Python and Node.js dirs>    the interpreter's prefixes, site-packages and stoker itself,
                                 read-only, at the same paths (so the zygote's imports resolve)
    /etc                         a short list of files (TLS certificates, name resolution,
                                 the dynamic loader's cache, time zone), read-only; passwd,
                                 group, hosts and resolv.conf are this worker's own copies
    /var/task                    the function's bundle, read-only (LAMBDA_TASK_ROOT)
    /tmp, /dev/shm               the worker's own, empty, size-capped (tmpfs)
    /proc                        of the worker's own PID namespace: only its processes
    /dev                         null, zero, full, random, urandom
    /run                         the worker's own small tmpfs (root-owned)
    <its function's folders>     read-only, at the same path: the folders its files
                                 triggers watch (other functions see an empty folder there)

Nothing else of the host exists: no data directory, no home directories, no other bundle.

Building this view costs mount calls, so the shared, read-only part is built once, by the
zygote, in its own mount namespace (`prepare`); a cold start then only mounts its own
/tmp, /run, /dev/shm, /proc and bundle on top of it and pivots into it (`enter`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from stoker.workers import linux

TASK_ROOT = "/var/task"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: read-only from the host; secrets (shadow, ssh keys, machine-id) are never among them
ETC_ENTRIES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "host.conf", "gai.conf", "services", "protocols",
    "networks", "ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies", "alternatives",
    "localtime", "timezone", "mime.types", "os-release", "debian_version", "lsb-release",
)
#: written for each worker into its /run, linked from /etc
PER_WORKER_ETC = ("passwd", "group", "hosts", "resolv.conf")
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"))
#: never bound whole, even when a sys.path entry names one of them
TOO_BROAD = {"/", "/root", "/home", "/etc", "/var", "/tmp", "/run", "/proc", "/sys", "/dev", "/opt", "/srv", "/mnt",
             "/media", "/boot"}
WORKER_USER = "sbx_user"


class MountViewError(Exception):
    """The private view cannot be built (the message says which mount failed)."""


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@dataclass
class Layout:
    """What the shared part of the view holds (host paths, bound at the same path)."""

    links: dict[str, str] = field(default_factory=dict)  # path -> symlink target, recreated
    dirs: list[str] = field(default_factory=list)  # bound read-only
    etc: list[str] = field(default_factory=list)  # /etc entries bound read-only
    hidden: tuple[str, ...] = ()  # never exposed (the data directory)

    def covers(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(_within(real, d) for d in self.dirs)

    def exposable(self, path: str) -> str | None:
        """The real path of a host directory workers may see; None for a whole top-level
        folder, or one that holds or is inside the data directory."""
        if not path or not os.path.isabs(path) or not os.path.isdir(path):
            return None
        real = os.path.realpath(path)
        if real in TOO_BROAD or (real.count("/") < 2 and real not in SYSTEM_DIRS):
            return None
        if any(_within(real, h) or _within(h, real) for h in self.hidden):
            print(f"stoker sandbox: not exposing {path} to workers: it holds or is inside the data directory",
                  file=sys.stderr)
            return None
        return real

    def add_dir(self, path: str) -> bool:
        """Add a host directory (a runtime's installation). False when refused or already covered."""
        real = self.exposable(path)
        if real is None or self.covers(real):
            return False
        self.dirs = [d for d in self.dirs if not _within(d, real)] + [real]
        if path != real and not self.covers(os.path.dirname(path)):
            self.links[path.rstrip("/")] = real
        return True


def runtime_dirs() -> list[str]:
    """The Python installation this process runs on, its import path, and stoker itself."""
    import stoker

    cwd = os.getcwd()
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.abspath(stoker.__file__))]
    candidates += [p for p in sys.path if p and os.path.abspath(p) != cwd]
    out: list[str] = []
    for p in candidates:
        p = os.path.abspath(p)
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def host_layout(hidden: Iterable[str], extra: Iterable[str] = ()) -> Layout:
    layout = Layout(hidden=tuple(os.path.realpath(h) for h in hidden))
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            layout.links[d] = os.readlink(d)
        elif os.path.isdir(d):
            layout.dirs.append(d)
    for d in [*runtime_dirs(), *extra]:
        layout.add_dir(d)
    layout.etc = [e for e in ETC_ENTRIES if os.path.exists(os.path.join("/etc", e))]
    return layout


# -- the shared part, built once by the zygote ----------------------------------------------

def _make_mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass


def _link(root: str, path: str, target: str) -> None:
    where = root + path
    os.makedirs(os.path.dirname(where), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.symlink(target, where)


class SharedRoot:
    """The read-only skeleton every namespace worker of this zygote pivots into."""

    def __init__(self, path: str, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        self._bound: set[str] = set()
        #: empty folders where a worker binds a host folder of its own function (e.g. the
        #: folder a files trigger watches): other functions' workers see them empty
        self.mountpoints: set[str] = set()

    def build(self) -> None:
        root = self.path
        os.makedirs(root, mode=0o700, exist_ok=True)
        linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=4m")
        linux.mount(None, root, None, linux.MS_PRIVATE)
        for d in ("tmp", "proc", "run", "dev/shm", TASK_ROOT.lstrip("/"), "etc"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        _link(root, "/var/tmp", "/tmp")
        for name in PER_WORKER_ETC:
            _link(root, f"/etc/{name}", f"/run/stoker/{name}")
        for name, target in DEV_LINKS:
            _link(root, f"/dev/{name}", target)
        for name in DEVICES:
            if not os.path.exists(f"/dev/{name}"):
                continue
            where = f"{root}/dev/{name}"
            _make_mountpoint(where, is_dir=False)
            linux.mount(f"/dev/{name}", where, None, linux.MS_BIND)
            linux.mount(None, where, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NOEXEC)
        for name in self.layout.etc:
            source = os.path.join("/etc", name)
            where = f"{root}/etc/{name}"
            _make_mountpoint(where, os.path.isdir(source))
            linux.bind_readonly(source, where)
        self._add(self.layout.dirs, self.layout.links)
        self._seal()

    def _add(self, dirs: Iterable[str], links: dict[str, str]) -> None:
        for path, target in links.items():
            _link(self.path, path, target)
        for d in dirs:
            if d in self._bound:
                continue
            where = self.path + d
            _make_mountpoint(where, is_dir=True)
            linux.bind_readonly(d, where)
            self._bound.add(d)

    def _seal(self) -> None:
        """The skeleton's own tmpfs read-only: workers share it and must not write to it."""
        linux.mount(None, self.path, None, linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV,
                    "mode=0755")

    def add_mountpoints(self, dirs: Iterable[str]) -> list[str]:
        """Make room for per-worker folders; returns the real paths a worker may bind."""
        wanted = [real for d in dirs if (real := self.layout.exposable(d)) and not self.layout.covers(real)]
        new = [d for d in wanted if d not in self.mountpoints]
        if new:
            linux.mount(None, self.path, None, linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
            try:
                for d in new:
                    _make_mountpoint(self.path + d, is_dir=True)
                    self.mountpoints.add(d)
            finally:
                self._seal()
        return wanted

    def extend(self, dirs: Iterable[str]) -> None:
        """Add runtime directories a spawn asks for (e.g. a Node.js installation)."""
        wanted = [d for d in dirs if self.layout.add_dir(d)]
        if not wanted:
            return
        linux.mount(None, self.path, None, linux.MS_REMOUNT | linux.MS_NOSUID | linux.MS_NODEV, "mode=0755")
        try:
            self._add(self.layout.dirs, self.layout.links)
        finally:
            self._seal()


_shared: SharedRoot | None = None
_in_user_namespace = False


def current() -> SharedRoot | None:
    """The skeleton built in this process (inherited by the zygote's children)."""
    return _shared


def in_user_namespace() -> bool:
    """Whether this process (a zygote not run as root) entered a user namespace of its own."""
    return _in_user_namespace


def _own_mount_namespace() -> None:
    """A mount namespace for the zygote: the skeleton's mounts never show on the host and go
    away with it. Without root, a user namespace first, which grants the right to mount."""
    global _in_user_namespace
    if os.geteuid() == 0:
        linux.unshare(linux.CLONE_NEWNS)
    else:
        uid, gid = os.getuid(), os.getgid()
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        linux.map_own_ids(uid, gid)
        _in_user_namespace = True
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)


def shared_root(path: str, hidden: Iterable[str], extra: Iterable[str] = ()) -> SharedRoot:
    """The zygote's skeleton, built on first use in the zygote's own mount namespace."""
    global _shared
    hidden = [os.path.realpath(h) for h in hidden]
    extra = [e for e in extra if not any(_within(os.path.realpath(e), h) for h in hidden)]
    old_umask = os.umask(0o022)
    try:
        if _shared is None:
            try:
                _own_mount_namespace()
                shared = SharedRoot(path, host_layout(hidden))
                shared.build()
            except OSError as e:
                raise MountViewError(f"cannot build the workers' file system view: {e}") from None
            _shared = shared
        try:
            _shared.extend(extra)
        except OSError as e:
            raise MountViewError(f"cannot add {', '.join(extra)} to the workers' file system view: {e}") from None
    finally:
        os.umask(old_umask)
    return _shared


# -- each worker, in its own mount namespace ------------------------------------------------

def _passwd(uid: int, gid: int) -> tuple[str, str]:
    passwd = (f"root:x:0:0:root:/root:/usr/sbin/nologin\n{WORKER_USER}:x:{uid}:{gid}::/tmp:/usr/sbin/nologin\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    group = f"root:x:0:\n{WORKER_USER}:x:{gid}:\nnogroup:x:65534:\n"
    return passwd, group


def _host_file(path: str, fallback: str) -> str:
    try:
        with open(path) as f:
            return f.read(64 * 1024)
    except OSError:
        return fallback


#: mounted fresh for each worker, hiding what the skeleton holds there
PER_WORKER_MOUNTS = ("/tmp", "/dev/shm", "/run")


def _restore_covered(shared: SharedRoot) -> None:
    """Runtime directories that live under /tmp or /run on the host (a virtualenv made in
    /tmp, say) are hidden by the worker's own tmpfs there: bind them again on top of it."""
    root = shared.path
    under = [d for d in shared.layout.dirs if any(_within(d, m) for m in PER_WORKER_MOUNTS)]
    for path, target in shared.layout.links.items():
        if any(_within(path, m) for m in PER_WORKER_MOUNTS):
            _link(root, path, target)
    for d in under:
        os.makedirs(root + d, mode=0o755, exist_ok=True)
        linux.bind_readonly(d, root + d)


def enter(shared: SharedRoot, task_root: str, uid: int, gid: int, tmp_mb: int, shm_mb: int,
          binds: Iterable[str] = ()) -> None:
    """Mount this worker's own parts onto the skeleton and make it the root (needs a new mount
    namespace, and a new PID namespace for /proc). Run before dropping privileges."""
    root = shared.path
    tmpfs_flags = linux.MS_NOSUID | linux.MS_NODEV
    try:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount("tmpfs", f"{root}/tmp", "tmpfs", tmpfs_flags, f"mode=0700,uid={uid},gid={gid},size={tmp_mb}m")
        linux.mount("tmpfs", f"{root}/dev/shm", "tmpfs", tmpfs_flags,
                    f"mode=0700,uid={uid},gid={gid},size={shm_mb}m")
        linux.mount("tmpfs", f"{root}/run", "tmpfs", tmpfs_flags | linux.MS_NOEXEC, "mode=0755,size=256k")
        os.mkdir(f"{root}/run/stoker", 0o755)
        passwd, group = _passwd(uid, gid)
        files = {"passwd": passwd, "group": group,
                 "hosts": _host_file("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
                 "resolv.conf": _host_file("/etc/resolv.conf", "")}
        for name, text in files.items():
            fd = os.open(f"{root}/run/stoker/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.bind_readonly(task_root, root + TASK_ROOT)
        _restore_covered(shared)
        for folder in binds:
            if folder in shared.mountpoints:
                # under the worker's own /tmp or /run the skeleton's folder is hidden: make it again
                os.makedirs(root + folder, mode=0o755, exist_ok=True)
                linux.bind_readonly(folder, root + folder)
        os.chdir(root)
        linux.pivot_root(".", ".")
        linux.umount(".", linux.MNT_DETACH)
        os.chdir("/")
    except OSError as e:
        raise MountViewError(f"cannot enter the worker's file system view: {e}") from None
