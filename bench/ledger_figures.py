"""The ledger's figures for bench/run.py, measured by bench/ledger_bench.py's own routines on
SQLite: the writer's rate while it seeds a million invocations, and the p50 of the target
query (one function, a one-day range) over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ledger_figures(work: Path, rows: int = 1_000_000, runs: int = 30) -> dict[str, Any]:
    from ledger_bench import queries, seed  # bench/ledger_bench.py, beside this file

    from stoker.platform.db import make_engine, migrate

    url = f"sqlite:///{work / 'ledger-bench.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        writer = seed(engine, rows)
        with engine.connect() as conn:
            count = int(conn.exec_driver_sql("select count(*) from invocations").scalar_one())
        target = queries(engine, runs)["function + 1-day range (the target)"]
    finally:
        engine.dispose()
    return {"ledger_rows_per_s": count / writer["seconds"], "ledger_rows": count,
            "ledger_query_ms": {"p50": target["p50_ms"], "p95": target["p95_ms"]}}
