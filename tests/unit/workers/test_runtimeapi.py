"""The Runtime API's HTTP side: real sockets and a real HTTP client, a small in-test backend."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import Any

import pytest

from stoker.workers.runtimeapi import MAX_BODY, Invocation, Reply, RuntimeApiServer


class Backend:
    """Records what the runtime posted; hands out the invocations the test queues."""

    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self.posted: list[tuple[str, Any, Any]] = []

    async def peer_allowed(self, client_port: int, server_port: int) -> bool:
        return self.allow

    async def next_invocation(self) -> Invocation:
        return await self.queue.get()

    def invocation_response(self, request_id: str, body: bytes) -> Reply:
        self.posted.append(("response", request_id, body))
        return Reply.accepted() if request_id == "r1" else Reply.error(400, "InvalidRequestID", "no such id")

    def invocation_error(self, request_id: str, error_type: str | None, body: bytes) -> Reply:
        self.posted.append(("error", request_id, (error_type, body)))
        return Reply.accepted()

    def init_error(self, error_type: str | None, body: bytes) -> Reply:
        self.posted.append(("init", error_type, body))
        return Reply.accepted()

    def body_too_large(self, request_id: str | None, size: int) -> Reply:
        self.posted.append(("too_large", request_id, size))
        return Reply.error(413, "RequestEntityTooLarge", "too large")


def invocation(request_id: str = "r1", payload: bytes = b'{"k": 1}') -> Invocation:
    return Invocation(request_id=request_id, payload=payload, deadline_ms=1_700_000_000_000,
                      function_arn="arn:aws:lambda:local:000000000000:function:f", trace_id="Root=1-abc",
                      result=asyncio.get_running_loop().create_future())


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def run_served(scenario: Any, backend: Backend | None = None) -> None:
    """Run `scenario(backend, address)` against a listening server, in a fresh event loop."""

    async def main() -> None:
        used = backend or Backend()
        server = RuntimeApiServer(used, name="test")
        address = await server.listen()
        try:
            await scenario(used, address)
        finally:
            server.close()

    asyncio.run(main())


def test_next_then_response_on_one_kept_alive_connection() -> None:
    run_served(_test_next_then_response_on_one_kept_alive_connection)


async def _test_next_then_response_on_one_kept_alive_connection(backend: Backend, address: str) -> None:
    assert address.startswith("127.0.0.1:")
    conn = http.client.HTTPConnection(address, timeout=10)
    pending = asyncio.ensure_future(in_thread(request, conn, "GET", "/2018-06-01/runtime/invocation/next"))
    await asyncio.sleep(0.05)
    assert not pending.done()  # `next` blocks until there is an event
    await backend.queue.put(invocation())
    status, headers, body = await pending
    assert status == 200 and body == b'{"k": 1}'
    assert headers["lambda-runtime-aws-request-id"] == "r1"
    assert headers["lambda-runtime-deadline-ms"] == "1700000000000"
    assert headers["lambda-runtime-invoked-function-arn"].endswith(":function:f")
    assert headers["lambda-runtime-trace-id"] == "Root=1-abc"

    status, _, body = await in_thread(request, conn, "POST", "/2018-06-01/runtime/invocation/r1/response", b'"ok"')
    assert status == 202 and json.loads(body) == {"status": "OK"}
    status, _, body = await in_thread(request, conn, "POST", "/2018-06-01/runtime/invocation/zz/response", b"1")
    assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"
    assert backend.posted == [("response", "r1", b'"ok"'), ("response", "zz", b"1")]
    conn.close()


def test_errors_init_errors_and_chunked_bodies() -> None:
    run_served(_test_errors_init_errors_and_chunked_bodies)


async def _test_errors_init_errors_and_chunked_bodies(backend: Backend, address: str) -> None:
    conn = http.client.HTTPConnection(address, timeout=10)
    error = json.dumps({"errorType": "ValueError", "errorMessage": "bad"}).encode()
    status, _, _ = await in_thread(request, conn, "POST", "/2018-06-01/runtime/invocation/r1/error", error,
                                   {"Lambda-Runtime-Function-Error-Type": "ValueError"})
    assert status == 202

    def chunked() -> Any:
        yield b'{"errorType": '
        yield b'"Runtime.X"}'

    conn.request("POST", "/2018-06-01/runtime/init/error", body=chunked(), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    response = await in_thread(conn.getresponse)
    assert response.status == 202
    response.read()
    assert backend.posted == [("error", "r1", ("ValueError", error)),
                              ("init", None, b'{"errorType": "Runtime.X"}')]


def test_expect_100_continue_as_libcurl_sends_it() -> None:
    run_served(_test_expect_100_continue_as_libcurl_sends_it)


async def _test_expect_100_continue_as_libcurl_sends_it(backend: Backend, address: str) -> None:
    host, port = address.split(":")
    body = b'{"big": "' + b"x" * 2000 + b'"}'

    def talk() -> bytes:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            interim = s.recv(1024)
            assert interim.startswith(b"HTTP/1.1 100 ")
            s.sendall(body)
            return s.recv(1024)

    final = await in_thread(talk)
    assert final.startswith(b"HTTP/1.1 202 ")
    assert backend.posted == [("response", "r1", body)]


def test_unknown_paths_methods_and_oversized_bodies() -> None:
    run_served(_test_unknown_paths_methods_and_oversized_bodies)


async def _test_unknown_paths_methods_and_oversized_bodies(backend: Backend, address: str) -> None:
    conn = http.client.HTTPConnection(address, timeout=30)
    status, _, body = await in_thread(request, conn, "GET", "/2018-06-01/runtime/nothing")
    assert status == 404 and json.loads(body)["errorType"] == "NotFound"
    status, _, _ = await in_thread(request, conn, "DELETE", "/2018-06-01/runtime/invocation/next")
    assert status == 405
    big = b"x" * (MAX_BODY + 1)
    status, _, body = await in_thread(request, conn, "POST", "/2018-06-01/runtime/invocation/r1/response", big)
    assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
    assert backend.posted == [("too_large", "r1", MAX_BODY + 1)]
    # the body was read to its end, so the connection still serves the runtime
    status, _, _ = await in_thread(request, conn, "POST", "/2018-06-01/runtime/invocation/r1/response", b"2")
    assert status == 202


def test_a_refused_peer_is_disconnected_unanswered() -> None:
    async def scenario(backend: Backend, address: str) -> None:
        conn = http.client.HTTPConnection(address, timeout=10)
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            await in_thread(request, conn, "GET", "/2018-06-01/runtime/invocation/next")

    run_served(scenario, Backend(allow=False))


def test_close_ends_a_waiting_next() -> None:
    asyncio.run(_close_ends_a_waiting_next())


async def _close_ends_a_waiting_next() -> None:
    server = RuntimeApiServer(Backend(), name="test")
    address = await server.listen()
    conn = http.client.HTTPConnection(address, timeout=10)
    pending = asyncio.ensure_future(in_thread(request, conn, "GET", "/2018-06-01/runtime/invocation/next"))
    await asyncio.sleep(0.05)
    server.close()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        await pending
