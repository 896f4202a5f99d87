"""Cold start of a Python worker at each isolation level: zygote fork, sandbox, handler import.

Drives the node's own launch path (zygote, sandbox, runtime) without Redis, and reports
the init time the ledger would record (`init_ms`, REPORT's Init Duration), p50 and p90:

    python bench/sandbox_cold_start.py [--runs 50]

Run it as root for the namespace level (or where user namespaces are allowed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from stoker.workers import isolation
from stoker.workers.launch import lambda_environment
from stoker.workers.worker import Worker
from stoker.workers.zygote import ZygoteClient

HANDLER = "import json\n\ndef handler(event, context):\n    return {'ok': True}\n"


def spawn_spec(level: str, task_root: Path, work: Path, node: isolation.NodeIsolation, n: int,
               network: bool) -> dict[str, object]:
    fn = {"function": "bench", "version": "1", "handler": "handler.handler", "memory": 128}
    workdir = work / f"w{n}"
    return {
        **fn, "runtime": "python", "task_root": str(task_root), "workdir": str(workdir),
        "tmpdir": str(workdir / "tmp"), "log_stream": "bench",
        "env": lambda_environment(fn, str(task_root), str(workdir), "bench"),
        "limits": {"address_space_mb": 128, "open_files": 1024, "processes": 1024, "cpu_seconds": 10},
        "isolation": node.for_function(level, network), "process_name": "stoker-bench", "mode": "fork",
    }


async def measure(level: str, runs: int, network: bool) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="stoker-bench-") as tmp:
        home = Path(tmp) / "home"
        node_dir = home / "node"
        node = await asyncio.to_thread(isolation.detect, home, node_dir)
        if level == "namespace" and node.level != "namespace":
            raise SystemExit(f"namespaces are not available here: {node.reason}")
        task_root = node_dir / "bundles" / "x" / "code"
        task_root.mkdir(parents=True)
        (task_root / "handler.py").write_text(HANDLER)
        zygote = ZygoteClient(on_exit=lambda pid, code: None)
        zygote.start()
        times: list[float] = []
        try:
            for n in range(runs + 1):
                worker = Worker(f"w{n}", "bench:1", {"memory": 128}, 1 << 20)
                init_ms = await worker.start(zygote, spawn_spec(level, task_root, node_dir / "work", node, n, network),
                                             10.0)
                if n:  # the first one also builds the zygote's shared view
                    times.append(init_ms)
                worker.kill()
                worker.close_logs()
                await asyncio.sleep(0.02)
        finally:
            zygote.stop()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(f"{'level':<28} {'p50 ms':>8} {'p90 ms':>8} {'min ms':>8}")
    for level, network in (("process", True), ("namespace", True), ("namespace", False)):
        t0 = time.perf_counter()
        times = asyncio.run(measure(level, args.runs, network))
        times.sort()
        label = level + ("" if network else " + network = false")
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"{label:<28} {statistics.median(times):8.2f} {p90:8.2f} {times[0]:8.2f}"
              f"   ({len(times)} runs in {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
