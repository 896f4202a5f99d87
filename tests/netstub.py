"""Stand-ins for the network tests: a test "internet" host and services of the host itself.

The internet host is a network namespace of the test's own, with an address outside every
range of this machine (198.19.N.80, routed from the host over a veth link), serving a
banner over TCP; the host's services listen on 127.0.0.1, on 0.0.0.0 and on an address the
test adds to a dummy interface. Everything is removed when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

BANNER_SERVER = r"""
import socket, sys
host, banner = sys.argv[1], sys.argv[2].encode()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(banner + b"\r\n")
        c.settimeout(0.5)
        try:
            said = c.recv(200)  # a client may leave a message (the tests' way out of a sandbox)
        except OSError:
            said = b""
        if said:
            print(said.decode(errors="replace").strip(), flush=True)
    finally:
        c.close()
"""


def require_root_network() -> None:
    if os.geteuid() != 0:
        pytest.skip("the network sandbox is set up by a node run as root; these tests need root")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Service:
    host: str
    port: int
    banner: str
    #: what clients sent it, a line each
    received: list[str] = field(default_factory=list)


@dataclass
class StandIns:
    internet: Service
    loopback: Service
    anywhere: Service
    other: Service
    #: every IPv4 address of this host
    host_addresses: list[str] = field(default_factory=list)


def _serve(argv_prefix: list[str], host: str, banner: str, procs: list[subprocess.Popen[str]]) -> Service:
    proc = subprocess.Popen([*argv_prefix, sys.executable, "-c", BANNER_SERVER, host, banner],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(proc)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().strip() or 0)
    assert port, f"the stand-in service on {host} did not start"
    service = Service(host, port, banner)
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            service.received.append(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return service


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    return sorted({line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3})


@contextlib.contextmanager
def stand_ins() -> Iterator[StandIns]:
    require_root_network()
    tag = secrets.token_hex(2)
    n = int(tag, 16) % 200 + 20
    ns, vh, vn, dummy = f"tnet{tag}", f"tnv{tag}h", f"tnv{tag}n", f"tnd{tag}"
    host_link, ns_link, inet, other = f"198.18.{n}.1", f"198.18.{n}.2", f"198.19.{n}.80", f"198.51.100.{n}"
    procs: list[subprocess.Popen[str]] = []
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", vh, "type", "veth", "peer", "name", vn)
        _ip("link", "set", vn, "netns", ns)
        _ip("addr", "add", f"{host_link}/30", "dev", vh)
        _ip("link", "set", vh, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{ns_link}/30", "dev", vn)
        _ip("-n", ns, "link", "set", vn, "up")
        _ip("-n", ns, "addr", "add", f"{inet}/32", "dev", "lo")
        _ip("-n", ns, "route", "add", "default", "via", host_link)
        _ip("route", "add", f"{inet}/32", "via", ns_link, "dev", vh)
        try:
            _ip("link", "add", dummy, "type", "dummy")
        except subprocess.CalledProcessError:
            _ip("link", "add", dummy, "type", "bridge")
        _ip("addr", "add", f"{other}/32", "dev", dummy)
        _ip("link", "set", dummy, "up")
        secret = secrets.token_hex(4)
        net = StandIns(
            internet=_serve(["ip", "netns", "exec", ns], inet, f"INTERNET-{secret}", procs),
            loopback=_serve([], "127.0.0.1", f"LOOPBACK-{secret}", procs),
            anywhere=_serve([], "0.0.0.0", f"ANY-{secret}", procs),
            other=_serve([], other, f"OTHER-{secret}", procs),
            host_addresses=host_addresses(),
        )
        yield net
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for args in (("netns", "del", ns), ("link", "del", vh), ("link", "del", dummy)):
            subprocess.run(["ip", *args], capture_output=True)


PROBER = '''import socket
from concurrent.futures import ThreadPoolExecutor

def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[1] == "00000000":
            return socket.inet_ntoa(int(f[2], 16).to_bytes(4, "little"))
    return None

def attempt(target):
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            try:
                return "ANSWERED " + s.recv(200).decode(errors="replace").strip()
            except OSError as e:
                return "CONNECTED " + type(e).__name__
    except OSError as e:
        return type(e).__name__

def handler(event, context):
    targets = [tuple(t) for t in event["targets"]]
    if event.get("gateway"):
        gw = gateway()
        targets += [(gw, p) for _, p in event["targets"]] if gw else []
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, targets))
    return {"%s:%s" % t: r for t, r in zip(targets, results)}
'''


def answered(results: dict[str, str]) -> dict[str, str]:
    """The probes a service answered (its banner came back): what a function reached."""
    return {k: v for k, v in results.items() if v.startswith("ANSWERED ") and v[9:].strip()}
