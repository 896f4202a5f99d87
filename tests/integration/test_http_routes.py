"""Function routes over real HTTP: API Gateway proxy events, binary bodies, tokens, every error code."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from stoker import Client
from stoker.errors import Forbidden
from tests.conftest import RunningPlatform, wait_until

ECHO = '''import base64, json
def handler(event, context):
    q = event.get("queryStringParameters") or {}
    if q.get("mode") == "raw":
        return {"plain": True}
    if q.get("mode") == "boom":
        raise ValueError("kaboom")
    if q.get("mode") == "bad":
        return {"statusCode": "nope"}
    if q.get("mode") == "bin":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "multiValueHeaders": {"x-tag": ["a", "b"]}, "body": json.dumps(event),
            "cookies": ["session=1"]}
'''

ROUTES = '''
[[triggers]]
type = "http"
route = "ANY /shop/{item}"
public = true

[[triggers]]
type = "http"
route = "POST /private/{proxy+}"

[[triggers]]
type = "http"
route = "GET /stable"
public = true
qualifier = "prod"
'''


def event_of(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 200, response.text
    return json.loads(response.content)


def test_routes_events_and_responses(platform: RunningPlatform, make_function) -> None:
    # a route bound to an alias that does not exist is refused at deploy, and nothing is deployed
    refused = platform.cli("deploy", str(make_function("echo", ECHO, ROUTES)))
    assert refused.returncode == 2 and "trigger #3 (http) has qualifier = 'prod'" in refused.stderr
    assert "stoker alias set echo prod VERSION" in refused.stderr
    assert json.loads(platform.cli("functions", "--format", "json", check=True).stdout) == []
    # so: deploy, create the alias, then deploy the binding
    without_binding = ROUTES[: ROUTES.index('[[triggers]]\ntype = "http"\nroute = "GET /stable"')]
    platform.cli("deploy", str(make_function("echo", ECHO, without_binding)), check=True)
    platform.cli("alias", "set", "echo", "prod", "1", check=True)
    platform.cli("deploy", str(make_function("echo", ECHO, ROUTES)), check=True)
    auth = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, timeout=60) as http:
        # a public manifest route: no token, path parameters, query strings, the proxy event
        r = http.post("/shop/apple?size=big&size=small", content=b'{"n": 1}',
                      headers={"content-type": "application/json", "authorization": "Basic theirs"})
        event = event_of(r)
        assert event["resource"] == "/shop/{item}" and event["path"] == "/shop/apple"
        assert event["httpMethod"] == "POST" and event["pathParameters"] == {"item": "apple"}
        assert event["queryStringParameters"] == {"size": "small"}
        assert event["multiValueQueryStringParameters"] == {"size": ["big", "small"]}
        assert event["body"] == '{"n": 1}' and event["isBase64Encoded"] is False
        assert event["headers"]["authorization"] == "Basic theirs"  # public: the function's to check
        assert event["requestContext"]["requestId"] == r.headers["x-amzn-requestid"]
        assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
        assert r.headers.get_list("x-tag") == ["a", "b"] and r.cookies["session"] == "1"

        # binary in, binary out
        blob = bytes(range(256)) * 4
        event = event_of(http.put("/shop/blob", content=blob, headers={"content-type": "application/octet-stream"}))
        assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == blob
        r = http.get("/shop/x?mode=bin")
        assert r.status_code == 200 and r.content == bytes(range(256))
        assert r.headers["content-type"] == "application/octet-stream"

        # other results, the function's errors, malformed responses
        r = http.get("/shop/x?mode=raw")
        assert r.status_code == 200 and r.json() == {"plain": True}
        r = http.get("/shop/x?mode=boom")
        assert r.status_code == 502 and r.json()["errorType"] == "ValueError"
        r = http.get("/shop/x?mode=bad")
        assert r.status_code == 502 and "statusCode" in r.json()["error"]

        # a private route: 401 without a token, the token never reaches the function
        assert http.post("/private/a/b", content=b"{}").status_code == 401
        assert http.post("/private/a/b", content=b"{}", headers={"Authorization": "Bearer stk_nope"}).status_code == 401
        event = event_of(http.post("/private/a/b", content=b"{}", headers=auth))
        assert event["pathParameters"] == {"proxy": "a/b"} and "authorization" not in event["headers"]

        # /fn/{name} and /fn/{name}/{proxy+}: token required unless public
        assert http.get("/fn/echo").status_code == 401
        event = event_of(http.delete("/fn/echo/x/y?k=v", headers=auth))
        assert event["resource"] == "/fn/{name}/{proxy+}" and event["pathParameters"]["proxy"] == "x/y"
        assert event["httpMethod"] == "DELETE"

        # unknown routes, wrong methods, unknown functions, oversize bodies
        r = http.get("/nowhere")
        assert r.status_code == 404 and "no route" in r.json()["error"]
        r = http.get("/private/a")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = http.delete("/api/functions", headers=auth)
        assert r.status_code == 405 and "GET" in r.headers["allow"]
        r = http.post("/fn/nope", content=b"{}", headers=auth)
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = http.post("/fn/echo", content=b"a" * (7 * 1024 * 1024), headers=auth)
        assert r.status_code == 413 and "bytes" in r.json()["error"] and "at most" in r.json()["error"]

        # the route bound to the alias runs the alias's version
        r = http.get("/stable")
        assert event_of(r)["resource"] == "/stable"

    # what was refused never reached the bus: only the calls that ran are in the ledger
    rows = wait_until(lambda: (rows := json.loads(platform.cli("ledger", "--function", "echo", "--format", "json",
                                                               check=True).stdout)) and len(rows) >= 9 and rows,
                      message="nine ledger rows")
    assert len(rows) == 9 and {r["trigger"] for r in rows} == {"http"}
    assert {r["qualifier"] for r in rows} == {"$LATEST", "prod"}


def test_a_new_route_is_served_as_soon_as_it_is_deployed(platform: RunningPlatform, make_function) -> None:
    with httpx.Client(base_url=platform.url, timeout=60) as http:
        assert http.get("/hello/world").status_code == 404
        source = 'def handler(event, context):\n    return {"statusCode": 200, "body": "v1"}\n'
        folder = make_function("hi", source, '[[triggers]]\ntype = "http"\nroute = "GET /hello/{who}"\npublic = true')
        platform.cli("deploy", str(folder), check=True)
        r = http.get("/hello/world")
        assert r.status_code == 200 and r.text == "v1"
        folder = make_function("hi", source.replace("v1", "v2"),
                               '[[triggers]]\ntype = "http"\nroute = "GET /bye/{who}"\npublic = true')
        platform.cli("deploy", str(folder), check=True)
        assert http.get("/bye/world").text == "v2"
        assert http.get("/hello/world").status_code == 404
        platform.cli("rm", "hi", check=True)
        assert http.get("/bye/world").status_code == 404


def test_tokens_rights_and_revocation(platform: RunningPlatform, make_function) -> None:
    folder = make_function("hello", 'def handler(event, context):\n    return {"ok": True}\n')
    platform.cli("deploy", str(folder), check=True)
    reader = platform.cli("token", "create", "dashboard", "--right", "read", check=True).stdout.strip()
    deployer = platform.cli("token", "create", "ci", "--right", "deploy,read", "--format", "json", check=True)
    deployer_token = json.loads(deployer.stdout)["token"]
    listed = json.loads(platform.cli("token", "list", "--format", "json", check=True).stdout)
    assert {t["name"]: t["rights"] for t in listed} == {"dashboard": ["read"], "ci": ["deploy", "read"]}
    assert reader not in platform.cli("token", "list").stdout

    with httpx.Client(base_url=platform.url, timeout=60) as http:
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert http.get("/api/functions", headers=as_reader).status_code == 200
        r = http.post("/api/functions/hello/invoke", content=b"{}", headers=as_reader)
        assert r.status_code == 403 and "invoke" in r.json()["error"]
        assert http.post("/fn/hello", headers=as_reader).status_code == 403
        assert http.get("/api/tokens", headers=as_reader).status_code == 403
        assert http.get("/api/functions", headers={"Authorization": "Bearer stk_made_up"}).status_code == 401
        assert http.get("/api/functions").status_code == 401

        # a deploy made with a named token records its name
        changed = make_function("hello", 'def handler(event, context):\n    return {"ok": 2}\n')
        with Client(platform.url, deployer_token) as as_ci:
            assert as_ci.deploy(changed)["version"] == "2"
            with pytest.raises(Forbidden):
                as_ci.invoke("hello")
        versions = json.loads(platform.cli("versions", "hello", "--format", "json", check=True).stdout)
        assert [v["deployed_by"] for v in versions] == ["admin", "ci"]

        # revoked: refused on the very next request
        out = platform.cli("token", "revoke", "dashboard", check=True)
        assert "revoked" in out.stdout
        assert http.get("/api/functions", headers=as_reader).status_code == 401
        assert platform.cli("token", "revoke", "dashboard").returncode == 2
