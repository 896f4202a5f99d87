"""Manifests made from Lambda API requests, and the Lambda API's names and shapes."""

from __future__ import annotations

import io
import zipfile

import pytest

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.gateway import lambda_manifest as LM
from stoker.platform.gateway.lambda_shapes import function_ref
from stoker.platform.manifest import FunctionSpec, parse_manifest
from stoker.platform.registry.bundles import inspect_bundle


def a_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_a_request_becomes_a_manifest_stoker_accepts() -> None:
    settings = LM.request_settings({"Runtime": "python3.12", "Handler": "app.main", "MemorySize": 256,
                                    "Timeout": 30, "Description": 'say "hi"\n',
                                    "Environment": {"Variables": {"MODE": "test", "N": "1"}}})
    spec = parse_manifest(LM.manifest_text({"name": "shop", **settings}, []))
    assert (spec.name, spec.runtime, spec.handler, spec.memory, spec.timeout) == ("shop", "python", "app.main",
                                                                                  256, 30.0)
    assert spec.env == {"MODE": "test", "N": "1"} and spec.description == 'say "hi"\n'


def test_a_deployed_spec_round_trips_with_its_triggers() -> None:
    spec = FunctionSpec(name="shop", memory=512, env={"A": "b"}, concurrency=4,
                        triggers=({"type": "http", "route": "GET /x/{id}", "public": True},))
    text = LM.manifest_text(LM.spec_settings(spec), list(spec.triggers))
    assert parse_manifest(text) == spec


def test_the_manifest_is_added_to_the_zip() -> None:
    data = LM.add_manifest(a_zip({"app.py": "x = 1\n"}), LM.manifest_text({"name": "shop", "handler": "app.main"}, []))
    info = inspect_bundle(data)
    assert sorted(info.files) == ["app.py", "stoker.toml"]
    assert parse_manifest(info.manifest_text).handler == "app.main"


def test_replacing_the_manifest_keeps_everything_else() -> None:
    data = a_zip({"app.py": "x = 1\n", "stoker.toml": '[function]\nname = "shop"\n'})
    out = LM.replace_manifest(data, '[function]\nname = "shop"\nmemory = 256\n')
    with zipfile.ZipFile(io.BytesIO(out)) as z:
        assert z.read("app.py") == b"x = 1\n" and b"memory = 256" in z.read("stoker.toml")
        assert [i.filename for i in z.infolist()].count("stoker.toml") == 1


def test_a_zip_with_its_own_manifest_must_agree_with_the_request() -> None:
    own = '[function]\nname = "shop"\nhandler = "app.main"\nmemory = 256\n'
    LM.check_agrees(own, "shop", {"handler": "app.main", "memory": 256, "runtime": "python"})
    with pytest.raises(InvalidInput, match="memory"):
        LM.check_agrees(own, "shop", {"memory": 512})
    with pytest.raises(InvalidInput, match="names function 'shop', not 'other'"):
        LM.check_agrees(own, "other", {})
    assert LM.zip_manifest(a_zip({"stoker.toml": own})) == own
    assert LM.zip_manifest(a_zip({"app.py": ""})) is None


@pytest.mark.parametrize(("body", "error", "words"), [
    ({"Runtime": "java21"}, ConfigError, "not supported"),
    ({"Environment": {"Vars": {}}}, InvalidInput, "Variables"),
])
def test_bad_requests(body: dict[str, object], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        LM.request_settings(body)


def test_not_a_zip() -> None:
    with pytest.raises(InvalidInput, match="not a zip"):
        LM.zip_manifest(b"hello")


@pytest.mark.parametrize(("ref", "qualifier", "expected"), [
    ("shop", None, ("shop", None)),
    ("shop:prod", None, ("shop", "prod")),
    ("shop", "3", ("shop", "3")),
    ("arn:aws:lambda:us-east-1:123456789012:function:shop", None, ("shop", None)),
    ("arn:aws:lambda:us-east-1:123456789012:function:shop:prod", None, ("shop", "prod")),
    ("123456789012:function:shop:7", None, ("shop", "7")),
])
def test_function_names_as_lambda_takes_them(ref: str, qualifier: str | None,
                                             expected: tuple[str, str | None]) -> None:
    assert function_ref(ref, qualifier) == expected


def test_two_different_qualifiers_are_refused() -> None:
    with pytest.raises(InvalidInput, match="give one"):
        function_ref("shop:prod", "3")
