"""The RQ bridge: RQ producers, unchanged, get their jobs run by stoker functions.

It takes job ids from an RQ queue (`rq:queue:<name>`, a list read from the left) and
does the bookkeeping of an RQ worker through the rq library itself, so RQ's API and
dashboards see the jobs as any worker's: the bridge registers as an RQ worker (named
`stoker-bridge.rq.<host>.<pid>.<hex>`), marks each job started (an execution in the
StartedJobRegistry), and then finished with its return value (`job.return_value()`,
FinishedJobRegistry, dependents enqueued) or failed with the error's traceback
(FailedJobRegistry, or a retry when the job was enqueued with `Retry`).

Like `rq worker --with-scheduler`, every bridge runs RQ's scheduler for its queue
(`RQScheduler`: one lock per queue, so one bridge at a time moves jobs): each second, jobs
of the ScheduledJobRegistry that are due (`enqueue_in`, `enqueue_at`, `Retry(interval=…)`)
are moved to the queue.

A job's `job_timeout` is held against the function's timeout: above it (or -1, no limit),
the job fails at once saying so; below it, the job fails with RQ's JobTimeoutException
once it has run that long (the function's run goes on to its own timeout, its answer
dropped). RQ's default (180 s, which a job enqueued without a timeout gets) means the
function's timeout.

The routed function gets `{"func", "id", "args", "kwargs"}`. Jobs must be enqueued with
RQ's JSONSerializer: the job's data is decoded here only after it is checked to be JSON,
so a pickled job is never unpickled; it is logged and its id kept in the rejected list
(`{p}:bridge:rq:{queue}:rejected`), the job itself untouched. A job whose function has
no route fails, as an RQ worker fails a job whose function it cannot import. Not done:
success and failure callbacks (they are producer code).

rq is synchronous, so its calls run in threads with their own Redis connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Any

import orjson

from stoker.triggers.bridges.base import Caller, Done, Failed, Outcome, Reject, Route, Routes
from stoker.triggers.bridges.lists import ListConsumer
from stoker.triggers.bridges.results import failure_from_error

log = logging.getLogger(__name__)

QUEUE_KEY_PREFIX = "rq:queue:"
#: how often a running job's execution heartbeat is renewed (RQ's job_monitoring_interval)
JOB_HEARTBEAT_S = 15.0
#: how often due scheduled jobs are moved to the queue (RQScheduler's default interval)
SCHEDULE_S = 1.0


class RQHandler:
    kind = "rq"

    def __init__(self, url: str, queue: str, routes: Routes, instance: str) -> None:
        import redis
        from rq import Queue
        from rq.scheduler import RQScheduler
        from rq.serializers import JSONSerializer
        from rq.worker import SimpleWorker

        self.queue_name = queue
        self.routes = routes
        self.instance = instance
        self.connection = redis.Redis.from_url(url)
        self.serializer = JSONSerializer
        self.queue = Queue(queue, connection=self.connection, serializer=JSONSerializer)
        self.worker = SimpleWorker([self.queue], connection=self.connection, serializer=JSONSerializer, name=instance)
        try:
            self.scheduler = RQScheduler([self.queue], connection=self.connection, interval=int(SCHEDULE_S),
                                         serializer=JSONSerializer, name=instance)
        except TypeError:  # rq 2 names its schedulers itself
            self.scheduler = RQScheduler([self.queue], connection=self.connection, interval=int(SCHEDULE_S),
                                         serializer=JSONSerializer)
        self.consumer: ListConsumer | None = None  # set by the bridge that owns this handler
        self._scheduling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.worker.register_birth)
        if hasattr(self.scheduler, "register_birth"):  # rq >= 3 lists its schedulers
            await asyncio.to_thread(self.scheduler.register_birth)
        self._scheduling = asyncio.create_task(self._schedule(), name="rq-scheduler")

    async def _schedule(self) -> None:
        """What `rq worker --with-scheduler` does: hold the queue's scheduler lock, move due jobs."""
        while True:
            try:
                await asyncio.to_thread(self._schedule_once)
            except Exception as e:  # Redis away: try again next time
                log.warning("rq bridge: moving scheduled jobs of %s failed: %s", self.queue_name, e)
            await asyncio.sleep(SCHEDULE_S)

    def _schedule_once(self) -> None:
        if self.scheduler.acquire_locks():
            self.scheduler.enqueue_scheduled_jobs()

    async def heartbeat(self) -> None:
        await asyncio.to_thread(self.worker.heartbeat)

    async def close(self) -> None:
        if self._scheduling is not None:
            self._scheduling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scheduling
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.scheduler.stop)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.worker.register_death)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.connection.close)

    # -- the steps, each run in a thread ------------------------------------------------------
    def _inspect(self, job_id: str) -> tuple[str, Any]:
        """("missing", None), ("refused", reason) or ("job", Job): the data is checked to be JSON first."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        data = self.connection.hget(Job.key_for(job_id), "data")
        if data is None:
            return "missing", None
        raw = bytes(data)  # type: ignore[arg-type]
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            kind = "pickled" if raw[:1] == b"\x80" else "not JSON"
            return "refused", (f"job {job_id}'s data is {kind}: the stoker bridge runs jobs enqueued with "
                               "Queue(..., serializer=JSONSerializer) only, and never unpickles")
        if not isinstance(decoded, list) or len(decoded) != 4 or not isinstance(decoded[0], str):
            return "refused", f"job {job_id}'s data is not [func_name, instance, args, kwargs]"
        if decoded[1] is not None:
            return "refused", f"job {job_id} calls a method on an instance, which a bridge cannot run"
        try:
            return "job", Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            return "missing", None

    def _forget_dead_executions(self, job: Any, alive: set[str]) -> None:
        """A job handed back by a bridge that died still lists that bridge's execution: drop it, so
        RQ's cleanup does not later mark the re-run job as abandoned."""
        with self.connection.pipeline() as pipe:
            for execution in job.get_executions():
                if execution.worker_name.startswith("stoker-bridge.") and execution.worker_name not in alive:
                    execution.delete(job, pipe)
            pipe.execute()

    def _start(self, job: Any) -> Any:
        execution = self.worker.prepare_execution(job)
        self.worker.prepare_job_execution(job)
        return execution

    def _succeed(self, job: Any, execution: Any, value: Any) -> None:
        from rq.utils import now

        job.ended_at = now()
        job._result = value  # what rq's Worker._finalize_success sets before handle_job_success
        self.worker.handle_job_success(job, self.queue, self.queue.started_job_registry, execution)

    def _fail(self, job: Any, execution: Any, exc_string: str) -> None:
        from rq.utils import now

        job.ended_at = now()
        self.worker.handle_job_failure(job, self.queue, self.queue.started_job_registry, exc_string=exc_string,
                                       execution=execution)

    # -- one job ------------------------------------------------------------------------------
    async def handle(self, item: bytes, call: Caller) -> Outcome:
        job_id = item.decode("utf-8", "replace")
        state, found = await asyncio.to_thread(self._inspect, job_id)
        if state == "missing":  # deleted or cancelled since it was enqueued: RQ skips it too
            return Done()
        if state == "refused":
            log.error("rq bridge: refused a job on %s: %s. Its id is kept in the rejected list; the job is "
                      "untouched", self.queue_name, found)
            return Reject()
        job = found
        route = await self.routes.lookup(job.func_name)
        if route is None:
            log.error("rq bridge: job %s calls %r, which has no route (add --route %s=FUNCTION, or a "
                      "[[triggers]] type = \"rq\" with func = %r); it fails", job.id, job.func_name, job.func_name,
                      job.func_name)
            await asyncio.to_thread(self._fail, job, None,
                                    f"stoker bridge: no function is routed for {job.func_name!r}\n")
            return Done()
        limit = await self._time_limit(job, route, call)
        if isinstance(limit, str):
            log.error("rq bridge: job %s refused: %s", job.id, limit)
            await asyncio.to_thread(self._fail, job, None, f"stoker bridge: {limit}\n")
            return Done()
        if self.consumer is not None and job.get_status(refresh=False) == "started":
            members: Any = await self.consumer.redis.zrange(self.consumer.instances_key, 0, -1)
            alive = {bytes(m).decode() for m in members}
            await asyncio.to_thread(self._forget_dead_executions, job, alive)
        execution = await asyncio.to_thread(self._start, job)
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_alive(job, execution, done))
        try:
            payload = orjson.dumps({"func": job.func_name, "id": job.id, "args": list(job.args),
                                    "kwargs": dict(job.kwargs)})
            try:
                reply = await asyncio.wait_for(call(route, payload), limit)
            except Failed as f:
                await asyncio.to_thread(self._fail, job, execution, f"{f.error_type}: {f.message}\n")
                return Done()
            except TimeoutError:
                log.info("rq bridge: job %s exceeded its job_timeout of %s s", job.id, job.timeout)
                await asyncio.to_thread(self._fail, job, execution, (
                    "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value "
                    f"({job.timeout} seconds)\n"))
                return Done()
        finally:
            done.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
        if reply.ok:
            value = orjson.loads(reply.body) if reply.body.strip() else None
            await asyncio.to_thread(self._succeed, job, execution, value)
        else:
            _, traceback = failure_from_error(reply.body)
            await asyncio.to_thread(self._fail, job, execution, traceback)
        return Done()

    async def _time_limit(self, job: Any, route: Route, call: Caller) -> float | str | None:
        """How long to wait for the job (None: the function's own timeout), or why it is refused."""
        from rq import Queue

        timeout = job.timeout
        if timeout is None or timeout == Queue.DEFAULT_TIMEOUT:
            return None
        try:
            allowed = float((await call.invoker.resolve(route.function, route.qualifier)).timeout)
        except Exception:  # the call itself reports a missing function, or waits out Redis
            return None
        if timeout == -1 or float(timeout) > allowed:
            what = "no limit (-1)" if timeout == -1 else f"{timeout} s"
            return (f"job_timeout is {what}, above the timeout of function {route.function!r} ({allowed:g} s): "
                    f"enqueue it with job_timeout <= {allowed:g}, or raise the function's timeout")
        return float(timeout)

    async def _keep_alive(self, job: Any, execution: Any, done: asyncio.Event) -> None:
        """RQ's heartbeats for a running job, so RQ does not take it for abandoned."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), JOB_HEARTBEAT_S)
                return
            try:
                await asyncio.to_thread(self.worker.maintain_heartbeats, job, execution)
            except Exception as e:
                log.warning("rq bridge: heartbeat of job %s failed: %s", job.id, e)
