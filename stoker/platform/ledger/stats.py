"""Aggregates over the ledger for dashboards: per-function figures over a window, and time series.

What is counted, for the invocations received in [since, until):

    invocations   rows that were accepted (every status but `throttled`), finished or not
    errors        rows that ended failed, timed_out or dead_lettered
    error_rate    errors / finished rows (succeeded + errors); in-flight rows do not dilute it
    throttles     rows refused over a concurrency limit (`throttled`: they never ran)
    cold_share    cold starts / rows that ran (`cold` is known once a try started)
    p50, p99      nearest-rank percentiles of `duration_ms` (the last try's): the smallest
                  duration at or above which p % of the durations lie, k = ceil(p * n / 100)

Everything is plain SQL that SQLite and PostgreSQL both run: counts are one GROUP BY over
the `received_at` index (or `(function, received_at)` for one function); percentiles are
`row_number()` over each group's durations, keeping only the rows at the wanted ranks, so
they are exact and no duration leaves the database but those. Time buckets are whole
multiples of the step since the Unix epoch, so consecutive polls line up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Engine, Integer, case, cast, extract, func, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from stoker.errors import InvalidInput
from stoker.platform.ledger.models import Invocation

ERROR_STATUSES = ("failed", "timed_out", "dead_lettered")
FINISHED_STATUSES = ("succeeded", *ERROR_STATUSES)
PERCENTILES = (50, 99)


@dataclass(frozen=True)
class Window:
    name: str
    length: dt.timedelta
    #: seconds per point of a time series over this window
    step: int


#: the windows dashboards offer, with a step that gives each chart 30 to 90 points
WINDOWS = {w.name: w for w in (
    Window("15m", dt.timedelta(minutes=15), 30),
    Window("1h", dt.timedelta(hours=1), 60),
    Window("24h", dt.timedelta(hours=24), 20 * 60),
    Window("7d", dt.timedelta(days=7), 2 * 3600),
)}
DEFAULT_WINDOW = "1h"


def window(name: str | None) -> Window:
    """A window by name; anything else is an error listing the names."""
    found = WINDOWS.get(name or DEFAULT_WINDOW)
    if found is None:
        raise InvalidInput(f"window {name!r} is not offered: use one of {', '.join(WINDOWS)}")
    return found


@dataclass
class Figures:
    """Counts and duration percentiles of one group (a function, or a time bucket)."""

    invocations: int = 0
    finished: int = 0
    errors: int = 0
    throttles: int = 0
    cold: int = 0
    ran: int = 0
    percentiles: dict[int, float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.finished if self.finished else None

    @property
    def cold_share(self) -> float | None:
        return self.cold / self.ran if self.ran else None

    @property
    def p50(self) -> float | None:
        return self.percentiles.get(50)

    @property
    def p99(self) -> float | None:
        return self.percentiles.get(99)

    def to_json(self) -> dict[str, Any]:
        return {"invocations": self.invocations, "finished": self.finished, "errors": self.errors,
                "error_rate": self.error_rate, "throttles": self.throttles, "cold_starts": self.cold,
                "cold_share": self.cold_share, "p50_ms": self.p50, "p99_ms": self.p99}


def _range(since: dt.datetime, until: dt.datetime, function: str | None) -> list[ColumnElement[bool]]:
    if since >= until:
        raise InvalidInput(f"since ({since.isoformat()}) is not before until ({until.isoformat()})")
    where = [Invocation.received_at >= since, Invocation.received_at < until]
    if function is not None:
        where.append(Invocation.function == function)
    return where


def _counts(engine: Engine, key: Any, where: list[ColumnElement[bool]]) -> dict[Any, Figures]:
    def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    status = Invocation.status
    q = (select(key.label("k"), count_if(status != "throttled"), count_if(status.in_(FINISHED_STATUSES)),
                count_if(status.in_(ERROR_STATUSES)), count_if(status == "throttled"),
                count_if(Invocation.cold.is_(True)), count_if(Invocation.cold.is_not(None)))
         .where(*where).group_by(key))
    out: dict[Any, Figures] = {}
    with engine.connect() as conn:
        for k, invocations, finished, errors, throttles, cold, ran in conn.execute(q):
            out[k] = Figures(int(invocations or 0), int(finished or 0), int(errors or 0), int(throttles or 0),
                             int(cold or 0), int(ran or 0))
    return out


def _percentiles(engine: Engine, key: Any, where: list[ColumnElement[bool]],
                 into: dict[Any, Figures]) -> None:
    """Nearest-rank percentiles of each group's durations, computed in SQL (see the module doc)."""
    d = Invocation.duration_ms
    ranked = (select(key.label("k"), d.label("d"),
                     func.row_number().over(partition_by=key, order_by=(d, Invocation.id)).label("rn"),
                     func.count().over(partition_by=key).label("n"))
              .where(*where, d.is_not(None))
              .subquery())
    # k = ceil(p * n / 100) in integer arithmetic, the same on both databases
    wanted = [ranked.c.rn == (p * ranked.c.n + 99) // 100 for p in PERCENTILES]
    q = select(ranked.c.k, ranked.c.d, ranked.c.rn, ranked.c.n).where(or_(*wanted))
    with engine.connect() as conn:
        for k, duration, rn, n in conn.execute(q):
            figures = into.setdefault(k, Figures())
            for p in PERCENTILES:
                if rn == (p * n + 99) // 100:
                    figures.percentiles[p] = float(duration)


def by_function(engine: Engine, since: dt.datetime, until: dt.datetime,
                function: str | None = None) -> dict[str, Figures]:
    """Figures per function over [since, until) (only functions with rows in it)."""
    where = _range(since, until, function)
    out = _counts(engine, Invocation.function, where)
    _percentiles(engine, Invocation.function, where, out)
    return {str(k): v for k, v in out.items()}


def _bucket(engine: Engine, step: int) -> ColumnElement[Any]:
    """The index of the step-long bucket (since the Unix epoch) a row was received in."""
    # the step inline, not a bound parameter: PostgreSQL matches GROUP BY expressions by their text
    width = literal_column(str(int(step)), Integer)
    if engine.dialect.name == "postgresql":
        return cast(func.floor(extract("epoch", Invocation.received_at) / width), BigInteger)
    # SQLite keeps UTC text; strftime('%s') reads it as UTC
    return cast(func.strftime(literal_column("'%s'"), Invocation.received_at), Integer) // width


@dataclass(frozen=True)
class Series:
    """Figures per time bucket: `starts` (Unix seconds) and one list per measure, same length."""

    step: int
    starts: list[int]
    points: list[Figures]

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "t": self.starts,
            "invocations": [p.invocations for p in self.points],
            "errors": [p.errors for p in self.points],
            "throttles": [p.throttles for p in self.points],
            "cold_starts": [p.cold for p in self.points],
            "p50_ms": [p.p50 for p in self.points],
            "p99_ms": [p.p99 for p in self.points],
        }


def series(engine: Engine, since: dt.datetime, until: dt.datetime, step: int,
           function: str | None = None) -> Series:
    """Figures per `step` seconds over [since, until), every bucket present (empty ones as zeros)."""
    if step < 1:
        raise InvalidInput(f"step {step} must be at least 1 second")
    where = _range(since, until, function)
    first, last = int(since.timestamp()) // step, (int(until.timestamp()) - 1) // step
    if last - first > 10_000:
        raise InvalidInput(f"{last - first + 1} points is too many for one series: use a longer step")
    bucket = _bucket(engine, step)
    found = _counts(engine, bucket, where)
    _percentiles(engine, bucket, where, found)
    indexes = range(first, last + 1)
    return Series(step, [i * step for i in indexes], [found.get(i) or Figures() for i in indexes])
