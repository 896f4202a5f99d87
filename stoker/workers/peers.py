"""Who is on the other end of a loopback TCP connection: is it one of a worker's processes?

A worker's Runtime API listens on 127.0.0.1, where any local process could connect, call
`next` and read another function's events. The node therefore accepts a connection only
when the connecting socket is held by a process in the worker's session (every worker is a
session leader, see sandbox.py, so its children are in its session too). The kernel says
which socket inode a connection has (/proc/net/tcp) and which process holds it
(/proc/PID/fd). This runs once per connection, not per request: runtimes keep their
connection alive.
"""

from __future__ import annotations

import contextlib
import os

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it (little-endian)


def connection_inode(client_port: int, server_port: int, table: str = "/proc/net/tcp") -> int | None:
    """The inode of the client's socket of the connection 127.0.0.1:client_port -> 127.0.0.1:server_port."""
    local = f"{LOOPBACK_HEX}:{client_port:04X}"
    remote = f"{LOOPBACK_HEX}:{server_port:04X}"
    try:
        with open(table) as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    return int(fields[9]) or None
    except OSError:
        return None
    return None


def _session_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # fields after the command name (which may hold spaces and parentheses): state ppid pgrp session
    rest = stat[stat.rfind(")") + 2:].split()
    return int(rest[3]) if len(rest) > 3 else None


def _holds(pid: int | str, link: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                if os.readlink(f"{fd_dir}/{fd}") == link:
                    return True
    return False


def session_holds_socket(session: int, inode: int) -> bool:
    """Whether a process of the session led by `session` holds the socket with this inode."""
    link = f"socket:[{inode}]"
    if _holds(session, link):  # the common case: the runtime is the session leader itself
        return True
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != session and _session_of(entry) == session and _holds(entry, link):
            return True
    return False


def connected_from_session(client_port: int, server_port: int, session: int) -> bool:
    inode = connection_inode(client_port, server_port)
    return inode is not None and session_holds_socket(session, inode)
