"""stoker beside Celery, RQ and Dramatiq, in one run, on one private Redis.

    python bench/run.py [--quick] --out FILE

Measures, on this machine:
  - async throughput of a no-op function with the ledger on (stoker), and of a no-op task
    on Celery (prefork, acks_late, prefetch tuned), RQ (forking Worker, and SimpleWorker)
    and Dramatiq (Redis broker, 2 processes x 8 threads), each with 2 worker processes;
  - warm sync invoke latency through HTTP and through the Python client (p50, p99);
  - cold start (the ledger's init_ms of the first call of a new version): zygote fork,
    and a fresh interpreter per cold start (STOKER_SPAWN_MODE=exec) beside it; and for a
    function with ~50 ms of imports, plain cold starts beside ones forked from its
    `snapshot = true` template;
  - the ledger writer's rows/s and a function + time-range query over 1,000,000 rows.
Prints a table and writes JSON (see docs/performance.md). Needs the `bench` extra.

How throughput is timed: the peers' work is enqueued first and their workers started
after; the clock runs from the first completed task to the last (worker start-up is not
counted). Each peer task increments a Redis counter so completion can be seen. Stoker is
already running; its producer writes envelopes straight to Redis as the gateway would,
and its clock runs from the start of enqueueing until the last ledger row is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class Processes:
    """Child processes of the bench, all stopped on exit (with their own children)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
              ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    redis_version = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform(), "redis": redis_version,
            "load_average_at_start": os.getloadavg()}


def redis_binary() -> str:
    from stoker.platform.embedded_redis import redis_server_binary

    return redis_server_binary()


# -- the peers ----------------------------------------------------------------------------

