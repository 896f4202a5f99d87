"""`[[triggers]] type = "dbchanges"`: the manifest table, checked at deploy.

    [[triggers]]
    type = "dbchanges"
    url = "postgresql://app:secret@db:5432/shop"   # or sqlite:////srv/shop.db
    table = "orders"                 # watched with `stoker db watch` first
    events = ["INSERT", "UPDATE", "DELETE"]   # the default: all three
    batch_size = 100                 # records per invocation, 1-10000
    batch_window = 0                 # seconds to wait for a fuller batch, 0-300
    image_format = "plain"           # plain JSON values, or "dynamodb" typed attribute values
    bisect_on_error = false          # split a failing batch in halves to isolate the bad record
    starting_position = "trim_horizon"   # or "latest": where a new function starts reading
    qualifier = "live"               # optional: a version or alias to invoke
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stoker.errors import ConfigError
from stoker.triggers.dbchanges.target import Target

EVENTS = ("INSERT", "UPDATE", "DELETE")
IMAGE_FORMATS = ("plain", "dynamodb")
STARTING_POSITIONS = ("trim_horizon", "latest")
KNOWN = ("url", "table", "events", "batch_size", "batch_window", "image_format", "bisect_on_error",
         "starting_position", "qualifier")
MAX_BATCH_SIZE = 10_000
MAX_BATCH_WINDOW = 300.0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    """The manifest validator: the normalised table, or a ConfigError naming the key."""
    for key in table:
        if key not in KNOWN:
            raise ConfigError(f"unknown key {key!r}. Known keys: {', '.join(KNOWN)}")
    for key in ("url", "table"):
        if key not in table:
            raise ConfigError(f"{key} is missing: a dbchanges trigger needs url = \"...\" and table = \"...\"")
    target = Target.parse(table["url"], table["table"], folder)
    out: dict[str, Any] = {"url": target.url.render_as_string(hide_password=False), "table": target.table}

    events = table.get("events", list(EVENTS))
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ConfigError(f"events must be a list drawn from {', '.join(EVENTS)}")
    wanted = {e.upper() for e in events}
    unknown = sorted(wanted - set(EVENTS))
    if unknown:
        raise ConfigError(f"events: {', '.join(unknown)} is not an event; use {', '.join(EVENTS)}")
    out["events"] = [e for e in EVENTS if e in wanted]

    size = table.get("batch_size", 100)
    if not _is_int(size) or not 1 <= size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size = {size!r}: give a whole number from 1 to {MAX_BATCH_SIZE}")
    out["batch_size"] = size

    window = table.get("batch_window", 0)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 0 <= window <= MAX_BATCH_WINDOW:
        raise ConfigError(f"batch_window = {window!r}: give seconds from 0 to {MAX_BATCH_WINDOW:g}")
    out["batch_window"] = float(window)

    for key, choices, default in (("image_format", IMAGE_FORMATS, "plain"),
                                  ("starting_position", STARTING_POSITIONS, "trim_horizon")):
        value = table.get(key, default)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r}: use one of {', '.join(choices)}")
        out[key] = value

    bisect = table.get("bisect_on_error", False)
    if not isinstance(bisect, bool):
        raise ConfigError(f"bisect_on_error = {bisect!r}: give true or false")
    out["bisect_on_error"] = bisect

    if "qualifier" in table:
        q = table["qualifier"]
        if not isinstance(q, str) or not q:
            raise ConfigError(f"qualifier = {q!r}: give a version number, an alias or $LATEST")
        out["qualifier"] = q
    return out


@dataclass(frozen=True)
class DbChangesConfig:
    target: Target
    events: tuple[str, ...]
    batch_size: int
    batch_window: float
    image_format: str
    bisect_on_error: bool
    starting_position: str
    qualifier: str | None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DbChangesConfig:
        """From a deployed (already validated) trigger table."""
        return cls(
            target=Target.parse(config["url"], config["table"]),
            events=tuple(config.get("events") or EVENTS),
            batch_size=int(config.get("batch_size", 100)),
            batch_window=float(config.get("batch_window", 0.0)),
            image_format=str(config.get("image_format", "plain")),
            bisect_on_error=bool(config.get("bisect_on_error", False)),
            starting_position=str(config.get("starting_position", "trim_horizon")),
            qualifier=config.get("qualifier") or None,
        )
