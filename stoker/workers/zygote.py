"""The zygote: a fork server that makes cold starts cost a fork, not an interpreter start.

The node agent starts one zygote, an interpreter that has already imported the
stoker runtime (and any modules named in STOKER_PRELOAD). To start a worker, the node
sends a spawn request with two file descriptors (the worker's control socket and the
write end of its log pipe); the zygote forks, the child applies the sandbox and then
either imports the handler and serves (Python, `mode = "fork"`) or execs a program
(`mode = "exec"`: a fresh Python for comparison, or a runtime's bootstrap). The
zygote reaps its children and reports each exit back to the node.

Requests and replies are msgpack arrays over an AF_UNIX SOCK_SEQPACKET pair, so
message boundaries and the passed descriptors stay together:
    node -> zygote   ("spawn", request_id, spec)           + fds [control, log]
    zygote -> node   ("spawned", request_id, pid) | ("failed", request_id, message)
    zygote -> node   ("exited", pid, returncode)           (negative: killed by signal)
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from stoker.workers import sandbox
from stoker.workers.mountview import MountViewError

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024
PRELOAD = ("orjson", "msgpack", "json", "logging", "decimal", "traceback", "stoker.workers.runtime")


_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid


def send_message(sock: socket.socket, message: tuple[Any, ...], fds: list[int] | None = None) -> None:
    """One msgpack array over a SOCK_SEQPACKET socket, with descriptors passed alongside."""
    data = msgpack.packb(message, use_bin_type=True)
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def recv_message(sock: socket.socket) -> tuple[tuple[Any, ...], list[int], int | None]:
    """One message, the descriptors passed with it and the sender's pid (when the receiving
    socket has SO_PASSCRED: the kernel's, translated into the receiver's PID namespace)."""
    data, ancillary, _flags, _addr = sock.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(4 * 4) + socket.CMSG_SPACE(_CREDS.size))
    if not data:
        raise EOFError
    fds: list[int] = []
    pid = None
    for level, kind, payload in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
        elif kind == socket.SCM_CREDENTIALS:
            pid = _CREDS.unpack(payload[:_CREDS.size])[0]
    return tuple(msgpack.unpackb(data, raw=False, use_list=False)), fds, pid


SpawnHandler = Callable[[int, dict[str, Any], list[int], list[int]], None]


def serve_forks(sock: socket.socket, on_spawn: SpawnHandler,
                exit_code: Callable[[int, int], int] = lambda pid, code: code) -> None:
    """A fork server's loop (the zygote's, and each warm template's): for every
    ("spawn", request_id, spec) with two descriptors, `on_spawn(request_id, spec, fds,
    close_in_child)`; every child that exits is reported as ("exited", pid, code). Returns
    when the node closes the socket."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    close_in_child = [sock.fileno(), wake_r, wake_w, sel.fileno()]
    while True:
        for key, _ in sel.select():
            if key.fileobj == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(sock, exit_code)
                continue
            try:
                message, fds, _pid = recv_message(sock)
            except (EOFError, ConnectionError):
                return
            if message[0] != "spawn" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            _, request_id, spec = message
            on_spawn(request_id, dict(spec), fds, close_in_child)


