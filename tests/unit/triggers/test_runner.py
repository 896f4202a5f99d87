"""What the trigger runner logs of a trigger's configuration."""

from __future__ import annotations

from stoker.triggers.runner import shown


def test_passwords_in_urls_are_not_logged() -> None:
    config = {"type": "dbchanges", "url": "postgresql+psycopg://app:pa%40ss@db:5432/shop?sslmode=require",
              "table": "orders", "batch_size": 10, "other": "sqlite:////srv/shop.db"}
    out = shown(config)
    assert out["url"] == "postgresql+psycopg://app:***@db:5432/shop?sslmode=require"
    assert out["other"] == config["other"] and out["batch_size"] == 10
    assert config["url"].startswith("postgresql+psycopg://app:pa%40ss@")  # the trigger's own copy is untouched
