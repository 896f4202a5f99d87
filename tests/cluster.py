"""A cluster on one machine for tests: gateway, schedulers and nodes as separate processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import free_port


def process_tree(pid: int) -> set[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@dataclass
class Cluster:
    home: Path
    redis_url: str
    db_url: str
    prefix: str
    token: str = field(default_factory=lambda: "tok-" + secrets.token_hex(8))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update({"STOKER_HOME": str(self.home), "STOKER_REDIS_URL": self.redis_url, "STOKER_DB_URL": self.db_url,
                    "STOKER_PREFIX": self.prefix, "STOKER_TOKEN": self.token, "STOKER_NODE_DEAD_AFTER": "3",
                    "PYTHONUNBUFFERED": "1"})
        if self.url:
            env["STOKER_URL"] = self.url
        return env

    def _spawn(self, name: str, *args: str, home: Path | None = None) -> subprocess.Popen[bytes]:
        log = (self.home / f"{name}.log").open("ab")
        env = self.env
        if home is not None:
            env["STOKER_HOME"] = str(home)
        proc = subprocess.Popen([sys.executable, "-m", "stoker", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start(self, nodes: int = 3, slots: int = 2, schedulers: int = 1) -> Cluster:
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "stoker", "db", "migrate"], env=self.env, check=True,
                       capture_output=True)
        port = free_port()
        self._spawn("gateway", "gateway", "--port", str(port))
        self.url = f"http://127.0.0.1:{port}"
        for i in range(schedulers):
            self._spawn(f"scheduler{i + 1}", "scheduler")
        for i in range(nodes):
            self.start_node(f"n{i + 1}", slots)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("the cluster's gateway did not become healthy:\n" + self.logs("gateway"))

    def start_node(self, name: str, slots: int = 2, home: Path | None = None) -> subprocess.Popen[bytes]:
        """A node; with its own `home` it shares no disk with the gateway (as on another machine)."""
        return self._spawn(name, "node", "--name", name, "--slots", str(slots), home=home)

    def kill(self, name: str) -> set[int]:
        """SIGKILL a role process; returns the pids of its tree as it was (to check for orphans)."""
        proc = self.procs[name]
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return tree - {proc.pid}

    def logs(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "stoker", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"stoker {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def client(self):  # type: ignore[no-untyped-def]
        from stoker.client import Client

        return Client(self.url, self.token)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
