"""boto3's Lambda client against a running gateway: invoke, manage functions and aliases, errors."""

from __future__ import annotations

import base64
import io
import json
import threading
import zipfile
from pathlib import Path

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from tests.conftest import RedisServer, RunningPlatform, start_platform, wait_until

NO_RETRIES = Config(retries={"total_max_attempts": 1})


def lambda_client(platform: RunningPlatform, key: str | None = None, secret: str = "unused"):  # type: ignore[no-untyped-def]
    return boto3.client("lambda", endpoint_url=platform.url, region_name="eu-west-1", config=NO_RETRIES,
                        aws_access_key_id=key or platform.token, aws_secret_access_key=secret)


def code(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", source)
    return buf.getvalue()


def error_of(call, *args, **kwargs) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


VERSION_SOURCE = """def handler(event, context):
    print('running', context.function_version)
    return {'version': context.function_version, 'event': event}
"""


def test_functions_versions_and_aliases(platform: RunningPlatform) -> None:
    lam = lambda_client(platform)
    created = lam.create_function(FunctionName="shop", Runtime="python3.12", Handler="app.handler", Role="r",
                                  Code={"ZipFile": code(VERSION_SOURCE)}, MemorySize=256, Timeout=10,
                                  Environment={"Variables": {"MODE": "test"}}, Description="the shop")
    assert created["FunctionArn"] == "arn:aws:lambda:eu-west-1:000000000000:function:shop"
    assert (created["Version"], created["MemorySize"], created["Timeout"]) == ("$LATEST", 256, 10)
    assert created["Environment"] == {"Variables": {"MODE": "test"}} and created["Runtime"].startswith("python3")
    assert error_of(lam.create_function, FunctionName="shop", Runtime="python3.12", Handler="app.handler",
                    Role="r", Code={"ZipFile": code(VERSION_SOURCE)}) == ("ResourceConflictException", 409)
    assert error_of(lam.create_function, FunctionName="bad", Runtime="java21", Handler="a.b", Role="r",
                    Code={"ZipFile": code("")}) == ("InvalidParameterValueException", 400)

    r = lam.invoke(FunctionName="shop", Payload=json.dumps({"a": 1}), LogType="Tail")
    assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "1" and "FunctionError" not in r
    assert json.loads(r["Payload"].read()) == {"version": "1", "event": {"a": 1}}
    log = base64.b64decode(r["LogResult"]).decode()
    assert "running 1" in log and "REPORT RequestId: " + r["ResponseMetadata"]["RequestId"] in log

    updated = lam.update_function_code(FunctionName="shop", ZipFile=code(VERSION_SOURCE + "# v2\n"), Publish=True)
    assert updated["Version"] == "2" and updated["MemorySize"] == 256  # the settings carry over
    assert lam.publish_version(FunctionName="shop")["Version"] == "2"
    config = lam.update_function_configuration(FunctionName="shop", MemorySize=512)
    assert config["MemorySize"] == 512
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="shop")["Versions"]] == [
        "$LATEST", "1", "2", "3"]
    got = lam.get_function(FunctionName="shop", Qualifier="1")
    assert got["Configuration"]["MemorySize"] == 256 and "/api/bundles/" in got["Code"]["Location"]

    alias = lam.create_alias(FunctionName="shop", Name="live", FunctionVersion="1",
                             RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert alias["AliasArn"].endswith(":function:shop:live")
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    seen = {json.loads(lam.invoke(FunctionName="shop", Qualifier="live", Payload=b"{}")["Payload"].read())["version"]
            for _ in range(40)}
    assert seen == {"1", "2"}
    moved = lam.update_alias(FunctionName="shop", Name="live", FunctionVersion="3", RoutingConfig={})
    assert moved["FunctionVersion"] == "3" and "RoutingConfig" not in moved
    r = lam.invoke(FunctionName="arn:aws:lambda:eu-west-1:000000000000:function:shop:live", Payload=b"{}")
    assert r["ExecutedVersion"] == "3"
    assert [a["Name"] for a in lam.list_aliases(FunctionName="shop")["Aliases"]] == ["live"]
    assert error_of(lam.create_alias, FunctionName="shop", Name="live",
                    FunctionVersion="1") == ("ResourceConflictException", 409)
    assert error_of(lam.update_alias, FunctionName="shop", Name="nope",
                    FunctionVersion="1") == ("ResourceNotFoundException", 404)
    assert error_of(lam.delete_function, FunctionName="shop", Qualifier="3") == ("ResourceConflictException", 409)
    lam.delete_function(FunctionName="shop", Qualifier="1")
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName="shop")["Versions"]] == [
        "$LATEST", "2", "3"]

    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert names == ["shop"]
    page = lam.list_functions(FunctionVersion="ALL", MaxItems=2)
    assert len(page["Functions"]) == 2 and page["NextMarker"]
    lam.delete_alias(FunctionName="shop", Name="live")
    lam.delete_function(FunctionName="shop")
    assert error_of(lam.get_function, FunctionName="shop") == ("ResourceNotFoundException", 404)
    assert lam.list_functions()["Functions"] == []


