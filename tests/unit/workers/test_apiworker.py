"""How a runtime's posted errors become {errorType, errorMessage, stackTrace}."""

from __future__ import annotations

import orjson

from stoker.workers.apiworker import error_object, trace_id


def test_a_well_formed_error_is_kept() -> None:
    body = orjson.dumps({"errorType": "ValueError", "errorMessage": "bad", "stackTrace": ["  File x"],
                         "requestId": ""})
    assert error_object("ValueError", body) == {"errorType": "ValueError", "errorMessage": "bad",
                                                "stackTrace": ["  File x"], "requestId": ""}


def test_missing_fields_come_from_the_header_and_trace_is_renamed() -> None:
    error = error_object("Handled", orjson.dumps({"errorMessage": "oops", "trace": ["at f"]}))
    assert error == {"errorType": "Handled", "errorMessage": "oops", "stackTrace": ["at f"]}


def test_a_body_that_is_not_an_error_object_becomes_its_message() -> None:
    assert error_object(None, b"segfault in libfoo") == {
        "errorType": "Runtime.Unknown", "errorMessage": "segfault in libfoo", "stackTrace": []}
    assert error_object("Runtime.Crash", b"") == {"errorType": "Runtime.Crash", "errorMessage": "", "stackTrace": []}
    assert error_object(None, b"[1, 2]")["errorMessage"] == "[1, 2]"


def test_trace_ids_look_like_xray_headers_and_differ() -> None:
    a, b = trace_id(), trace_id()
    assert a.startswith("Root=1-") and ";Parent=" in a and a.endswith(";Sampled=0") and a != b
