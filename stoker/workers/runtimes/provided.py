"""runtime = "provided": the bundle's executable `bootstrap` is the runtime (as `provided.al2023`
on Lambda). It reads AWS_LAMBDA_RUNTIME_API, _HANDLER and LAMBDA_TASK_ROOT and serves
invocations through the Runtime API, e.g. `python3 -m awslambdaric app.handler`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stoker.workers.launch import Launcher
from stoker.workers.runtimes.execspec import exec_spec, init_failed, start
from stoker.workers.worker import Worker


def check_bootstrap(path: Path) -> None:
    """A clear init error for a bootstrap the kernel would refuse to exec."""
    if not path.is_file():
        raise init_failed("Runtime.InvalidEntrypoint", "the bundle has no file named bootstrap at its top level")
    if not os.access(path, os.X_OK):
        raise init_failed("Runtime.InvalidEntrypoint",
                          "bootstrap is not executable: run chmod +x bootstrap and deploy again")
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"#!") or head == b"\x7fELF"):
        raise init_failed("Runtime.InvalidEntrypoint",
                          "bootstrap is neither a program nor a script starting with a #! line "
                          "(e.g. #!/bin/sh)")


async def launch(launcher: Launcher, worker: Worker, base: dict[str, Any]) -> float:
    bootstrap = Path(base["task_root"]) / "bootstrap"
    check_bootstrap(bootstrap)
    return await start(launcher, worker, exec_spec(base, [str(bootstrap)]))