def wait_counter(r: redis.Redis, key: str, n: int, proc_alive: Callable[[], bool],
                 timeout: float) -> tuple[float, float]:
    """(time of the first completion, time of the n-th), polling the counter."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        done = int(r.get(key) or 0)
        now = time.perf_counter()
        if first is None and done >= 1:
            first = now
        if done >= n:
            return first or now, now
        if not proc_alive():
            raise RuntimeError(f"the workers exited with {done}/{n} done")
        time.sleep(0.002)
    raise TimeoutError(f"{key}: only {int(r.get(key) or 0)}/{n} done within {timeout:.0f} s")


def peer_env(url: str, counter: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"BENCH_REDIS_URL": url, "BENCH_COUNTER": counter,
                "PYTHONPATH": os.pathsep.join([str(PEERS), env.get("PYTHONPATH", "")])})
    return env


def bench_celery(procs: Processes, url: str, n: int, work: Path) -> float:
    counter = "bench:celery:done"
    env = peer_env(url, counter)
    sys.path.insert(0, str(PEERS))
    os.environ.update({"BENCH_REDIS_URL": url, "BENCH_COUNTER": counter})
    import bench_celery  # type: ignore[import-not-found]

    r = redis.Redis.from_url(url)
    r.flushdb()
    log(f"celery: enqueueing {n} tasks")
    with bench_celery.app.producer_or_acquire() as producer:
        for _ in range(n):
            bench_celery.noop.apply_async(producer=producer)
    worker = procs.start([str(BIN / "celery"), "-A", "bench_celery", "worker", "-c", "2", "-P", "prefork",
                          "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
                          "--prefetch-multiplier", os.environ.get("BENCH_PREFETCH", "16")],
                         env, work / "celery.log", cwd=PEERS)
    first, last = wait_counter(r, counter, n, lambda: worker.poll() is None, timeout=600)
    procs.stop(worker)
    return (n - 1) / (last - first)


def bench_rq(procs: Processes, url: str, n: int, work: Path, simple: bool) -> float:
    counter = "bench:rq:done"
    env = peer_env(url, counter)
    from rq import Queue

    r = redis.Redis.from_url(url)
    r.flushdb()
    q = Queue("default", connection=r)
    log(f"rq ({'SimpleWorker' if simple else 'Worker'}): enqueueing {n} jobs")
    with r.pipeline() as pipe:
        for _ in range(n):
            q.enqueue("bench_rq.noop", pipeline=pipe)
        pipe.execute()
    args = [str(BIN / "rq"), "worker", "--burst", "-u", url, "--logging_level", "WARNING", "default"]
    if simple:
        args[2:2] = ["-w", "rq.worker.SimpleWorker"]
    workers = [procs.start(args, env, work / "rq.log", cwd=PEERS) for _ in range(2)]
    first, last = wait_counter(r, counter, n, lambda: any(w.poll() is None for w in workers) or
                               int(r.get(counter) or 0) >= n, timeout=900)
    for w in workers:
        procs.stop(w)
    return (n - 1) / (last - first)


def bench_dramatiq(procs: Processes, url: str, n: int, work: Path) -> float:
    counter = "bench:dramatiq:done"
    env = peer_env(url, counter)
    r = redis.Redis.from_url(url)
    r.flushdb()
    log(f"dramatiq: enqueueing {n} messages")
    # enqueue from a child so this process keeps no Dramatiq broker around
    subprocess.run([PYTHON, "-c", f"import bench_dramatiq as b\nfor _ in range({n}): b.noop.send()"],
                   env=env, cwd=PEERS, check=True)
    worker = procs.start([str(BIN / "dramatiq"), "bench_dramatiq", "-p", "2", "-t", "8"], env,
                         work / "dramatiq.log", cwd=PEERS)
    first, last = wait_counter(r, counter, n, lambda: worker.poll() is None, timeout=600)
    procs.stop(worker)
    return (n - 1) / (last - first)


# -- stoker -------------------------------------------------------------------------------

class Stoker:
    """A stoker of the bench's own, on the shared Redis under its own prefix: the roles as
    separate processes (a gateway, a scheduler with its ledger writer, a node), so that the
    node can be started after the events are enqueued, as the peers' workers are."""

    def __init__(self, procs: Processes, redis_url: str, work: Path, name: str, env_extra: dict[str, str],
                 start_node: bool = True) -> None:
        self.procs = procs
        self.work = work
        self.name = name
        self.home = work / name
        self.home.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        self.token = "bench-" + os.urandom(8).hex()
        env.update({"STOKER_HOME": str(self.home), "STOKER_REDIS_URL": redis_url, "STOKER_PREFIX": f"bench{name}",
                    "STOKER_DB_URL": f"sqlite:///{self.home / 'ledger.db'}", "STOKER_TOKEN": self.token,
                    **env_extra})
        self.env = env
        subprocess.run([str(BIN / "stoker"), "db", "migrate"], env=env, check=True, capture_output=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.gateway = procs.start([str(BIN / "stoker"), "gateway", "--port", str(port)], env,
                                   work / f"{name}-gateway.log")
        self.scheduler = procs.start([str(BIN / "stoker"), "scheduler"], env, work / f"{name}-scheduler.log")
        self.node: subprocess.Popen[bytes] | None = None
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or self.gateway.poll() is not None:
                raise RuntimeError(f"stoker ({name}) did not start; see {work}/{name}-gateway.log")
            time.sleep(0.1)
        self.client().deploy(HERE / "functions" / "noop")
        if start_node:
            self.start_node()

    def start_node(self) -> None:
        self.node = self.procs.start([str(BIN / "stoker"), "node", "--name", "bench", "--slots", "2"], self.env,
                                     self.work / f"{self.name}-node.log")

    def stop(self) -> None:
        for proc in (self.node, self.scheduler, self.gateway):
            if proc is not None:
                self.procs.stop(proc)

    def client(self) -> Any:
        from stoker.client import Client

        return Client(self.url, self.token)

    def settings(self) -> Any:
        from stoker.settings import Settings

        old = dict(os.environ)
        os.environ.update(self.env)
        try:
            return Settings.from_env()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def succeeded(self, function: str) -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{self.home / 'ledger.db'}")
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("select count(*) from invocations where function = :f and "
                                                "status = 'succeeded'"), {"f": function}).scalar() or 0)
        finally:
            engine.dispose()


