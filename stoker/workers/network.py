"""Egress-only networking for a node's workers: a network namespace each, behind a bridge with NAT.

    STOKER_NETWORK          egress (default on a root node): each worker has a network
                            namespace of its own, routed out through this node's bridge;
                            host: workers share the node's network (weaker: named and logged)
    STOKER_NETWORK_DENY     more destinations workers may not reach (comma-separated CIDRs
                            or host names), beside the defaults below
    STOKER_NETWORK_ALLOW    destinations opened despite the defaults: CIDR, address or host
                            name, each optionally with :PORT (e.g. a database a function uses)
    STOKER_NETWORK_SUBNET   the private range the node's bridges are cut from (a /22 each,
                            default 10.213.0.0/16)
    STOKER_NETWORK_POOL     namespaces kept ready ahead of cold starts (default 8)

Why a namespace per worker, behind a bridge: a worker's own `lo` is its own (the host's
127.0.0.1 services are simply not there), the bridge's ports are isolated (workers cannot
reach each other at layer 2, and the nft forward chain refuses worker-to-worker at layer
3), and NAT (masquerade) takes the rest out through the host's routes, like Docker's
default bridge. A user-mode stack (slirp4netns, pasta) would do without root, but costs a
helper process per worker and a copy per packet; a non-root node keeps the host network
instead, and says so.

The nft table `inet stoker_TAG` (one per node) drops, from the bridge:
  - everything addressed to the host itself (input hook: all its addresses, the bridge's own);
  - link-local 169.254.0.0/16 (cloud metadata services), the Alibaba metadata address,
    the whole STOKER_NETWORK_SUBNET (other nodes' workers), the hosts of the platform's
    own Redis and database URLs, and STOKER_NETWORK_DENY;
  - all IPv6 (workers get no IPv6 route);
and masquerades the rest. STOKER_NETWORK_ALLOW is matched first, in both hooks.

Namespaces are made ahead of demand (`ip -batch`, about 10 ms each) and a worker only
`setns()`s into one after fork, so a cold start pays microseconds for its network. Each
namespace serves one worker (or one warm template and the workers forked from it) and is
deleted when that process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import itertools
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from stoker.errors import ConfigError

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/stoker-network")
NETNS_DIR = Path("/run/netns")
DEFAULT_SUBNET = "10.213.0.0/16"
BLOCK_PREFIX = 22
METADATA = ("169.254.0.0/16", "100.100.100.200/32")
MODES = ("egress", "host")


@dataclass(frozen=True)
class Destination:
    """A STOKER_NETWORK_ALLOW entry: a network and, optionally, one TCP/UDP port."""

    network: ipaddress.IPv4Network
    port: int | None = None

    def nft_match(self) -> str:
        port = f" th dport {self.port}" if self.port else ""
        return f"ip daddr {self.network}{port}"


@dataclass
class Netns:
    """A prepared namespace: its name (under /run/netns), its address, the host end of its link."""

    name: str
    address: str
    host_veth: str
    index: int

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)


@dataclass(frozen=True)
class NetworkPolicy:
    mode: str
    deny: tuple[ipaddress.IPv4Network, ...] = ()
    allow: tuple[Destination, ...] = ()
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network(DEFAULT_SUBNET))
    pool: int = 8


def _resolve(name: str) -> list[str]:
    try:
        return sorted({str(a[4][0]) for a in socket.getaddrinfo(name, None, socket.AF_INET)})
    except OSError:
        return []


def _networks(item: str, setting: str) -> list[ipaddress.IPv4Network]:
    try:
        return [ipaddress.IPv4Network(item, strict=False)]
    except ValueError:
        pass
    found = _resolve(item)
    if not found:
        raise ConfigError(f"{setting}: {item!r} is neither an IPv4 address or CIDR nor a name this host resolves")
    return [ipaddress.IPv4Network(a) for a in found]


def _destination(item: str) -> list[Destination]:
    host, port = item, None
    if item.count(":") == 1:
        host, _, raw = item.partition(":")
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"STOKER_NETWORK_ALLOW: {item!r} has a port that is not a number from 1 to 65535")
        port = int(raw)
    out = [Destination(n, port) for n in _networks(host, "STOKER_NETWORK_ALLOW")]
    for d in out:
        if d.network.overlaps(ipaddress.IPv4Network("127.0.0.0/8")):
            raise ConfigError(
                f"STOKER_NETWORK_ALLOW: {item!r} is the node's loopback, which no worker can reach (each has a "
                "loopback of its own); make the service listen on an address of the host and allow that one")
    return out


def platform_hosts(urls: list[str]) -> list[str]:
    """The hosts of the platform's own services (Redis, the database), from their URLs."""
    hosts = []
    for url in urls:
        if not url:
            continue
        for netloc in urllib.parse.urlsplit(url).netloc.rpartition("@")[2].split(","):
            host = netloc.rsplit(":", 1)[0].strip("[]") if netloc.count(":") <= 1 else netloc.strip("[]")
            if host:
                hosts.append(host)
    return hosts


