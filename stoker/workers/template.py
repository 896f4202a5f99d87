"""Warm templates (`snapshot = true`): cold starts that fork after the handler is imported.

A plain cold start forks the zygote and then imports the handler, so it pays for the
function's imports and init code every time. With `snapshot = true` a node keeps, per
function version, one *template*: a worker that the zygote forked and sandboxed as usual,
that imported the handler and ran its init code once, and that then serves as a fork
server for that version (as Lambda SnapStart restores a snapshot taken after init). Each
new worker is a fork of it: it starts its own session and log pipe and is ready at once.

What a fork shares with its template, and the function's author must allow for (see
docs/performance.md): anything made during init, such as open connections, file handles,
temporary files and seeded random generators. Each worker reseeds Python's `random`
module; a connection opened at import time is one socket shared by every worker, so open
connections lazily, in the handler. Workers of one template also share its sandbox: its
uid, working directory and (at the namespace level) its namespaces and its process limit.

The template talks to the node over an AF_UNIX SOCK_SEQPACKET pair (msgpack arrays):
    template -> node   ("ready",) | ("init_error", error, output, dropped)
    node -> template   ("spawn", request_id, overrides)        + fds [control, log]
    worker -> node     ("spawned", request_id, pid)            credentials: the kernel's pid
    template -> node   ("failed", request_id, message) | ("exited", pid, returncode)
Each new worker announces itself on the template's socket; the node reads the sender's pid
from the credentials the kernel attaches (SO_PASSCRED), which are translated into the
node's PID namespace: inside a namespace sandbox the template's own pids mean nothing to
the node, so exits are mapped back through the pid each worker announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import shutil
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from stoker.workers import runtime, sandbox
from stoker.workers.logbuffer import LogBuffer
from stoker.workers.worker import InitFailed, Spawner, kill_process_group
from stoker.workers.zygote import recv_message, send_message, serve_forks

log = logging.getLogger(__name__)

#: what an init_error message carries of the init output (a SEQPACKET message must fit
#: the socket's send buffer); the rest is counted as dropped
INIT_OUTPUT_MAX = 64 * 1024


# -- the template process --------------------------------------------------------------------

def serve(sock: socket.socket, spec: dict[str, Any]) -> int:
    """The template's life, in the sandboxed process the zygote forked: import, then fork workers."""
    capture = runtime.capture_output(int(spec.get("output_limit") or 1024 * 1024))
    runtime.configure_logging()
    try:
        handler = runtime.load_handler(spec["task_root"], spec["handler"])
    except runtime.InitError as e:
        output, dropped = capture.take()
        kept = output[-INIT_OUTPUT_MAX:]
        send_message(sock, ("init_error", e.error, kept, dropped + len(output) - len(kept)))
        return 1
    gc.collect()
    gc.freeze()  # the imported heap stays shared with every worker (copy-on-write)
    send_message(sock, ("ready",))
    # what init printed goes to the first worker's logs (it is in the capture buffer that
    # worker inherits); later workers start with an empty buffer
    first = True

    def spawn(request_id: int, overrides: dict[str, Any], fds: list[int], close_in_child: list[int]) -> None:
        nonlocal first
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            send_message(sock, ("failed", request_id, f"fork failed: {e}"))
            return
        if pid == 0:
            # the worker keeps the template's socket just long enough to announce itself
            _run_worker(sock, request_id, overrides, fds, [fd for fd in close_in_child if fd != sock.fileno()],
                        spec, handler, capture)
        for fd in fds:
            os.close(fd)
        if first:
            capture.take()
            first = False

    serve_forks(sock, spawn)
    return 0  # the node let the template go; its workers die with it