def stoker_throughput(s: Stoker, n: int) -> float:
    """Events enqueued first (straight to Redis, as the gateway would), then the node started:
    the clock runs from the first invocation's start to the moment the last ledger row is written."""
    import sqlalchemy as sa

    from stoker.platform.context import PlatformContext
    from stoker.platform.envelope import Envelope, new_invocation_id
    from stoker.platform.gateway.invoker import queued_record

    async def produce() -> None:
        ctx = PlatformContext.create(s.settings(), with_db=False)
        try:
            resolved = await ctx.directory.resolve("noop")
            batch = []
            for _ in range(n):
                env = Envelope(id=new_invocation_id(), function="noop", version=resolved.version, payload=b"{}",
                               invocation_type="async", qualifier="$LATEST", deadline=time.time() + 3600,
                               trigger="bench")
                batch.append((env, queued_record(env)))
                if len(batch) == 500:
                    await ctx.bus.publish_many(batch)
                    batch = []
            if batch:
                await ctx.bus.publish_many(batch)
        finally:
            await ctx.close()

    t = time.perf_counter()
    asyncio.run(produce())
    log(f"stoker: {n} events enqueued in {time.perf_counter() - t:.2f} s; starting the node")
    s.start_node()
    deadline = time.monotonic() + 600
    while s.succeeded("noop") < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"stoker: only {s.succeeded('noop')}/{n} done")
        time.sleep(0.1)
    done_at = time.time()
    engine = sa.create_engine(f"sqlite:///{s.home / 'ledger.db'}")
    with engine.connect() as conn:
        first = conn.execute(sa.text("select min(started_at) from invocations where function = 'noop'")).scalar()
    engine.dispose()
    # SQLite keeps UTC timestamps as naive text
    first_start = dt.datetime.fromisoformat(str(first)).replace(tzinfo=dt.UTC).timestamp()
    return n / (done_at - first_start)


def sync_latency(s: Stoker, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """Warm sync calls one after another: through HTTP with a minimal keep-alive client (the
    platform's latency, not a client library's), then through stoker.Client (httpx)."""
    import http.client
    import urllib.parse

    parsed = urllib.parse.urlsplit(s.url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    headers = {"Authorization": f"Bearer {s.token}", "Content-Type": "application/json"}

    def call() -> None:
        conn.request("POST", "/api/functions/noop/invoke", body=b"{}", headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"invoke answered {response.status}")

    for _ in range(200):
        call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1000)
    conn.close()
    c = s.client()
    for _ in range(100):
        c.invoke("noop", {})
    client_samples = []
    for _ in range(n):
        t = time.perf_counter()
        c.invoke("noop", {})
        client_samples.append((time.perf_counter() - t) * 1000)
    http_ms = {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "mean": statistics.mean(samples)}
    client_ms = {"p50": percentile(client_samples, 50), "p99": percentile(client_samples, 99),
                 "mean": statistics.mean(client_samples)}
    return http_ms, client_ms


def cold_starts(s: Stoker, n: int, work: Path, tag: str, seen: list[float] | None = None) -> list[float]:
    """Deploy n new versions and call each once: init_ms of every first call (and, in `seen`,
    each first call's whole round trip as the caller sees it: HTTP, placement, sandbox, init)."""
    c = s.client()
    folder = work / f"cold-{tag}"
    folder.mkdir()
    (folder / "stoker.toml").write_text('[function]\nname = "coldfn"\nhandler = "handler.handler"\n')
    for i in range(n):
        (folder / "handler.py").write_text(f"import json\nVERSION = {i}\n\ndef handler(event, context):\n"
                                           "    return VERSION\n")
        c.deploy(folder)
        t0 = time.perf_counter()
        assert c.invoke("coldfn", {}) == i
        if seen is not None:
            seen.append((time.perf_counter() - t0) * 1000)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in c.invocations(function="coldfn", limit=10_000) if r["cold"] and r["init_ms"]]
        if len(rows) >= n:
            return [float(r["init_ms"]) for r in rows]
        time.sleep(0.2)
    raise TimeoutError("cold starts did not reach the ledger")


#: stdlib modules the zygote does not preload: about 50 ms of imports, a modest real function's
HEAVY_IMPORTS = ("asyncio", "csv", "email.mime.multipart", "http.cookiejar", "sqlite3", "ssl", "tarfile",
                 "unittest", "urllib.request", "xml.dom.minidom", "zipfile")


def _heavy_function(folder: Path, name: str, extra: str, version: int) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "stoker.toml").write_text(f'[function]\nname = "{name}"\nhandler = "handler.handler"\n{extra}')
    (folder / "handler.py").write_text(f"import {', '.join(HEAVY_IMPORTS)}\nVERSION = {version}\n\n"
                                       "def handler(event, context):\n    return VERSION\n")


