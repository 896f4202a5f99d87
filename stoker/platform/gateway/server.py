"""Serving the gateway with uvicorn on a socket we bound ourselves (so `--port 0` works)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the role's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=3,
                            loop="none", http="auto", ws="none", server_header=False, date_header=False)
    server = _Server(config)

    async def _stopper() -> None:
        await stop.wait()
        server.should_exit = True

    stopper = asyncio.create_task(_stopper())
    try:
        await server.serve(sockets=[sock])
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
