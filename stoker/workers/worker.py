"""One worker process as the node agent sees it: start it, invoke it, time it out, kill it.

A worker runs one function version and one invocation at a time. Under load the node
pipelines: it sends the next invocations while one runs, so that the worker goes from
one to the next without waiting for a round trip (at most `max_in_flight` at once; the
first of them is running, the others wait in its socket). An invocation's timeout
starts when it starts running. If the worker dies, the running invocation fails and
the waiting ones never started: they raise `Requeue` and run on another worker.

What a Python function prints travels with its result (captured in the worker); what
reaches the worker's real stdout and stderr (C extensions, subprocesses) arrives on a
pipe and goes to the invocation running when it is read. Output written during init
goes to the first invocation, before START, as Lambda shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from stoker.workers import protocol
from stoker.workers.logbuffer import LogBuffer

if TYPE_CHECKING:
    from stoker.workers.confine import Confinement


@dataclass
class Outcome:
    status: str  # succeeded | failed | timed_out
    body: bytes  # the result JSON, or the error object JSON
    duration_ms: float
    started_at: float
    ended_at: float
    max_rss_kb: int = 0
    reusable: bool = True
    #: what a Python function printed (captured in the worker), and how much was cut off
    output: bytes = b""
    dropped: int = 0

    @property
    def error(self) -> dict[str, Any] | None:
        if self.status == "succeeded":
            return None
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {"errorType": "Runtime.Unknown", "errorMessage": self.body[:1000].decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {"errorType": "Runtime.Unknown", "errorMessage": str(value)}


def kill_process_group(pid: int) -> None:
    """SIGKILL a process that leads its own process group, and the whole group."""
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target()


class Spawner(Protocol):
    """What forks a worker for the node: the zygote, or a function's warm template."""

    async def spawn(self, spec: dict[str, Any], control_fd: int, log_fd: int) -> int: ...


class InitFailed(Exception):
    def __init__(self, error: dict[str, Any], init_ms: float, logs: LogBuffer | None = None) -> None:
        super().__init__(error.get("errorMessage", "init failed"))
        self.error = error
        self.init_ms = init_ms
        self.logs = logs  # what the runtime wrote while it failed to start, if kept


#: the largest result a function may return, as Lambda's 6 MB response limit
RESPONSE_LIMIT = 6 * 1024 * 1024


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": []})


class Requeue(Exception):
    """The invocation never started (its worker died before reaching it): run it on another."""


#: invocations a Python worker holds at once (one running, the others waiting in its socket)
PIPELINE_DEPTH = 8
#: invocations wait in a worker's socket only behind workers whose invocations are this short
#: (ms): pipelining pays for tiny functions, and an event queued in a worker
#: counts as started if the node is lost, while one waiting in the node goes back unspent
PIPELINE_MAX_MS = 50.0
#: ... on the evidence of at least this many of its latest invocations (and none longer)
PIPELINE_EVIDENCE = 4


@dataclass
class _Pending:
    request_id: str
    timeout: float
    reply: asyncio.Future[tuple[Any, ...]]
    timer: asyncio.TimerHandle | None = None
    t0: float = 0.0
    started_at: float = field(default_factory=time.time)


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-returncode)
        return f"Runtime exited with error: signal: {name}"
    return f"Runtime exited with error: exit status {returncode}"


