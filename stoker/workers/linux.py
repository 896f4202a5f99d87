"""The Linux system calls the sandbox needs and Python 3.11 does not wrap, through ctypes.

Namespaces (`unshare`, `setns`), mounts (`mount`, `umount2`, `pivot_root`), process
controls (`prctl`), dropping capabilities (`capset`) and raising the loopback interface of
a new network namespace. Each wrapper raises OSError with the call and the errno's text.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import signal
import socket
import struct
from collections.abc import Iterator
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38

#: statvfs flags -> the mount flags a read-only remount must keep (the kernel refuses to
#: drop a flag it locked, e.g. in a user namespace)
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))

_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _syscall_number(name: str) -> int:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(0, f"{name}: no system call number known for {platform.machine()}")
    return numbers[name]


def _bytes(path: str | None) -> bytes | None:
    return os.fsencode(path) if path is not None else None


# -- namespaces ----------------------------------------------------------------------------

def unshare(flags: int) -> None:
    _check(libc().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


@contextlib.contextmanager
def children_in_new_pid_namespace() -> Iterator[None]:
    """Within the block, the next child forked is PID 1 of a new PID namespace; after it,
    children are born in this process's own namespace again."""
    forker = os.getpid()
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWPID)
        try:
            yield
        finally:
            if os.getpid() == forker:  # not in the child, which cannot go back to an ancestor namespace
                setns(own, CLONE_NEWPID)
    finally:
        os.close(own)


def map_own_ids(uid: int, gid: int) -> None:
    """After unshare(CLONE_NEWUSER): keep our uid and gid (the only mapping allowed unprivileged)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


# -- mounts --------------------------------------------------------------------------------

def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = libc().mount(_bytes(source), _bytes(target), _bytes(fstype), ctypes.c_ulong(flags),
                          _bytes(data))
    _check(result, f"mount {source or fstype or ''} on {target}")


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(libc().umount2(_bytes(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(libc().syscall(ctypes.c_long(_syscall_number("pivot_root")), _bytes(new_root), _bytes(put_old)),
           "pivot_root")


def bind_readonly(source: str, target: str) -> None:
    """Bind `source` at `target` read-only, without set-uid programs or device files."""
    mount(source, target, None, MS_BIND)
    kept = 0
    with contextlib.suppress(OSError):
        st = os.statvfs(source)
        kept = sum(ms for st_flag, ms in _KEPT_FLAGS if st.f_flag & st_flag)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


# -- process controls ----------------------------------------------------------------------

def prctl(option: int, arg: int = 0) -> None:
    _check(libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)), "prctl")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_process_name(name: str) -> None:
    buf = ctypes.create_string_buffer(name.encode()[:15])
    libc().prctl(PR_SET_NAME, buf, 0, 0, 0)


def no_new_privileges() -> None:
    """set-uid programs and file capabilities can no longer raise this process's rights."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def drop_capabilities() -> None:
    """Empty the bounding, effective, permitted and inheritable sets (for a user namespace,
    where the process keeps its uid but held every capability in the namespace)."""
    for cap in range(64):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            break  # past the last capability this kernel knows
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two all-zero {effective, permitted, inheritable}
    _check(libc().syscall(ctypes.c_long(_syscall_number("capset")), ctypes.c_char_p(header), data), "capset")


def loopback_up() -> None:
    """Bring up `lo` in a new network namespace, so a function can still talk to itself."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, ifreq))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def host_pid_and_parent() -> tuple[int, int]:
    """This process's pid and parent pid as the /proc mounted now sees them (the host's view,
    also from inside a new PID namespace, until a new /proc is mounted)."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2:].split()
    return int(stat.split(" ", 1)[0]), int(rest[1])