def _reap(sock: socket.socket, exit_code: Callable[[int, int], int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            send_message(sock, ("exited", pid, exit_code(pid, os.waitstatus_to_exitcode(status))))


# -- the zygote process ------------------------------------------------------------------

def _run_child(spec: dict[str, Any], control_fd: int, log_fd: int) -> int:
    # a Runtime API worker (spec "control": False) talks HTTP: it gets no control socket
    keep = (control_fd,) if spec.get("control", True) else ()
    try:
        sandbox.apply(spec, log_fd, keep_fds=keep)
    except sandbox.SandboxError as e:
        if spec.get("mode") == "exec":
            raise
        # the node reports this as the init error of the invocation that asked for the worker
        from stoker.workers import protocol, runtime

        protocol.send(socket.socket(fileno=control_fd), "init_error",
                      runtime.error_object("Sandbox.Unavailable", str(e)))
        return 1
    if spec.get("mode") == "exec":
        # "{control_fd}" in argv names the control socket's descriptor in this process
        argv = [str(a).replace("{control_fd}", str(control_fd)) for a in spec["argv"]]
        if spec.get("control", True):
            os.set_inheritable(control_fd, True)
        os.execve(argv[0], argv, dict(os.environ))
    if spec.get("template"):
        from stoker.workers import template

        return template.serve(socket.socket(fileno=control_fd), spec)
    from stoker.workers import runtime

    return runtime.serve(socket.socket(fileno=control_fd), spec)


class _Children:
    """What the zygote must remember about each worker it forked, until it reaps it."""

    def __init__(self) -> None:
        self.namespace_inits: set[int] = set()
        #: process-level workers running as their own uid: swept when they exit
        self.uids: dict[int, int] = {}

    def forked(self, pid: int, spec: dict[str, Any]) -> None:
        isolation = spec.get("isolation") or {}
        if isolation.get("level") == "namespace":
            self.namespace_inits.add(pid)
        else:
            uid = sandbox.worker_uid(isolation.get("uid_base"), pid)
            if uid is not None:
                self.uids[pid] = uid

    def reaped(self, pid: int, returncode: int) -> int:
        """The worker's own return code; leaves no process of its uid behind."""
        if pid in self.namespace_inits:
            self.namespace_inits.discard(pid)
            return sandbox.init_exit_to_returncode(returncode) if returncode > 0 else returncode
        uid = self.uids.pop(pid, None)
        if uid is not None:
            sandbox.sweep_uid(uid)
        return returncode


_children = _Children()


def _fork_worker(spec: dict[str, Any], fds: list[int], close_in_child: list[int]) -> int:
    control_fd, log_fd = fds
    try:
        with sandbox.forking_for(spec):
            pid = os.fork()
    except BaseException:
        os.close(control_fd)
        os.close(log_fd)
        raise
    if pid == 0:
        code = 127
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in close_in_child:
                with contextlib.suppress(OSError):
                    os.close(fd)
            code = _run_child(spec, control_fd, log_fd)
        except BaseException:
            with contextlib.suppress(Exception):
                os.write(2, ("stoker: worker start failed:\n" + traceback.format_exc()).encode())
        finally:
            os._exit(code)
    _children.forked(pid, spec)
    os.close(control_fd)
    os.close(log_fd)
    return pid


def serve(sock: socket.socket) -> None:
    sandbox.die_with_parent()
    sandbox.set_process_name("stoker-zygote")
    for name in PRELOAD + tuple(m for m in os.environ.get("STOKER_PRELOAD", "").split(",") if m):
        try:
            importlib.import_module(name.strip())
        except Exception as e:  # a missing optional module must not stop cold starts
            print(f"stoker zygote: cannot preload {name}: {e}", file=sys.stderr)
    gc.collect()
    gc.freeze()  # keep the preloaded heap shared with every child (copy-on-write)

    signal.signal(signal.SIGTERM, lambda *_: None)  # the node decides when the zygote ends

    def spawn(request_id: int, spec: dict[str, Any], fds: list[int], close_in_child: list[int]) -> None:
        try:
            pid = _fork_worker(spec, fds, close_in_child)
        except OSError as e:
            send_message(sock, ("failed", request_id, f"fork failed: {e}"))
        except MountViewError as e:
            send_message(sock, ("failed", request_id, str(e)))
        else:
            send_message(sock, ("spawned", request_id, pid))

    serve_forks(sock, spawn, _children.reaped)


def main() -> None:
    serve(socket.socket(fileno=int(sys.argv[1])))


# -- the node agent's side ---------------------------------------------------------------

class ZygoteClient:
    """Starts the zygote and asks it for workers, from the node agent's event loop."""

    def __init__(self, on_exit: Callable[[int, int], None], env: dict[str, str] | None = None) -> None:
        self._on_exit = on_exit
        self._env = env
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def on_exit(self) -> Callable[[int, int], None]:
        """Where exits of the node's workers are reported (warm templates report theirs there too)."""
        return self._on_exit

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = self._env if self._env is not None else scrubbed_environment()
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "stoker.workers.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, close_fds=True,
        )
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._readable)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                message, fds, _pid = recv_message(self._sock)
            except BlockingIOError:
                return
            except (EOFError, ConnectionError, OSError):
                self._closed()
                return
            for fd in fds:
                os.close(fd)
            kind = message[0]
            if kind == "spawned":
                fut = self._pending.pop(message[1], None)
                if fut and not fut.done():
                    fut.set_result(int(message[2]))
            elif kind == "failed":
                fut = self._pending.pop(message[1], None)
                if fut and not fut.done():
                    fut.set_exception(RuntimeError(str(message[2])))
            elif kind == "exited":
                self._on_exit(int(message[1]), int(message[2]))

    def _closed(self) -> None:
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("the zygote exited"))
        self._pending.clear()

    async def spawn(self, spec: dict[str, Any], control_fd: int, log_fd: int) -> int:
        """Fork a worker; returns its pid. The passed fds stay ours to close."""
        if self._sock is None or not self.alive():
            self._closed()
            self.start()
        assert self._sock is not None and self._loop is not None
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[int] = self._loop.create_future()
        self._pending[request_id] = fut
        self._sock.setblocking(True)
        try:
            send_message(self._sock, ("spawn", request_id, spec), [control_fd, log_fd])
        finally:
            self._sock.setblocking(False)
        return await fut

    def stop(self) -> None:
        self._closed()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)
            self._proc = None


def scrubbed_environment() -> dict[str, str]:
    """The zygote needs no secrets: workers get their environment from their spec."""
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "PYTHONHOME", "STOKER_PRELOAD", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}


if __name__ == "__main__":
    main()