def policy_from_env(platform_urls: list[str]) -> NetworkPolicy:
    mode = os.environ.get("STOKER_NETWORK", "egress") or "egress"
    if mode not in MODES:
        raise ConfigError(f"STOKER_NETWORK={mode!r} is not valid: use egress (the default) or host")
    raw_subnet = os.environ.get("STOKER_NETWORK_SUBNET", DEFAULT_SUBNET) or DEFAULT_SUBNET
    try:
        subnet = ipaddress.IPv4Network(raw_subnet)
    except ValueError:
        raise ConfigError(f"STOKER_NETWORK_SUBNET={raw_subnet!r} is not an IPv4 network such as {DEFAULT_SUBNET}"
                          ) from None
    if subnet.prefixlen > 28 or not subnet.is_private:
        raise ConfigError(f"STOKER_NETWORK_SUBNET={raw_subnet!r}: give a private range of at least a /28")
    raw_pool = os.environ.get("STOKER_NETWORK_POOL", "8") or "8"
    if not raw_pool.isdigit() or not 0 <= int(raw_pool) <= 256:
        raise ConfigError(f"STOKER_NETWORK_POOL={raw_pool!r} is not valid: give a whole number from 0 to 256")
    deny = [ipaddress.IPv4Network(m) for m in METADATA] + [subnet]
    for host in platform_hosts(platform_urls):
        for address in ([host] if _is_address(host) else _resolve(host)):
            if _is_address(address) and ipaddress.ip_address(address).version == 4:
                deny.append(ipaddress.IPv4Network(address))
    for item in _items("STOKER_NETWORK_DENY"):
        deny += _networks(item, "STOKER_NETWORK_DENY")
    allow = [d for item in _items("STOKER_NETWORK_ALLOW") for d in _destination(item)]
    return NetworkPolicy(mode=mode, deny=tuple(dict.fromkeys(deny)), allow=tuple(allow), subnet=subnet,
                         pool=int(raw_pool))


