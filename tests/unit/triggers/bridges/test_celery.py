"""Reading Celery protocol-2 messages without ever unpickling, and writing Celery's result format."""

from __future__ import annotations

import base64
import pickle

import orjson
import pytest

from stoker.triggers.bridges.celery import (
    Refused,
    exception_info,
    failure_from_error,
    parse_task,
    queue_lists,
)


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