class Worker:
    def __init__(self, worker_id: str, function_version: str, spec: dict[str, Any], output_limit: int) -> None:
        self.id = worker_id
        self.function_version = function_version
        self.spec = spec
        self.pid: int | None = None
        self.state = "starting"
        self.last_used = time.monotonic()
        self.invocations = 0
        #: started ahead of demand (min_warm): kept while its version is the function's newest
        self.provisioned = False
        self.returncode: int | None = None
        self._output_limit = output_limit
        self._channel: protocol.FrameChannel | None = None
        self._log_fd: int | None = None
        self._logs = LogBuffer(output_limit)
        self._init_logs: LogBuffer | None = None
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        #: invocations sent and not answered, in order: the first one is running
        self._pending: deque[_Pending] = deque()
        self._init_reply: asyncio.Future[tuple[Any, ...]] | None = None
        #: leases the pool has handed out on this worker (see WarmPool)
        self.leases = 0
        #: the cgroup and network the node made for it (see confine.py), when it has them
        self.confinement: Confinement | None = None
        #: how long its last invocations took (ms)
        self._recent_ms: deque[float] = deque(maxlen=PIPELINE_EVIDENCE * 2)

    #: how many invocations the pool may hand this worker at once
    max_in_flight = PIPELINE_DEPTH

    @property
    def pipelines(self) -> bool:
        """Whether invocations may wait in its socket behind the running one: only once its
        last few invocations were all short."""
        return len(self._recent_ms) >= PIPELINE_EVIDENCE and max(self._recent_ms) < PIPELINE_MAX_MS

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, zygote: Spawner, spawn_spec: dict[str, Any], init_timeout: float) -> float:
        """Fork the worker and wait until its handler is imported. Returns init time (ms)."""
        t0 = time.perf_counter()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_r, log_w = os.pipe()
        try:
            self.pid = await zygote.spawn(spawn_spec, theirs.fileno(), log_w)
        except Exception:
            ours.close()
            os.close(log_r)
            raise
        finally:
            theirs.close()
            os.close(log_w)
        os.set_blocking(log_r, False)
        self._log_fd = log_r
        self._loop.add_reader(log_r, self._read_logs)
        self._init_reply = self._loop.create_future()
        _transport, self._channel = await self._loop.create_unix_connection(
            lambda: protocol.FrameChannel(self._on_frame, self._on_lost), sock=ours)
        try:
            message = await asyncio.wait_for(asyncio.shield(self._init_reply), init_timeout)
        except TimeoutError:
            self.kill()
            raise InitFailed({"errorType": "Runtime.InitTimeout",
                              "errorMessage": f"the function's init did not finish within {init_timeout:g} s"},
                             (time.perf_counter() - t0) * 1000, self._init_output()) from None
        except (EOFError, ConnectionError, protocol.ProtocolError):
            await self._wait_exit(1.0)
            raise InitFailed({"errorType": "Runtime.ExitError",
                              "errorMessage": _exit_description(self.returncode) + " (during init)"},
                             (time.perf_counter() - t0) * 1000, self._init_output()) from None
        init_ms = (time.perf_counter() - t0) * 1000
        if message[0] == "init_error":
            self.kill()
            raise InitFailed(dict(message[1]), init_ms, self._init_output(*message[2:4]))
        self._init_logs = self._init_output(*message[1:3])
        self.became_ready()
        return init_ms

    def became_ready(self) -> None:
        self.state = "idle"
        if self.confinement is not None:
            self.confinement.ready()  # what runs now is the worker: never swept between invocations

    def _init_output(self, captured: bytes = b"", dropped: int = 0) -> LogBuffer:
        """What the function printed while starting (shown before START in its logs)."""
        logs = self.take_logs()
        logs.feed(captured)
        logs.dropped += dropped
        logs.finish()
        return logs

    def take_init_logs(self) -> list[tuple[int, str]]:
        """The init output, once: for the first invocation's logs."""
        logs, self._init_logs = self._init_logs, None
        return logs.take() if logs is not None else []

    # -- frames from the worker -------------------------------------------------------------
    def _on_frame(self, frame: tuple[Any, ...]) -> None:
        if self._init_reply is not None and not self._init_reply.done():
            self._init_reply.set_result(frame)
            return
        if frame[0] != "result" or not self._pending:
            return
        head = self._pending.popleft()
        if head.timer is not None:
            head.timer.cancel()
        if not head.reply.done():
            head.reply.set_result(frame)
        if self._pending:
            self._start_head()

    def _on_lost(self, exc: BaseException) -> None:
        """The control connection closed: the running invocation failed, the waiting ones never ran."""
        if self._init_reply is not None and not self._init_reply.done():
            self._init_reply.set_exception(EOFError("the worker closed its connection"))
        if self._pending:
            head = self._pending.popleft()
            if head.timer is not None:
                head.timer.cancel()
            if not head.reply.done():
                head.reply.set_exception(EOFError("the worker closed its connection"))
        while self._pending:
            waiting = self._pending.popleft()
            if not waiting.reply.done():
                waiting.reply.set_exception(Requeue())

    def _start_head(self) -> None:
        head = self._pending[0]
        head.t0 = time.perf_counter()
        head.started_at = time.time()
        head.timer = self._loop.call_later(head.timeout, self._expire, head)

    def _expire(self, head: _Pending) -> None:
        if self._pending and self._pending[0] is head:
            self._pending.popleft()
            if not head.reply.done():
                head.reply.set_exception(TimeoutError())
        self.kill()  # and the invocations waiting behind it are requeued (_on_lost)

    def exited(self, returncode: int) -> None:
        self.returncode = returncode
        self.state = "dead"
        self._exited.set()

    async def _wait_exit(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), timeout)

    def kill(self) -> None:
        """Kill the worker and everything it started (its own process group)."""
        self.state = "dead"
        if self.pid is not None:
            kill_process_group(self.pid)
        self._close_control()

    def _close_control(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel.close()
            self._channel = None
        self._on_lost(ConnectionError("killed"))

    def close_logs(self) -> None:
        if self._log_fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._log_fd)
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None

    # -- logs -----------------------------------------------------------------------------
    def _read_logs(self) -> None:
        fd = self._log_fd
        if fd is None:
            return
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close_logs()
                return
            self._logs.feed(data)

    def take_logs(self) -> LogBuffer:
        """The pipe output gathered so far, and a fresh buffer for what follows."""
        # what the last invocation wrote to the pipe is there by now (it wrote before it sent its
        # result); the next one, if already started, writes to the pipe only after 50 ms
        self._read_logs()
        logs, self._logs = self._logs, LogBuffer(self._output_limit)
        return logs

    # -- invoking -------------------------------------------------------------------------
    async def invoke(self, request_id: str, payload: bytes, timeout: float, info: dict[str, Any]) -> Outcome:
        """Run one invocation; raises Requeue if the worker died before reaching it."""
        if self._channel is None:
            raise Requeue()
        self.state = "busy"
        self.invocations += 1
        pending = _Pending(request_id, timeout, self._loop.create_future())
        self._pending.append(pending)
        self._channel.send(protocol.pack("invoke", request_id, payload, int(timeout * 1000), info))
        if len(self._pending) == 1:
            self._start_head()
        try:
            message = await pending.reply
        except TimeoutError:
            return self._decided("timed_out", error_body(
                "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"),
                pending)
        except (EOFError, ConnectionError, protocol.ProtocolError, OSError):
            oom_kills = self.after_invocation()[0]  # now: the cgroup goes once the exit is reported
            await self._wait_exit(1.0)
            oom_kills += self.after_invocation()[0]
            self.kill()
            if oom_kills:
                return self._decided("failed", self.out_of_memory_body(request_id), pending)
            description = _exit_description(self.returncode)
            if self.returncode == -signal.SIGKILL:  # not ours (we were waiting): the kernel's, most often for memory
                description += (" (the kernel kills a process like this when it runs out of memory; the function's "
                                f"memory limit is {self.spec.get('memory', 128)} MB)")
            return self._decided("failed", error_body(
                "Runtime.ExitError", f"RequestId: {request_id} Error: {description}"), pending)
        finally:
            self.last_used = time.monotonic()
        _, _rid, ok, body, max_rss_kb, duration_ms, started_at, output, dropped = message
        self._recent_ms.append(float(duration_ms))
        if ok and len(body) > RESPONSE_LIMIT:
            ok, body = False, error_body(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({RESPONSE_LIMIT} bytes).")
        oom_kills, _ = self.after_invocation()
        if oom_kills:  # a process of the tree was killed for memory: the invocation failed, whatever it said
            ok, body = False, self.out_of_memory_body(request_id)
        max_rss_kb = max(int(max_rss_kb or 0), self.confinement.peak_kb() if self.confinement else 0)
        # after running out of memory or exiting, the runtime ends itself: never reuse it
        fatal = not ok and (b'"Runtime.OutOfMemory"' in body[:200] or b'"Runtime.ExitError"' in body[:200])
        if oom_kills:
            self.kill()  # its tree lost a process to the kernel: start afresh
        return Outcome(status="succeeded" if ok else "failed", body=body, duration_ms=duration_ms,
                       started_at=started_at, ended_at=started_at + duration_ms / 1000, max_rss_kb=max_rss_kb,
                       reusable=not fatal and self.state != "dead", output=output, dropped=dropped)

    def after_invocation(self) -> tuple[int, list[int]]:
        """Kill what the invocation left running (when nothing else is queued on this worker:
        a pipelined invocation may have started processes already) and count the tree's
        out-of-memory kills since the last invocation."""
        if self.confinement is None:
            return 0, []
        return self.confinement.after_invocation(sweep=not self._pending or self.state == "dead")

    def out_of_memory_body(self, request_id: str) -> bytes:
        limit = self.spec.get("memory", 128)
        return error_body("Runtime.OutOfMemory",
                          f"RequestId: {request_id} Error: Runtime exited: out of memory (the function's memory "
                          f"limit is {limit} MB, for the worker and every process it started)")

    def _decided(self, status: str, body: bytes, pending: _Pending, reusable: bool = False) -> Outcome:
        """An outcome the node decided (a timeout, an exit): timed from when the invocation started."""
        t0 = pending.t0 or time.perf_counter()
        return self._outcome(status, body, t0, pending.started_at, self.max_rss_kb_now(), reusable)

    def _outcome(self, status: str, body: bytes, t0: float, started_at: float, max_rss_kb: int = 0,
                 reusable: bool = True) -> Outcome:
        duration_ms = (time.perf_counter() - t0) * 1000
        return Outcome(status=status, body=body, duration_ms=duration_ms, started_at=started_at,
                       ended_at=started_at + duration_ms / 1000, max_rss_kb=max_rss_kb, reusable=reusable)

    def max_rss_kb_now(self) -> int:
        """Peak resident memory from /proc, for workers that died before reporting their own."""
        if self.confinement is not None and self.confinement.cgroup is not None:
            return self.confinement.peak_kb()
        if self.pid is None:
            return 0
        from stoker.workers import procfs

        return procfs.tree_memory(self.pid)[2]