def test_invocation_types_limits_and_errors(platform: RunningPlatform, make_function) -> None:
    platform.cli("deploy", str(make_function("echo", "def handler(event, context):\n    return event\n")),
                 check=True)
    boom = make_function("boom", "def handler(event, context):\n    raise KeyError('missing')\n")
    platform.cli("deploy", str(boom), check=True)
    lam = lambda_client(platform)
    assert lam.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"x": 1}')["StatusCode"] == 202
    assert lam.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")["StatusCode"] == 204
    r = lam.invoke(FunctionName="boom", Payload=b"{}")
    assert r["StatusCode"] == 200 and r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorType"] == "KeyError"

    assert error_of(lam.invoke, FunctionName="nope", Payload=b"{}") == ("ResourceNotFoundException", 404)
    assert error_of(lam.invoke, FunctionName="echo", Qualifier="9", Payload=b"{}") == (
        "ResourceNotFoundException", 404)
    assert error_of(lam.invoke, FunctionName="echo", Payload=b"{not json") == ("InvalidRequestContentException", 400)
    big = json.dumps({"blob": "a" * (1024 * 1024)}).encode()
    assert error_of(lam.invoke, FunctionName="echo", InvocationType="Event", Payload=big) == (
        "RequestTooLargeException", 413)
    assert error_of(lam.invoke, FunctionName="echo", Payload=b" " * (7 * 1024 * 1024)) == (
        "RequestTooLargeException", 413)
    assert error_of(lambda_client(platform, key="not-a-token").invoke, FunctionName="echo",
                    Payload=b"{}")[1] == 401
    reader = platform.cli("token", "create", "reader", "--right", "read", check=True).stdout.strip()
    assert error_of(lambda_client(platform, key=reader).invoke, FunctionName="echo", Payload=b"{}") == (
        "AccessDeniedException", 403)
    assert [f["FunctionName"] for f in lambda_client(platform, key=reader).list_functions()["Functions"]] == [
        "boom", "echo"]

    # a bearer token works on the Lambda API too
    r = httpx.post(f"{platform.url}/2015-03-31/functions/echo/invocations", content=b'{"b": 2}',
                   headers={"Authorization": f"Bearer {platform.token}"})
    assert r.status_code == 200 and r.json() == {"b": 2} and r.headers["x-amz-executed-version"] == "1"

    # the ledger names the trigger and the version that ran
    def succeeded() -> list[dict]:  # type: ignore[type-arg]
        rows = json.loads(platform.cli("ledger", "--function", "echo", "--format", "json", check=True).stdout)
        return [row for row in rows if row["status"] == "succeeded"]

    rows = wait_until(lambda: len(succeeded()) >= 2 and succeeded(), message="echo's two calls in the ledger")
    assert {row["trigger"] for row in rows} == {"lambda"} and {row["version"] for row in rows} == {"1"}


def test_throttled_calls_get_429(platform: RunningPlatform, make_function) -> None:
    slow = make_function("slow", "import time\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n"
                                 "    return 'done'\n", "concurrency = 1\ntimeout = 30")
    platform.cli("deploy", str(slow), check=True)
    lam = lambda_client(platform)
    first = threading.Thread(target=lambda: lam.invoke(FunctionName="slow", Payload=b'{"s": 6}'))
    first.start()
    try:
        wait_until(lambda: 'stoker_concurrent_executions 1.0' in httpx.get(f"{platform.url}/metrics").text,
                   message="the first call to run")
        assert error_of(lam.invoke, FunctionName="slow", Payload=b"{}") == ("TooManyRequestsException", 429)
        r = httpx.post(f"{platform.url}/fn/slow", headers={"Authorization": f"Bearer {platform.token}"})
        assert r.status_code == 429
    finally:
        first.join()
    metrics = httpx.get(f"{platform.url}/metrics").text
    assert wait_until(lambda: 'stoker_throttles_total{function="slow"} 2.0' in httpx.get(
        f"{platform.url}/metrics").text, message="two throttles counted")
    assert "stoker_invocations_total" in metrics


def test_signatures_are_checked_when_a_secret_is_configured(tmp_path: Path, redis_server: RedisServer,
                                                            prefix: str, make_function) -> None:
    platform = start_platform(tmp_path / "home", redis_server.url, prefix, {"STOKER_SIGV4_SECRET": "s3cret"})
    try:
        platform.cli("deploy", str(make_function("echo", "def handler(event, context):\n    return event\n")),
                     check=True)
        good = lambda_client(platform, secret="s3cret")
        assert json.loads(good.invoke(FunctionName="echo", Payload=b'{"a": 1}')["Payload"].read()) == {"a": 1}
        assert error_of(lambda_client(platform, secret="guess").invoke, FunctionName="echo", Payload=b"{}")[1] == 401
    finally:
        platform.stop()
