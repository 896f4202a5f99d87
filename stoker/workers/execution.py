"""Running one placed event: lease a worker, invoke it, and turn the outcome into a completion.

The outcome decides what happens next, all in the completion: the sync caller's reply;
for a failed async event, a retry (after `retry_delay`, doubling each time) or, when
retries or the maximum event age run out, a dead letter; the ledger record with the
attempt; and the invocation's log lines with START, END and REPORT, as Lambda writes them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from stoker.platform.envelope import Envelope
from stoker.platform.ledger import records as R
from stoker.platform.logstream import encode_logs
from stoker.platform.metrics import MetricsRecorder
from stoker.platform.outcomes import encode_outcome, notify_stream
from stoker.platform.replies import encode_reply
from stoker.platform.retries import decide
from stoker.workers.completions import Completion
from stoker.workers.context import function_arn
from stoker.workers.logbuffer import LogBuffer
from stoker.workers.pool import Lease, WarmPool
from stoker.workers.worker import InitFailed, Outcome, Requeue, error_body

log = logging.getLogger(__name__)

ERROR_MESSAGE_LIMIT = 4096


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Executor:
    """Runs events on the node's pool and hands back completions."""

    def __init__(self, node_name: str, pool: WarmPool, spec_of: Callable[[str, str], Awaitable[dict[str, Any]]],
                 emit: Callable[[Completion], None], idle_delta: Callable[[str, str, int], None],
                 started: Callable[[str], None] = lambda _entry: None,
                 metrics: MetricsRecorder | None = None,
                 claim: Callable[[str, str], Awaitable[bool]] | None = None) -> None:
        self.started = started
        #: records in Redis that an event starts, unless this node was declared dead (claims.py)
        self.claim = claim
        self.metrics = metrics or MetricsRecorder()
        #: a moving average of invocation durations on this node (sets how deep it prefetches)
        self.average_ms = 10.0
        self.node_name = node_name
        self.pool = pool
        self.spec_of = spec_of
        self.emit = emit
        self.idle_delta = idle_delta

    async def run(self, node_id: str, entry_id: str, envelope: Envelope, reserved: bool) -> None:
        fv = envelope.function_version
        try:
            spec = await self.spec_of(envelope.function, envelope.version)
        except Exception as e:
            log.error("no spec for %s: %s", fv, e)
            self._finish(node_id, entry_id, envelope, {"function": envelope.function, "memory": 128},
                         self._platform_failure(f"function version {fv} is not available: {e}"),
                         lease=None, init_ms=None, logs=LogBuffer(1 << 20))
            return
        if reserved:
            self.idle_delta(node_id, fv, +1)  # the reservation placement made is used up now
        if envelope.is_sync and envelope.deadline and time.time() > envelope.deadline:
            outcome = self._platform_failure("the caller stopped waiting before the event could start")
            self._finish(node_id, entry_id, envelope, spec, outcome, None, None, LogBuffer(1 << 20))
            return
        info = {"arn": function_arn(envelope.function, envelope.qualifier if envelope.qualifier != "$LATEST"
                                    else None)}
        timeout = float(spec.get("timeout", 3.0))
        while True:
            try:
                lease = await self.pool.acquire(fv, spec)
            except InitFailed as e:
                outcome = Outcome(status="failed", body=orjson.dumps(e.error), duration_ms=0.0,
                                  started_at=time.time(), ended_at=time.time(), reusable=False)
                self._finish(node_id, entry_id, envelope, spec, outcome, None, e.init_ms,
                             e.logs or LogBuffer(1 << 20), cold=True)
                return
            except Exception as e:
                log.exception("cannot start a worker for %s", fv)
                self._finish(node_id, entry_id, envelope, spec,
                             self._platform_failure(f"could not start a worker: {e}"), None, None, LogBuffer(1 << 20))
                return
            if self.claim is not None and not await self.claim(node_id, entry_id):
                # declared dead while it waited (a stall): the reclaim placed it again elsewhere
                await self.pool.release(lease.worker, reusable=True)
                log.warning("not starting %s: node %s was declared dead, the event runs elsewhere", envelope.id,
                            node_id)
                return
            self.started(entry_id)
            worker = lease.worker
            init_lines = worker.take_init_logs()  # the worker's init output, shown before START
            try:
                outcome = await worker.invoke(envelope.id, envelope.payload, timeout, info)
            except Requeue:  # its worker died before reaching it: it never started, run it on another
                await self.pool.release(worker, reusable=False)
                continue
            break
        logs = LogBuffer(int(spec.get("output_limit", 1 << 20)))
        logs.lines.extend(init_lines)
        logs.add_line(f"START RequestId: {envelope.id} Version: {envelope.version}", int(outcome.started_at * 1000))
        logs.feed(outcome.output)
        logs.dropped += outcome.dropped
        logs.finish()
        logs.lines.extend(worker.take_logs().take())  # what reached the real stdout/stderr (C, subprocesses)
        if outcome.status == "timed_out":
            logs.add_line(f"{iso_now()} {envelope.id} Task timed out after {timeout:.2f} seconds")
        await self.pool.release(worker, outcome.reusable)
        self._finish(node_id, entry_id, envelope, spec, outcome, lease, lease.init_ms, logs, cold=lease.cold)

    def _platform_failure(self, message: str) -> Outcome:
        now = time.time()
        return Outcome(status="failed", body=error_body("Runtime.PlatformError", message), duration_ms=0.0,
                       started_at=now, ended_at=now, reusable=False)

    def _finish(self, node_id: str, entry_id: str, envelope: Envelope, spec: dict[str, Any], outcome: Outcome,
                lease: Lease | None, init_ms: float | None, logs: LogBuffer, cold: bool = False) -> None:
        error = outcome.error
        memory = int(spec.get("memory", 128))
        max_memory_mb = math.ceil(outcome.max_rss_kb / 1024) if outcome.max_rss_kb else None
        billed = R.billed_ms(outcome.duration_ms)
        report = (f"REPORT RequestId: {envelope.id}\tDuration: {outcome.duration_ms:.2f} ms\t"
                  f"Billed Duration: {billed} ms\tMemory Size: {memory} MB\t"
                  f"Max Memory Used: {max_memory_mb or 0} MB")
        if cold and init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
        if error is not None and lease is None:
            # init failed or the platform failed: say so where the function's output would be
            logs.add_line(f"START RequestId: {envelope.id} Version: {envelope.version}")
            logs.add_line(f"{iso_now()} {envelope.id} {error.get('errorType')}: {error.get('errorMessage')}")
        logs.add_line(f"END RequestId: {envelope.id}")
        logs.add_line(report)

        now = time.time()
        if lease is not None:
            self.average_ms += (outcome.duration_ms - self.average_ms) * 0.05
        decision = decide(envelope, spec, outcome.status, error, now)
        self.metrics.invocation(envelope.function, outcome.status, outcome.duration_ms if lease else None, cold)
        status = decision.status
        error_type = error.get("errorType") if error else None
        error_message = str(error.get("errorMessage", ""))[:ERROR_MESSAGE_LIMIT] if error else None
        attempt = R.attempt_row(
            attempt=envelope.attempt, node=self.node_name, worker=lease.worker.id if lease else None,
            started_at=outcome.started_at, ended_at=outcome.ended_at, duration_ms=outcome.duration_ms,
            outcome=outcome.status, error_type=error_type, error_message=error_message, init_ms=init_ms,
        )
        record: dict[str, Any] = {
            "id": envelope.id, "function": envelope.function, "version": envelope.version,
            "qualifier": envelope.qualifier, "status": status, "trigger": envelope.trigger,
            "invocation_type": envelope.invocation_type, "received_at": envelope.enqueued_at,
            "started_at": outcome.started_at, "ended_at": outcome.ended_at,
            "duration_ms": round(outcome.duration_ms, 3), "billed_ms": billed, "memory_mb": memory,
            "max_memory_mb": max_memory_mb, "init_ms": round(init_ms, 3) if init_ms is not None else None,
            "cold": cold, "attempts": envelope.attempt, "node": self.node_name, "error_type": error_type,
            "error_message": error_message, "payload_size": len(envelope.payload),
            "result_size": len(outcome.body) if outcome.status == "succeeded" else None,
            "rank": R.rank(envelope.attempt, decision.phase), "attempt": attempt,
        }
        if spec.get("retain_payloads"):
            record["payload"] = envelope.payload[:R.RETAIN_LIMIT]
            record["result"] = outcome.body[:R.RETAIN_LIMIT]
        lines = logs.take()
        completion = Completion(
            node_id=node_id, entry_id=entry_id, function=envelope.function, function_version=envelope.function_version,
            ledger=R.encode(record), logs=encode_logs(envelope.id, lines),
            action=decision.action, arg1=decision.arg1, arg2=decision.arg2,
        )
        notify = notify_stream(envelope)
        if notify and decision.action != "retry":
            completion.notify = notify
            completion.outcome = encode_outcome(envelope, status, error_type, outcome.body)
        if envelope.reply_to:
            meta: dict[str, Any] = {"version": envelope.version, "status": outcome.status}
            if envelope.meta and envelope.meta.get("tail"):
                meta["log_tail"] = "\n".join(line for _, line in lines[-200:])[-4096:]
            kind = "ok" if outcome.status == "succeeded" else "error"
            completion.reply_key = envelope.reply_to
            completion.reply = encode_reply(envelope.id, kind, outcome.body, meta)
        self.emit(completion)
