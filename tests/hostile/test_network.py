"""A function reaches the internet but nothing of the host: real functions probing real stand-ins.

The stand-ins (tests/netstub.py) are services of the host on 127.0.0.1, 0.0.0.0 and an
address the test adds, and a test "internet" host in a network namespace routed from the
host. A probe counts as reaching a service only when the service's banner came back.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until
from tests.netstub import PROBER, StandIns, answered, stand_ins


@pytest.fixture
def net() -> Iterator[StandIns]:
    with stand_ins() as stand:
        yield stand


def probe(platform: RunningPlatform, targets: list[tuple[str, int]], gateway: bool = False,
          name: str = "prober") -> dict[str, str]:
    event = json.dumps({"targets": targets, "gateway": gateway})
    result = platform.cli("invoke", name, "--data", event, check=True, timeout=60)
    out: dict[str, str] = json.loads(result.stdout)
    return out


def hello_serves(platform: RunningPlatform) -> None:
    assert json.loads(platform.cli("invoke", "hello", "--data", '{"n": 1}', check=True).stdout) == {"n": 1}


@pytest.fixture
def deployed(platform: RunningPlatform, make_function) -> RunningPlatform:  # type: ignore[no-untyped-def]
    platform.cli("deploy", str(make_function("prober", PROBER, "timeout = 30\nmemory = 512")), check=True)
    platform.cli("deploy", str(make_function("hello", "def handler(event, context):\n    return event\n")),
                 check=True)
    return platform


def test_the_host_and_the_platform_are_out_of_reach_and_the_internet_is_not(
        deployed: RunningPlatform, net: StandIns, redis_server: RedisServer) -> None:
    gateway = urlsplit(deployed.url)
    host_targets = [("127.0.0.1", net.loopback.port), ("localhost", net.loopback.port),
                    (net.other.host, net.other.port), (net.other.host, net.anywhere.port),
                    ("127.0.0.1", redis_server.port), (str(gateway.hostname), int(gateway.port or 0))]
    host_targets += [(a, p) for a in net.host_addresses for p in (net.anywhere.port, redis_server.port)]
    results = probe(deployed, host_targets, gateway=True)
    assert answered(results) == {}, f"a function reached services of the host: {answered(results)}"

    results = probe(deployed, [(net.internet.host, net.internet.port)])
    assert results == {f"{net.internet.host}:{net.internet.port}": f"ANSWERED {net.internet.banner}"}, \
        "egress must work by default"
    hello_serves(deployed)


def test_workers_cannot_reach_each_other(deployed: RunningPlatform, net: StandIns,
                                         make_function) -> None:  # type: ignore[no-untyped-def]
    # the listener tells the test where it listens through the internet host (its way out)
    listener = ('import socket, time\n'
                'def handler(event, context):\n'
                '    s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(8); s.settimeout(0.2)\n'
                '    out = socket.create_connection((event["host"], event["port"]), timeout=5)\n'
                '    me = out.getsockname()[0]\n'
                '    out.sendall(("PEER %s %d" % (me, s.getsockname()[1])).encode()); out.close()\n'
                '    accepted, end = 0, time.time() + event["seconds"]\n'
                '    while time.time() < end:\n'
                '        try:\n'
                '            c, _ = s.accept(); c.sendall(b"PEER\\r\\n"); c.close(); accepted += 1\n'
                '        except OSError:\n'
                '            pass\n'
                '    return accepted\n')
    deployed.cli("deploy", str(make_function("listener", listener, "timeout = 30")), check=True)
    outcome: dict[str, Any] = {}
    event = {"host": net.internet.host, "port": net.internet.port, "seconds": 10}

    def run_listener() -> None:
        outcome["r"] = deployed.cli("invoke", "listener", "--data", json.dumps(event), timeout=60)

    thread = threading.Thread(target=run_listener)
    thread.start()
    where = wait_until(lambda: next((x for x in net.internet.received if x.startswith("PEER ")), None),
                       timeout=30, message="the listener to say where it listens")
    _, address, port = where.split()
    results = probe(deployed, [(address, int(port))])
    assert thread.is_alive(), "the probe ran after the listener had stopped: nothing was tested"
    thread.join(60)
    assert answered(results) == {}, f"a function reached another function's worker at {address}:{port}: {results}"
    assert json.loads(outcome["r"].stdout) == 0, "the other worker accepted a connection"


def test_network_false_reaches_nothing_but_its_own_loopback(
        deployed: RunningPlatform, net: StandIns, make_function) -> None:  # type: ignore[no-untyped-def]
    offline = make_function("offline", PROBER, "timeout = 30\nmemory = 512\nnetwork = false")
    deployed.cli("deploy", str(offline), check=True)
    results = probe(deployed, [(net.internet.host, net.internet.port)], name="offline")
    assert answered(results) == {}, f"a network = false function reached the internet host: {results}"
    local = ('import socket\n'
             'def handler(event, context):\n'
             '    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()\n'
             '    socket.create_connection(s.getsockname(), timeout=2).close()\n'
             '    return "ok"\n')
    deployed.cli("deploy", str(make_function("loopback", local, "network = false")), check=True)
    assert json.loads(deployed.cli("invoke", "loopback", check=True).stdout) == "ok"


def test_names_resolve_when_the_host_resolves_them(deployed: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    name = "pypi.org"  # the package index: a name this project's machines resolve
    try:
        socket.getaddrinfo(name, 443, socket.AF_INET)
    except OSError:
        pytest.skip(f"this host cannot resolve {name}, so a function cannot either")
    resolver = ('import socket\n'
                'def handler(event, context):\n'
                '    return sorted({a[4][0] for a in socket.getaddrinfo(event["name"], 443, socket.AF_INET)})\n')
    deployed.cli("deploy", str(make_function("resolver", resolver, "timeout = 15")), check=True)
    assert json.loads(deployed.cli("invoke", "resolver", "--data", json.dumps({"name": name}), check=True).stdout)


def test_the_operator_opens_a_destination_and_nothing_else(
        tmp_path: Path, redis_server: RedisServer, prefix: str, net: StandIns, make_function) -> None:  # type: ignore[no-untyped-def]
    allowed = f"{net.other.host}:{net.other.port}"
    running = start_platform(tmp_path / "home", redis_server.url, prefix, {"STOKER_NETWORK_ALLOW": allowed})
    try:
        running.cli("deploy", str(make_function("prober", PROBER, "timeout = 30\nmemory = 512")), check=True)
        results = probe(running, [(net.other.host, net.other.port), (net.other.host, net.anywhere.port),
                                  ("127.0.0.1", net.loopback.port)])
        assert answered(results) == {f"{net.other.host}:{net.other.port}": f"ANSWERED {net.other.banner}"}, results
    finally:
        running.stop()


def test_an_allow_list_naming_the_loopback_is_refused_at_start(
        tmp_path: Path, redis_server: RedisServer, prefix: str) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_platform(tmp_path / "home", redis_server.url, prefix, {"STOKER_NETWORK_ALLOW": "127.0.0.1:5432"},
                       timeout=30)
    assert "STOKER_NETWORK_ALLOW" in str(failed.value) and "loopback" in str(failed.value)


def test_host_networking_is_named_and_logged(tmp_path: Path, redis_server: RedisServer, prefix: str,
                                             net: StandIns, make_function) -> None:  # type: ignore[no-untyped-def]
    running = start_platform(tmp_path / "home", redis_server.url, prefix, {"STOKER_NETWORK": "host"})
    try:
        wait_until(lambda: "STOKER_NETWORK=host: workers share this node's network" in running.logs_text(),
                   message="the warning about host networking")
        health = json.loads(subprocess.run(["curl", "-s", running.url + "/healthz"], capture_output=True,
                                           text=True).stdout)
        assert any(n.get("network", "").startswith("host") for n in health["sandbox"].values()), health
        running.cli("deploy", str(make_function("prober", PROBER, "timeout = 30\nmemory = 512")), check=True)
        results = probe(running, [("127.0.0.1", net.loopback.port)])
        assert answered(results) == {f"127.0.0.1:{net.loopback.port}": f"ANSWERED {net.loopback.banner}"}
    finally:
        running.stop()


def test_cold_starts_of_new_versions_each_get_a_network(deployed: RunningPlatform, net: StandIns,
                                                        make_function) -> None:  # type: ignore[no-untyped-def]
    for version in range(1, 6):
        source = PROBER + f"\nVERSION = {version}\n"
        deployed.cli("deploy", str(make_function("prober", source, "timeout = 30")), check=True)
        results = probe(deployed, [(net.internet.host, net.internet.port)])
        assert answered(results), f"version {version}'s first call could not reach the internet host: {results}"
