"""runtime = "nodejs": node runs stoker's bootstrap (bootstrap.mjs), which loads `file.export`
from the bundle and serves it through the Runtime API.

The node executable is STOKER_NODEJS if set, else `node` on the node agent's PATH.
Memory: V8's heap is sized from the function's `memory` as on Lambda (a 25th for the young
generation, the rest for the old one); the node's resident-memory check covers the rest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from stoker.workers.launch import Launcher
from stoker.workers.runtimes.execspec import exec_spec, init_failed, start
from stoker.workers.worker import Worker

BOOTSTRAP = Path(__file__).with_name("bootstrap.mjs")


def node_executable() -> str | None:
    configured = os.environ.get("STOKER_NODEJS")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("node")


def memory_flags(memory_mb: int) -> list[str]:
    """V8 heap limits for a function of `memory_mb`, as Lambda's own Node.js bootstrap sets them."""
    new_space = memory_mb // 25
    return [f"--max-semi-space-size={max(1, new_space // 2)}", f"--max-old-space-size={memory_mb - new_space}"]


async def launch(launcher: Launcher, worker: Worker, base: dict[str, Any]) -> float:
    node = node_executable()
    if node is None:
        where = f"STOKER_NODEJS={os.environ['STOKER_NODEJS']!r} is not an executable" \
            if os.environ.get("STOKER_NODEJS") else "there is no `node` on PATH"
        raise init_failed("Runtime.InvalidRuntime",
                          f"Node.js is not available on node {launcher.node_name}: {where}. Install Node.js 18 or "
                          "later, or set STOKER_NODEJS to the node executable")
    argv = [node, "--expose-gc", *memory_flags(int(base["memory"])), str(BOOTSTRAP)]
    return await start(launcher, worker, exec_spec(base, argv))
