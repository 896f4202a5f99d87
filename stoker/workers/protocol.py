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
from collections.abc import Callable
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


class FrameReader:
    """Buffered frames from a socket: frames that arrived together cost one recv."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb", buffering=256 * 1024)

    def _exactly(self, n: int) -> bytes:
        data = self._file.read(n)
        if data is None or len(data) < n:
            raise EOFError("the node agent closed the connection")
        return data

    def read(self) -> tuple[Any, ...]:
        (size,) = HEADER.unpack(self._exactly(HEADER.size))
        if size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes is over the limit")
        return _unpack(self._exactly(size))


# -- asyncio side (the node agent) -------------------------------------------------------

class FrameChannel(asyncio.Protocol):
    """The node's end of a worker's control socket: frames in (to a callback), frames out.

    A plain Protocol rather than streams: frames are parsed as bytes arrive, several per
    read when the worker answered several pipelined requests, and handed straight on.
    """

    def __init__(self, on_frame: Callable[[tuple[Any, ...]], None],
                 on_lost: Callable[[BaseException], None]) -> None:
        self._buffer = bytearray()
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start = 0
        while len(buf) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, start)
            if size > MAX_FRAME:
                self._fail(ProtocolError(f"frame of {size} bytes is over the limit"))
                return
            end = start + HEADER.size + size
            if len(buf) < end:
                break
            frame = _unpack(bytes(buf[start + HEADER.size:end]))
            start = end
            self._on_frame(frame)
        if start:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or EOFError("the worker closed its connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._transport is not None:
            self._transport.close()
        self._on_lost(exc)

    def send(self, data: bytes) -> None:
        """Queue a frame; frames sent in one turn of the event loop go out in one write (a write
        that wakes the worker is the node's most expensive system call)."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("the worker's connection is closed")
        if self._outgoing is None:
            self._outgoing = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._outgoing.append(data)

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, None
        if frames and self._transport is not None and not self._transport.is_closing():
            self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
