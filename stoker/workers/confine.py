"""What a node prepares around each worker before it forks: its cgroup and its network namespace.

`Confiner` is the node's side (one per node): it chooses the cgroup level and sets up the
node's network once, then gives every new worker (and every warm template) a
`Confinement`: a cgroup made for it and a network namespace taken from the ready pool.
The new process joins both right after fork (see sandbox.apply); the node keeps the
`Confinement` to sweep the worker's tree after each invocation, read its memory, and
remove both once the worker has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from stoker.errors import ConfigError
from stoker.workers import cgroups, linux, network

log = logging.getLogger(__name__)


@dataclass
class Confinement:
    cgroup: cgroups.WorkerCgroup | None = None
    netns: network.Netns | None = None
    #: a namespace with only `lo` (network = false), deleted with the worker
    offline_netns: str | None = None
    released: bool = False
    #: set by the node: releases this confinement's resources
    _release: Any = field(default=None, repr=False)

    @property
    def netns_path(self) -> str | None:
        if self.netns is not None:
            return self.netns.path
        return f"{network.NETNS_DIR}/{self.offline_netns}" if self.offline_netns else None

    def spec(self) -> dict[str, Any]:
        """What the new process needs to join (the spawn spec's isolation entries)."""
        out: dict[str, Any] = {}
        if self.cgroup is not None:
            out["cgroup"] = self.cgroup.join_files
        if self.netns_path:
            out["netns"] = self.netns_path
        return out

    def ready(self) -> None:
        if self.cgroup is not None:
            self.cgroup.ready()

    def after_invocation(self, sweep: bool = True) -> tuple[int, list[int]]:
        """(processes of the tree killed for memory during it, stragglers killed now: none
        unless `sweep`)."""
        if self.cgroup is None:
            return 0, []
        return self.cgroup.new_oom_kills(), self.cgroup.stragglers() if sweep else []

    def peak_kb(self) -> int:
        return self.cgroup.peak_kb() if self.cgroup is not None else 0

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._release is not None:
            self._release(self)


class Confiner:
    """The node's cgroups and network, and every live confinement by the pid of its process."""

    def __init__(self) -> None:
        self.hierarchy = cgroups.Hierarchy("none", {}, "not set up")
        self.network: network.NodeNetwork | None = None
        self.network_mode = "host"
        self.network_reason = "not set up"
        self.tag = ""
        self._serial = 0
        self._by_pid: dict[int, Confinement] = {}

    # -- set up (blocking: the node runs it in a thread) ------------------------------------
    def setup(self, node_tag: str, platform_urls: list[str], namespaces: bool) -> None:
        self.tag = node_tag
        self.hierarchy = cgroups.detect(node_tag)
        log.info("worker cgroups: %s", self.hierarchy.describe())
        if self.hierarchy.level != "none":
            cgroups.expedite_migrations()
        policy = network.policy_from_env(platform_urls)
        if policy.mode == "host":
            self.network_mode, self.network_reason = "host", "STOKER_NETWORK=host"
            log.warning("STOKER_NETWORK=host: workers share this node's network and reach every service of "
                        "the host, including the platform's own Redis (a weaker sandbox, by the operator's choice)")
            return
        if os.geteuid() != 0:
            self.network_mode, self.network_reason = "host", "the node is not root"
            log.warning("workers share this node's network (the node is not root, so it cannot give each its "
                        "own): run the node as root for egress-only networking")
            return
        try:
            self.network = network.NodeNetwork.create(policy)
        except OSError as e:
            raise ConfigError(f"cannot give workers their own network: {e}. Fix that, or set STOKER_NETWORK=host "
                              "to let workers share the node's network (weaker)") from None
        self.network_mode, self.network_reason = "egress", ""
        log.info("worker network: %s", self.network.describe())

    def describe(self) -> dict[str, str]:
        return {"cgroup": self.hierarchy.level,
                "network": self.network_mode + (f" ({self.network_reason})" if self.network_reason else "")}

    async def run(self) -> None:
        if self.network is not None:
            await self.network.keep_ready()

    def teardown(self) -> None:
        for c in list(self._by_pid.values()):
            c.release()
        if self.network is not None:
            with contextlib.suppress(Exception):
                self.network.teardown()
        with contextlib.suppress(Exception):
            self.hierarchy.remove()

    # -- per worker -------------------------------------------------------------------------
    async def prepare(self, memory_mb: int, processes: int, online: bool, with_netns: bool = True) -> Confinement:
        """A cgroup and a network namespace for a process about to be forked."""
        self._serial += 1
        c = Confinement(_release=self._release)
        try:
            if self.hierarchy.level != "none":
                c.cgroup = await asyncio.to_thread(self.hierarchy.make, f"w{self._serial}", memory_mb, processes)
            if with_netns and online and self.network is not None:
                c.netns = await self.network.take()
            elif with_netns and not online and self.network is not None:
                c.offline_netns = await asyncio.to_thread(network.offline_namespace, f"stk{self.tag}-x{self._serial}")
        except BaseException:
            c.release()
            raise
        return c

    def adopt(self, pid: int, memory_mb: int, processes: int) -> Confinement:
        """A cgroup of its own for a process already running (forked from a warm template)."""
        self._serial += 1
        c = Confinement(_release=self._release)
        if self.hierarchy.level != "none":
            try:
                c.cgroup = self.hierarchy.make(f"w{self._serial}", memory_mb, processes)
                if c.cgroup is not None:
                    c.cgroup.adopt(pid)
            except OSError as e:
                log.warning("could not move worker %d into a cgroup of its own: %s", pid, e)
        self.track(pid, c)
        return c

    def track(self, pid: int, c: Confinement) -> None:
        if c.released:
            return
        self._by_pid[pid] = c

    def exited(self, pid: int) -> None:
        c = self._by_pid.pop(pid, None)
        if c is not None:
            c.release()

    def _release(self, c: Confinement) -> None:
        for pid, other in list(self._by_pid.items()):
            if other is c:
                del self._by_pid[pid]
        cgroup, netns, offline = c.cgroup, c.netns, c.offline_netns
        if netns is not None and self.network is not None:
            self.network.release(netns)
        if cgroup is not None or offline:
            def remove() -> None:
                if cgroup is not None:
                    cgroup.remove()
                if offline:
                    network.delete_namespace(offline)
            try:
                asyncio.get_running_loop().run_in_executor(None, remove)
            except RuntimeError:
                remove()


def listen_in(netns_path: str, host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket inside a worker's network namespace (its Runtime API). Made in a
    thread of its own, which enters the namespace (network namespaces are per thread) and ends."""
    result: dict[str, Any] = {}

    def make() -> None:
        try:
            target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(target, linux.CLONE_NEWNET)
            finally:
                os.close(target)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            s.setblocking(False)
            result["socket"] = s
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=make, name="listen-in-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise OSError(f"cannot listen in the worker's network namespace: {result['error']}")
    sock: socket.socket = result["socket"]
    return sock
