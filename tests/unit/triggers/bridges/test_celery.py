"""Reading Celery protocol-2 messages without ever unpickling, and writing Celery's result format."""

from __future__ import annotations

import base64
import pickle

import orjson
import pytest

from stoker.triggers.bridges.canvas import Links, Parent, Unsupported, check, task_message
from stoker.triggers.bridges.celery import (
    Refused,
    exception_info,
    failure_from_error,
    parse_task,
    queue_lists,
)
from stoker.triggers.bridges.revokes import control_message, revoked_ids


def envelope(body: bytes, content_type: str = "application/json", **headers: object) -> bytes:
    """A message as kombu's Redis transport stores it."""
    return orjson.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": content_type,
        "headers": {"lang": "py", "task": "tasks.add", "id": "t-1", "eta": None, "expires": None, **headers},
        "properties": {"correlation_id": "t-1", "body_encoding": "base64", "delivery_tag": "x", "priority": 0},
    })


def test_parses_a_json_task() -> None:
    body = orjson.dumps([[2, 3], {"extra": 10}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    task = parse_task(envelope(body, eta="2030-01-01T00:00:00+00:00", group="g-1"))
    assert (task.id, task.name, task.args, task.kwargs) == ("t-1", "tasks.add", [2, 3], {"extra": 10})
    assert task.eta is not None and task.eta.year == 2030
    assert not task.linked and not task.ignore_result


def test_linked_tasks_are_noticed() -> None:
    body = orjson.dumps([[], {}, {"callbacks": [{"task": "tasks.next"}], "errbacks": None, "chain": None}])
    assert parse_task(envelope(body)).linked


def test_pickle_is_refused_unread() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    body = pickle.dumps(((Boom(),), {}, {}))
    with pytest.raises(Refused) as e:
        parse_task(envelope(body, content_type="application/x-python-serialize"))
    assert e.value.error_type == "ContentDisallowed"
    assert "application/x-python-serialize" in e.value.reason and e.value.headers["id"] == "t-1"


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not a kombu JSON envelope"),
    (orjson.dumps({"body": "e30="}), "no headers"),
    (orjson.dumps({"headers": {"lang": "py"}, "body": ""}), "no task and id"),
    (envelope(b"{not json"), r"not \[args, kwargs, embed\]"),
    (envelope(orjson.dumps([{"a": 1}, {}, {}])), "args is not a list"),
])
def test_malformed_messages_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        parse_task(raw)


def test_priority_lists_follow_kombu() -> None:
    assert queue_lists("celery") == ["celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]


def test_function_errors_become_celery_exceptions() -> None:
    info, traceback = failure_from_error(orjson.dumps({
        "errorType": "ValueError", "errorMessage": "kaboom",
        "stackTrace": ['  File "handler.py", line 3, in handler\n    raise ValueError("kaboom")\n']}))
    assert info == {"exc_type": "ValueError", "exc_message": ["kaboom"], "exc_module": "builtins"}
    assert traceback.startswith("Traceback (most recent call last):\n") and traceback.endswith("ValueError: kaboom\n")
    assert exception_info("Sandbox.Timedout", "Task timed out")["exc_module"] is None
    assert failure_from_error(b"garbage")[0]["exc_type"] == "Exception"


def test_a_sent_signature_is_a_protocol_2_message_the_bridge_reads_back() -> None:
    sig = {"task": "tasks.add", "args": [10], "kwargs": {"extra": 1}, "immutable": False, "subtask_type": None,
           "options": {"task_id": "next-1", "queue": "other", "priority": 5, "countdown": 30,
                       "link": {"task": "tasks.cb", "args": [], "kwargs": {}, "options": {}}}}
    rest = [{"task": "tasks.last", "args": [], "kwargs": {}, "options": {"task_id": "last-1"}}]
    name, task_id, raw = task_message(sig, [3], Parent("p-1", "root-1"), "celery", "here", chain=rest)
    assert (name, task_id) == ("other\x06\x163", "next-1")
    task = parse_task(raw)
    assert (task.id, task.name, task.args, task.kwargs) == ("next-1", "tasks.add", [3, 10], {"extra": 1})
    assert task.headers["parent_id"] == "p-1" and task.headers["root_id"] == "root-1"
    assert task.eta is not None and [s["task"] for s in task.links.callbacks] == ["tasks.cb"]
    assert task.links.chain == rest and task.links.waited_on() == ["last-1"]
    immutable = {**sig, "immutable": True}
    assert parse_task(task_message(immutable, [3], Parent("p", "p"), "celery", "here")[2]).args == [10]


def test_unsupported_canvas_is_named() -> None:
    chunks = {"task": "celery.chunks", "subtask_type": "chunks", "options": {"task_id": "c-1"}}
    links = Links([], [], [chunks], None, None, None)
    assert "chunks as a step of a chain" in (links.unsupported(True) or "")
    body = {"task": "tasks.sum", "subtask_type": None, "options": {"task_id": "b-1"}}
    assert "only with a result backend" in (Links([], [], [], body, "g-1", 0).unsupported(False) or "")
    assert Links([], [], [], body, "g-1", 0).unsupported(True) is None
    with pytest.raises(Unsupported, match="chord as a callback"):
        check({"task": "x", "subtask_type": None, "options": {"link": [{"subtask_type": "chord"}]}}, "a task")


def test_revokes_are_read_from_json_control_messages_only() -> None:
    body = orjson.dumps({"method": "revoke", "arguments": {"task_id": ["a", "b"], "terminate": True}})
    message = orjson.dumps({"body": base64.b64encode(body).decode(), "content-type": "application/json",
                            "properties": {"body_encoding": "base64"}})
    parsed = control_message(message)
    assert parsed is not None and revoked_ids(parsed) == (["a", "b"], True)
    assert revoked_ids({"method": "ping", "arguments": {}}) == ([], False)
    pickled = orjson.dumps({"body": base64.b64encode(pickle.dumps({"method": "revoke"})).decode(),
                            "content-type": "application/x-python-serialize",
                            "properties": {"body_encoding": "base64"}})
    assert control_message(pickled) is None and control_message(b"garbage") is None
