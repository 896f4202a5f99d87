"""One worker process as the node agent sees it: start it, invoke it, time it out, kill it.

A worker runs one function version and one invocation at a time. Its stdout and
stderr arrive on a pipe and are attributed to the invocation in progress (output
written before the first invocation, during init, goes to the first one, as Lambda
shows init logs before START).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson

from stoker.workers import protocol
from stoker.workers.logbuffer import LogBuffer
from stoker.workers.zygote import ZygoteClient


@dataclass
class Outcome:
    status: str  # succeeded | failed | timed_out
    body: bytes  # the result JSON, or the error object JSON
    duration_ms: float
    started_at: float
    ended_at: float
    max_rss_kb: int = 0
    reusable: bool = True

    @property
    def error(self) -> dict[str, Any] | None:
        if self.status == "succeeded":
            return None
        try:
            value = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return {"errorType": "Runtime.Unknown", "errorMessage": self.body[:1000].decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {"errorType": "Runtime.Unknown", "errorMessage": str(value)}


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


def _expire(reply: asyncio.Future[Any]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


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
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, zygote: ZygoteClient, spawn_spec: dict[str, Any], init_timeout: float) -> float:
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
        _transport, self._channel = await self._loop.create_unix_connection(protocol.FrameChannel, sock=ours)
        try:
            message = await asyncio.wait_for(self._channel.next_frame(), init_timeout)
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
            raise InitFailed(dict(message[1]), init_ms, self._init_output())
        self.state = "idle"
        return init_ms

    def _init_output(self) -> LogBuffer:
        """What the function printed before its start failed (shown before START in its logs)."""
        logs = self.take_logs()
        logs.finish()
        return logs

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
            for target in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    target()
        self._close_control()

    def _close_control(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel.close()
            self._channel = None

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
        """The output gathered so far (init output included), and a fresh buffer for what follows."""
        self._read_logs()  # everything written before the result frame is in the pipe by now
        logs, self._logs = self._logs, LogBuffer(self._output_limit)
        return logs

    # -- invoking -------------------------------------------------------------------------
    async def invoke(self, request_id: str, payload: bytes, timeout: float, info: dict[str, Any]) -> Outcome:
        assert self._channel is not None
        self.state = "busy"
        self.invocations += 1
        started_at = time.time()
        t0 = time.perf_counter()
        deadline_ms = int((started_at + timeout) * 1000)
        reply = self._channel.next_frame()
        # the deadline: a timer, not wait_for, so the hot path creates no extra task
        timer = self._loop.call_later(timeout, _expire, reply)
        try:
            self._channel.send(protocol.pack("invoke", request_id, payload, deadline_ms, info))
            message = await reply
        except TimeoutError:
            self.kill()
            return self._outcome("timed_out", error_body(
                "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"),
                t0, started_at, reusable=False)
        except (EOFError, ConnectionError, protocol.ProtocolError, OSError):
            await self._wait_exit(1.0)
            self.kill()
            description = _exit_description(self.returncode)
            if self.returncode == -signal.SIGKILL:  # not ours (we were waiting): the kernel's, most often for memory
                description += (" (the kernel kills a process like this when it runs out of memory; the function's "
                                f"memory limit is {self.spec.get('memory', 128)} MB)")
            return self._outcome("failed", error_body(
                "Runtime.ExitError", f"RequestId: {request_id} Error: {description}"), t0, started_at, reusable=False)
        finally:
            timer.cancel()
            self.last_used = time.monotonic()
        _, _rid, ok, body, max_rss_kb = message
        if ok and len(body) > RESPONSE_LIMIT:
            return self._outcome("failed", error_body(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({RESPONSE_LIMIT} bytes)."), t0, started_at, max_rss_kb)
        # after running out of memory or exiting, the runtime ends itself: never reuse it
        fatal = not ok and (b'"Runtime.OutOfMemory"' in body[:200] or b'"Runtime.ExitError"' in body[:200])
        reusable = not fatal and self.state != "dead"
        return self._outcome("succeeded" if ok else "failed", body, t0, started_at, max_rss_kb, reusable)

    def _outcome(self, status: str, body: bytes, t0: float, started_at: float, max_rss_kb: int = 0,
                 reusable: bool = True) -> Outcome:
        duration_ms = (time.perf_counter() - t0) * 1000
        return Outcome(status=status, body=body, duration_ms=duration_ms, started_at=started_at,
                       ended_at=started_at + duration_ms / 1000, max_rss_kb=max_rss_kb, reusable=reusable)

    def max_rss_kb_now(self) -> int:
        """Peak resident memory from /proc, for workers that died before reporting their own."""
        if self.pid is None:
            return 0
        from stoker.workers import procfs

        return procfs.tree_memory(self.pid)[2]