def _cold_rows(c: Any, function: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [r for r in c.invocations(function=function, limit=10_000) if r["cold"] and r["init_ms"]]
        if len(rows) >= n:
            return sorted(rows, key=lambda r: r["id"])  # UUIDv7: in the order they were made
        time.sleep(0.2)
    raise TimeoutError(f"the cold starts of {function} did not reach the ledger")


def snapshot_cold_starts(s: Stoker, n: int, work: Path) -> tuple[list[float], list[float]]:
    """init_ms of a function with ~50 ms of imports: plain cold starts (a new version each), and
    cold starts forked from a `snapshot = true` template (its idle workers are killed between
    calls, so that each call needs a new worker of the same version)."""
    import psutil

    c = s.client()
    plain_dir, snap_dir = work / "heavy-plain", work / "heavy-snap"
    for i in range(n):
        _heavy_function(plain_dir, "heavyfn", "", i)
        c.deploy(plain_dir)
        assert c.invoke("heavyfn", {}) == i
    plain = [float(r["init_ms"]) for r in _cold_rows(c, "heavyfn", n)]

    _heavy_function(snap_dir, "snapfn", "snapshot = true\n", 0)
    c.deploy(snap_dir)
    assert c.invoke("snapfn", {}) == 0  # the version's first cold start makes the template
    for _ in range(n):
        # the forked workers are the processes named after the function with no children
        # (their template has them; a namespace's init has the template)
        workers = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "stoker-snapfn"
                   and not p.children()]
        for p in workers:
            with contextlib.suppress(psutil.Error):
                p.kill()
        time.sleep(0.3)  # the node hears of the exit before the next call
        assert c.invoke("snapfn", {}) == 0
    rows = _cold_rows(c, "snapfn", n + 1)
    return plain, [float(r["init_ms"]) for r in rows[1:]]


# -- the run ------------------------------------------------------------------------------

