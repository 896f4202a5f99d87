"""The Lambda Runtime API, served by the node agent to one worker on a loopback port.

A runtime (the Node.js bootstrap shipped with stoker, awslambdaric, any language's
runtime interface client, or a bootstrap of your own) finds it in AWS_LAMBDA_RUNTIME_API
and speaks plain HTTP/1.1 to it, as on AWS:

    GET  /2018-06-01/runtime/invocation/next             blocks until there is an event
         200, body = the event, headers Lambda-Runtime-Aws-Request-Id,
         Lambda-Runtime-Deadline-Ms, Lambda-Runtime-Invoked-Function-Arn, Lambda-Runtime-Trace-Id
    POST /2018-06-01/runtime/invocation/{id}/response   the result          202 {"status": "OK"}
    POST /2018-06-01/runtime/invocation/{id}/error      the function failed 202 (header
         Lambda-Runtime-Function-Error-Type; body {errorType, errorMessage, stackTrace})
    POST /2018-06-01/runtime/init/error                  init failed         202

An unknown request id is 400 InvalidRequestID; a body over 6 MB is 413 and fails the
invocation (Function.ResponseSizeTooLarge); a call out of turn (init/error after init)
is 403. Only the worker's own processes may connect (see peers.py).

This module speaks HTTP (with h11: keep-alive, chunked bodies, `Expect: 100-continue`);
what the calls mean is the `RuntimeApiBackend`'s business (apiworker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import h11
import orjson

from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT

log = logging.getLogger(__name__)

PREFIX = "/2018-06-01/runtime"
#: a response or error body may be this large (as on Lambda: 6 MB)
MAX_BODY = SYNC_PAYLOAD_LIMIT
#: an over-large body is read and dropped up to this size, so the runtime hears the 413;
#: past it the connection is closed
MAX_DISCARD = 64 * 1024 * 1024
#: request line and headers (awslambdaric may send an X-Ray cause header of up to 1 MB)
MAX_HEAD = 2 * 1024 * 1024
ERROR_TYPE_HEADER = b"lambda-runtime-function-error-type"

_INVOCATION_PATH = re.compile(rf"^{PREFIX}/invocation/([^/]+)/(response|error)$")


@dataclass
class Invocation:
    """One event handed to the runtime through `next`."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    result: asyncio.Future[tuple[bool, bytes]] = field(repr=False)
    delivered: bool = False


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, str]

    @classmethod
    def accepted(cls) -> Reply:
        return cls(202, {"status": "OK"})

    @classmethod
    def error(cls, status: int, error_type: str, message: str) -> Reply:
        return cls(status, {"errorType": error_type, "errorMessage": message})


class RuntimeApiBackend(Protocol):
    """What the Runtime API calls mean for one worker."""

    async def peer_allowed(self, client_port: int, server_port: int) -> bool: ...

    async def next_invocation(self) -> Invocation: ...

    def invocation_response(self, request_id: str, body: bytes) -> Reply: ...

    def invocation_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply: ...

    def init_error(self, error_type: str | None, body: bytes) -> Reply: ...

    def body_too_large(self, request_id: str | None, size: int) -> Reply: ...


class _BodyTooLarge(Exception):
    def __init__(self, size: int, complete: bool) -> None:
        super().__init__(size)
        self.size = size
        self.complete = complete  # the whole body was read (and dropped): the connection is usable


