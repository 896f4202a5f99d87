"""The Python worker runtime: import the handler once, then run invocations one at a time.

Runs inside the worker process (forked from the zygote, or started fresh with
`python -m stoker.workers.runtime`). It talks to the node agent over one socket; the
function's stdout and stderr are a pipe the node agent reads, so everything the
function prints, from Python or from C, becomes log lines of the invocation.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib
import io
import logging
import math
import os
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import orjson

from stoker.workers import protocol
from stoker.workers.context import LambdaContext

Handler = Callable[[Any, LambdaContext], Any]


def error_object(error_type: str, message: str, stack: list[str] | None = None) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": stack or []}


def _user_stack(tb: Any) -> list[str]:
    """The traceback without the runtime's own frames."""
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.endswith(
        ("stoker/workers/runtime.py", "importlib/__init__.py", "<frozen importlib._bootstrap>"))]
    return traceback.format_list(frames)


def load_handler(task_root: str, handler: str) -> Handler:
    """Import `module.function` from the bundle; raise with Lambda's error types if it cannot be."""
    module_name, _, function_name = handler.rpartition(".")
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        raise InitError(error_object("Runtime.UserCodeSyntaxError",
                                     f"Syntax error in module '{module_name}': {e}",
                                     _user_stack(e.__traceback__))) from None
    except ImportError as e:
        raise InitError(error_object("Runtime.ImportModuleError",
                                     f"Unable to import module '{module_name}': {e}",
                                     _user_stack(e.__traceback__))) from None
    except MemoryError:
        raise InitError(out_of_memory_error()) from None
    except BaseException as e:  # the module's own init code failed
        raise InitError(error_object(type(e).__name__, str(e), _user_stack(e.__traceback__))) from None
    fn = getattr(module, function_name, None)
    if fn is None or not callable(fn):
        raise InitError(error_object("Runtime.HandlerNotFound",
                                     f"Handler '{function_name}' missing on module '{module_name}'"))
    return fn


class InitError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


