"""The change log on SQLite: three row triggers per table writing `json_object` images.

SQLite has one writer at a time, so sequence order is commit order and a consumer's
cursor is the last sequence it read. Binary values appear as PostgreSQL shows bytea,
`\\x` and lower-case hex, since JSON cannot hold bytes. The watched database's journal
mode is left as its owner set it; stoker's write transactions are short and start with
BEGIN IMMEDIATE, so they wait for (never deadlock with) the application's writers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, text

from stoker.errors import ConfigError
from stoker.triggers.dbchanges.changelog import (
    CHANGES,
    CURSORS,
    WATCHES,
    Batch,
    ChangeLog,
    DatabaseError,
    Position,
    WatchResult,
    captured_columns,
    change_from_row,
)

NOW = "(julianday('now') - 2440587.5) * 86400.0"
OPERATIONS = (("insert", "INSERT"), ("update", "UPDATE"), ("delete", "DELETE"))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _image(alias: str, columns: list[str]) -> str:
    parts = []
    for c in columns:
        ref = f"{alias}.{_q(c)}"
        parts.append(f"{_lit(c)}, CASE WHEN typeof({ref}) = 'blob' THEN '\\x' || lower(hex({ref})) ELSE {ref} END")
    return "json_object(" + ", ".join(parts) + ")"


class SqliteChangeLog(ChangeLog):
    def _make_engine(self) -> Engine:
        engine = create_engine(self.target.url, connect_args={"timeout": 15})

        @event.listens_for(engine, "connect")
        def _own_transactions(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # stoker issues BEGIN itself (see `begin` below)

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("stoker_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _precheck(self) -> None:
        path = Path(str(self.target.url.database))
        if not path.is_file():
            raise DatabaseError(f"{self.target.describe()}: no SQLite database at {path}")

    # -- names --------------------------------------------------------------------------
    def table_name(self) -> str:
        return self.target.table

    def t(self, name: str) -> str:
        return _q(name)

    def _has_log(self, conn: Connection) -> bool:
        return conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"),
                            {"n": WATCHES}).first() is not None

    # -- install ------------------------------------------------------------------------
    def _trigger_sql(self, keys: list[str], columns: list[str]) -> dict[str, str]:
        table = self.table_name()
        insert = (f"INSERT INTO {_q(CHANGES)} (table_name, op, old_keys, new_keys, old_row, new_row, changed_at) "
                  f"VALUES ({_lit(table)}, ")
        images = {
            "insert": f"'INSERT', NULL, {_image('NEW', keys)}, NULL, {_image('NEW', columns)}",
            "update": f"'UPDATE', {_image('OLD', keys)}, {_image('NEW', keys)}, {_image('OLD', columns)}, "
                      f"{_image('NEW', columns)}",
            "delete": f"'DELETE', {_image('OLD', keys)}, NULL, {_image('OLD', columns)}, NULL",
        }
        out = {}
        for suffix, op in OPERATIONS:
            # an UPDATE that changes nothing captured writes no change (as DynamoDB)
            when = (f" WHEN {_image('OLD', columns)} IS NOT {_image('NEW', columns)}" if op == "UPDATE" else "")
            out[f"stoker_{table}_{suffix}"] = (
                f"CREATE TRIGGER {_q(f'stoker_{table}_{suffix}')} AFTER {op} ON {_q(table)} FOR EACH ROW{when} "
                f"BEGIN {insert}{images[suffix]}, {NOW}); END")
        return out

    def _ddl(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {_q(CHANGES)} (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " table_name TEXT NOT NULL, op TEXT NOT NULL, old_keys TEXT, new_keys TEXT, old_row TEXT, new_row TEXT,"
            " txid INTEGER, changed_at REAL NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS stoker_changes_table_seq ON {_q(CHANGES)} (table_name, seq)",
            f"CREATE TABLE IF NOT EXISTS {_q(CURSORS)} (table_name TEXT NOT NULL, consumer TEXT NOT NULL,"
            " token TEXT NOT NULL, version INTEGER NOT NULL, horizon TEXT, page TEXT, after_seq INTEGER NOT NULL,"
            " updated_at REAL NOT NULL, PRIMARY KEY (table_name, consumer))",
            f"CREATE TABLE IF NOT EXISTS {_q(WATCHES)} (table_name TEXT PRIMARY KEY, key_columns TEXT NOT NULL,"
            " columns TEXT, watched_at REAL NOT NULL)",
        ]

    def install(self, columns: list[str] | None) -> WatchResult:
        with self.begin("watching") as conn:
            table = self.table_name()
            kind = conn.execute(text("SELECT type FROM sqlite_master WHERE name = :n"), {"n": table}).scalar()
            if kind != "table":
                raise ConfigError(f"{self.target.describe()}: no such table")
            info = conn.exec_driver_sql(f"PRAGMA table_info({_q(table)})").all()
            names = [r[1] for r in info]
            keys = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            captured = captured_columns(self.target.describe(), keys, names, columns)
            triggers = self._trigger_sql(keys, captured or names)
            watch_row = (json.dumps(keys), json.dumps(captured) if captured else None)
            existing: dict[str, str] = dict(conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"), {"t": table}).all())
            if self._has_log(conn) and all(existing.get(n) == sql for n, sql in triggers.items()):
                row = conn.execute(text(f"SELECT key_columns, columns FROM {_q(WATCHES)} WHERE table_name = :t"),
                                   {"t": table}).first()
                if row is not None and tuple(row) == watch_row:
                    return WatchResult(table, keys, captured, changed=False)
            for statement in self._ddl():
                conn.exec_driver_sql(statement)
            for name, sql in triggers.items():
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(name)}")
                conn.exec_driver_sql(sql)
            conn.execute(text(
                f"INSERT INTO {_q(WATCHES)} (table_name, key_columns, columns, watched_at) VALUES (:t, :k, :c, :now) "
                "ON CONFLICT (table_name) DO UPDATE SET key_columns = excluded.key_columns, "
                "columns = excluded.columns, watched_at = excluded.watched_at"),
                {"t": table, "k": watch_row[0], "c": watch_row[1], "now": time.time()})
        notes = ["re-run `stoker db watch` after adding columns to the table: SQLite triggers name every column"]
        return WatchResult(table, keys, captured, changed=True, notes=[] if captured else notes)

    def uninstall(self) -> bool:
        with self.begin("unwatching") as conn:
            table = self.table_name()
            found = 0
            for suffix, _ in OPERATIONS:
                name = f"stoker_{table}_{suffix}"
                found += conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = :n"),
                                      {"n": name}).scalar_one()
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_q(name)}")
            if not self._has_log(conn):
                return found > 0
            params = {"t": table}
            found += conn.execute(text(f"DELETE FROM {_q(WATCHES)} WHERE table_name = :t"), params).rowcount
            conn.execute(text(f"DELETE FROM {_q(CURSORS)} WHERE table_name = :t"), params)
            conn.execute(text(f"DELETE FROM {_q(CHANGES)} WHERE table_name = :t"), params)
            if conn.execute(text(f"SELECT count(*) FROM {_q(WATCHES)}")).scalar_one() == 0:
                for name in (CHANGES, CURSORS, WATCHES):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_q(name)}")
            return found > 0

    def watches(self) -> list[dict[str, Any]]:
        with self.guard("reading the watches of"), self.engine.connect() as conn:
            if not self._has_log(conn):
                return []
            out = []
            for table, keys, columns, watched_at in conn.execute(text(
                    f"SELECT table_name, key_columns, columns, watched_at FROM {_q(WATCHES)} ORDER BY 1")).all():
                consumers = [
                    {"consumer": c, "unread": unread, "updated_at": updated}
                    for c, unread, updated in conn.execute(text(
                        f"SELECT c.consumer, (SELECT count(*) FROM {_q(CHANGES)} x WHERE x.table_name = c.table_name "
                        f"AND x.seq > c.after_seq), c.updated_at FROM {_q(CURSORS)} c WHERE c.table_name = :t "
                        "ORDER BY 1"), {"t": table})]
                backlog = conn.execute(text(f"SELECT count(*) FROM {_q(CHANGES)} WHERE table_name = :t"),
                                       {"t": table}).scalar_one()
                out.append({"table": table, "key_columns": json.loads(keys),
                            "columns": json.loads(columns) if columns else None, "watched_at": watched_at,
                            "retained": backlog, "consumers": consumers})
            return out

    # -- reading ------------------------------------------------------------------------
    def read(self, position: Position, limit: int, ops: Sequence[str]) -> Batch:
        query = text(
            f"SELECT seq, op, old_keys, new_keys, old_row, new_row, changed_at FROM {_q(CHANGES)} "
            "WHERE table_name = :t AND seq > :after AND seq <= :high AND op IN :ops ORDER BY seq LIMIT :n",
        ).bindparams(bindparam("ops", expanding=True))
        with self.guard("reading the change log of"), self.engine.connect() as conn:
            # one read transaction: `high` and the rows come from the same snapshot
            high = conn.execute(text(f"SELECT max(seq) FROM {_q(CHANGES)} WHERE table_name = :t"),
                                {"t": self.table_name()}).scalar()
            rows = [] if high is None else conn.execute(query, {
                "t": self.table_name(), "after": position.after_seq, "high": high, "ops": list(ops),
                "n": limit + 1}).all()
        changes = [change_from_row(r) for r in rows[:limit]]
        return Batch(changes, exhausted=len(rows) <= limit, high=int(high) if high is not None else None)

    def position_after(self, position: Position, batch: Batch, count: int) -> Position:
        if count == len(batch.changes) and batch.exhausted:
            return Position(after_seq=max(position.after_seq, batch.high or 0))
        return Position(after_seq=batch.changes[count - 1].seq)

    def _start_position(self, conn: Connection, start: str) -> Position:
        if start == "latest":
            high = conn.execute(text(f"SELECT max(seq) FROM {_q(CHANGES)}")).scalar()
            return Position(after_seq=int(high or 0))
        return Position()

    def _trim(self, conn: Connection, live_since: float) -> int:
        # min() over no live consumer is NULL, and `seq <= NULL` deletes nothing
        result = conn.execute(text(
            f"DELETE FROM {_q(CHANGES)} WHERE table_name = :t AND seq <= (SELECT min(after_seq) FROM {_q(CURSORS)} "
            "WHERE table_name = :t AND updated_at > :live)"), {"t": self.table_name(), "live": live_since})
        return int(result.rowcount or 0)
