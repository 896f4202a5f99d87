"""The bill: requests and GB-seconds from the ledger, priced, with a monthly free tier.

What is billed, as Lambda bills it: every try that ran. A try (a row of `attempts`)
counts when it succeeded, failed or timed out; each retry of an async event is a request
of its own. Throttled invocations never ran and are not billed; a try lost with its node
(`interrupted`) and the platform's own failures (`Runtime.PlatformError`) are not billed.

    requests    = the tries that ran
    gb_seconds  = sum(memory_mb / 1024 * billed_ms / 1000)   billed_ms = the try's duration
                                                             rounded up to the ms (at least 1)
    cost        = requests * per_million_requests / 1e6 + gb_seconds * per_gb_second

An invocation is billed in the period (and the calendar month, UTC) it was received in.
The free tier (1M requests and 400,000 GB-seconds a calendar month by default) belongs to
the whole platform, not to a function: each function's line shows its cost at list price,
and the free tier is one credit against the total. It is used up in time order, so a
period starting mid-month first spends it on the usage before the period.

Prices and free tier come from the environment (defaults: AWS's x86 on-demand prices):
    STOKER_PRICE_PER_MILLION_REQUESTS   0.20
    STOKER_PRICE_PER_GB_SECOND          0.0000166667
    STOKER_FREE_REQUESTS                1000000   per calendar month (0 for none)
    STOKER_FREE_GB_SECONDS              400000    per calendar month (0 for none)
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, case, cast, func, literal, select
from sqlalchemy import Integer as SqlInteger
from sqlalchemy.sql.elements import ColumnElement

from stoker.errors import ConfigError, InvalidInput
from stoker.platform.ledger.models import Attempt, Invocation
from stoker.platform.timeparse import iso

BILLED_OUTCOMES = ("succeeded", "failed", "timed_out")
UNBILLED_ERRORS = ("Runtime.PlatformError", "Runtime.NodeLost")
GROUPINGS = ("function", "day")
MB_MS_PER_GB_SECOND = 1024 * 1000


@dataclass(frozen=True)
class Prices:
    per_million_requests: float = 0.20
    per_gb_second: float = 0.0000166667
    free_requests: float = 1_000_000
    free_gb_seconds: float = 400_000

    @classmethod
    def from_env(cls) -> Prices:
        def read(name: str, default: float) -> float:
            raw = os.environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number: set it to a price in dollars or a count "
                                  f"(default {default:g})") from None
            if value < 0 or value != value or value == float("inf"):
                raise ConfigError(f"{name}={raw!r} must be a finite number of 0 or more (default {default:g})")
            return value

        return cls(
            per_million_requests=read("STOKER_PRICE_PER_MILLION_REQUESTS", cls.per_million_requests),
            per_gb_second=read("STOKER_PRICE_PER_GB_SECOND", cls.per_gb_second),
            free_requests=read("STOKER_FREE_REQUESTS", cls.free_requests),
            free_gb_seconds=read("STOKER_FREE_GB_SECONDS", cls.free_gb_seconds),
        )

    def cost(self, requests: float, gb_seconds: float) -> float:
        return requests * self.per_million_requests / 1_000_000 + gb_seconds * self.per_gb_second


@dataclass
class Usage:
    requests: int = 0
    mb_ms: int = 0  # memory_mb * billed_ms, summed: exact, turned into GB-seconds once

    @property
    def gb_seconds(self) -> float:
        return self.mb_ms / MB_MS_PER_GB_SECOND

    def add(self, requests: int, mb_ms: int) -> None:
        self.requests += requests
        self.mb_ms += mb_ms


def month_start(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(t: dt.datetime) -> dt.datetime:
    start = month_start(t)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def parse_month(value: str, option: str = "month") -> tuple[dt.datetime, dt.datetime]:
    try:
        start = dt.datetime.strptime(value.strip(), "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidInput(f"{option} {value!r} is not a month: use YYYY-MM, e.g. 2026-01") from None
    if start.year == dt.MAXYEAR and start.month == 12:  # its end, 10000-01-01, is past what a datetime holds
        raise InvalidInput(f"{option} {value!r} is out of range: give a month up to {dt.MAXYEAR}-11")
    return start, next_month(start)


def _billed_ms(engine: Engine, d: Any) -> ColumnElement[Any]:
    """max(1, ceil(d)) in SQL (SQLite has no ceil everywhere; PostgreSQL's cast rounds)."""
    if engine.dialect.name == "postgresql":
        return cast(func.greatest(1, func.ceil(d)), SqlInteger)
    whole = cast(d, SqlInteger)
    return func.max(1, whole + case((d > whole, 1), else_=0))


def _period_key(engine: Engine, by: str) -> ColumnElement[Any]:
    """The received time as text: YYYY-MM-DD for days, YYYY-MM for months (UTC)."""
    width = 10 if by == "day" else 7
    if engine.dialect.name == "postgresql":
        pattern = "YYYY-MM-DD" if by == "day" else "YYYY-MM"
        return func.to_char(func.timezone("UTC", Invocation.received_at), pattern)
    return func.substr(Invocation.received_at, 1, width)  # stored as UTC text: 2026-01-31 12:00:00.000000


def usage(engine: Engine, since: dt.datetime, until: dt.datetime, by: str) -> dict[tuple[str, str], Usage]:
    """Usage in [since, until) keyed by (month, function) or (month, day).

    One pass over the invocations received in the period (the received_at index). An
    invocation tried once is billed from its own row, whose billed_ms is that try's; only
    the few tried more than once look up their tries in `attempts`.
    """
    a = Attempt
    billable_try = and_(a.invocation_id == Invocation.id, a.duration_ms.is_not(None), a.outcome.in_(BILLED_OUTCOMES),
                        func.coalesce(a.error_type, literal("")).not_in(UNBILLED_ERRORS))
    tries = select(func.count()).where(billable_try).scalar_subquery()
    tries_mb_ms = select(func.sum(_billed_ms(engine, a.duration_ms))).where(billable_try).scalar_subquery()
    once_billable = and_(Invocation.billed_ms.is_not(None),
                         func.coalesce(Invocation.error_type, literal("")).not_in(UNBILLED_ERRORS))
    many = func.coalesce(Invocation.attempts, 0) > 1
    requests = case((many, tries), (once_billable, 1), else_=0)
    memory = func.coalesce(Invocation.memory_mb, 128)
    mb_ms = case((many, memory * func.coalesce(tries_mb_ms, 0)), (once_billable, memory * Invocation.billed_ms),
                 else_=0)
    month = _period_key(engine, "month")
    group = Invocation.function if by == "function" else _period_key(engine, "day")
    q = (
        select(month, group, func.sum(requests), func.sum(mb_ms))
        .where(Invocation.received_at >= since, Invocation.received_at < until)
        .group_by(month, group)
    )
    out: dict[tuple[str, str], Usage] = defaultdict(Usage)
    with engine.connect() as conn:
        for m, key, n, total in conn.execute(q):
            if n:
                out[(str(m), str(key))].add(int(n), int(total or 0))
    return out


def compute_bill(engine: Engine, since: dt.datetime, until: dt.datetime, by: str = "function",
                 free_tier: bool = True, prices: Prices | None = None) -> dict[str, Any]:
    """The bill for [since, until): per function (or day) lines, months, free tier, totals."""
    if by not in GROUPINGS:
        raise InvalidInput(f"by {by!r} is not a grouping: use function or day")
    if since >= until:
        raise InvalidInput(f"since ({iso(since)}) is not before until ({iso(until)}): swap them or widen the range")
    prices = prices or Prices.from_env()
    used = usage(engine, since, until, by)

    lines: dict[str, Usage] = defaultdict(Usage)
    months: dict[str, Usage] = defaultdict(Usage)
    for (month, key), u in used.items():
        lines[key].add(u.requests, u.mb_ms)
        months[month].add(u.requests, u.mb_ms)

    # the free tier of the first month is partly spent already if the period starts mid-month
    spent_before: Usage = Usage()
    if free_tier and since > month_start(since):
        for u in usage(engine, month_start(since), since, "function").values():
            spent_before.add(u.requests, u.mb_ms)
    first_month = since.astimezone(dt.UTC).strftime("%Y-%m")

    month_rows = []
    total = Usage()
    subtotal = total_cost = free_requests = free_gb_seconds = 0.0
    for month in sorted(months):
        u = months[month]
        total.add(u.requests, u.mb_ms)
        gross = prices.cost(u.requests, u.gb_seconds)
        subtotal += gross
        row: dict[str, Any] = {"month": month, "requests": u.requests, "gb_seconds": u.gb_seconds, "cost": gross}
        if free_tier:
            before = spent_before if month == first_month else Usage()
            left_requests = max(0.0, prices.free_requests - before.requests)
            left_gb_seconds = max(0.0, prices.free_gb_seconds - before.gb_seconds)
            billable_requests = max(0.0, u.requests - left_requests)
            billable_gb_seconds = max(0.0, u.gb_seconds - left_gb_seconds)
            net = prices.cost(billable_requests, billable_gb_seconds)
            row.update(free_requests=u.requests - billable_requests,
                       free_gb_seconds=u.gb_seconds - billable_gb_seconds, billed_cost=net)
            free_requests += u.requests - billable_requests
            free_gb_seconds += u.gb_seconds - billable_gb_seconds
            total_cost += net
        month_rows.append(row)
    if not free_tier:
        total_cost = subtotal

    key_name = "function" if by == "function" else "day"
    line_rows = [
        {key_name: key, "requests": u.requests, "gb_seconds": u.gb_seconds,
         "request_cost": u.requests * prices.per_million_requests / 1_000_000,
         "compute_cost": u.gb_seconds * prices.per_gb_second, "cost": prices.cost(u.requests, u.gb_seconds)}
        for key, u in sorted(lines.items())
    ]
    return {
        "since": iso(since),
        "until": iso(until),
        "by": by,
        "prices": {"per_million_requests": prices.per_million_requests, "per_gb_second": prices.per_gb_second},
        "free_tier": {
            "applied": free_tier,
            "requests_per_month": prices.free_requests,
            "gb_seconds_per_month": prices.free_gb_seconds,
            "requests": free_requests,
            "gb_seconds": free_gb_seconds,
            "credit": subtotal - total_cost if free_tier else 0.0,
        },
        "functions" if by == "function" else "days": line_rows,
        "months": month_rows,
        "requests": total.requests,
        "gb_seconds": total.gb_seconds,
        "subtotal": subtotal,
        "total_cost": total_cost,
    }


def default_period(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """This calendar month (UTC) so far."""
    now = now or dt.datetime.now(dt.UTC)
    return month_start(now), now
