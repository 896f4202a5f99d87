"""The `[[triggers]] type = "cron"` table, checked at deploy.

    [[triggers]]
    type = "cron"
    schedule = "0 3 * * *"        # or "@daily", or "rate(5 minutes)"; see schedule.py
    timezone = "Europe/Berlin"    # IANA name (default "UTC")
    payload = { report = "daily" }  # optional: the event's "detail" (a table, or a JSON object string)
    missed = "skip"               # after downtime: "skip" (default) or "once" (one catch-up event)
    name = "nightly"              # optional: the schedule's name (default cron-N, N its position)
    qualifier = "prod"            # optional: the version or alias to invoke (default $LATEST)

A bad expression or an unknown time zone refuses the deploy, quoting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from stoker.errors import ConfigError
from stoker.triggers.cron.schedule import Schedule, parse_schedule, parse_timezone

KEYS = ("schedule", "timezone", "payload", "missed", "name", "qualifier")
MISSED = ("skip", "once")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PAYLOAD_LIMIT = 256 * 1024


def validate(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"unknown key '{key}'. Known keys: {', '.join(KEYS)}")
    if "schedule" not in table:
        raise ConfigError("no schedule: add schedule = \"*/5 * * * *\" (or \"rate(5 minutes)\")")
    timezone = parse_timezone(table.get("timezone", "UTC"))
    schedule = parse_schedule(table["schedule"], timezone)
    out: dict[str, Any] = {"schedule": schedule.text, "timezone": timezone}
    missed = table.get("missed", "skip")
    if missed not in MISSED:
        raise ConfigError(f"missed = {missed!r} is not valid: use \"skip\" (default) or \"once\"")
    out["missed"] = missed
    out["payload"] = _payload(table.get("payload", {}))
    if "name" in table:
        name = table["name"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(f"name = {name!r} is not valid: use 1-64 letters, digits, '.', '-' or '_'")
        out["name"] = name
    if "qualifier" in table:
        qualifier = table["qualifier"]
        if not isinstance(qualifier, str) or not qualifier:
            raise ConfigError(f"qualifier = {qualifier!r} is not valid: give a version number or an alias name")
        out["qualifier"] = qualifier
    return out


def _payload(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"payload is not valid JSON ({e}): write a table, or a JSON object string") from None
    if not isinstance(value, dict):
        raise ConfigError(f"payload must be a table (a JSON object), not {type(value).__name__}")
    try:
        size = len(orjson.dumps(value))
    except TypeError as e:  # TOML dates and times are not JSON
        raise ConfigError(f"payload cannot be written as JSON ({e}): use strings for dates and times") from None
    if size > PAYLOAD_LIMIT:
        raise ConfigError(f"payload is {size:,} bytes as JSON; at most {PAYLOAD_LIMIT:,} bytes are accepted")
    return dict(value)


@dataclass(frozen=True)
class CronConfig:
    """A deployed cron trigger, with its schedule parsed."""

    function: str
    name: str
    schedule: Schedule
    timezone: str
    missed: str
    payload: dict[str, Any]
    qualifier: str | None

    @property
    def schedule_id(self) -> str:
        """Names the schedule to users and in events (`resources`): function/name."""
        return f"{self.function}/{self.name}"

    @property
    def signature(self) -> str:
        """Changes when the schedule's timing changes; its fire state restarts then."""
        return f"{self.schedule.text}|{self.timezone}"

    @classmethod
    def from_trigger(cls, function: str, triggers: list[dict[str, Any]], index: int) -> CronConfig:
        config = triggers[index]
        position = sum(1 for t in triggers[: index + 1] if t.get("type") == "cron")
        timezone = parse_timezone(config.get("timezone", "UTC"))
        return cls(
            function=function,
            name=str(config.get("name") or f"cron-{position}"),
            schedule=parse_schedule(config["schedule"], timezone),
            timezone=timezone,
            missed=str(config.get("missed", "skip")),
            payload=dict(config.get("payload") or {}),
            qualifier=str(config["qualifier"]) if config.get("qualifier") else None,
        )


def cron_configs(function: str, spec: dict[str, Any]) -> list[CronConfig]:
    """Every cron trigger of a deployed function version."""
    triggers = list(spec.get("triggers") or [])
    return [CronConfig.from_trigger(function, triggers, i) for i, t in enumerate(triggers) if t.get("type") == "cron"]
