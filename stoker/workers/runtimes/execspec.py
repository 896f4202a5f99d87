"""The spawn spec of a Runtime API worker: the base sandbox spec, exec'ing a program instead of forking Python."""

from __future__ import annotations

from typing import Any

from stoker.workers.apiworker import RuntimeApiWorker
from stoker.workers.launch import Launcher
from stoker.workers.worker import InitFailed, Worker

#: Lambda's limit on a function's init phase (a runtime's start, before its first `next`)
INIT_TIMEOUT_S = 10.0


def exec_spec(base: dict[str, Any], argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The same sandbox as a Python worker, but exec `argv`, with no control socket and no
    address-space limit (memory is watched by the node instead: see apiworker.py)."""
    limits = {k: v for k, v in base["limits"].items() if k != "address_space_mb"}
    return {**base, "mode": "exec", "argv": argv, "control": False, "limits": limits,
            "env": {**base["env"], **(env or {})}}


async def start(launcher: Launcher, worker: Worker, spec: dict[str, Any]) -> float:
    if not isinstance(worker, RuntimeApiWorker):
        raise InitFailed({"errorType": "Runtime.InvalidRuntime",
                          "errorMessage": f"runtime {spec['runtime']!r} needs a Runtime API worker; this node "
                                          "started a Python one (is stoker.workers.runtimes.make_worker the "
                                          "pool's worker factory?)"}, 0.0)
    return await worker.start(launcher.zygote, spec, max(INIT_TIMEOUT_S, float(worker.spec.get("timeout", 3))))


def init_failed(error_type: str, message: str) -> InitFailed:
    return InitFailed({"errorType": error_type, "errorMessage": message, "stackTrace": []}, 0.0)
