"""API Gateway proxy events from requests, and handler results back to responses."""

from __future__ import annotations

import base64

import orjson
import pytest
from starlette.requests import Request

from stoker.platform.gateway.apigateway import BadProxyResponse, is_text, proxy_event, proxy_response


def request(method: str = "POST", path: str = "/items/7", query: bytes = b"a=1&a=2&b=x",
            headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers or [(b"host", b"example.org"), (b"x-multi", b"1"), (b"x-multi", b"2"),
                                    (b"authorization", b"Bearer stk_secret")],
             "client": ("10.0.0.9", 5555), "server": ("example.org", 80), "scheme": "http", "http_version": "1.1"}
    return Request(scope)


def test_event_shape() -> None:
    event = proxy_event(request(), b'{"x": 1}', "/items/{id}", {"id": "7"}, "req-1")
    assert event["resource"] == "/items/{id}" and event["path"] == "/items/7" and event["httpMethod"] == "POST"
    assert event["headers"]["x-multi"] == "2" and event["multiValueHeaders"]["x-multi"] == ["1", "2"]
    assert event["queryStringParameters"] == {"a": "2", "b": "x"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x"]}
    assert event["pathParameters"] == {"id": "7"}
    ctx = event["requestContext"]
    assert ctx["requestId"] == "req-1" and ctx["httpMethod"] == "POST" and ctx["path"] == "/items/7"
    assert ctx["identity"]["sourceIp"] == "10.0.0.9" and ctx["stage"]
    assert event["body"] == '{"x": 1}' and event["isBase64Encoded"] is False


def test_no_query_no_params_no_body_are_null() -> None:
    event = proxy_event(request("GET", query=b""), b"", "/items/{id}", None, "r")
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None and event["body"] is None and event["isBase64Encoded"] is False


def test_the_callers_token_can_be_hidden() -> None:
    assert "authorization" not in proxy_event(request(), b"", "/", None, "r", hide_authorization=True)["headers"]
    assert "authorization" in proxy_event(request(), b"", "/", None, "r")["headers"]


@pytest.mark.parametrize(("content_type", "body", "encoded"), [
    (b"application/octet-stream", b"plain", True),
    (b"image/png", b"\x89PNG", True),
    (b"text/plain; charset=utf-8", "h\u00e9".encode(), False),
    (b"application/json", b"\xff\xfe", True),  # not UTF-8 whatever it claims
    (b"application/vnd.custom+json", b"{}", False),
])
def test_binary_bodies_are_base64(content_type: bytes, body: bytes, encoded: bool) -> None:
    event = proxy_event(request(headers=[(b"content-type", content_type)]), body, "/", None, "r")
    assert event["isBase64Encoded"] is encoded
    assert (base64.b64decode(event["body"]) if encoded else event["body"].encode()) == body


def test_is_text() -> None:
    assert is_text(None) and is_text("text/csv") and is_text("application/problem+json")
    assert not is_text("application/pdf") and not is_text("multipart/form-data; boundary=x")


def test_a_proxy_response_is_mapped() -> None:
    result = orjson.dumps({"statusCode": 201, "headers": {"X-One": "1", "Content-Type": "text/plain"},
                           "multiValueHeaders": {"X-Many": ["a", "b"]}, "cookies": ["c=1"], "body": "hi"})
    r = proxy_response(result)
    assert r.status == 201 and r.body == b"hi"
    assert (b"x-one", b"1") in r.headers and (b"content-type", b"text/plain") in r.headers
    assert [v for k, v in r.headers if k == b"x-many"] == [b"a", b"b"]
    assert (b"set-cookie", b"c=1") in r.headers


def test_a_base64_body_is_decoded() -> None:
    data = bytes(range(256))
    r = proxy_response(orjson.dumps({"statusCode": 200, "body": base64.b64encode(data).decode(),
                                     "isBase64Encoded": True}))
    assert r.body == data and (b"content-type", b"application/json") in r.headers


@pytest.mark.parametrize("result", [{"message": "hi"}, [1, 2], "text", 3, None])
def test_other_results_are_json_with_200(result: object) -> None:
    r = proxy_response(orjson.dumps(result))
    assert r.status == 200 and orjson.loads(r.body) == result
    assert r.headers == [(b"content-type", b"application/json")]


def test_framing_headers_of_the_function_are_dropped() -> None:
    r = proxy_response(orjson.dumps({"statusCode": 200, "headers": {"Content-Length": "999",
                                                                   "Transfer-Encoding": "chunked"}, "body": "x"}))
    assert all(k not in (b"content-length", b"transfer-encoding") for k, _ in r.headers)


def test_a_non_string_body_is_sent_as_json() -> None:
    assert proxy_response(orjson.dumps({"statusCode": 200, "body": {"a": 1}})).body == b'{"a":1}'


@pytest.mark.parametrize(("result", "words"), [
    ({"statusCode": 42}, "not an HTTP status"),
    ({"statusCode": "abc"}, "not an HTTP status"),
    ({"statusCode": 200, "headers": {"X-Evil": "a\r\nSet-Cookie: x=1"}}, "line break"),
    ({"statusCode": 200, "headers": {"bad name": "x"}}, "header name"),
    ({"statusCode": 200, "headers": ["x"]}, "must be objects"),
    ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "not valid base64"),
])
def test_malformed_proxy_responses_are_refused(result: dict[str, object], words: str) -> None:
    with pytest.raises(BadProxyResponse, match=words):
        proxy_response(orjson.dumps(result))
