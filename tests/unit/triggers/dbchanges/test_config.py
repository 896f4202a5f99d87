"""The dbchanges manifest table: defaults, normalisation, and errors that name what is wrong."""

from __future__ import annotations

import pytest

from stoker.errors import ConfigError
from stoker.platform.manifest import parse_manifest
from stoker.triggers.dbchanges.config import DbChangesConfig, validate


def manifest(trigger: str) -> str:
    return f'[function]\nname = "audit"\n[[triggers]]\ntype = "dbchanges"\n{trigger}\n'


def test_defaults_and_normalisation(tmp_path) -> None:
    spec = parse_manifest(manifest('url = "postgresql://app:pw@db:5432/shop"\ntable = "orders"'))
    (trigger,) = spec.triggers
    assert trigger == {"type": "dbchanges", "url": "postgresql+psycopg://app:pw@db:5432/shop", "table": "orders",
                       "events": ["INSERT", "UPDATE", "DELETE"], "batch_size": 100, "batch_window": 0.0,
                       "image_format": "plain", "bisect_on_error": False, "starting_position": "trim_horizon"}
    cfg = DbChangesConfig.from_config(trigger)
    assert cfg.target.safe_url == "postgresql+psycopg://app:***@db:5432/shop"
    assert cfg.target.arn == "arn:stoker:db:postgresql:db:5432/shop:table/orders/stream"
    assert "pw" not in cfg.target.arn


def test_options() -> None:
    out = validate({"url": "sqlite:////srv/shop.db", "table": "orders", "events": ["delete", "INSERT"],
                    "batch_size": 10000, "batch_window": 2, "image_format": "dynamodb", "bisect_on_error": True,
                    "starting_position": "latest", "qualifier": "live"}, None)
    assert out["events"] == ["INSERT", "DELETE"] and out["batch_window"] == 2.0 and out["qualifier"] == "live"


def test_relative_sqlite_path_resolves_against_the_function_folder(tmp_path) -> None:
    out = validate({"url": "sqlite:///data/shop.db", "table": "orders"}, str(tmp_path))
    assert out["url"] == f"sqlite:///{tmp_path}/data/shop.db"
    with pytest.raises(ConfigError, match="absolute path"):
        validate({"url": "sqlite:///shop.db", "table": "orders"}, None)


@pytest.mark.parametrize(("trigger", "named"), [
    ('table = "orders"', "url is missing"),
    ('url = "sqlite:////x.db"', "table is missing"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nbatch_sise = 5', "unknown key 'batch_sise'"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nbatch_size = 0', "batch_size"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nbatch_size = 10001', "batch_size"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nbatch_window = -1', "batch_window"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nevents = ["UPSERT"]', "UPSERT is not an event"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nevents = []', "events"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nimage_format = "avro"', "image_format"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nbisect_on_error = "yes"', "bisect_on_error"),
    ('url = "sqlite:////x.db"\ntable = "orders"\nstarting_position = "AT_TIMESTAMP"', "starting_position"),
    ('url = "sqlite:////x.db"\ntable = "orders; drop table x"', "not a table name"),
    ('url = "sqlite:////x.db"\ntable = "main.orders"', "no schema"),
    ('url = "sqlite://"\ntable = "orders"', "in-memory"),
    ('url = "mysql://u:topsecret@h/db"\ntable = "orders"', "not supported"),
    ('url = "not a url"\ntable = "orders"', "not a database URL"),
])
def test_bad_tables_are_refused_with_the_key_named(trigger: str, named: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_manifest(manifest(trigger))
    assert "trigger #1 (dbchanges)" in e.value.message and named in e.value.message
    assert "topsecret" not in e.value.message


def test_an_unparseable_url_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        validate({"url": "postgresql://u:hunter2@[bad", "table": "t"}, None)
    assert "hunter2" not in e.value.message
