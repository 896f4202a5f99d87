"""What a batch of changes becomes on the bus: its event, its envelope, and the entries that publish it.

An event holds as many changes as fit an async payload (1 MB). A single change larger
than that cannot run: its entries put it straight into the function's dead letters, with
a `dead_lettered` ledger row and an outcome, so the tailer goes on as after any failure.
"""

from __future__ import annotations

import logging
import time

import orjson

from stoker.platform.envelope import ASYNC_PAYLOAD_LIMIT, Envelope
from stoker.platform.gateway.invoker import queued_record
from stoker.platform.keys import Keys
from stoker.platform.ledger import records as R
from stoker.platform.outcomes import NOTIFY, encode_outcome
from stoker.platform.registry.projection import Resolved
from stoker.platform.retries import dead_letter
from stoker.triggers.dbchanges.changelog import Change
from stoker.triggers.dbchanges.inflight import Entry
from stoker.triggers.dbchanges.records import dumps, to_records
from stoker.triggers.dbchanges.target import Target

log = logging.getLogger(__name__)


def event_payload(changes: list[Change], target: Target, image_format: str) -> tuple[bytes, int]:
    """`{"Records": [...]}` for as many leading changes as fit an async payload (at least one), and how many."""
    parts: list[bytes] = []
    size = len(b'{"Records":[]}')
    fitted = 0
    for change in changes:
        encoded = [dumps(r) for r in to_records(change, arn=target.arn, table=target.table,
                                                image_format=image_format)]
        grow = sum(len(e) + 1 for e in encoded)
        if fitted and size + grow > ASYNC_PAYLOAD_LIMIT:
            break
        parts.extend(encoded)
        size += grow
        fitted += 1
    return b'{"Records":[' + b",".join(parts) + b"]}", fitted


def batch_envelope(resolved: Resolved, invocation_id: str, payload: bytes, seqs: tuple[int, ...], target: Target,
                   outcomes_key: str) -> Envelope:
    now = time.time()
    return Envelope(
        id=invocation_id, function=resolved.function, version=resolved.version, payload=payload,
        invocation_type="async", qualifier=resolved.qualifier, enqueued_at=now,
        deadline=now + float(resolved.spec.get("max_event_age", 6 * 3600)), trigger="dbchanges",
        # where the outcome goes, and what a dead letter needs to be traced back (never the URL)
        meta={NOTIFY: outcomes_key, "table": target.table, "first_seq": seqs[0], "last_seq": seqs[-1],
              "source": target.arn},
    )


def publish_entries(keys: Keys, envelope: Envelope, outcomes_key: str, source: str) -> list[Entry]:
    """The stream entries that publish the envelope: intake and its `queued` ledger row."""
    if len(envelope.payload) <= ASYNC_PAYLOAD_LIMIT:
        return [(keys.intake_async, envelope.stream_fields()), (keys.ledger, {"r": queued_record(envelope)})]
    seq = (envelope.meta or {}).get("first_seq")
    error = {"errorType": "RequestTooLargeException",
             "errorMessage": f"change {seq} of table {(envelope.meta or {}).get('table')} makes an event of "
                             f"{len(envelope.payload):,} bytes; an asynchronous event takes at most "
                             f"{ASYNC_PAYLOAD_LIMIT:,} bytes"}
    record = R.encode({
        "id": envelope.id, "function": envelope.function, "version": envelope.version,
        "qualifier": envelope.qualifier, "status": "dead_lettered", "trigger": envelope.trigger,
        "invocation_type": "async", "received_at": envelope.enqueued_at, "ended_at": time.time(), "attempts": 0,
        "error_type": error["errorType"], "error_message": error["errorMessage"],
        "payload_size": len(envelope.payload), "rank": R.rank(envelope.attempt, R.TERMINAL),
    })
    log.error("%s: %s; it is in the dead letters of %s", source, error["errorMessage"], envelope.function)
    outcome = encode_outcome(envelope, "dead_lettered", error["errorType"], orjson.dumps(error))
    return [(keys.dlq(envelope.function), {"d": dead_letter(envelope, error, "payload too large")}),
            (keys.ledger, {"r": record}), (outcomes_key, {"o": outcome})]
