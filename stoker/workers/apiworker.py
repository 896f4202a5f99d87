"""A worker whose runtime speaks the Lambda Runtime API (Node.js, `provided`, any language).

It is a `Worker` to the pool and the executor (same start, invoke, kill, logs), but the
process is an exec'd program (the zygote still forks it and applies the same sandbox)
and the conversation is HTTP on a loopback port of its own (runtimeapi.py) instead of
msgpack frames on a socketpair:

  - start: listen, spawn with AWS_LAMBDA_RUNTIME_API set, and wait for the runtime's first
    `next` (init done, as on Lambda) or its `init/error`, its exit, or the init timeout;
  - invoke: queue the event for `next` and wait for `response` or `error`, or the
    process's exit, or the timeout (which kills its process group, as for Python).

Memory: an address-space limit breaks runtimes that reserve large virtual memory (V8,
the JVM), so these workers have none; instead the node checks the runtime's resident
memory every 100 ms while it initialises or runs, and ends it past the function's
`memory` (Runtime.OutOfMemory). Its peak resident size is the REPORT's Max Memory Used.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from typing import Any

import orjson

from stoker.workers import peers, procfs
from stoker.workers.runtimeapi import MAX_BODY, Invocation, Reply, RuntimeApiServer
from stoker.workers.worker import InitFailed, Outcome, Spawner, Worker, _exit_description, error_body

#: how often resident memory is checked while the runtime initialises or runs
MEMORY_CHECK_S = 0.1
ERROR_TEXT_LIMIT = 4096


def trace_id() -> str:
    """An X-Ray-style trace header value, as Lambda passes in Lambda-Runtime-Trace-Id."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


def error_object(error_type: str | None, body: bytes) -> dict[str, Any]:
    """The error a runtime posted, as {errorType, errorMessage, stackTrace}, whatever it sent."""
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        error = dict(value)
        error.setdefault("errorType", error_type or "Runtime.Unknown")
        error.setdefault("errorMessage", "")
        error.setdefault("stackTrace", error.pop("trace", []))
        return error
    text = body[:ERROR_TEXT_LIMIT].decode("utf-8", "replace") if body else ""
    return {"errorType": error_type or "Runtime.Unknown", "errorMessage": text, "stackTrace": []}


