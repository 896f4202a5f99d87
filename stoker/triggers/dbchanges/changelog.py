"""The change log in the user's database: what `stoker db watch` installs and the tailer reads.

Three tables live beside the watched table (with PostgreSQL, in the watched table's schema):

    stoker_changes         one row per committed change, written by row triggers inside the
                           writing transaction (a rolled-back change never appears):
                           seq, table_name, op (INSERT|UPDATE|DELETE), old_keys, new_keys,
                           old_row, new_row (JSON), txid (PostgreSQL), changed_at
    stoker_change_cursors  one row per (table, consumer): how far that consumer has read
    stoker_watches         one row per watched table: its key columns and captured columns

A consumer is one function of one platform (`{prefix}/{function}`). Rows are trimmed once
every live consumer of the table has read them; a consumer whose cursor has not moved for
STALE_CONSUMER_S (its function was removed, or its platform is gone) stops holding rows back.

Reading order. Sequence numbers are taken when a row is written, not when it commits, so
on PostgreSQL a transaction may commit rows numbered below rows already read. The tailer
therefore reads in snapshot windows (as PgQ does): a window is the changes whose
transaction is visible in snapshot S but not in the last fully read snapshot (the
horizon); within a window, rows go out in sequence order. A row's later change is always
in the same or a later window and has a higher sequence number, so each row's changes
arrive in the order they were made. SQLite has one writer at a time, so its sequence
order is its commit order and the cursor is just the last sequence read.

Everything here is synchronous (SQLAlchemy); the tailer calls it from a thread.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import DBAPIError

from stoker.errors import ConfigError, StokerError
from stoker.triggers.dbchanges.target import Target

CHANGES, CURSORS, WATCHES = "stoker_changes", "stoker_change_cursors", "stoker_watches"
OPS = ("INSERT", "UPDATE", "DELETE")
#: a consumer whose cursor has not moved for this long no longer holds back trimming
STALE_CONSUMER_S = 7 * 24 * 3600.0


class DatabaseError(StokerError):
    """The watched database cannot be reached or refused a statement (message without credentials)."""

    status_code = 503


class NotWatched(ConfigError):
    """The table has no change log: `stoker db watch` was not run for it (or it was unwatched)."""


@dataclass(frozen=True)
class Position:
    """How far a consumer has read (see the module docstring for horizon and window)."""

    horizon: str | None = None  # PostgreSQL: the snapshot read in full; None: nothing read yet
    window: str | None = None  # PostgreSQL: the snapshot being paged through; None: none open
    after_seq: int = 0  # the last sequence read (within the window, on PostgreSQL)

    def to_json(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "window": self.window, "after_seq": self.after_seq}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        return cls(data.get("horizon"), data.get("window"), int(data.get("after_seq") or 0))


@dataclass(frozen=True)
class Cursor:
    consumer: str
    #: made when the cursor is created: batches of a re-created cursor get new invocation ids
    token: str
    #: bumped by every advance; an advance applies only to the version it was planned on
    version: int
    position: Position


@dataclass(frozen=True)
class Change:
    seq: int
    op: str
    old_keys: dict[str, Any] | None
    new_keys: dict[str, Any] | None
    old_row: dict[str, Any] | None
    new_row: dict[str, Any] | None
    changed_at: float


@dataclass(frozen=True)
class Batch:
    changes: list[Change]
    #: True when nothing of the window (PostgreSQL) or below `high` (SQLite) is left unread
    exhausted: bool
    window: str | None = None
    high: int | None = None


@dataclass
class WatchResult:
    table: str
    key_columns: list[str]
    columns: list[str] | None  # None: every column
    changed: bool  # False: it was already watched exactly so
    notes: list[str] = field(default_factory=list)


def _loads(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = value.decode()
    # numbers keep their exact digits (Decimal) until the record's format decides
    return json.loads(value, parse_float=Decimal)


def captured_columns(what: str, keys: list[str], names: list[str], columns: list[str] | None) -> list[str] | None:
    """The columns the images hold (the keys always among them); None: every column."""
    if not keys:
        raise ConfigError(f"{what} has no primary key: stoker identifies changed rows by it. Add one "
                          "(ALTER TABLE ... ADD PRIMARY KEY (...)) and watch again")
    if not columns:
        return None
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ConfigError(f"{what} has no column {', '.join(unknown)}; its columns are {', '.join(names)}")
    return keys + [c for c in columns if c not in keys]


def change_from_row(row: Sequence[Any]) -> Change:
    seq, op, old_keys, new_keys, old_row, new_row, changed_at = row
    return Change(seq=int(seq), op=str(op), old_keys=_loads(old_keys), new_keys=_loads(new_keys),
                  old_row=_loads(old_row), new_row=_loads(new_row), changed_at=float(changed_at or 0.0))


class ChangeLog(ABC):
    """One watched table's change log, in one database."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._engine: Engine | None = None

    # -- connections --------------------------------------------------------------------
    @abstractmethod
    def _make_engine(self) -> Engine: ...

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _precheck(self) -> None:
        """Raise DatabaseError before connecting when the database plainly is not there."""
        return None  # a server database: connecting says it

    @contextlib.contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Driver errors become DatabaseError with a message that holds no credentials."""
        self._precheck()
        try:
            yield
        except DBAPIError as e:
            cause = e.orig if e.orig is not None else e
            first = (str(cause).strip().splitlines() or [""])[0]
            raise DatabaseError(self.target.scrub(
                f"{doing} {self.target.describe()} failed: {type(cause).__name__}: {first}")) from None

    @contextlib.contextmanager
    def begin(self, doing: str) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock at once: BEGIN IMMEDIATE)."""
        with self.guard(doing), self.engine.connect() as conn:
            conn.execution_options(stoker_write=True)
            with conn.begin():
                yield conn

    # -- names --------------------------------------------------------------------------
    @abstractmethod
    def table_name(self) -> str:
        """The watched table's name as the change log records it."""

    @abstractmethod
    def t(self, name: str) -> str:
        """One of stoker's tables, quoted and qualified for SQL."""

    # -- installing (stoker db watch / unwatch) -----------------------------------------
    @abstractmethod
    def install(self, columns: list[str] | None) -> WatchResult: ...

    @abstractmethod
    def uninstall(self) -> bool:
        """Remove the table's triggers and its rows; the tables too when nothing is watched."""

    @abstractmethod
    def watches(self) -> list[dict[str, Any]]:
        """Every watched table of the database, with its consumers and how much they have not read."""

    # -- reading ------------------------------------------------------------------------
    @abstractmethod
    def read(self, position: Position, limit: int, ops: Sequence[str]) -> Batch:
        """Up to `limit` unread changes after `position`, in order."""

    @abstractmethod
    def position_after(self, position: Position, batch: Batch, count: int) -> Position:
        """The position once the first `count` changes of `batch` are consumed."""

    @abstractmethod
    def _start_position(self, conn: Connection, start: str) -> Position: ...

    @abstractmethod
    def _trim(self, conn: Connection, live_since: float) -> int: ...

    def check_watched(self) -> None:
        with self.guard("reading the change log of"), self.engine.connect() as conn:
            if not self._has_log(conn):
                raise NotWatched(self.not_watched_message())
            found = conn.execute(text(f"SELECT 1 FROM {self.t(WATCHES)} WHERE table_name = :t"),
                                 {"t": self.table_name()}).first()
        if found is None:
            raise NotWatched(self.not_watched_message())

    def not_watched_message(self) -> str:
        return (f"{self.target.describe()} is not watched: run "
                f"`stoker db watch --url '{self.target.safe_url}' --table {self.target.table}` "
                "(with the password) to install its change log")

    @abstractmethod
    def _has_log(self, conn: Connection) -> bool: ...

    def cursor(self, consumer: str, start: str) -> Cursor:
        """The consumer's cursor, created at `start` (trim_horizon | latest) if it has none."""
        with self.begin("opening the cursor on") as conn:
            row = self._select_cursor(conn, consumer)
            if row is None:
                position = self._start_position(conn, start)
                conn.execute(text(
                    f"INSERT INTO {self.t(CURSORS)} (table_name, consumer, token, version, horizon, page, "
                    "after_seq, updated_at) VALUES (:t, :c, :token, 0, :h, :p, :a, :now) "
                    "ON CONFLICT (table_name, consumer) DO NOTHING"),
                    {"t": self.table_name(), "c": consumer, "token": secrets.token_hex(8),
                     "h": position.horizon, "p": position.window, "a": position.after_seq, "now": time.time()})
                row = self._select_cursor(conn, consumer)
        assert row is not None
        return row

    def _select_cursor(self, conn: Connection, consumer: str) -> Cursor | None:
        row = conn.execute(text(
            f"SELECT token, version, horizon, page, after_seq FROM {self.t(CURSORS)} "
            "WHERE table_name = :t AND consumer = :c"), {"t": self.table_name(), "c": consumer}).first()
        if row is None:
            return None
        return Cursor(consumer, str(row[0]), int(row[1]), Position(row[2], row[3], int(row[4])))

    def advance(self, cursor: Cursor, position: Position) -> Cursor | None:
        """Move the cursor, only from the version the batch was planned on (None: it had moved)."""
        with self.begin("advancing the cursor on") as conn:
            moved = conn.execute(text(
                f"UPDATE {self.t(CURSORS)} SET version = version + 1, horizon = :h, page = :p, "
                "after_seq = :a, updated_at = :now "
                "WHERE table_name = :t AND consumer = :c AND token = :token AND version = :v"),
                {"h": position.horizon, "p": position.window, "a": position.after_seq, "now": time.time(),
                 "t": self.table_name(), "c": cursor.consumer, "token": cursor.token, "v": cursor.version})
        if moved.rowcount != 1:
            return None
        return Cursor(cursor.consumer, cursor.token, cursor.version + 1, position)

    def trim(self) -> int:
        """Delete the changes every live consumer has read; returns how many."""
        with self.begin("trimming the change log of") as conn:
            return self._trim(conn, time.time() - STALE_CONSUMER_S)

    def read_seqs(self, seqs: Sequence[int]) -> list[Change]:
        """These changes again (a failed batch being split), in order; trimmed ones are missing."""
        if not seqs:
            return []
        query = text(
            f"SELECT seq, op, {self._json('old_keys')}, {self._json('new_keys')}, {self._json('old_row')}, "
            f"{self._json('new_row')}, {self._epoch('changed_at')} FROM {self.t(CHANGES)} "
            "WHERE table_name = :t AND seq IN :seqs ORDER BY seq").bindparams(bindparam("seqs", expanding=True))
        with self.guard("reading the change log of"), self.engine.connect() as conn:
            rows = conn.execute(query, {"t": self.table_name(), "seqs": list(seqs)}).all()
        return [change_from_row(r) for r in rows]

    def _json(self, column: str) -> str:
        return column

    def _epoch(self, column: str) -> str:
        return column


def open_changelog(target: Target) -> ChangeLog:
    """The change log of the target's table, for its kind of database."""
    if target.dialect == "postgresql":
        from stoker.triggers.dbchanges.postgres import PostgresChangeLog

        return PostgresChangeLog(target)
    from stoker.triggers.dbchanges.sqlite import SqliteChangeLog

    return SqliteChangeLog(target)