def _run_worker(sock: socket.socket, request_id: int, overrides: dict[str, Any], fds: list[int],
                close_in_child: list[int], spec: dict[str, Any], handler: runtime.Handler,
                capture: runtime.OutputCapture) -> None:
    """In the new worker: its own session and log pipe, announce itself, serve. Never returns."""
    control_fd, log_fd = fds
    code = 127
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close_in_child:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.setsid()  # its own process group: a timeout kills what this worker started
        sandbox.die_with_parent()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        send_message(sock, ("spawned", request_id, os.getpid()))
        sock.close()
        random.seed()  # not the template's sequence
        worker_spec = {**spec, **overrides}
        if worker_spec.get("log_stream"):
            os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = str(worker_spec["log_stream"])
        code = runtime.serve_loaded(socket.socket(fileno=control_fd), worker_spec, handler, capture)
    except BaseException:
        with contextlib.suppress(Exception):
            os.write(2, ("stoker: worker start failed:\n" + traceback.format_exc()).encode())
    finally:
        os._exit(code)


# -- the node agent's side -------------------------------------------------------------------

class Template:
    """One function version's template, from the node agent's event loop."""

    def __init__(self, key: str, on_exit: Callable[[int, int], None], keep_warm: float) -> None:
        self.key = key
        self.keep_warm = keep_warm
        self.pid: int | None = None  # as the zygote reported it (a namespace's init)
        self.workdir: str | None = None
        self.last_used = time.monotonic()
        self._on_exit = on_exit
        self._sock: socket.socket | None = None
        self._log_fd: int | None = None
        self._init_logs: LogBuffer | None = None
        self._ready: asyncio.Future[tuple[Any, ...]] | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        #: the template's pid of each live worker -> the pid the node knows it by
        self._workers: dict[int, int] = {}
        self._next_id = 0
        self._loop = asyncio.get_running_loop()

    def alive(self) -> bool:
        return self._sock is not None

    async def start(self, zygote: Spawner, spec: dict[str, Any], init_timeout: float, output_limit: int) -> float:
        """Fork the template and wait until the handler is imported. Returns the time (ms)."""
        t0 = time.perf_counter()
        self.workdir = str(spec.get("workdir") or "") or None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        log_r, log_w = os.pipe()
        try:
            self.pid = await zygote.spawn({**spec, "template": True}, theirs.fileno(), log_w)
        except Exception:
            ours.close()
            os.close(log_r)
            raise
        finally:
            theirs.close()
            os.close(log_w)
        self._init_logs = LogBuffer(output_limit)
        os.set_blocking(log_r, False)
        self._log_fd = log_r
        self._loop.add_reader(log_r, self._read_logs)
        ours.setblocking(False)
        self._sock = ours
        self._ready = self._loop.create_future()
        self._loop.add_reader(ours.fileno(), self._readable)

        def elapsed() -> float:
            return (time.perf_counter() - t0) * 1000

        try:
            message = await asyncio.wait_for(asyncio.shield(self._ready), init_timeout)
        except (TimeoutError, EOFError) as e:
            logs = self._take_init_logs()  # what it printed before it hung or died
            self.stop()
            error = ({"errorType": "Runtime.InitTimeout",
                      "errorMessage": f"the function's init did not finish within {init_timeout:g} s"}
                     if isinstance(e, TimeoutError) else
                     {"errorType": "Runtime.ExitError",
                      "errorMessage": "Runtime exited with error (during init of the warm template)"})
            raise InitFailed(error, elapsed(), logs) from None
        if message[0] == "init_error":
            logs = self._take_init_logs()
            logs.feed(bytes(message[2]))
            logs.dropped += int(message[3])
            logs.finish()
            self.stop()
            raise InitFailed(dict(message[1]), elapsed(), logs)
        # from here on the template prints nothing of the function's: its workers have pipes of their own
        self._init_logs = None
        return elapsed()

    def _take_init_logs(self) -> LogBuffer:
        self._read_logs()
        logs = self._init_logs or LogBuffer(0)
        self._init_logs = None
        return logs

    def _read_logs(self) -> None:
        if self._log_fd is None:
            return
        while True:
            try:
                data = os.read(self._log_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_logs()
                return
            if self._init_logs is not None:
                self._init_logs.feed(data)
            else:
                log.debug("template %s: %s", self.key, data[:4096].decode("utf-8", "replace").rstrip())

    def _close_logs(self) -> None:
        if self._log_fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._log_fd)
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None

    def _readable(self) -> None:
        while self._sock is not None:
            try:
                message, fds, sender = recv_message(self._sock)
            except BlockingIOError:
                return
            except (EOFError, ConnectionError, OSError):
                self._closed()
                return
            for fd in fds:
                os.close(fd)
            kind = message[0]
            if kind in ("ready", "init_error"):
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(message)
            elif kind == "spawned":
                fut = self._pending.pop(int(message[1]), None)
                if sender is None:  # cannot happen with SO_PASSCRED; never guess a pid to signal
                    if fut is not None and not fut.done():
                        fut.set_exception(RuntimeError("the new worker's pid did not come with its message"))
                    continue
                self._workers[int(message[2])] = sender
                if fut is not None and not fut.done():
                    fut.set_result(sender)
            elif kind == "failed":
                fut = self._pending.pop(int(message[1]), None)
                if fut is not None and not fut.done():
                    fut.set_exception(RuntimeError(str(message[2])))
            elif kind == "exited":
                host_pid = self._workers.pop(int(message[1]), None)
                if host_pid is not None:
                    self._on_exit(host_pid, int(message[2]))

    def _closed(self) -> None:
        """The template is gone, and with it every worker it forked (they die with their parent)."""
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(EOFError("the template exited"))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("the warm template exited"))
        self._pending.clear()
        workers, self._workers = self._workers, {}
        for host_pid in workers.values():
            self._on_exit(host_pid, -signal.SIGKILL)
        self._close_logs()

    async def spawn(self, spec: dict[str, Any], control_fd: int, log_fd: int) -> int:
        """Fork a worker from the template; returns its pid. The passed fds stay ours to close."""
        if self._sock is None:
            raise RuntimeError("the warm template exited")
        self.last_used = time.monotonic()
        self._next_id += 1
        request_id = self._next_id
        fut: asyncio.Future[int] = self._loop.create_future()
        self._pending[request_id] = fut
        self._sock.setblocking(True)
        try:
            send_message(self._sock, ("spawn", request_id, spec), [control_fd, log_fd])
        except OSError:
            self._pending.pop(request_id, None)
            self._closed()
            raise RuntimeError("the warm template exited") from None
        finally:
            if self._sock is not None:
                self._sock.setblocking(False)
        return await fut

    def stop(self) -> None:
        """Kill the template (and so its workers)."""
        if self.pid is not None:
            kill_process_group(self.pid)
        self._closed()


