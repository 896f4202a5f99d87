"""The HTTP API fuzzed from its own OpenAPI document with schemathesis: no request, however
malformed, makes the gateway answer with a server error, and every answer is one the
document describes (its status code, content type, headers and body schema).

The document is the gateway's `GET /openapi.json` (issue 4). Every operation is fuzzed with
data the document allows and with data that breaks it, first with generated path
parameters (which mostly name nothing, so they reach the 404s) and then with parameters
that name real things: functions with versions, an alias, invocations in the ledger, dead
letters, queues with messages, tokens. Deleting operations run last, so that what they
delete is there for the others until then.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
#: deleting the function every other fuzzed call works on is tested elsewhere
NOT_WITH_REAL_PARAMETERS = {"DELETE /api/functions/{name}"}

# a bundle upload is bytes, as an octet stream is
schemathesis.serializer.alias(["application/zip", "application/x-zip-compressed"], "application/octet-stream")

ECHO_MANIFEST = """[function]
name = "echo"
handler = "handler.handler"
timeout = 5

[[triggers]]
type = "cron"
schedule = "rate(1 day)"
name = "daily"

[[triggers]]
type = "queue"
queue = "orders"
"""
BOOM_MANIFEST = '[function]\nname = "boom"\nhandler = "handler.handler"\ntimeout = 5\nretries = 0\n'


def function_folder(root: Path, name: str, manifest: str, code: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "handler.py").write_text(code)
    (folder / "stoker.toml").write_text(manifest)
    return folder


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[RunningPlatform]:
    """One platform for the whole fuzzing run, with functions to call."""
    root = tmp_path_factory.mktemp("fuzzed")
    folders = [
        function_folder(root, "echo", ECHO_MANIFEST,
                        "def handler(event, context):\n    print('got', event)\n    return event\n"),
        function_folder(root, "boom", BOOM_MANIFEST, "def handler(event, context):\n    raise ValueError('no')\n"),
    ]
    running = start_platform(root / "home", redis_server.url, "t" + uuid.uuid4().hex[:10], deploy=folders)
    try:
        yield running
    finally:
        running.stop()


def real_things(live: RunningPlatform) -> list[dict[str, str]]:
    """Make one of each thing the API manages; path parameters that name them, per function."""
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.token}"}, timeout=30) as http:
        echo_id = http.post("/api/functions/echo/invoke", json={"n": 1}).headers["x-stoker-invocation-id"]
        assert http.put("/api/functions/echo/aliases/live", json={"version": 1}).status_code == 201
        assert http.post("/api/functions/boom/invoke?async=true", json={"n": 2}).status_code == 202
        later = http.post("/api/queues/orders/messages?delay=900", json={"later": True},
                          headers={"X-Stoker-Message-Attributes": '{"kind": "test", "n": 3}'})
        assert later.status_code == 202
        assert http.post("/api/queues/parked/messages/batch", json=[{"a": 1}, "b", 3]).status_code == 202
        for name in ("echo", "boom"):  # tokens named as the functions, so that revoking one finds it
            assert http.post("/api/tokens", json={"name": name, "rights": ["read"]}).status_code == 201
        wait_until(lambda: http.get("/api/functions/boom/dlq").json(), timeout=60, message="a dead letter")
        boom_id = http.get("/api/functions/boom/dlq").json()[0]["id"]
        for invocation_id in (echo_id, boom_id):  # the ledger is written in batches
            wait_until(lambda i=invocation_id: http.get(f"/api/invocations/{i}").status_code == 200, timeout=60,
                       message=f"invocation {invocation_id} in the ledger")
        assert http.get("/api/cron").json()[0]["schedule"] == "echo/daily"
        hashes = {name: http.get(f"/api/functions/{name}").json()["code_hash"] for name in ("echo", "boom")}
    return [{"name": "echo", "id": echo_id, "alias": "live", "version": "1", "hash": hashes["echo"],
             "queue": "orders"},
            {"name": "boom", "id": boom_id, "alias": "live", "version": "1", "hash": hashes["boom"],
             "queue": "parked"}]


def openapi_document(live: RunningPlatform) -> dict[str, Any]:
    r = httpx.get(f"{live.url}/openapi.json", headers={"Authorization": f"Bearer {live.token}"}, timeout=30)
    assert r.status_code == 200, (
        f"GET /openapi.json answered {r.status_code}: the gateway must serve its OpenAPI document "
        "(issue 4) for the API to be fuzzed")
    document: dict[str, Any] = r.json()
    return document


def test_the_gateway_serves_its_openapi_document(live: RunningPlatform) -> None:
    document = openapi_document(live)
    assert str(document.get("openapi", "")).startswith("3.")
    assert "/api/functions" in document.get("paths", {})


def test_no_request_makes_the_gateway_fail_or_answer_undocumented(live: RunningPlatform) -> None:
    known = real_things(live)
    schema = schemathesis.openapi.from_dict(openapi_document(live))
    schema.config.update(base_url=live.url)
    auth = {"Authorization": f"Bearer {live.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")  # stable: the rest keep their order
    failures: list[str] = []
    runs = 0
    for operation in operations:
        names = [p.name for p in operation.path_parameters]
        fixed: list[dict[str, str] | None] = [None]
        if names and operation.label not in NOT_WITH_REAL_PARAMETERS:
            fixed += [{name: things[name] for name in names} for things in known]
        for path_parameters in fixed:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if mode is GenerationMode.NEGATIVE and not names and not operation.query and not operation.body:
                    continue  # nothing to break
                runs += 1

                # hypothesis drives each operation (schemathesis' pytest plugin does not run on pytest 9)
                @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
                def fuzz(case: Any) -> None:
                    query = case.query or {}
                    if str(query.get("follow", "")).lower() in ("1", "true", "yes"):
                        return  # a log follow streams until the client leaves: nothing to answer within a timeout
                    response = case.call(base_url=live.url, headers=auth, timeout=30)
                    case.validate_response(response, checks=CHECKS)

                try:
                    fuzz()
                # every operation is fuzzed; all failures are reported together (several are a group)
                except (Exception, BaseExceptionGroup) as e:
                    failures.append(f"{operation.label} ({mode.value}, path {path_parameters}): {e}")
    assert runs, "the OpenAPI document describes no operation"
    assert not failures, f"{len(failures)} of {runs} fuzzed runs failed:\n" + "\n\n".join(failures)