@contextlib.contextmanager
def private_redis(work: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            if r.ping():
                break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}", port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs: finishes in under 10 minutes on 2 cores")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--only", default="", help="comma-separated sections to run (for profiling): "
                        "stoker,latency,cold,dramatiq,celery,rq,ledger")
    parser.add_argument("--events", type=int, default=None, help="async events per system (overrides the default)")
    args = parser.parse_args()
    quick = args.quick
    n = args.events or (20_000 if quick else 100_000)
    n_rq = max(100, n // 20) if args.events else (1_000 if quick else 5_000)
    n_sync = 1_000 if quick else 5_000
    n_cold = 25 if quick else 100
    n_snapshot = 10 if quick else 40
    only = set(filter(None, args.only.split(",")))

    def want(section: str) -> bool:
        return not only or section in only

    results: dict[str, Any] = {"machine": machine(), "quick": quick, "throughput_per_s": {}, "counts": {}}
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="stoker-bench-"))
    started = time.monotonic()
    try:
        with private_redis(work) as (redis_base, _port):
            if want("stoker") or want("latency") or want("cold"):
                s = Stoker(procs, f"{redis_base}/0", work, "main", {}, start_node=not want("stoker"))
                if want("stoker"):
                    results["throughput_per_s"]["stoker"] = stoker_throughput(s, n)
                    results["counts"]["stoker"] = n
                    log(f"stoker: {results['throughput_per_s']['stoker']:.0f}/s")
                if want("latency"):
                    http_ms, client_ms = sync_latency(s, n_sync)
                    results["sync_http_ms"], results["sync_client_ms"] = http_ms, client_ms
                    log(f"sync http p50 {http_ms['p50']:.2f} ms p99 {http_ms['p99']:.2f} ms")
                if want("cold"):
                    caller: list[float] = []
                    zygote = cold_starts(s, n_cold, work, "zygote", caller)
                    heavy, snapshot = snapshot_cold_starts(s, n_snapshot, work)
                    s.stop()
                    spawn_stoker = Stoker(procs, f"{redis_base}/0", work, "spawn", {"STOKER_SPAWN_MODE": "exec"})
                    spawn = cold_starts(spawn_stoker, max(5, n_cold // 3), work, "spawn")
                    spawn_stoker.stop()
                    results["cold_start_ms"] = {"p50": percentile(zygote, 50), "p99": percentile(zygote, 99),
                                                "spawn_p50": percentile(spawn, 50), "spawn_p99": percentile(spawn, 99),
                                                "samples": len(zygote), "spawn_samples": len(spawn),
                                                "heavy_import_p50": percentile(heavy, 50),
                                                "snapshot_p50": percentile(snapshot, 50),
                                                "snapshot_p99": percentile(snapshot, 99),
                                                "caller_p50": percentile(caller, 50),
                                                "caller_p99": percentile(caller, 99)}
                    log(f"cold start p50 {results['cold_start_ms']['p50']:.1f} ms "
                        f"(fresh interpreter {results['cold_start_ms']['spawn_p50']:.1f} ms); with ~50 ms of "
                        f"imports {results['cold_start_ms']['heavy_import_p50']:.1f} ms, from a snapshot "
                        f"template {results['cold_start_ms']['snapshot_p50']:.1f} ms")
                s.stop()
            if want("dramatiq"):
                results["throughput_per_s"]["dramatiq"] = bench_dramatiq(procs, f"{redis_base}/3", n, work)
                results["counts"]["dramatiq"] = n
                log(f"dramatiq: {results['throughput_per_s']['dramatiq']:.0f}/s")
            if want("celery"):
                results["throughput_per_s"]["celery"] = bench_celery(procs, f"{redis_base}/1", n, work)
                results["counts"]["celery"] = n
                log(f"celery: {results['throughput_per_s']['celery']:.0f}/s")
            if want("rq"):
                results["throughput_per_s"]["rq"] = bench_rq(procs, f"{redis_base}/2", n_rq, work, simple=False)
                results["counts"]["rq"] = n_rq
                log(f"rq: {results['throughput_per_s']['rq']:.0f}/s")
                results["throughput_per_s"]["rq_simple"] = bench_rq(procs, f"{redis_base}/2", n_rq * 4, work,
                                                                    simple=True)
                results["counts"]["rq_simple"] = n_rq * 4
                log(f"rq SimpleWorker: {results['throughput_per_s']['rq_simple']:.0f}/s")
        if want("ledger"):
            from ledger_figures import ledger_figures  # bench/ledger_figures.py

            results.update(ledger_figures(work, rows=1_000_000))
            log(f"ledger: {results['ledger_rows_per_s']:.0f} rows/s, "
                f"query p50 {results['ledger_query_ms']['p50']:.1f} ms")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    t = results.get("throughput_per_s", {})
    print()
    print("async no-op throughput (2 worker processes, one Redis)")
    for name in ("stoker", "dramatiq", "celery", "rq", "rq_simple"):
        if name in t:
            ratio = f"  stoker is {t['stoker'] / t[name]:.1f}x" if "stoker" in t and name != "stoker" else ""
            print(f"  {name:<10} {t[name]:>9.0f} /s{ratio}")
    for key, label in (("sync_http_ms", "warm sync via HTTP"), ("sync_client_ms", "warm sync via Client"),
                       ("cold_start_ms", "cold start")):
        if key in results:
            v = results[key]
            extra = f"  fresh interpreter p50 {v['spawn_p50']:.1f} ms" if "spawn_p50" in v else ""
            print(f"{label:<22} p50 {v['p50']:.2f} ms  p99 {v['p99']:.2f} ms{extra}")
            if "caller_p50" in v:
                print(f"{'  as the caller sees it':<22} p50 {v['caller_p50']:.2f} ms  p99 {v['caller_p99']:.2f} ms "
                      "(the first call of a new version, through the Python client)")
            if "snapshot_p50" in v:
                print(f"{'  ~50 ms of imports':<22} p50 {v['heavy_import_p50']:.2f} ms  "
                      f"from a snapshot template p50 {v['snapshot_p50']:.2f} ms  p99 {v['snapshot_p99']:.2f} ms")
    if "ledger_rows_per_s" in results:
        print(f"ledger writer          {results['ledger_rows_per_s']:.0f} rows/s; query over "
              f"{results['ledger_rows']:,} rows p50 {results['ledger_query_ms']['p50']:.1f} ms")
    print(f"(elapsed {results.get('elapsed_s')} s)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
