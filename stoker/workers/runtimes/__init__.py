"""Runtimes other than Python: each starts an exec'd program that speaks the Lambda Runtime API.

    runtime = "python"    the native path: forked from the zygote, msgpack frames (runtime.py)
    runtime = "nodejs"    node running stoker's JavaScript bootstrap (nodejs.py, bootstrap.mjs)
    runtime = "provided"  the bundle's own executable `bootstrap` (provided.py)

Importing this package registers the launchers in `stoker.workers.launch.LAUNCHERS`;
`make_worker` is the warm pool's worker factory: it picks the worker class a runtime needs.
"""

from __future__ import annotations

from typing import Any

from stoker.workers.apiworker import RuntimeApiWorker
from stoker.workers.launch import LAUNCHERS
from stoker.workers.runtimes import nodejs, provided
from stoker.workers.worker import Worker

LAUNCHERS["nodejs"] = nodejs.launch
LAUNCHERS["provided"] = provided.launch


def make_worker(worker_id: str, function_version: str, spec: dict[str, Any], output_limit: int) -> Worker:
    """A new (not yet started) worker of the class its runtime needs."""
    cls = Worker if spec.get("runtime", "python") == "python" else RuntimeApiWorker
    return cls(worker_id, function_version, spec, output_limit)