class RuntimeApiServer:
    """One worker's Runtime API: a listening socket on 127.0.0.1 and its connections."""

    def __init__(self, backend: RuntimeApiBackend, name: str = "") -> None:
        self._backend = backend
        self._name = name
        self._server: asyncio.Server | None = None
        #: open connections, so that closing the server ends them (and any `next` still waiting)
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.port = 0
        #: listening inside a worker's own network namespace
        self.private = False

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self.port}"

    async def listen(self, netns: str | None = None) -> str:
        """Listen on 127.0.0.1: the node's own, or inside the worker's network namespace
        (`netns`, its path), where only the worker's processes can connect."""
        if netns:
            from stoker.workers.confine import listen_in

            sock = await asyncio.to_thread(listen_in, netns)
            self._server = await asyncio.start_server(self._connection, sock=sock, limit=65536)
            self.private = True
        else:
            self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, limit=65536)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task, writer in list(self._connections.items()):
            with contextlib.suppress(Exception):
                writer.close()
            if task is not asyncio.current_task():
                task.cancel()
        self._connections.clear()

    # -- one connection ---------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._server is None or task is None:  # closed already
            writer.close()
            return
        self._connections[task] = writer
        try:
            peer = writer.get_extra_info("peername")
            if not peer or not await self._backend.peer_allowed(int(peer[1]), self.port):
                log.warning("Runtime API of %s: refused a connection from a process outside the worker", self._name)
                return
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return  # the runtime closed the connection
                keep = await self._exchange(conn, reader, writer, event)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            log.debug("Runtime API of %s: connection ended: %s", self._name, e)
        except asyncio.CancelledError:
            # close() cancels connections (e.g. a `next` still waiting); end quietly, as asyncio's
            # server logs a cancelled connection task as an error
            pass
        finally:
            self._connections.pop(task, None)
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(65536))

    async def _read_body(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bytes:
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")) or b"")
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event(conn, reader)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_DISCARD:
                    raise _BodyTooLarge(size, complete=False)
                if size <= MAX_BODY:
                    chunks.append(bytes(event.data))
                continue
            if isinstance(event, h11.EndOfMessage):
                if size > MAX_BODY:
                    raise _BodyTooLarge(size, complete=True)
                return b"".join(chunks)
            raise h11.RemoteProtocolError("the request body ended early")

    async def _exchange(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: h11.Request) -> bool:
        """Answer one request. Returns False when the connection must be closed."""
        method = request.method.decode("ascii", "replace").upper()
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.lower(): v for k, v in request.headers}
        match = _INVOCATION_PATH.match(path)
        keep = True
        if method == "GET" and path == f"{PREFIX}/invocation/next":
            await self._read_body(conn, reader, writer)  # none, but h11 must see the request end
            await self._send_invocation(conn, writer, await self._backend.next_invocation())
            return True
        if method != "POST" or not (match or path == f"{PREFIX}/init/error"):
            known = match or path in (f"{PREFIX}/invocation/next", f"{PREFIX}/init/error")
            reply = (Reply.error(405, "MethodNotAllowed", f"{method} is not allowed on {path}") if known
                     else Reply.error(404, "NotFound", f"the Runtime API has no {path}"))
            try:
                await self._read_body(conn, reader, writer)
            except _BodyTooLarge as e:
                keep = e.complete
        else:
            request_id = match.group(1) if match else None
            error_type = headers.get(ERROR_TYPE_HEADER)
            error_type_text = error_type.decode("utf-8", "replace") if error_type else None
            try:
                body = await self._read_body(conn, reader, writer)
            except _BodyTooLarge as e:
                reply = self._backend.body_too_large(request_id, e.size)
                keep = e.complete
            else:
                if match is None:
                    reply = self._backend.init_error(error_type_text, body)
                elif match.group(2) == "response":
                    reply = self._backend.invocation_response(match.group(1), body)
                else:
                    reply = self._backend.invocation_error(match.group(1), error_type_text, body)
        await self._send(conn, writer, reply.status, orjson.dumps(reply.body), keep=keep)
        return keep

    async def _send_invocation(self, conn: h11.Connection, writer: asyncio.StreamWriter, inv: Invocation) -> None:
        # spelled as Lambda spells them: hand-written runtimes sometimes match header names exactly
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(inv.payload)).encode()),
            (b"Lambda-Runtime-Aws-Request-Id", inv.request_id.encode()),
            (b"Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms).encode()),
            (b"Lambda-Runtime-Invoked-Function-Arn", inv.function_arn.encode()),
            (b"Lambda-Runtime-Trace-Id", inv.trace_id.encode()),
        ]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers, reason=b"OK")) or b"")
        writer.write(conn.send(h11.Data(data=inv.payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes,
                    keep: bool = True) -> None:
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
        if not keep:
            headers.append((b"Connection", b"close"))
        reason = HTTPStatus(status).phrase.encode()
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