class RuntimeApiWorker(Worker):
    #: the Runtime API hands out one event at a time (`next`): no pipelining
    max_in_flight = 1

    def __init__(self, worker_id: str, function_version: str, spec: dict[str, Any], output_limit: int) -> None:
        super().__init__(worker_id, function_version, spec, output_limit)
        self._api = RuntimeApiServer(self, name=f"{function_version} ({worker_id})")
        self._memory_kb = int(spec.get("memory", 128)) * 1024
        #: set by the runtime's first `next` (None) or its init/error (the error)
        self._ready: asyncio.Future[dict[str, Any] | None] = self._loop.create_future()
        self._inbox: asyncio.Queue[Invocation] = asyncio.Queue()
        self._current: Invocation | None = None
        self._spawned = asyncio.Event()
        #: resolved to wake a waiting start/invoke early (the process exited or closed its output)
        self._poke: asyncio.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, zygote: Spawner, spawn_spec: dict[str, Any], init_timeout: float) -> float:
        """Exec the runtime and wait for its first `next`. Returns init time (ms)."""
        t0 = time.perf_counter()
        netns = self.confinement.netns_path if self.confinement is not None else None
        address = await self._api.listen(netns)
        spec = {**spawn_spec, "env": {**spawn_spec["env"], "AWS_LAMBDA_RUNTIME_API": address}}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # the zygote wants a control fd
        log_r, log_w = os.pipe()
        try:
            self.pid = await zygote.spawn(spec, theirs.fileno(), log_w)
        except Exception:
            os.close(log_r)
            raise
        finally:
            ours.close()
            theirs.close()
            os.close(log_w)
        self._spawned.set()
        self._attach_logs(log_r)
        how = await self._watch(self._ready, t0 + init_timeout)
        init_ms = (time.perf_counter() - t0) * 1000
        if how == "done":
            error = self._ready.result()
            if error is None:
                self.became_ready()
                return init_ms
            self.kill()
        else:
            error = await self._failure(how, init_timeout, during_init=True)
        output = self.take_logs()  # what it wrote before failing: the user's only clue, keep it
        output.finish()
        raise InitFailed(error, init_ms, output)

    def _attach_logs(self, log_r: int) -> None:
        os.set_blocking(log_r, False)
        self._log_fd = log_r
        self._loop.add_reader(log_r, self._read_logs)

    def exited(self, returncode: int) -> None:
        super().exited(returncode)
        self._wake()

    def close_logs(self) -> None:
        had_logs = self._log_fd is not None
        super().close_logs()
        if had_logs:
            self._wake()  # output closed: the runtime has most likely exited

    def kill(self) -> None:
        super().kill()
        self._api.close()
        self._spawned.set()  # a connection still waiting for the pid gets refused

    def _wake(self) -> None:
        if self._poke is not None and not self._poke.done():
            self._poke.set_result(None)

    # -- waiting ----------------------------------------------------------------------------
    def _proc_status(self) -> tuple[bool, int, int]:
        """(alive, resident kB, peak resident kB) of the runtime: its whole process tree, since in a
        namespace sandbox the pid the node holds is the namespace's init, the runtime its child."""
        if self.pid is None:
            return False, 0, 0
        return procfs.tree_memory(self.pid)

    async def _watch(self, fut: asyncio.Future[Any], deadline: float) -> str:
        """Wait for `fut`: "done", or "exited", "out_of_memory" or "timeout" first."""
        while True:
            if fut.done():
                return "done"
            if self.returncode is not None:
                return "exited"
            alive, rss_kb, _ = self._proc_status()
            if not alive:
                return "exited"
            if rss_kb > self._memory_kb:
                return "out_of_memory"
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return "timeout"
            self._poke = self._loop.create_future()
            try:
                await asyncio.wait((fut, self._poke), timeout=min(remaining, MEMORY_CHECK_S),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._poke = None

    async def _failure(self, how: str, timeout: float, during_init: bool = False,
                       request_id: str | None = None) -> dict[str, Any]:
        """The error for a runtime that exited, ran out of memory or timed out (it is killed)."""
        prefix = f"RequestId: {request_id} Error: " if request_id else ""
        if how == "timeout":
            self.kill()
            if during_init:
                return {"errorType": "Runtime.InitTimeout",
                        "errorMessage": f"the function's init did not finish within {timeout:g} s"}
            return {"errorType": "Sandbox.Timedout",
                    "errorMessage": f"{prefix}Task timed out after {timeout:.2f} seconds"}
        if how == "exited":
            await self._wait_exit(1.0)
        self.kill()
        if how == "out_of_memory" or self._heap_exhausted():
            limit = self._memory_kb // 1024
            return {"errorType": "Runtime.OutOfMemory", "stackTrace": [],
                    "errorMessage": f"{prefix}Runtime exited: out of memory (the function's memory limit is "
                                    f"{limit} MB)"}
        suffix = " (during init)" if during_init else ""
        return {"errorType": "Runtime.ExitError", "stackTrace": [],
                "errorMessage": f"{prefix}{_exit_description(self.returncode)}{suffix}"}

    def _heap_exhausted(self) -> bool:
        """V8 ends itself when its heap (--max-old-space-size) is full, saying so on stderr."""
        self._read_logs()
        return any("heap out of memory" in line for _, line in self._logs.lines[-20:])

    # -- invoking -------------------------------------------------------------------------
    async def invoke(self, request_id: str, payload: bytes, timeout: float, info: dict[str, Any]) -> Outcome:
        self.state = "busy"
        self.invocations += 1
        started_at = time.time()
        t0 = time.perf_counter()
        invocation = Invocation(request_id=request_id, payload=payload,
                                deadline_ms=int((started_at + timeout) * 1000), function_arn=info.get("arn", ""),
                                trace_id=trace_id(), result=self._loop.create_future())
        self._current = invocation
        self._inbox.put_nowait(invocation)
        try:
            how = await self._watch(invocation.result, t0 + timeout)
        finally:
            self._current = None
            self.last_used = time.monotonic()
        if how != "done":
            peak_kb = max(self._proc_status()[2], self.max_rss_kb_now())
            oom_kills = self.after_invocation()[0]  # now: the cgroup goes once the exit is reported
            if how == "exited":
                await self._wait_exit(1.0)
                oom_kills += self.after_invocation()[0]
            error = await self._failure("out_of_memory" if oom_kills else how, timeout, request_id=request_id)
            status = "timed_out" if how == "timeout" else "failed"
            return self._outcome(status, orjson.dumps(error), t0, started_at, peak_kb, reusable=False)
        ok, body = invocation.result.result()
        alive, _, peak_kb = self._proc_status()
        oom_kills, _ = self.after_invocation()
        if oom_kills:
            ok, body = False, self.out_of_memory_body(request_id)
            self.kill()
        if self.confinement is not None:
            peak_kb = max(peak_kb, self.confinement.peak_kb())
        return self._outcome("succeeded" if ok else "failed", body, t0, started_at, peak_kb,
                             reusable=alive and self.state != "dead")

    # -- the Runtime API's calls (runtimeapi.RuntimeApiBackend) -----------------------------
    async def peer_allowed(self, client_port: int, server_port: int) -> bool:
        await self._spawned.wait()
        if self.pid is None or self.state == "dead":
            return False
        if self._api.private:
            return True  # it listens inside the worker's own network namespace: only the worker can connect
        return await asyncio.to_thread(peers.connected_from_session, client_port, server_port, self.pid)

    async def next_invocation(self) -> Invocation:
        if not self._ready.done():
            self._ready.set_result(None)
        invocation = await self._inbox.get()
        invocation.delivered = True
        return invocation

    def _waiting(self, request_id: str | None) -> Invocation | None:
        inv = self._current
        if inv is None or inv.request_id != request_id or not inv.delivered or inv.result.done():
            return None
        return inv

    @staticmethod
    def _invalid(request_id: str | None) -> Reply:
        return Reply.error(400, "InvalidRequestID", f"no invocation {request_id} is waiting for a result")

    def invocation_response(self, request_id: str, body: bytes) -> Reply:
        inv = self._waiting(request_id)
        if inv is None:
            return self._invalid(request_id)
        inv.result.set_result((True, body or b"null"))
        return Reply.accepted()

    def invocation_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        inv = self._waiting(request_id)
        if inv is None:
            return self._invalid(request_id)
        inv.result.set_result((False, orjson.dumps(error_object(error_type, body))))
        return Reply.accepted()

    def init_error(self, error_type: str | None, body: bytes) -> Reply:
        if self._ready.done():
            return Reply.error(403, "InvalidStateTransition", "init/error is only accepted before the first "
                                                              "invocation/next")
        self._ready.set_result(error_object(error_type, body))
        return Reply.accepted()

    def body_too_large(self, request_id: str | None, size: int) -> Reply:
        message = f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_BODY} bytes)."
        inv = self._waiting(request_id)
        if inv is not None:
            inv.result.set_result((False, error_body("Function.ResponseSizeTooLarge", message)))
        elif request_id is None and not self._ready.done():
            self._ready.set_result({"errorType": "Runtime.Unknown", "stackTrace": [],
                                    "errorMessage": f"the runtime's init error ({size} bytes) is over the "
                                                    f"{MAX_BODY}-byte limit"})
        return Reply.error(413, "RequestEntityTooLarge", message)
