"""Pruning the ledger on real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, select

from stoker.platform.ledger.models import Attempt
from stoker.platform.ledger.queries import InvocationFilter, list_invocations
from stoker.platform.ledger.retention import prune
from tests.integration.platform.ledger.conftest import T0, completed, write


def test_prune_deletes_old_invocations_and_their_attempts_in_chunks(engine: Engine) -> None:
    old = [completed(at=T0 - dt.timedelta(days=40, seconds=i), invocation_id=f"old{i}") for i in range(7)]
    write(engine, *old, completed(at=T0, invocation_id="new"))
    cutoff = T0 - dt.timedelta(days=30)

    dry = prune(engine, cutoff, dry_run=True)
    assert dry.invocations == 7 and dry.dry_run
    assert len(list_invocations(engine, InvocationFilter())) == 8

    result = prune(engine, cutoff, chunk=3)
    assert (result.invocations, result.attempts) == (7, 7)
    assert [r["id"] for r in list_invocations(engine, InvocationFilter())] == ["new"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Attempt)).scalar_one() == 1
    assert prune(engine, cutoff).invocations == 0