class Templates:
    """A node's templates, one per function version, made on the first cold start that needs one."""

    def __init__(self, on_exit: Callable[[int, int], None]) -> None:
        self._on_exit = on_exit
        self._templates: dict[str, Template] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._templates)

    def get(self, key: str) -> Template | None:
        return self._templates.get(key)

    async def ensure(self, key: str, zygote: Spawner, spec: dict[str, Any], init_timeout: float,
                     output_limit: int, keep_warm: float) -> tuple[Template, float]:
        """The live template for `key`, started if needed; and the ms this call spent starting it."""
        template = self._templates.get(key)
        if template is not None and template.alive():
            return template, 0.0
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            template = self._templates.get(key)
            if template is not None and template.alive():
                return template, 0.0
            if template is not None:
                self.discard(key)
            template = Template(key, self._on_exit, keep_warm)
            self._templates[key] = template
            try:
                ms = await template.start(zygote, spec, init_timeout, output_limit)
            except BaseException:
                self.discard(key)
                raise
            return template, ms

    def discard(self, key: str) -> None:
        template = self._templates.pop(key, None)
        if template is not None:
            template.stop()
            if template.workdir:
                shutil.rmtree(template.workdir, ignore_errors=True)

    def reap(self, in_use: set[str]) -> int:
        """Stop the templates of versions with no worker on this node for their keep_warm."""
        now = time.monotonic()
        stale = [k for k, t in self._templates.items()
                 if not t.alive() or (k.rpartition("@")[0] not in in_use and now - t.last_used > t.keep_warm)]
        for key in stale:
            self.discard(key)
        return len(stale)

    def stop_all(self) -> None:
        for key in list(self._templates):
            self.discard(key)
