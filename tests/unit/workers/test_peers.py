"""Telling a worker's own connections from other local processes' (real sockets, real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from stoker.workers import peers


def test_a_connection_is_traced_to_the_session_that_holds_it() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server_port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", server_port)) as client:
            client_port = client.getsockname()[1]
            inode = peers.connection_inode(client_port, server_port)
            assert inode == os.fstat(client.fileno()).st_ino
            assert peers.connected_from_session(client_port, server_port, os.getsid(0))
            assert not peers.connected_from_session(client_port, server_port, 999_999_999)


def test_a_process_in_another_session_is_not_the_worker() -> None:
    """A child in its own session (as every worker is) holds its socket; we, outside it, do not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server_port = server.getsockname()[1]
        child = subprocess.Popen(
            [sys.executable, "-c", "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
             " print(s.getsockname()[1], flush=True); sys.stdin.read()", str(server_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert child.stdout is not None
            client_port = int(child.stdout.readline())
            conn, _ = server.accept()
            with conn:
                assert conn.getpeername()[1] == client_port
                assert peers.connected_from_session(client_port, server_port, child.pid)
                assert not peers.connected_from_session(client_port, server_port, os.getsid(0))
        finally:
            child.kill()
            child.wait()


def test_no_such_connection() -> None:
    assert peers.connection_inode(1, 2) is None
    assert not peers.connected_from_session(1, 2, os.getsid(0))
