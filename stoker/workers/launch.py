"""Cold starts: what a new worker is given (bundle, environment, limits) and how it is started.

Python workers are forked from the zygote (the handler is imported in the fork).
Runtimes registered in `LAUNCHERS` (see stoker.workers.runtimes) build their own spawn
spec, typically an exec of a bootstrap that speaks the Lambda Runtime API.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stoker.workers.bundlecache import BundleCache
from stoker.workers.confine import Confinement, Confiner
from stoker.workers.isolation import IsolationUnavailable, NodeIsolation
from stoker.workers.sandbox import cpu_life
from stoker.workers.template import Templates
from stoker.workers.worker import InitFailed, Worker
from stoker.workers.zygote import ZygoteClient

#: runtime -> coroutine (launcher, worker, base spawn spec) -> init ms, for runtimes other than python
LAUNCHERS: dict[str, Callable[[Launcher, Worker, dict[str, Any]], Awaitable[float]]] = {}

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def lambda_environment(spec: dict[str, Any], task_root: str, workdir: str, log_stream: str) -> dict[str, str]:
    """The worker's whole environment: the function's variables and Lambda's documented ones."""
    name, version = spec["function"], str(spec["version"])
    env = {k: str(v) for k, v in (spec.get("env") or {}).items()}
    env.update({
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.get("memory", 128)),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "local",
        "AWS_DEFAULT_REGION": "local",
        "AWS_EXECUTION_ENV": f"stoker_{spec.get('runtime', 'python')}",
        "LAMBDA_TASK_ROOT": task_root,
        "_HANDLER": spec["handler"],
        "TZ": ":UTC",
        "LANG": "C.UTF-8",
        "PATH": _worker_path(),
        "HOME": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def _worker_path() -> str:
    """System directories plus the interpreter's own, so `python3` resolves in a worker."""
    parts = [os.path.dirname(sys.executable), *DEFAULT_PATH.split(":")]
    seen: list[str] = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    return ":".join(seen)


def trigger_folders(spec: dict[str, Any]) -> list[str]:
    """Host folders the function must read: those its files triggers watch (the events name
    files in them). A namespace worker sees them read-only; no other function does."""
    folders: list[str] = []
    for trigger in spec.get("triggers") or ():
        if isinstance(trigger, dict) and trigger.get("type") == "files":
            paths = trigger.get("paths") or [trigger.get("path")]
            folders += [str(p) for p in paths if isinstance(p, str) and os.path.isabs(p)]
    return folders


def cpu_budget(timeout: float) -> int:
    """CPU seconds one process of a worker may use in one invocation: every core for the
    whole timeout, and a second more (the wall-clock timeout is the limit that matters; this
    one stops a process that keeps spinning after its invocation has ended)."""
    return math.ceil(timeout) * (os.cpu_count() or 1) + 1


class Launcher:
    def __init__(self, zygote: ZygoteClient, bundles: BundleCache, work_root: Path, node_name: str,
                 isolation: NodeIsolation | None = None) -> None:
        self.zygote = zygote
        self.bundles = bundles
        self.work_root = work_root
        self.node_name = node_name
        #: what this node can give (the node agent probes it at start)
        self.isolation = isolation or NodeIsolation(level="process", network_namespaces=False,
                                                    reason="not probed", root_dir=str(work_root / "sandbox-root"))
        self._serial = 0
        #: warm templates of the functions with `snapshot = true`
        self.templates = Templates(zygote.on_exit)
        #: cgroups and network namespaces (the node agent sets it up at start)
        self.confiner = Confiner()

    def workdir_for(self, worker: Worker) -> Path:
        return self.work_root / f"{worker.id}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"

    async def start(self, worker: Worker) -> float:
        spec = worker.spec
        t0 = time.perf_counter()
        try:
            isolation = self.isolation.for_function(spec.get("isolation", "auto"), bool(spec.get("network", True)))
            isolation["function_binds"] = trigger_folders(spec)
        except IsolationUnavailable as e:
            raise InitFailed({"errorType": "Sandbox.Unavailable",
                              "errorMessage": f"node {self.node_name}: {e}"}, 0.0) from None
        try:
            task_root = await self.bundles.ensure(spec["code_hash"])
        except Exception as e:
            raise InitFailed({"errorType": "Runtime.BundleUnavailable", "errorMessage": str(e)},
                             (time.perf_counter() - t0) * 1000) from None
        workdir = self.workdir_for(worker)
        worker.spec = {**spec, "workdir": str(workdir)}
        log_stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[{spec['version']}]{self.node_name}-{worker.id}"
        base = {
            "function": spec["function"],
            "version": str(spec["version"]),
            "handler": spec["handler"],
            "runtime": spec.get("runtime", "python"),
            "memory": int(spec.get("memory", 128)),
            "task_root": str(task_root),
            "workdir": str(workdir),
            "tmpdir": str(workdir / "tmp"),
            "log_stream": log_stream,
            "env": lambda_environment(spec, str(task_root), str(workdir), log_stream),
            "limits": {"address_space_mb": int(spec.get("memory", 128)), "open_files": 1024,
                       "processes": int(spec.get("processes", 1024)),
                       "cpu_seconds": cpu_budget(float(spec.get("timeout", 3))),
                       "cpu_seconds_life": cpu_life(cpu_budget(float(spec.get("timeout", 3))))},
            "isolation": isolation,
            "process_name": f"stoker-{spec['function']}"[:15],
            "mode": "fork",
        }
        runtime = spec.get("runtime", "python")
        init_timeout = max(10.0, float(spec.get("timeout", 3)))
        if runtime == "python" and os.environ.get("STOKER_SPAWN_MODE") == "exec":
            # a fresh interpreter per cold start instead of a fork of the zygote: slower,
            # kept for comparison (bench/) and for debugging
            import orjson

            spawn_spec = {k: v for k, v in base.items() if k != "env"}
            base["mode"] = "exec"
            base["argv"] = [sys.executable, "-P", "-m", "stoker.workers.runtime", "{control_fd}",
                            orjson.dumps(spawn_spec).decode()]
        if runtime != "python":
            launcher = LAUNCHERS.get(runtime)
            if launcher is None:
                raise InitFailed({"errorType": "Runtime.InvalidRuntime",
                                  "errorMessage": f"runtime {runtime!r} is not available on node {self.node_name}"},
                                 0.0)
            return await launcher(self, worker, base)
        if spec.get("snapshot") and base["mode"] == "fork":
            return await self._start_from_template(worker, base, init_timeout)
        worker.confinement = await self._confine(base)
        try:
            return await worker.start(self.zygote, base, init_timeout)
        finally:
            self._track(worker.pid, worker.confinement)

    async def _confine(self, base: dict[str, Any]) -> Confinement:
        """The cgroup and network namespace of a process about to be forked, in its spawn spec."""
        isolation = base["isolation"]
        try:
            confinement = await self.confiner.prepare(int(base["memory"]), int(base["limits"]["processes"]) + 2,
                                                      online=bool(isolation.get("network", True)))
        except OSError as e:
            raise InitFailed({"errorType": "Sandbox.Unavailable",
                              "errorMessage": f"node {self.node_name}: cannot prepare the worker's sandbox: {e}"},
                             0.0) from None
        base["isolation"] = {**isolation, **confinement.spec()}
        if confinement.cgroup is not None:
            # the cgroup bounds the memory of the whole tree; an address-space limit would only
            # refuse threads (each reserves a malloc arena) and runtimes that reserve big heaps
            base["limits"] = {**base["limits"], "address_space_mb": 0}
        return confinement

    def _track(self, pid: int | None, confinement: Confinement | None) -> None:
        if confinement is None:
            return
        if pid is None:
            confinement.release()  # never forked
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            confinement.release()  # gone (and reaped) before we got here
            return
        except PermissionError:
            pass
        self.confiner.track(pid, confinement)

    def exited(self, pid: int) -> None:
        """A process the zygote forked (a worker or a template) has exited: free what it held."""
        self.confiner.exited(pid)

    async def _start_from_template(self, worker: Worker, base: dict[str, Any], init_timeout: float) -> float:
        """`snapshot = true`: fork the version's warm template (started by the first cold start)."""
        spec = worker.spec
        template_spec = {**base, "workdir": str(self.work_root / f"template-{worker.id}-{os.getpid()}"),
                         "output_limit": int(spec.get("output_limit", 1 << 20))}
        template_spec["tmpdir"] = template_spec["workdir"] + "/tmp"
        key = f"{worker.function_version}@{spec['code_hash']}"
        existing = self.templates.get(key)
        confinement = None if existing is not None and existing.alive() else await self._confine(template_spec)
        try:
            template, template_ms = await self.templates.ensure(
                key, self.zygote, template_spec, init_timeout, int(spec.get("output_limit", 1 << 20)),
                float(spec.get("keep_warm", 300)))
        except BaseException:
            if confinement is not None:
                confinement.release()  # the template that held it is gone
            raise
        if confinement is not None:
            # a template this call started (it took time) holds the confinement; one another
            # call started meanwhile has its own
            self._track(template.pid if template_ms > 0 else None, confinement)
        try:
            ms = template_ms + await worker.start(template, {"log_stream": base["log_stream"]}, init_timeout)
        except InitFailed as e:
            e.init_ms += template_ms
            raise
        if worker.pid is not None:
            # a cgroup of its own (it was forked inside the template's); the template's network
            worker.confinement = self.confiner.adopt(worker.pid, int(base["memory"]),
                                                     int(base["limits"]["processes"]) + 2)
            worker.confinement.ready()
        return ms

    @staticmethod
    def cleanup(worker: Worker) -> None:
        if worker.confinement is not None:
            worker.confinement.release()
        workdir = worker.spec.get("workdir")
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
