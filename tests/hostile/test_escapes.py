"""Escapes attempted by real functions in real workers, at both isolation levels.

A snooping function tries to read the platform's files (data directory, endpoint.json,
token, ledger, Redis files, stored and unpacked bundles), another function's bundle and
/tmp, the node agent's environment through /proc, the STOKER_* variables, and to signal
the platform's processes. None of it may work; the platform must keep serving.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

import stoker
from stoker.client import Client
from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

SNOOP = '''
import os, signal, socket

def handler(event, context):
    found = {}
    for p in event["paths"]:
        try:
            with open(p, "rb") as f:
                f.read(1)
            found[p] = "READABLE"
        except OSError as e:
            found[p] = type(e).__name__
    listed = {}
    for d in event["dirs"]:
        try:
            listed[d] = os.listdir(d)
        except OSError as e:
            listed[d] = type(e).__name__
    signals = {}
    for pid in event["pids"]:
        try:
            os.kill(pid, signal.SIGKILL)
            signals[pid] = "KILLED"
        except OSError as e:
            signals[pid] = type(e).__name__
    host, port = event["connect"]
    try:
        socket.create_connection((host, port), timeout=2).close()
        connect = "connected"
    except OSError as e:
        connect = type(e).__name__
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    return {
        "found": found, "listed": listed, "signals": signals, "connect": connect,
        "env": sorted(k for k in os.environ if k.startswith("STOKER")), "mine": os.environ.get("MY_SETTING"),
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
        "task_root": os.environ["LAMBDA_TASK_ROOT"], "task_files": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
        "tmp": os.environ["TMPDIR"], "cwd": os.getcwd(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "write_task_root": _try_write(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "planted.py")),
        "write_root": _try_write("/planted"),
    }


def _try_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "WRITTEN"
    except OSError as e:
        return type(e).__name__
'''

VICTIM = '''
import os

def handler(event, context):
    path = os.path.join(os.environ["TMPDIR"], "victim-secret.txt")
    with open(path, "w") as f:
        f.write("the victim's secret")
    return {"tmp_file": path, "task_root": os.environ["LAMBDA_TASK_ROOT"], "pid": os.getpid()}
'''


def platform_pids(platform: RunningPlatform) -> list[int]:
    """stoker up and every process under it (gateway, node, zygote, workers, ...)."""
    root = psutil.Process(platform.proc.pid)
    return [root.pid, *(p.pid for p in root.children(recursive=True))]


def files_under(*roots: Path) -> list[str]:
    out = []
    for root in roots:
        for d, _, names in os.walk(root):
            out += [os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n))]
    return sorted(out)


@pytest.mark.parametrize("level", ["namespace", "process"])
def test_a_function_cannot_reach_the_platform_or_other_functions(
        level: str, platform_at, redis_server: RedisServer, make_function) -> None:  # type: ignore[no-untyped-def]
    platform = platform_at(level)
    snoop = make_function("snoop", SNOOP, '[function.env]\nMY_SETTING = "visible"')
    victim = make_function("victim", VICTIM)
    for folder in (snoop, victim):
        platform.cli("deploy", str(folder), check=True)
    planted = json.loads(platform.cli("invoke", "victim", check=True).stdout)

    home = platform.home
    secrets = files_under(home, redis_server.dir)
    assert any(p.endswith("endpoint.json") for p in secrets) and any(p.endswith(".zip") for p in secrets)
    victim_code = [p for p in secrets if "/node/bundles/" in p and p.endswith("handler.py")
                   and "victim's secret" in Path(p).read_text()]
    assert victim_code, "the victim's unpacked bundle was not found on the node"
    node_pid = next(p.pid for p in psutil.Process(platform.proc.pid).children() if "node" in p.cmdline())
    paths = [*secrets, planted["tmp_file"], f"/proc/{node_pid}/environ", f"/proc/{platform.proc.pid}/environ",
             "/etc/shadow", str(Path.home() / ".bashrc")]
    dirs = [str(home), str(home / "node" / "bundles"), str(Path(victim_code[0]).parent)]
    if level == "namespace":  # the process level shows the host's file system, as its permissions allow
        dirs += ["/root", "/home", "/"]
    pids = platform_pids(platform)
    gateway = urlsplit(platform.url)
    event = {"paths": paths, "dirs": dirs, "pids": pids, "connect": [gateway.hostname, gateway.port]}

    result = platform.cli("invoke", "snoop", "--data-file", "-", input=json.dumps(event).encode(), check=True,
                          timeout=60)
    seen = json.loads(result.stdout)

    readable = [p for p, v in seen["found"].items() if v == "READABLE"]
    assert readable == [], f"a {level}-isolated function could read: {readable}"
    # a listing may show only the way to the runtime's own directories (the namespace view)
    runtime = [sys.prefix, sys.base_prefix, os.path.dirname(stoker.__file__)]
    for d, names in seen["listed"].items():
        if d == "/":
            assert not {"home", "boot", "srv", "mnt"} & set(names), names
        elif isinstance(names, list):
            allowed = {Path(r).relative_to(d).parts[0] for r in runtime if r.startswith(d.rstrip("/") + "/")}
            assert set(names) <= allowed, f"a {level}-isolated function could list {d}: {names}"
    assert "KILLED" not in seen["signals"].values(), seen["signals"]
    assert all(psutil.pid_exists(p) for p in pids)
    assert seen["env"] == [] and seen["mine"] == "visible"
    assert seen["uid"] != 0 and seen["gid"] != 0 and 0 not in seen["groups"]
    assert seen["no_new_privs"] == "1"
    # its network is its own: the gateway on the host's loopback is out of reach (tests/hostile/test_network.py)
    assert seen["connect"] != "connected", seen["connect"]
    assert seen["task_files"] == ["handler.py", "stoker.toml"]
    assert seen["write_task_root"] != "WRITTEN" and seen["write_root"] != "WRITTEN"
    if level == "namespace":
        assert seen["task_root"] == "/var/task" and seen["tmp"] == "/tmp" and seen["cwd"] == "/tmp"
        # its own PID namespace: the init and the worker (and the process listing /proc)
        assert seen["pids"] == [1, 2], f"the function sees other processes: {seen['pids']}"
    # the platform is untouched and still serves both functions
    assert platform.client().invoke("victim")["tmp_file"]  # type: ignore[attr-defined]
    assert json.loads(platform.cli("invoke", "snoop", "--data", json.dumps(
        {"paths": [], "dirs": [], "pids": [], "connect": [gateway.hostname, gateway.port]}), check=True).stdout)


def test_network_false_cuts_the_network(platform: RunningPlatform, make_function) -> None:  # type: ignore[no-untyped-def]
    from tests.netstub import stand_ins

    source = ('import socket\n'
              'def handler(event, context):\n'
              '    try:\n'
              '        socket.create_connection((event["host"], event["port"]), timeout=2).close()\n'
              '        return "connected"\n'
              '    except OSError as e:\n'
              '        return type(e).__name__\n')
    platform.cli("deploy", str(make_function("offline", source, "network = false")), check=True)
    platform.cli("deploy", str(make_function("online", source)), check=True)
    with stand_ins() as net:  # a test "internet" host: what a function with network reaches
        event = json.dumps({"host": net.internet.host, "port": net.internet.port})
        assert json.loads(platform.cli("invoke", "online", "--data", event, check=True).stdout) == "connected"
        assert json.loads(platform.cli("invoke", "offline", "--data", event, check=True).stdout) in (
            "ConnectionRefusedError", "OSError", "TimeoutError")
    # its own loopback still works: a function may talk to a server it starts itself
    local = ('import socket\n'
             'def handler(event, context):\n'
             '    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()\n'
             '    socket.create_connection(s.getsockname(), timeout=2).close()\n'
             '    return "ok"\n')
    platform.cli("deploy", str(make_function("loopback", local, "network = false")), check=True)
    assert json.loads(platform.cli("invoke", "loopback", check=True).stdout) == "ok"


def test_one_function_cannot_see_another_functions_tmp(platform: RunningPlatform, make_function) -> None:
    writer = make_function("writer", VICTIM)
    reader = make_function("reader", 'import os\ndef handler(event, context):\n    return os.path.exists(event["p"])\n')
    platform.cli("deploy", str(writer), check=True)
    platform.cli("deploy", str(reader), check=True)
    path = json.loads(platform.cli("invoke", "writer", check=True).stdout)["tmp_file"]
    assert json.loads(platform.cli("invoke", "reader", "--data", json.dumps({"p": path}), check=True).stdout) is False


def test_the_node_reports_its_isolation_level(platform: RunningPlatform) -> None:
    wait_until(lambda: "isolation: namespace (private mount, PID and IPC namespaces" in platform.logs_text(),
               message="the node's isolation line in its log")


def test_a_function_needing_namespaces_is_refused_on_a_node_without_them(
        tmp_path: Path, redis_server: RedisServer, prefix: str, make_function) -> None:
    running = start_platform(tmp_path / "home", redis_server.url, prefix, {"STOKER_ISOLATION": "process"})
    try:
        wait_until(lambda: "isolation: process (STOKER_ISOLATION=process" in running.logs_text(),
                   message="the node's isolation line in its log")
        strict = make_function("strict", "def handler(e, c):\n    return 1\n", 'isolation = "namespace"')
        running.cli("deploy", str(strict), check=True)
        r = running.cli("invoke", "strict")
        error = json.loads(r.stdout)
        assert r.returncode == 1 and error["errorType"] == "Sandbox.Unavailable"
        assert 'isolation = "namespace"' in error["errorMessage"] and "auto" in error["errorMessage"]
        easy = make_function("easy", "def handler(e, c):\n    return 2\n")
        running.cli("deploy", str(easy), check=True)
        assert json.loads(running.cli("invoke", "easy", check=True).stdout) == 2
    finally:
        running.stop()


def test_concurrent_workers_each_have_their_own_uid(platform: RunningPlatform, make_function) -> None:
    source = "import os, time\ndef handler(event, context):\n    time.sleep(1)\n    return os.getuid()\n"
    platform.cli("deploy", str(make_function("who", source)), check=True)

    def call(_: int) -> int:
        with Client(platform.url, platform.token) as client:
            return int(client.invoke("who"))

    with ThreadPoolExecutor(3) as pool:
        uids = list(pool.map(call, range(3)))
    # three invocations at once ran on three workers, each with a uid of its own
    assert len(set(uids)) == 3 and all(u >= 2_000_000_000 for u in uids), uids
