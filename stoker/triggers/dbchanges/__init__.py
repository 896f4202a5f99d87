"""dbchanges: rows inserted, updated and deleted in a user's database trigger a function.

`stoker db watch` installs a change log and row triggers in the user's database
(`changelog.py`, with `postgres.py` and `sqlite.py`); a `[[triggers]] type = "dbchanges"`
entry (`config.py`) makes the trigger runner start a tailer (`tailer.py`) that publishes
the changes, in order, as DynamoDB-Streams-shaped batches (`records.py`). Its durable
cursor lives in the user's database beside the change log; the batch in flight lives in
Redis, moved atomically with the events it publishes (`inflight.py`, `handoff.lua`).

Redis keys ({cid} = function:hash of the database location and table, without credentials):
    {p}:lock:dbchanges:{cid}          string  the tailer's lease (holder token, 10 s TTL)
    {p}:dbchanges:{cid}:inflight      string  the batch in flight (JSON), absent when none
    {p}:dbchanges:{cid}:outcomes      stream  final outcomes of the batches' invocations
    {p}:triggers:health               hash    problems of trigger sources (stoker.triggers.health)
"""

from __future__ import annotations

from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import register_source
from stoker.triggers.dbchanges.config import validate
from stoker.triggers.dbchanges.tailer import make_source

register_trigger_type("dbchanges", validate)
register_source("dbchanges", make_source)
