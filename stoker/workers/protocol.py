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

async def read(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    header = await reader.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over the limit")
    return _unpack(await reader.readexactly(size))
