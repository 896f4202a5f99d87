"""API Gateway's REST proxy integration (payload format 1.0): request -> event, result -> response.

The event has the fields handlers written for API Gateway read: `resource`, `path`,
`httpMethod`, `headers` and `multiValueHeaders` (names in lower case: HTTP/1.1 servers
do not keep the case), `queryStringParameters` and `multiValueQueryStringParameters`,
`pathParameters`, `stageVariables`, `requestContext` and `body`. A body that is not
UTF-8 text, or whose content type is not textual, is base64 with `isBase64Encoded`.

The handler's `{statusCode, headers, multiValueHeaders, cookies, body, isBase64Encoded}`
becomes the response (a base64 body is decoded); any other result is sent as JSON with
status 200. A result that claims to be a response but is malformed gives 502, as on
API Gateway, with a message saying what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

ACCOUNT_ID = "000000000000"
STAGE = "$default"
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded", "application/graphql", "application/ld+json",
              "application/problem+json", "application/vnd.api+json", "application/x-ndjson", "+json", "+xml")
#: response headers the gateway owns: the handler's values would corrupt the framing
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade"}
HEADER_NAME_OK = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    ct = content_type.split(";", 1)[0].strip().lower()
    return any(ct.startswith(t) if t.endswith("/") else (ct == t or ct.endswith(t)) for t in TEXT_TYPES)


def _single_and_multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        single[k] = v  # the last value, as API Gateway does
        multi.setdefault(k, []).append(v)
    return single, multi


def proxy_event(request: Request, body: bytes, resource: str, path_params: dict[str, str] | None,
                request_id: str, hide_authorization: bool = False) -> dict[str, Any]:
    """The API Gateway REST (v1) proxy event for this request.

    hide_authorization: the Authorization header carried the caller's stoker token, which
    the function has no business seeing (on public routes it is the function's to check).
    """
    headers, multi_headers = _single_and_multi([(k.decode("latin-1").lower(), v.decode("latin-1"))
                                                for k, v in request.headers.raw
                                                if not (hide_authorization and k.lower() == b"authorization")])
    query, multi_query = _single_and_multi(list(request.query_params.multi_items()))
    content_type = headers.get("content-type")
    text_body: str | None = None
    encoded = False
    if body:
        if is_text(content_type):
            try:
                text_body = body.decode("utf-8")
            except UnicodeDecodeError:
                encoded = True
        else:
            encoded = True
        if encoded:
            text_body = base64.b64encode(body).decode("ascii")
    now = time.time()
    client = request.client
    method = request.method
    return {
        "resource": resource,
        "path": request.url.path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "stoker",
            "resourceId": resource,
            "resourcePath": resource,
            "httpMethod": method,
            "path": request.url.path,
            "stage": STAGE,
            "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "domainName": headers.get("host", ""),
            "identity": {
                "sourceIp": client.host if client else None,
                "userAgent": headers.get("user-agent"),
                "accessKey": None, "accountId": None, "caller": None, "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None, "user": None, "userArn": None,
            },
        },
        "body": text_body,
        "isBase64Encoded": encoded,
    }


class BadProxyResponse(ValueError):
    """The function's result looks like a proxy response but cannot be sent."""


@dataclass(frozen=True)
class ProxyResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def to_response(self) -> Response:
        response = Response(self.body, status_code=self.status)
        response.raw_headers.extend(self.headers)
        return response


def _header(name: str, value: Any) -> tuple[bytes, bytes]:
    raw_name = str(name).encode("latin-1", "replace")
    if not raw_name or not set(raw_name) <= HEADER_NAME_OK:
        raise BadProxyResponse(f"header name {name!r} is not valid")
    text = value if isinstance(value, str) else ("true" if value is True else "false" if value is False
                                                  else str(value))
    if "\r" in text or "\n" in text:
        raise BadProxyResponse(f"header {name!r} has a line break in its value")
    try:
        raw_value = text.encode("latin-1")
    except UnicodeEncodeError:
        raise BadProxyResponse(f"header {name!r} has characters outside Latin-1") from None
    return raw_name.lower(), raw_value


def proxy_response(result: bytes) -> ProxyResponse:
    """Map a handler's result (JSON bytes) to the HTTP response."""
    try:
        value = orjson.loads(result) if result else None
    except orjson.JSONDecodeError:
        return ProxyResponse(200, [(b"content-type", b"application/json")], result)
    if not isinstance(value, dict) or "statusCode" not in value:
        return ProxyResponse(200, [(b"content-type", b"application/json")], result or b"null")
    status = value["statusCode"]
    if isinstance(status, str) and status.isascii() and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise BadProxyResponse(f"statusCode {value['statusCode']!r} is not an HTTP status")
    headers: list[tuple[bytes, bytes]] = []
    single = value.get("headers") or {}
    multi = value.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise BadProxyResponse("headers and multiValueHeaders must be objects")
    for name, values in multi.items():
        for v in values if isinstance(values, list) else [values]:
            headers.append(_header(name, v))
    multi_names = {str(n).lower() for n in multi}
    for name, v in single.items():
        if str(name).lower() not in multi_names:
            headers.append(_header(name, v))
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadProxyResponse("cookies must be a list of Set-Cookie values")
    headers.extend(_header("set-cookie", c) for c in cookies)
    headers = [h for h in headers if h[0] not in HOP_BY_HOP]
    if not any(name == b"content-type" for name, _ in headers):
        headers.append((b"content-type", b"application/json"))
    body_value = value.get("body")
    if body_value is None:
        body = b""
    elif isinstance(body_value, str):
        if value.get("isBase64Encoded"):
            try:
                body = base64.b64decode(body_value, validate=True)
            except (binascii.Error, ValueError):
                raise BadProxyResponse("isBase64Encoded is true but the body is not valid base64") from None
        else:
            body = body_value.encode("utf-8")
    else:
        body = orjson.dumps(body_value)  # lenient: API Gateway wants a string, JSON is what was meant
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    return ProxyResponse(status, headers, body)