def out_of_memory_error() -> dict[str, Any]:
    limit = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "?")
    return error_object("Runtime.OutOfMemory",
                        f"Runtime exited: out of memory (the function's memory limit is {limit} MB)")


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dump_result(result: Any) -> bytes:
    return orjson.dumps(result, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


#: an invocation running longer than this writes its output straight to the log pipe
SPILL_AFTER_S = 0.05


class OutputCapture(io.TextIOBase):
    """sys.stdout and sys.stderr of a worker: what the function prints, kept per invocation.

    The output of a quick invocation travels with its result (no pipe round trip per
    invocation). An invocation still running after SPILL_AFTER_S `spill`s: what it printed so
    far goes to the real stdout (the node's log pipe) and so does everything after, so that
    the output of an invocation that times out or crashes is not lost with the worker.
    Output is capped at `limit` bytes per invocation (the rest is counted, never blocks).
    Writes to the real file descriptors (C extensions, subprocesses) reach the pipe directly.
    """

    def __init__(self, limit: int, fd: int) -> None:
        super().__init__()
        self.limit = limit
        self._fd = fd
        self._chunks: list[bytes] = []
        self._size = 0
        self.dropped = 0
        self.write_through = False
        self.buffer = _BinaryCapture(self)

    def spill(self, *_: Any) -> None:
        """From now on write to the pipe, starting with what was kept (a SIGALRM handler)."""
        self.write_through = True
        kept, self._chunks = self._chunks, []
        for data in kept:
            self._write_fd(data)

    def _write_fd(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self._fd, data):]

    def write(self, text: str) -> int:
        self.write_bytes(text.encode("utf-8", "replace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        room = self.limit - self._size
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if data:
            self._size += len(data)
            if self.write_through:
                self._write_fd(data)
            else:
                self._chunks.append(data)

    def take(self) -> tuple[bytes, int]:
        """What this invocation printed (if not spilled) and how much was cut; then start afresh."""
        out, dropped = b"".join(self._chunks), self.dropped
        self._chunks, self._size, self.dropped, self.write_through = [], 0, 0, False
        return out, dropped

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _BinaryCapture(io.RawIOBase):
    """`sys.stdout.buffer` of an OutputCapture."""

    def __init__(self, text: OutputCapture) -> None:
        super().__init__()
        self._text = text

    def write(self, data: Any) -> int:
        self._text.write_bytes(bytes(data))
        return len(data)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._text.fileno()


def capture_output(limit: int) -> OutputCapture:
    """Send sys.stdout and sys.stderr into one capture (as Lambda interleaves them in one log)."""
    capture = OutputCapture(limit, 1)
    sys.stdout = capture
    sys.stderr = capture
    return capture


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class _LambdaFormatter(logging.Formatter):
    """Lambda's Python log format: [LEVEL]\\tTIMESTAMP\\tREQUEST_ID\\tMESSAGE."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


_request_filter = _RequestIdFilter()


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LambdaFormatter("[%(levelname)s]\t%(asctime)s\t%(aws_request_id)s\t%(message)s\n"))
    handler.addFilter(_request_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # as Lambda: raise it in the function to see INFO


def invoke_once(handler: Handler, request: tuple[Any, ...], spec: dict[str, Any]) -> tuple[bool, bytes, bool]:
    """Run one invocation. Returns (ok, body, keep_worker).

    The request carries the timeout, not a deadline: a request may wait in this worker's
    socket behind others (the node pipelines them), and its time starts when it starts.
    """
    _, request_id, payload, timeout_ms, info = request
    deadline_ms = int(time.time() * 1000) + int(timeout_ms)
    _request_filter.request_id = request_id
    ctx = LambdaContext(
        request_id=request_id,
        function_name=spec["function"],
        function_version=spec["version"],
        invoked_function_arn=info.get("arn", ""),
        memory_limit_in_mb=spec["memory"],
        log_group_name=f"/aws/lambda/{spec['function']}",
        log_stream_name=spec.get("log_stream", ""),
        deadline_ms=deadline_ms,
    )
    try:
        event = orjson.loads(payload) if payload else None
        result = handler(event, ctx)
    except MemoryError:
        return False, orjson.dumps(out_of_memory_error()), False
    except SystemExit as e:
        return False, orjson.dumps(error_object("Runtime.ExitError", f"RequestId: {request_id} Error: "
                                                f"Runtime exited with status {e.code}")), False
    except Exception as e:
        return False, orjson.dumps(error_object(type(e).__name__, str(e), _user_stack(e.__traceback__))), True
    try:
        return True, dump_result(result), True
    except (TypeError, orjson.JSONEncodeError) as e:
        return False, orjson.dumps(error_object("Runtime.MarshalError", f"Unable to marshal response: {e}")), True


def renew_cpu_budget(budget: int) -> None:
    """RLIMIT_CPU counts a process's whole life; a warm worker gets `budget` more seconds
    for each invocation (the sandbox set the first budget; the hard limit stays as it was)."""
    if budget <= 0:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    want = math.ceil(used.ru_utime + used.ru_stime) + budget
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want != soft:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CPU, (want, hard))


def serve(sock: socket.socket, spec: dict[str, Any]) -> int:
    """The worker's life: import, report ready (or the init error), then invoke until told to stop.

    Frames: ("ready", output, dropped) or ("init_error", error, output, dropped); then for each
    ("invoke", id, payload, timeout_ms, info): ("result", id, ok, body, max_rss_kb,
    duration_ms, started_at, output, dropped).
    """
    capture = capture_output(int(spec.get("output_limit") or 1024 * 1024))
    configure_logging()
    try:
        handler = load_handler(spec["task_root"], spec["handler"])
    except InitError as e:
        protocol.send(sock, "init_error", e.error, *capture.take())
        return 1
    return serve_loaded(sock, spec, handler, capture)


def serve_loaded(sock: socket.socket, spec: dict[str, Any], handler: Handler, capture: OutputCapture) -> int:
    """Report ready (with what init printed) and invoke until told to stop; the handler is
    imported already (by `serve`, or by the warm template this worker was forked from)."""
    protocol.send(sock, "ready", *capture.take())
    cpu_budget = int((spec.get("limits") or {}).get("cpu_seconds") or 0)
    cpu_soft = resource.getrlimit(resource.RLIMIT_CPU)[0]
    frames = protocol.FrameReader(sock)
    signal.signal(signal.SIGALRM, capture.spill)
    while True:
        try:
            request = frames.read()
        except EOFError:
            return 0
        if request[0] != "invoke":
            return 0
        started_at = time.time()
        t0 = time.perf_counter()
        # the spill timer, unless the function took SIGALRM or an alarm for itself (then its
        # output streams to the pipe as it comes)
        armed = signal.getsignal(signal.SIGALRM) == capture.spill and not signal.getitimer(signal.ITIMER_REAL)[0]
        if armed:
            signal.setitimer(signal.ITIMER_REAL, SPILL_AFTER_S)
        else:
            capture.write_through = True
        ok, body, keep = invoke_once(handler, request, spec)
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        duration_ms = (time.perf_counter() - t0) * 1000
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        retire = False
        if cpu_budget and cpu_soft != resource.RLIM_INFINITY and used + cpu_budget > cpu_soft:
            renew_cpu_budget(cpu_budget)  # a warm worker's CPU budget is per invocation, not per life
            cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
            # the hard limit is the worker's life: end before an invocation could run into it
            retire = cpu_hard != resource.RLIM_INFINITY and used + cpu_budget > cpu_hard
        protocol.send(sock, "result", request[1], ok, body, usage.ru_maxrss, duration_ms, started_at,
                      *capture.take())
        if not keep:
            return 1
        if retire:
            return 0


def main() -> None:
    """Entry point for a freshly spawned worker (the zygote's spawn mode, and benchmarks).

    argv: CONTROL_FD SPEC_JSON; the sandbox was applied by the parent before exec.
    """
    fd = int(sys.argv[1])
    spec = orjson.loads(sys.argv[2])
    # the sandbox may have mounted the bundle elsewhere (/var/task): the environment says where
    spec["task_root"] = os.environ.get("LAMBDA_TASK_ROOT") or spec["task_root"]
    sock = socket.socket(fileno=fd)
    sys.exit(serve(sock, spec))


if __name__ == "__main__":
    main()
