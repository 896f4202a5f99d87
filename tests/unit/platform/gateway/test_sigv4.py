"""SigV4: requests signed by botocore verify; tampered, mis-keyed or stale ones do not."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.requests import Request

from stoker.errors import Unauthorized
from stoker.platform.gateway.sigv4 import parse_authorization, verify_signature

TOKEN = "stk_abc-DEF_123"


def signed(secret: str, body: bytes = b'{"a": 1}', url: str = "http://127.0.0.1:8700/2015-03-31/functions/"
           "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ashop/invocations?Qualifier=prod") -> AWSRequest:
    req = AWSRequest(method="POST", url=url, data=body, headers={"X-Amz-Invocation-Type": "RequestResponse"})
    SigV4Auth(Credentials(TOKEN, secret), "lambda", "eu-west-1").add_auth(req)
    return req


def as_starlette(req: AWSRequest, body: bytes | None = None) -> tuple[Request, bytes]:
    parts = urlsplit(req.url)
    headers = [(k.lower().encode(), str(v).encode()) for k, v in req.headers.items()]
    headers.append((b"host", parts.netloc.encode()))
    scope = {"type": "http", "method": req.method, "path": parts.path, "raw_path": parts.path.encode(),
             "query_string": parts.query.encode(), "headers": headers}
    return Request(scope), body if body is not None else req.body


def test_the_access_key_is_the_token() -> None:
    sig = parse_authorization(signed("s").headers["Authorization"])
    assert sig is not None
    assert (sig.access_key, sig.region, sig.service) == (TOKEN, "eu-west-1", "lambda")
    assert parse_authorization("Bearer x") is None


def test_a_botocore_signature_verifies() -> None:
    req = signed("the-secret")
    request, body = as_starlette(req)
    sig = parse_authorization(req.headers["Authorization"])
    assert sig is not None
    verify_signature(request, sig, body, "the-secret")


@pytest.mark.parametrize(("secret", "body", "words"), [
    ("other-secret", None, "does not match"),
    ("the-secret", b'{"a": 2}', "does not match"),
])
def test_a_wrong_secret_or_a_changed_body_is_refused(secret: str, body: bytes | None, words: str) -> None:
    req = signed("the-secret")
    request, data = as_starlette(req, body)
    sig = parse_authorization(req.headers["Authorization"])
    assert sig is not None
    with pytest.raises(Unauthorized, match=words):
        verify_signature(request, sig, data, secret)


def test_an_old_signature_is_refused() -> None:
    req = signed("the-secret")
    request, body = as_starlette(req)
    sig = parse_authorization(req.headers["Authorization"])
    assert sig is not None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    with pytest.raises(Unauthorized, match="15 minutes"):
        verify_signature(request, sig, body, "the-secret", now=later)


@pytest.mark.parametrize("header", [
    "AWS4-HMAC-SHA256 Credential=onlykey, SignedHeaders=host, Signature=ab",
    "AWS4-HMAC-SHA256 Credential=k/20240101/us-east-1/lambda/aws4_request",
])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(Unauthorized):
        parse_authorization(header)
