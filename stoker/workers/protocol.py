"""Frames between the node agent and its worker processes (and its zygote).

A frame is a 4-byte big-endian length and a msgpack array whose first item names the
message. Node -> worker: ("invoke", request_id, payload_json, deadline_ms, context).
Worker -> node: ("ready",), ("init_error", error), ("result", request_id, ok, body_json,
max_rss_kb). Payloads and results stay JSON bytes end to end; msgpack only frames them.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


class ProtocolError(Exception):
    pass


def pack(*message: Any) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def _unpack(body: bytes) -> tuple[Any, ...]:
    return tuple(msgpack.unpackb(body, raw=False, use_list=False))


# -- blocking side (the worker) ----------------------------------------------------------

def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the node agent closed the connection")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket) -> tuple[Any, ...]:
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    return _unpack(_recv_exactly(sock, size))


def send(sock: socket.socket, *message: Any) -> None:
    sock.sendall(pack(*message))


# -- asyncio side (the node agent) -------------------------------------------------------

class FrameChannel(asyncio.Protocol):
    """The node's end of a worker's control socket: frames in, frames out.

    A plain Protocol rather than streams: a worker answers one frame per request, so
    frames are parsed as bytes arrive and handed straight to the one waiting future.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: list[tuple[Any, ...]] = []
        self._waiter: asyncio.Future[tuple[Any, ...]] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(buf)
            if size > MAX_FRAME:
                self._fail(ProtocolError(f"frame of {size} bytes is over the limit"))
                return
            end = HEADER.size + size
            if len(buf) < end:
                return
            frame = _unpack(bytes(buf[HEADER.size:end]))
            del buf[:end]
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(frame)
            else:
                self._frames.append(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or EOFError("the worker closed its connection"))

    def _fail(self, exc: BaseException) -> None:
        self._closed = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    def next_frame(self) -> asyncio.Future[tuple[Any, ...]]:
        """A future for the next frame (already resolved if one is waiting)."""
        fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        if self._frames:
            fut.set_result(self._frames.pop(0))
        elif self._closed is not None:
            fut.set_exception(self._closed)
        else:
            self._waiter = fut
        return fut

    def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the worker's connection is closed")
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