def _items(name: str) -> list[str]:
    return [i.strip() for i in os.environ.get(name, "").split(",") if i.strip()]


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _ip(*args: str, batch: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args] + (["-batch", "-"] if batch is not None else [])
    done = subprocess.run(cmd, input=batch, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise OSError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _nft(ruleset: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"nft: {done.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name.replace(".", "/")
    if path.read_text().strip() != value:
        path.write_text(value)
        log.info("set %s = %s (worker egress is routed through this host)", name, value)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Networks the host already routes or has addresses in (a bridge must overlap none)."""
    out = []
    done = _ip("-4", "-j", "route", "show", "table", "all", check=False)
    with contextlib.suppress(ValueError):
        for route in json.loads(done.stdout or "[]"):
            dst = route.get("dst", "")
            if dst and dst != "default" and route.get("type", "unicast") in ("unicast", "local"):
                with contextlib.suppress(ValueError):
                    out.append(ipaddress.IPv4Network(dst, strict=False))
    return out


def _default_mtu() -> int:
    done = _ip("-4", "-j", "route", "show", "default", check=False)
    with contextlib.suppress(ValueError, IndexError, KeyError, OSError):
        dev = json.loads(done.stdout)[0]["dev"]
        return int(Path(f"/sys/class/net/{dev}/mtu").read_text())
    return 1500


def clean_stale() -> None:
    """Remove what nodes that died without cleaning up left behind (their state file names them)."""
    if not STATE_DIR.is_dir():
        return
    for state in STATE_DIR.glob("*.json"):
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if _pid_alive(int(info.get("pid", 0))):
            continue
        log.info("removing the network of a node that is gone (pid %s, bridge %s)", info.get("pid"), info.get("bridge"))
        _teardown(str(info.get("tag", "")))
        state.unlink(missing_ok=True)


def _teardown(tag: str) -> None:
    if not tag:
        return
    prefix = f"stk{tag}-"
    if NETNS_DIR.is_dir():
        lines = [f"netns del {p.name}" for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)]
        if lines:
            _ip("-force", batch="\n".join(lines) + "\n", check=False)
    done = _ip("-j", "link", "show", check=False)
    with contextlib.suppress(ValueError):
        links = [link.get("ifname", "") for link in json.loads(done.stdout or "[]")]
        lines = [f"link del {name}" for name in links if name == f"stk{tag}" or name.startswith(f"stk{tag}h")]
        if lines:
            _ip("-force", batch="\n".join(lines) + "\n", check=False)
    subprocess.run(["nft", "delete", "table", "inet", f"stoker_{tag}"], capture_output=True, timeout=30)


class NodeNetwork:
    """This node's bridge, firewall and pool of ready namespaces."""

    def __init__(self, policy: NetworkPolicy, tag: str, block: ipaddress.IPv4Network, mtu: int) -> None:
        self.policy = policy
        self.tag = tag
        self.block = block
        self.bridge = f"stk{tag}"
        self.gateway = str(block.network_address + 1)
        self.mtu = mtu
        self._free = deque(range(2, block.num_addresses - 1))
        self._ready: deque[Netns] = deque()
        self._wanted = asyncio.Event()
        self._serial = itertools.count(1)
        self._closed = False

    # -- set up and tear down (blocking: run them in a thread) ------------------------------
    @classmethod
    def create(cls, policy: NetworkPolicy) -> NodeNetwork:
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                raise OSError(f"the {tool!r} command is missing (install iproute2 and nftables), so workers "
                              "cannot get a network of their own")
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        with open(STATE_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            clean_stale()
            tag = secrets.token_hex(3)[:5]
            block = cls._free_block(policy.subnet)
            net = cls(policy, tag, block, _default_mtu())
            (STATE_DIR / f"{tag}.json").write_text(json.dumps(
                {"pid": os.getpid(), "tag": tag, "bridge": net.bridge, "block": str(block)}))
            try:
                net._build()
            except BaseException:
                net.teardown()
                raise
        return net

    @staticmethod
    def _free_block(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        taken = []
        for state in STATE_DIR.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                taken.append(ipaddress.IPv4Network(json.loads(state.read_text())["block"]))
        used = _used_networks()
        prefix = max(subnet.prefixlen, BLOCK_PREFIX)
        for block in subnet.subnets(new_prefix=prefix):
            if not any(block.overlaps(t) for t in taken) and not any(block.overlaps(u) for u in used):
                return block
        raise OSError(f"no free /{prefix} left in STOKER_NETWORK_SUBNET={subnet} for this node's workers "
                      "(every block is used by another node or overlaps a route of this host)")

    def _build(self) -> None:
        _ip(batch=(f"link add {self.bridge} type bridge\n"
                   f"link set {self.bridge} mtu {self.mtu}\n"
                   f"addr add {self.gateway}/{self.block.prefixlen} dev {self.bridge}\n"
                   f"link set {self.bridge} up\n"))
        with contextlib.suppress(OSError):
            _sysctl(f"net.ipv6.conf.{self.bridge}.disable_ipv6", "1")
        _sysctl("net.ipv4.ip_forward", "1")
        _nft(self.ruleset())

    def ruleset(self) -> str:
        br = self.bridge
        deny = ", ".join(str(n) for n in self.policy.deny)
        allow = "".join(f'    iifname "{br}" {d.nft_match()} accept\n' for d in self.policy.allow)  # both hooks
        return (
            f"table inet stoker_{self.tag} {{\n"
            f"  set deny {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {deny} }} }}\n"
            "  chain input {\n    type filter hook input priority filter - 5; policy accept;\n"
            f"{allow}"
            f'    iifname "{br}" drop\n  }}\n'
            "  chain forward {\n    type filter hook forward priority filter - 5; policy accept;\n"
            f'    oifname "{br}" ct state established,related accept\n'
            f'    oifname "{br}" drop\n'
            f"{allow}"
            f'    iifname "{br}" meta nfproto ipv6 drop\n'
            f'    iifname "{br}" ip daddr @deny drop\n'
            f'    iifname "{br}" accept\n  }}\n'
            "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    ip saddr {self.block} oifname != "{br}" masquerade\n  }}\n'
            "}\n")

    def teardown(self) -> None:
        self._closed = True
        _teardown(self.tag)
        (STATE_DIR / f"{self.tag}.json").unlink(missing_ok=True)

    def describe(self) -> str:
        allowed = ", ".join(str(d.network) + (f":{d.port}" if d.port else "") for d in self.policy.allow)
        return (f"egress (a network namespace per worker behind bridge {self.bridge} {self.block}, NAT; the host, "
                f"{len(self.policy.deny)} denied ranges and other workers are out of reach"
                + (f"; allowed: {allowed}" if allowed else "") + ")")

    # -- namespaces ----------------------------------------------------------------------
    def _make(self) -> Netns:
        if not self._free:
            raise OSError(f"the node's network {self.block} has no free address left for another worker")
        index, serial = self._free.popleft(), next(self._serial)
        ns = Netns(name=f"stk{self.tag}-{serial}", address=str(self.block.network_address + index),
                   host_veth=f"stk{self.tag}h{serial}", index=index)
        try:
            _ip(batch=(f"netns add {ns.name}\n"
                       f"link add {ns.host_veth} mtu {self.mtu} type veth peer name eth0 mtu {self.mtu} "
                       f"netns {ns.name}\n"
                       f"link set {ns.host_veth} master {self.bridge}\n"
                       f"link set dev {ns.host_veth} type bridge_slave isolated on learning off\n"
                       f"link set {ns.host_veth} up\n"))
            _ip("-n", ns.name, batch=(
                "link set lo up\n"
                f"addr add {ns.address}/{self.block.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {self.gateway}\n"))
        except OSError:
            self._delete(ns)
            raise
        return ns

    def _delete(self, ns: Netns) -> None:
        _ip("-force", batch=f"link del {ns.host_veth}\nnetns del {ns.name}\n", check=False)
        self._free.append(ns.index)

    async def take(self) -> Netns:
        """A ready namespace for a new worker (made now if the pool is empty)."""
        self._wanted.set()
        if self._ready:
            return self._ready.popleft()
        return await asyncio.to_thread(self._make)

    def release(self, ns: Netns) -> None:
        """The worker (and all it started) is gone: delete its namespace, in the background."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().run_in_executor(None, self._delete, ns)

    async def keep_ready(self) -> None:
        """Refill the pool in the background, one namespace at a time."""
        while not self._closed:
            while len(self._ready) < self.policy.pool and not self._closed:
                try:
                    self._ready.append(await asyncio.to_thread(self._make))
                except OSError as e:
                    log.warning("could not prepare a network namespace: %s", e)
                    break
            self._wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), 5.0)


def offline_namespace(name: str) -> str:
    """A namespace with only `lo` up (network = false), named so the node can reach into it."""
    _ip(batch=f"netns add {name}\n")
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except OSError:
        delete_namespace(name)
        raise
    return name


def delete_namespace(name: str) -> None:
    _ip("netns", "del", name, check=False)
