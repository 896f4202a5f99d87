"""The Celery and RQ bridges with real producers: a Celery app and an RQ queue, unchanged,
get their results from stoker functions; pickles are refused unread; a killed bridge loses nothing."""

from __future__ import annotations

import datetime
import json
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery, chain, chord, group
from celery.exceptions import ChordError, NotRegistered, TaskRevokedError
from kombu.exceptions import ContentDisallowed
from rq import Queue, Retry
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

ADD = '''import time
def handler(event, context):
    kwargs = event["kwargs"]
    if kwargs.get("boom"):
        raise ValueError("kaboom")
    time.sleep(kwargs.get("sleep", 0))
    print("RAN", event["id"])
    return sum(event["args"]) + kwargs.get("extra", 0)
'''


class Touch:
    """Unpickling this creates a file: the proof that nothing was unpickled is that it does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def bridged(tmp_path: Path, redis_server: RedisServer, prefix: str, make_function) -> Iterator[RunningPlatform]:
    """A platform with the function `add` deployed."""
    folder = make_function("add", ADD, "timeout = 30")
    running = start_platform(tmp_path / "home", redis_server.url, prefix, deploy=[folder])
    try:
        yield running
    finally:
        running.stop()


class Bridges:
    """`stoker bridge ...` processes, stopped at the end of the test."""

    def __init__(self, platform: RunningPlatform, tmp_path: Path) -> None:
        self.platform = platform
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"bridge-{len(self.procs)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "stoker", "bridge", *args], env=self.platform.env,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, i: int = 0) -> str:
        return (self.tmp_path / f"bridge-{i}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def bridges(bridged: RunningPlatform, tmp_path: Path) -> Iterator[Bridges]:
    b = Bridges(bridged, tmp_path)
    try:
        yield b
    finally:
        b.stop()


def ran(platform: RunningPlatform, task_id: str) -> int:
    return platform.cli("logs", "add", check=True).stdout.count(f"RAN {task_id}")


# -- Celery -------------------------------------------------------------------------------

def test_celery_producer_gets_results_errors_and_rejections(bridged: RunningPlatform, bridges: Bridges,
                                                            redis_server: RedisServer, prefix: str,
                                                            tmp_path: Path) -> None:
    queue = f"celery-{prefix}"
    bridge = bridges.start("celery", "--broker", redis_server.url, "--queue", queue, "--route", "tasks.add=add")
    app = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    r = app.send_task("tasks.add", args=[2, 3], kwargs={"extra": 10}, queue=queue)
    assert r.get(timeout=60) == 15 and r.status == "SUCCESS"
    assert ran(bridged, r.id) == 1

    r = app.send_task("tasks.add", args=[1], kwargs={"boom": True}, queue=queue)
    with pytest.raises(ValueError, match="kaboom"):
        r.get(timeout=60)
    assert r.status == "FAILURE" and 'raise ValueError("kaboom")' in r.traceback

    r = app.send_task("tasks.unknown", args=[1], queue=queue)
    with pytest.raises(NotRegistered, match=r"tasks\.unknown"):
        r.get(timeout=60)
    assert "Received unregistered task of type 'tasks.unknown'" in bridges.log()

    marker = tmp_path / "unpickled"
    r = app.send_task("tasks.add", args=[Touch(marker)], queue=queue, serializer="pickle")
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        r.get(timeout=60)
    assert not marker.exists()
    (kept,) = redis_server.client().lrange(f"{prefix}:bridge:celery:{queue}:rejected", 0, -1)
    envelope = json.loads(kept)
    assert envelope["content-type"] == "application/x-python-serialize" and envelope["headers"]["id"] == r.id

    r = app.send_task("tasks.add", args=[1, 1], queue=queue, countdown=1)
    assert r.get(timeout=60) == 2
    r = app.send_task("tasks.add", args=[1, 1], queue=queue,
                      expires=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5))
    with pytest.raises(TaskRevokedError, match="expired"):
        r.get(timeout=60)
    assert ran(bridged, r.id) == 0
    assert bridge.poll() is None


def test_a_killed_celery_bridge_loses_no_task(bridged: RunningPlatform, bridges: Bridges,
                                              redis_server: RedisServer, prefix: str) -> None:
    queue = f"celery-{prefix}"
    first = bridges.start("celery", "--broker", redis_server.url, "--queue", queue, "--route", "tasks.add=add")
    app = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    r = app.send_task("tasks.add", args=[20, 22], kwargs={"sleep": 4}, queue=queue)
    client = redis_server.client()
    wait_until(lambda: client.keys(f"{prefix}:bridge:celery:{queue}:processing:*"), timeout=60,
               message="the first bridge to take the task")
    first.send_signal(signal.SIGKILL)
    first.wait()
    bridges.start("celery", "--broker", redis_server.url, "--queue", queue, "--route", "tasks.add=add",
                  "--dead-after", "2")
    assert r.get(timeout=90) == 42
    # the task ran again under the second bridge (the first run's answer was lost with the first bridge)
    assert "went back to the queue" in bridges.log(1)
    wait_until(lambda: ran(bridged, r.id) == 2, timeout=60, message="both runs in the function's logs")


def test_celery_tasks_declared_in_a_manifest_run_under_stoker_up(bridged: RunningPlatform, make_function,
                                                                 redis_server: RedisServer, prefix: str) -> None:
    queue = f"celery-{prefix}"
    folder = make_function("mul", "def handler(event, context):\n    return event['args'][0] * event['args'][1]\n",
                           f'[[triggers]]\ntype = "celery"\ntask = "tasks.mul"\nqueue = "{queue}"')
    bridged.cli("deploy", str(folder), check=True)
    app = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    assert app.send_task("tasks.mul", args=[6, 7], queue=queue).get(timeout=60) == 42
    rows = json.loads(bridged.cli("ledger", "--function", "mul", "--format", "json", check=True).stdout)
    assert rows and rows[0]["trigger"] == "celery"


def test_a_bridge_refuses_to_start_for_a_missing_function(bridged: RunningPlatform, redis_server: RedisServer) -> None:
    r = bridged.cli("bridge", "celery", "--broker", redis_server.url, "--route", "tasks.add=nope", timeout=60)
    assert r.returncode == 2 and "'nope' does not exist" in r.stderr
    r = bridged.cli("bridge", "rq", "--redis", "amqp://localhost", "--route", "tasks.add=add", timeout=60)
    assert r.returncode == 2 and "Redis" in r.stderr


ECHO = '''def handler(event, context):
    print("RAN", event["id"])
    return event["args"]
'''


@pytest.fixture
def canvas_bridge(bridged: RunningPlatform, bridges: Bridges, make_function, redis_server: RedisServer,
                  prefix: str) -> tuple[Celery, str]:
    """A Celery app and a bridge routing tasks.add to `add` and tasks.echo to `echo`."""
    bridged.cli("deploy", str(make_function("echo", ECHO)), check=True)
    queue = f"celery-{prefix}"
    bridges.start("celery", "--broker", redis_server.url, "--queue", queue, "--route", "tasks.add=add",
                  "--route", "tasks.echo=echo")
    app = Celery("producer", broker=redis_server.url, backend=redis_server.url)
    app.conf.task_default_queue = queue
    return app, queue


def test_celery_links_chains_groups_and_chords_run_as_celery_runs_them(
        canvas_bridge: tuple[Celery, str], bridged: RunningPlatform) -> None:
    app, queue = canvas_bridge
    add = app.signature("tasks.add", queue=queue)
    echo = app.signature("tasks.echo", queue=queue)
    assert add.clone(args=[0, 0]).apply_async().get(timeout=60) == 0  # the bridge is up

    last = app.signature("tasks.echo", args=["x"], queue=queue, immutable=True)
    r = chain(add.clone(args=[1, 2]), add.clone(args=[10]), last).apply_async()
    assert r.get(timeout=30) == ["x"] and r.parent.get(timeout=5) == 13 and r.parent.parent.get(timeout=5) == 3

    callback, errback = add.clone(args=[100]), echo.clone()
    callback_id, errback_id = callback.freeze().id, errback.freeze().id
    ok = add.clone(args=[1, 2]).apply_async(link=callback)
    assert ok.get(timeout=30) == 3 and app.AsyncResult(callback_id).get(timeout=30) == 103
    failing = add.clone(args=[1], kwargs={"boom": True}).apply_async(link_error=errback)
    with pytest.raises(ValueError, match="kaboom"):
        failing.get(timeout=30)
    assert app.AsyncResult(errback_id).get(timeout=30) == [failing.id]  # Celery's errback-as-task argument

    g = group(add.clone(args=[i, i]) for i in range(4)).apply_async()
    assert g.get(timeout=30) == [0, 2, 4, 6]

    c = chord([add.clone(args=[1, 2]), add.clone(args=[3, 4]), add.clone(args=[5, 6])])(echo.clone(args=["sum"]))
    assert c.get(timeout=30) == [[3, 7, 11], "sum"]

    # a failure stops a chain and fails a chord at once, as in Celery: get() raises, never times out
    started = time.monotonic()
    r = chain(add.clone(args=[1], kwargs={"boom": True}), add.clone(args=[1]), echo.clone()).apply_async()
    with pytest.raises(ValueError, match="kaboom"):
        r.get(timeout=30)
    c = chord([add.clone(args=[1, 2]), add.clone(args=[1], kwargs={"boom": True})])(echo.clone())
    with pytest.raises(ValueError, match="kaboom"):  # Celery raises the header's error first
        c.get(timeout=30)
    with pytest.raises(ChordError, match=r"raised ValueError\('kaboom'\)"):  # the body itself failed
        app.AsyncResult(c.id).get(timeout=30)
    assert time.monotonic() - started < 20

    # what the bridge does not run is refused at once, saying what it is
    r = chain(add.clone(args=[1, 1]), chord([add.clone(args=[1]), add.clone(args=[2])], echo.clone())).apply_async()
    with pytest.raises(NotImplementedError, match="chord as a step of a chain"):
        r.get(timeout=30)


def test_celery_revoke_is_honoured_for_countdown_and_running_tasks(
        canvas_bridge: tuple[Celery, str], bridged: RunningPlatform) -> None:
    app, queue = canvas_bridge
    assert app.send_task("tasks.add", args=[0, 0], queue=queue).get(timeout=60) == 0  # the bridge is up
    kept = app.send_task("tasks.add", args=[1, 2], queue=queue, countdown=4)
    gone = app.send_task("tasks.add", args=[3, 4], queue=queue, countdown=4)
    queued = app.signature("tasks.add", args=[5, 6], queue=queue, countdown=4)
    queued_id = queued.freeze().id
    app.control.revoke(queued_id)  # revoked before it was even sent
    queued.apply_async()
    time.sleep(0.5)
    started = time.monotonic()
    gone.revoke()
    with pytest.raises(TaskRevokedError, match="revoked"):
        gone.get(timeout=20)
    assert time.monotonic() - started < 3, "a held countdown task is stored REVOKED when the revoke comes"
    assert gone.state == "REVOKED"
    with pytest.raises(TaskRevokedError):
        app.AsyncResult(queued_id).get(timeout=20)
    assert kept.get(timeout=20) == 3
    assert ran(bridged, kept.id) == 1 and ran(bridged, gone.id) == 0 and ran(bridged, queued_id) == 0

    # terminate=True: the producer stops waiting for a running task at once
    running = app.send_task("tasks.add", args=[1, 1], kwargs={"sleep": 20}, queue=queue)
    client = redis.Redis.from_url(app.conf.broker_url)
    held = f"{queue.removeprefix('celery-')}:bridge:celery:{queue}:processing:*"
    wait_until(lambda: any(client.lrange(k, 0, -1) for k in client.keys(held)), timeout=30,
               message="the bridge to take the long task")
    time.sleep(1)
    started = time.monotonic()
    running.revoke(terminate=True)
    with pytest.raises(TaskRevokedError, match="terminated"):
        running.get(timeout=15)
    assert time.monotonic() - started < 5


# -- RQ -----------------------------------------------------------------------------------

def wait_job(job, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.get_status(refresh=True) not in ("finished", "failed"):
        time.sleep(0.1)
    return job.get_status()


def test_rq_producer_gets_results_and_failures_in_rq_registries(bridged: RunningPlatform, bridges: Bridges,
                                                                redis_server: RedisServer, prefix: str,
                                                                tmp_path: Path) -> None:
    name = f"rq-{prefix}"
    bridges.start("rq", "--redis", redis_server.url, "--queue", name, "--route", "tasks.add=add")
    connection = redis.Redis.from_url(redis_server.url)
    q = Queue(name, connection=connection, serializer=JSONSerializer)
    job = q.enqueue("tasks.add", 4, 5, extra=1)
    assert wait_job(job) == "finished" and job.return_value() == 10
    dependent = q.enqueue("tasks.add", 1, 2, depends_on=job)
    assert wait_job(dependent) == "finished" and dependent.return_value() == 3

    failing = q.enqueue("tasks.add", 1, boom=True)
    assert wait_job(failing) == "failed"
    assert "ValueError: kaboom" in failing.latest_result().exc_string
    unknown = q.enqueue("tasks.unknown", 1)
    assert wait_job(unknown) == "failed"
    assert "no function is routed for 'tasks.unknown'" in unknown.latest_result().exc_string
    assert set(FinishedJobRegistry(name, connection=connection).get_job_ids()) == {job.id, dependent.id}
    assert set(FailedJobRegistry(name, connection=connection).get_job_ids()) == {failing.id, unknown.id}

    marker = tmp_path / "unpickled"
    pickled = Queue(name, connection=connection).enqueue("tasks.add", Touch(marker))  # RQ's default: pickle
    rejected = f"{prefix}:bridge:rq:{name}:rejected"
    wait_until(lambda: connection.lrange(rejected, 0, -1) == [pickled.id.encode()], timeout=60,
               message="the pickled job's id in the rejected list")
    assert not marker.exists() and "is pickled" in bridges.log()
    assert connection.exists(pickled.key)  # the job is left as it was, for inspection


def test_a_killed_rq_bridge_loses_no_job(bridged: RunningPlatform, bridges: Bridges, redis_server: RedisServer,
                                         prefix: str) -> None:
    name = f"rq-{prefix}"
    first = bridges.start("rq", "--redis", redis_server.url, "--queue", name, "--route", "tasks.add=add")
    connection = redis.Redis.from_url(redis_server.url)
    job = Queue(name, connection=connection, serializer=JSONSerializer).enqueue("tasks.add", 1, 2, sleep=4)
    wait_until(lambda: job.get_status(refresh=True) == "started", timeout=60, message="the job to start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    bridges.start("rq", "--redis", redis_server.url, "--queue", name, "--route", "tasks.add=add",
                  "--dead-after", "2")
    assert wait_job(job, timeout=90) == "finished" and job.return_value() == 3
    # the dead bridge's execution was dropped, so RQ's cleanup will not call the job abandoned
    assert [e.worker_name for e in job.get_executions()] == []


def test_rq_jobs_declared_in_a_manifest_run_under_stoker_up(bridged: RunningPlatform, make_function,
                                                            redis_server: RedisServer, prefix: str) -> None:
    name = f"rq-{prefix}"
    folder = make_function("mul", "def handler(event, context):\n    return event['args'][0] * event['args'][1]\n",
                           f'[[triggers]]\ntype = "rq"\nfunc = "tasks.mul"\nqueue = "{name}"')
    bridged.cli("deploy", str(folder), check=True)
    connection = redis.Redis.from_url(redis_server.url)
    job = Queue(name, connection=connection, serializer=JSONSerializer).enqueue("tasks.mul", 6, 7)
    assert wait_job(job) == "finished" and job.return_value() == 42


def test_rq_scheduled_jobs_and_retries_run_when_due(bridged: RunningPlatform, bridges: Bridges,
                                                    redis_server: RedisServer, prefix: str) -> None:
    """enqueue_in, enqueue_at and Retry(interval=...) as `rq worker --with-scheduler` serves them."""
    name = f"rq-{prefix}"
    bridges.start("rq", "--redis", redis_server.url, "--queue", name, "--route", "tasks.add=add")
    connection = redis.Redis.from_url(redis_server.url)
    q = Queue(name, connection=connection, serializer=JSONSerializer)
    assert wait_job(q.enqueue("tasks.add", 0)) == "finished"  # the bridge is up

    t = time.time()
    later = q.enqueue_in(datetime.timedelta(seconds=2), "tasks.add", 1, 2)
    at = q.enqueue_at(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3), "tasks.add", 3, 4)
    assert later.get_status() == "scheduled"
    assert set(q.scheduled_job_registry.get_job_ids()) == {later.id, at.id}
    assert wait_job(later, timeout=15) == "finished" and later.return_value() == 3
    assert wait_job(at, timeout=15) == "finished" and at.return_value() == 7
    later.refresh()
    at.refresh()
    assert later.started_at is not None and at.started_at is not None
    # RQ scores its scheduled registry in whole seconds (calendar.timegm), so a job is due at
    # the start of the second it was scheduled for: up to a second early, as with rq worker
    assert later.started_at.timestamp() >= int(t + 2) and at.started_at.timestamp() >= int(t + 3), \
        "run before they were due"
    assert later.started_at.timestamp() < t + 10 and at.started_at.timestamp() < t + 10
    assert q.scheduled_job_registry.get_job_ids() == []

    t = time.time()
    retried = q.enqueue("tasks.add", 1, boom=True, retry=Retry(max=2, interval=[1, 2]))
    assert wait_job(retried, timeout=30) == "failed"
    assert "ValueError: kaboom" in retried.latest_result().exc_string
    assert failed_runs(bridged, "add") == 3  # the first run and two retries, the only failures here
    assert time.time() - t >= 3, "the retries did not wait their intervals"


def failed_runs(platform: RunningPlatform, function: str) -> int:
    rows = json.loads(platform.cli("ledger", "--function", function, "--format", "json", check=True).stdout)
    return sum(r["status"] == "failed" for r in rows)


def test_rq_job_timeout_is_held_against_the_function_timeout(bridged: RunningPlatform, bridges: Bridges,
                                                             redis_server: RedisServer, prefix: str) -> None:
    name = f"rq-{prefix}"
    bridges.start("rq", "--redis", redis_server.url, "--queue", name, "--route", "tasks.add=add")
    connection = redis.Redis.from_url(redis_server.url)
    q = Queue(name, connection=connection, serializer=JSONSerializer)
    default = q.enqueue("tasks.add", 1, 1)  # RQ's default job_timeout: the function's own applies
    assert wait_job(default) == "finished" and default.return_value() == 2
    within = q.enqueue("tasks.add", 2, 2, job_timeout=30)
    assert wait_job(within) == "finished" and within.return_value() == 4

    above = q.enqueue("tasks.add", 1, job_timeout=600)  # the function's timeout is 30 s
    assert wait_job(above, timeout=30) == "failed"
    assert "job_timeout is 600 s, above the timeout of function 'add' (30 s)" in above.latest_result().exc_string
    assert ran(bridged, above.id) == 0

    t = time.monotonic()
    short = q.enqueue("tasks.add", 1, sleep=20, job_timeout=2)
    assert wait_job(short, timeout=30) == "failed" and time.monotonic() - t < 15
    assert "JobTimeoutException: Task exceeded maximum timeout value (2 seconds)" in short.latest_result().exc_string
