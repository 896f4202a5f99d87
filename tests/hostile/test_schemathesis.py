"""The HTTP API fuzzed from its own OpenAPI document with schemathesis: no request, however
malformed, makes the gateway answer with a server error.

The document is the gateway's `GET /openapi.json` (issue 4). Until the gateway serves it,
these tests fail, and say so: a missing document is a missing feature, not a skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import RedisServer, RunningPlatform, start_platform

EXAMPLES_PER_OPERATION = 25

# a bundle upload is bytes, as an octet stream is
schemathesis.serializer.alias(["application/zip", "application/x-zip-compressed"], "application/octet-stream")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[RunningPlatform]:
    """One platform for the whole fuzzing run, with a function to call."""
    home = tmp_path_factory.mktemp("fuzzed") / "home"
    folder = home.parent / "echo"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (folder / "stoker.toml").write_text('[function]\nname = "echo"\nhandler = "handler.handler"\ntimeout = 5\n')
    running = start_platform(home, redis_server.url, "t" + uuid.uuid4().hex[:10], deploy=[folder])
    try:
        yield running
    finally:
        running.stop()


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


def test_no_request_makes_the_gateway_fail(live: RunningPlatform) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document(live))
    schema.config.update(base_url=live.url)
    auth = {"Authorization": f"Bearer {live.token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        # hypothesis drives each operation (schemathesis' pytest plugin does not run on pytest 9)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            query = case.query or {}
            if str(query.get("follow", "")).lower() in ("1", "true", "yes"):
                return  # a log follow streams until the client leaves: nothing to answer within a timeout
            response = case.call(base_url=live.url, headers=auth, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            fuzz()
        except Exception as e:  # every operation is fuzzed; all failures are reported together
            failures.append(f"{operation.label}: {e}")
    assert operations, "the OpenAPI document describes no operation"
    assert not failures, "server errors:\n" + "\n\n".join(failures)
