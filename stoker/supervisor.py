"""`stoker up`: the whole platform on one machine, in the foreground.

Takes STOKER_HOME's lock (one platform per home, stoker/homelock.py), runs every start-up
check (stoker/preflight.py: home writable, port free, Redis usable, database reachable),
then starts a private Redis (unless STOKER_REDIS_URL is set), migrates the ledger, deploys
what `--deploy` names, and runs each role as a child process in its own process group:
gateway, scheduler, node, ledger writer and triggers. It writes STOKER_HOME/endpoint.json
once the gateway is healthy, and only it removes the file. A role that dies is restarted.
SIGTERM or Ctrl-C prints one "stopping" line and stops every child (workers included) and
Redis, within STOP_BOUND_S (10 seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stoker.errors import StokerError
from stoker.homelock import HomeLock
from stoker.platform.embedded_redis import EmbeddedRedis
from stoker.preflight import bind_gateway, check_database, check_home, check_redis_url
from stoker.settings import Endpoint, Settings, write_endpoint
from stoker.workers.sandbox import die_with_parent

log = logging.getLogger("stoker.up")

STOP_GRACE_S = 7.0
#: the documented bound of a stop: the roles' grace, then Redis's AOF flush
REDIS_STOP_S = 3.0
STOP_BOUND_S = STOP_GRACE_S + REDIS_STOP_S


@dataclass
class Child:
    role: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            # -P: the roles import the installed stoker, never a `stoker/` folder in the current directory
            [sys.executable, "-P", "-m", "stoker", *self.argv], env=env, pass_fds=self.pass_fds,
            # its own process group: a Ctrl-C in the terminal reaches only `stoker up`, which stops
            # every role in order (SIGTERM), instead of a SIGINT racing through every process
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, process_group=0,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


async def _prepare(settings: Settings, redis_url: str, deploy: list[Path]) -> None:
    from stoker.platform.context import PlatformContext
    from stoker.platform.registry.deploy import deploy_path, sync_projection

    ctx = PlatformContext.create(settings, redis_url)
    try:
        await ctx.bus.ensure_intake_groups()
        await sync_projection(ctx)
        for path in deploy:
            result = await deploy_path(ctx, path, deployed_by="stoker up")
            print(result.describe(), flush=True)
    finally:
        await ctx.close()


def _wait_healthy(url: str, children: list[Child], stopping: list[str], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping:
        if not all(c.alive() for c in children):
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        time.sleep(0.1)
    return False


def check_sandbox_settings(settings: Settings) -> None:
    """The node's isolation and network settings, read as the node will (raises ConfigError)."""
    from stoker.platform.manifest import max_processes
    from stoker.workers import isolation, network

    isolation.settings_from_env(settings.home)
    network.policy_from_env([settings.redis_url or "", settings.db_url])
    max_processes()


def up(host: str = "127.0.0.1", port: int = 8700, deploy: list[Path] | None = None,
       node_slots: int | None = None) -> int:
    from stoker.platform.db import migrate
    from stoker.roles import configure_logging

    configure_logging("up")
    settings = Settings.from_env()
    check_sandbox_settings(settings)  # a wrong sandbox setting is refused before anything starts
    # checks first: nothing is started (and nothing of a running platform touched) until all pass
    lock = HomeLock(settings.home)
    lock.acquire(settings.endpoint_file)  # a second up on this home stops here, having changed nothing
    try:
        check_home(settings.home)
    except BaseException:
        lock.release()
        raise
    stopping: list[str] = []

    def request_stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: list[Child] = []
    sock: socket.socket | None = None
    embedded: EmbeddedRedis | None = None
    wrote_endpoint = False
    try:
        # the holder of the lock owns endpoint.json: one left by a platform that was killed is stale
        with contextlib.suppress(FileNotFoundError):
            settings.endpoint_file.unlink()
        sock = bind_gateway(host, port)
        if settings.redis_url:
            check_redis_url(settings.redis_url)
        else:
            embedded = EmbeddedRedis(settings.redis_dir)
            embedded.prepare()  # the binary this home runs, or a one-line refusal
        check_database(settings.db_url)
        token = settings.admin_token()

        if embedded is not None:
            redis_url = embedded.start()
            log.info("embedded %s on 127.0.0.1:%d (AOF in %s)", embedded.prepare().describe(), embedded.port,
                     settings.redis_dir)
        else:
            redis_url = settings.require_redis_url()
        migrate(settings.db_url)
        asyncio.run(_prepare(settings, redis_url, deploy or []))
        if stopping:
            return 0

        actual_port = sock.getsockname()[1]
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        url = f"http://{shown_host}:{actual_port}"
        env = {**os.environ, "STOKER_HOME": str(settings.home), "STOKER_REDIS_URL": redis_url,
               "STOKER_DB_URL": settings.db_url, "STOKER_TOKEN": token, "STOKER_PREFIX": settings.prefix}
        node_args = ["node", "--name", socket.gethostname()]
        if node_slots:
            node_args += ["--slots", str(node_slots)]
        children = [
            Child("gateway", ["gateway", "--fd", str(sock.fileno()), "--advertise-url", url],
                  pass_fds=(sock.fileno(),)),
            Child("scheduler", ["scheduler", "--no-ledger", "--no-triggers"]),
            Child("node", node_args),
            Child("ledger", ["ledger-writer"]),
            Child("triggers", ["triggers"]),
        ]
        for child in children:
            child.start(env)
        if not _wait_healthy(url, children, stopping) and not stopping:
            dead = [c.role for c in children if not c.alive()]
            raise StokerError(f"stoker did not become healthy (stopped roles: {', '.join(dead) or 'none'}): "
                              "see the log lines above")
        if stopping:
            return 0
        write_endpoint(settings, Endpoint(url=url, token=token, redis_url=redis_url))
        wrote_endpoint = True
        print(f"stoker is up at {url}\n"
              f"  token and address: {settings.endpoint_file}\n"
              f"  try: stoker deploy examples/hello && stoker invoke hello --data '{{\"name\": \"you\"}}'",
              flush=True)
        while not stopping:
            for child in children:
                if not child.alive() and not stopping:
                    _restart(child, env)
            time.sleep(0.2)
        return 0
    finally:
        if stopping:
            print(f"stopping stoker ({'Ctrl-C' if stopping[0] == 'SIGINT' else stopping[0]}): "
                  f"its roles, workers and Redis, within {STOP_BOUND_S:.0f} s", file=sys.stderr, flush=True)
        # a second Ctrl-C while stopping must not leave a traceback or half-stopped children
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(children)
        if sock is not None:
            sock.close()
        if embedded is not None:
            embedded.stop(REDIS_STOP_S)
        if wrote_endpoint:
            with contextlib.suppress(FileNotFoundError):
                settings.endpoint_file.unlink()
        lock.release()


def _restart(child: Child, env: dict[str, str]) -> None:
    now = time.monotonic()
    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
    code = child.proc.returncode if child.proc else None
    if len(child.restarts) > 5:
        log.error("%s keeps dying (exit %s); not restarting it again this minute", child.role, code)
        time.sleep(1)
        return
    log.warning("%s exited with %s; restarting it", child.role, code)
    child.start(env)


def _stop_all(children: list[Child]) -> None:
    running = [c for c in children if c.alive()]
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.role)
            child.proc.kill()
            child.proc.wait()
