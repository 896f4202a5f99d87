"""Queue -> function throughput with batching: messages per second at batch size 10 and 100.

    python bench/queue_bench.py [--messages 20000] [--batch-sizes 10,100] [--redis-url URL]

Starts `stoker up` in a temporary STOKER_HOME (its embedded Redis, or --redis-url), and
for each batch size: fills a queue with N small messages while nothing consumes it
(timing the producer: HTTP batches of 10), deploys a no-op consumer with that batch size,
and measures from the first batch's arrival to the last batch's end, as the ledger
recorded them. Also reports how many invocations the messages took.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONSUMER = "def handler(event, context):\n    return {'batchItemFailures': []}\n"


def start(home: Path, redis_url: str | None) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update({"STOKER_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    if redis_url:
        env.update({"STOKER_REDIS_URL": redis_url, "STOKER_PREFIX": f"bench{os.getpid()}"})
    log = (home / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "stoker", "up", "--port", "0"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=home)
    endpoint = home / "endpoint.json"
    deadline = time.monotonic() + 120
    while not endpoint.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"stoker up did not start:\n{(home / 'up.log').read_text()[-2000:]}")
        time.sleep(0.2)
    data = json.loads(endpoint.read_text())
    env.update({"STOKER_URL": data["url"], "STOKER_TOKEN": data["token"]})
    return proc, env


def parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def run_one(client: object, home: Path, batch_size: int, messages: int) -> dict[str, float]:
    from stoker.client import Client

    assert isinstance(client, Client)
    queue, function = f"bench-{batch_size}", f"bench-consumer-{batch_size}"
    started = time.perf_counter()
    for i in range(0, messages, 10):
        client.enqueue_batch(queue, [{"n": n} for n in range(i, min(i + 10, messages))])
    produce_s = time.perf_counter() - started

    folder = home / function
    folder.mkdir()
    (folder / "handler.py").write_text(CONSUMER)
    (folder / "stoker.toml").write_text(f'[function]\nname = "{function}"\n[[triggers]]\ntype = "queue"\n'
                                        f'queue = "{queue}"\nbatch_size = {batch_size}\n')
    client.deploy(folder)
    while True:
        stats = next(q for q in client.queues() if q["name"] == queue)
        if stats["available"] == 0 and stats["in_flight"] == 0:
            break
        time.sleep(0.2)
    rows: list[dict[str, str]] = []
    while True:  # until the ledger writer has caught up
        time.sleep(1.0)
        previous, rows = rows, client.invocations(function=function, limit=100_000)
        if rows and len(rows) == len(previous) and all(r.get("ended_at") for r in rows):
            break
    first = min(parse(r["received_at"]) for r in rows)
    last = max(parse(r["ended_at"]) for r in rows)
    return {"batch_size": batch_size, "messages": messages, "invocations": len(rows),
            "produce_per_s": messages / produce_s, "seconds": last - first, "per_s": messages / (last - first)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="10,100")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of an embedded one")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="stoker-queue-bench-") as tmp:
        home = Path(tmp)
        proc, env = start(home, args.redis_url)
        try:
            os.environ.update({k: env[k] for k in ("STOKER_URL", "STOKER_TOKEN")})
            from stoker.client import Client

            client = Client()
            results = [run_one(client, home, size, args.messages) for size in sizes]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"{'batch size':>10}  {'messages':>8}  {'invocations':>11}  {'enqueue/s':>9}  {'seconds':>7}  "
          f"{'consumed/s':>10}")
    for r in results:
        print(f"{r['batch_size']:>10}  {r['messages']:>8}  {r['invocations']:>11}  {r['produce_per_s']:>9.0f}  "
              f"{r['seconds']:>7.2f}  {r['per_s']:>10.0f}")


if __name__ == "__main__":
    main()
