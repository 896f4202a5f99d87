"""The change log on real SQLite and real PostgreSQL: what the triggers record and how cursors read it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from stoker.triggers.dbchanges.changelog import ChangeLog, Cursor, NotWatched, Position, open_changelog
from stoker.triggers.dbchanges.target import Target

ALL = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def user_db(db_url: str) -> Iterator[Engine]:
    """The user's own database (SQLite or PostgreSQL), written to as an application would."""
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text("create table orders (id integer primary key, item text not null, qty integer not null)"))
        c.execute(text("create table lines (order_id integer not null, line integer not null, sku text, "
                       "note text, primary key (order_id, line))"))
    yield engine
    engine.dispose()


def watched(engine: Engine, table: str, columns: list[str] | None = None) -> ChangeLog:
    log = open_changelog(Target.parse(engine.url.render_as_string(hide_password=False), table))
    log.install(columns)
    return log


def drain(log: ChangeLog, cursor: Cursor, batch_size: int = 100, ops: tuple[str, ...] = ALL) -> tuple[list, Cursor]:
    """Everything readable now, batch by batch, advancing the cursor as the tailer does."""
    out = []
    while True:
        batch = log.read(cursor.position, batch_size, ops)
        if not batch.changes:
            return out, cursor
        out.extend(batch.changes)
        moved = log.advance(cursor, log.position_after(cursor.position, batch, len(batch.changes)))
        assert moved is not None
        cursor = moved


def test_a_burst_of_thousands_in_one_transaction_is_read_once_in_order(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into orders (id, item, qty) values (:id, :item, 1)"),
                  [{"id": i, "item": f"item{i}"} for i in range(1, 5001)])
        c.execute(text("update orders set qty = 2 where id <= 500"))
        c.execute(text("delete from orders where id > 4900"))
    changes, cursor = drain(log, cursor)
    assert [c.op for c in changes] == ["INSERT"] * 5000 + ["UPDATE"] * 500 + ["DELETE"] * 100
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert changes[0].new_row == {"id": 1, "item": "item1", "qty": 1} and changes[0].new_keys == {"id": 1}
    update = changes[5000]
    assert (update.old_row["qty"], update.new_row["qty"], update.old_keys, update.new_keys) == (1, 2, {"id": 1},
                                                                                                 {"id": 1})
    assert changes[-1].old_row == {"id": 5000, "item": "item5000", "qty": 1} and changes[-1].new_row is None
    assert drain(log, cursor)[0] == []
    again = log.read_seqs([changes[0].seq, changes[5000].seq])  # a failed batch, read again to split it
    assert again == [changes[0], changes[5000]]
    assert log.trim() == 5600  # the only consumer has read everything
    assert log.watches()[0]["retained"] == 0


def test_rolled_back_changes_never_appear(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.connect() as c:
        c.execute(text("insert into orders values (1, 'kept', 1)"))
        c.execute(text("insert into orders values (2, 'undone', 1)"))
        c.rollback()
    with user_db.begin() as c:
        c.execute(text("insert into orders values (3, 'kept', 1)"))
        savepoint = c.begin_nested()
        c.execute(text("update orders set qty = 9 where id = 3"))
        savepoint.rollback()
    changes, _ = drain(log, cursor)
    assert [(c.op, c.new_row) for c in changes] == [("INSERT", {"id": 3, "item": "kept", "qty": 1})]


def test_an_update_of_the_primary_key_records_old_and_new_keys(user_db: Engine) -> None:
    log = watched(user_db, "lines")
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into lines values (1, 1, 'tea', 'a'), (1, 2, 'cake', 'b')"))
    with user_db.begin() as c:
        c.execute(text("update lines set line = 3, sku = 'scone' where order_id = 1 and line = 2"))
    changes, _ = drain(log, cursor)
    assert [c.new_keys for c in changes[:2]] == [{"order_id": 1, "line": 1}, {"order_id": 1, "line": 2}]
    moved = changes[2]
    assert moved.op == "UPDATE"
    assert moved.old_keys == {"order_id": 1, "line": 2} and moved.new_keys == {"order_id": 1, "line": 3}
    assert moved.old_row == {"order_id": 1, "line": 2, "sku": "cake", "note": "b"}
    assert moved.new_row == {"order_id": 1, "line": 3, "sku": "scone", "note": "b"}


def test_captured_columns_and_no_op_updates(user_db: Engine) -> None:
    log = watched(user_db, "lines", columns=["sku"])
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into lines values (1, 1, 'tea', 'a')"))
        c.execute(text("update lines set note = 'only the note' where order_id = 1"))  # not captured
        c.execute(text("update lines set sku = sku where order_id = 1"))  # changes nothing
        c.execute(text("update lines set sku = 'green tea' where order_id = 1"))
    changes, _ = drain(log, cursor)
    assert [c.op for c in changes] == ["INSERT", "UPDATE"]
    assert changes[0].new_row == {"order_id": 1, "line": 1, "sku": "tea"}  # keys always, then the columns
    assert changes[1].new_row == {"order_id": 1, "line": 1, "sku": "green tea"}


def test_watching_is_idempotent_and_unwatch_removes_everything(user_db: Engine) -> None:
    target = Target.parse(user_db.url.render_as_string(hide_password=False), "orders")
    log = open_changelog(target)
    assert log.install(None).changed is True
    assert log.install(None).changed is False
    assert log.install(["qty"]).changed is True  # other columns: the triggers are replaced
    assert log.install(["qty"]).changed is False
    with user_db.begin() as c:
        c.execute(text("insert into orders values (1, 'a', 1)"))
    assert log.watches()[0]["retained"] == 1
    assert log.uninstall() is True
    assert log.uninstall() is False
    with user_db.begin() as c:
        c.execute(text("insert into orders values (2, 'b', 1)"))  # no trigger left to record it
    with pytest.raises(NotWatched, match="stoker db watch"):
        log.check_watched()
    assert log.watches() == []


def test_each_consumer_reads_everything_and_trimming_waits_for_the_slowest(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    fast = log.cursor("p/fast", "trim_horizon")
    slow = log.cursor("p/slow", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into orders values (1, 'a', 1), (2, 'b', 1)"))
    seen, fast = drain(log, fast)
    assert len(seen) == 2
    assert log.trim() == 0  # slow has read nothing yet
    seen, slow = drain(log, slow, batch_size=1)
    assert len(seen) == 2 and log.trim() == 2
    # a consumer gone for longer than STALE_CONSUMER_S stops holding rows back
    with user_db.begin() as c:
        c.execute(text("update stoker_change_cursors set updated_at = 0 where consumer = 'p/slow'"))
        c.execute(text("insert into orders values (3, 'c', 1)"))
    seen, fast = drain(log, fast)
    assert len(seen) == 1 and log.trim() == 1


def test_latest_starts_after_what_is_there_and_events_filter(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    with user_db.begin() as c:
        c.execute(text("insert into orders values (1, 'before', 1)"))
    latest = log.cursor("p/latest", "latest")
    deletes = log.cursor("p/deletes", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into orders values (2, 'after', 1)"))
        c.execute(text("delete from orders where id = 1"))
    changes, _ = drain(log, latest)
    assert [(c.op, (c.new_keys or c.old_keys)) for c in changes] == [("INSERT", {"id": 2}), ("DELETE", {"id": 1})]
    changes, deletes = drain(log, deletes, ops=("DELETE",))
    assert [c.op for c in changes] == ["DELETE"]
    # reading nothing moves past the inserts it does not want, so that they can be trimmed
    batch = log.read(deletes.position, 100, ("DELETE",))
    assert batch.changes == []
    moved = log.advance(deletes, log.position_after(deletes.position, batch, 0))
    assert moved is not None and drain(log, moved, ops=ALL)[0] == []


def test_an_advance_applies_only_to_the_version_it_was_planned_on(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    cursor = log.cursor("p/audit", "trim_horizon")
    moved = log.advance(cursor, Position(after_seq=0))
    assert moved is not None and moved.version == cursor.version + 1
    assert log.advance(cursor, Position(after_seq=0)) is None  # a second, stale advance is refused


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_a_transaction_that_commits_late_is_not_skipped(user_db: Engine) -> None:
    """Sequence numbers are taken at write time: a transaction numbered below changes already
    read may commit afterwards. A cursor on the sequence alone would skip it for good."""
    log = watched(user_db, "orders")
    cursor = log.cursor("p/audit", "trim_horizon")
    slow = user_db.connect()
    slow.execute(text("insert into orders values (1, 'slow', 1)"))  # open, takes the lower number
    with user_db.begin() as c:
        c.execute(text("insert into orders values (2, 'quick', 1)"))
    first, cursor = drain(log, cursor)
    assert [c.new_keys for c in first] == [{"id": 2}]
    slow.commit()
    slow.close()
    second, cursor = drain(log, cursor)
    assert [c.new_keys for c in second] == [{"id": 1}]
    assert second[0].seq < first[0].seq


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_a_rows_changes_from_concurrent_transactions_keep_their_order(user_db: Engine) -> None:
    log = watched(user_db, "orders")
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into orders values (1, 'a', 0)"))
    errors: list[BaseException] = []

    def bump(n: int) -> None:
        try:
            for _ in range(n):
                with user_db.begin() as c:
                    c.execute(text("update orders set qty = qty + 1 where id = 1"))
        except BaseException as e:  # reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=bump, args=(50,)) for _ in range(4)]
    for t in threads:
        t.start()
    seen = []
    while any(t.is_alive() for t in threads):
        batch, cursor = drain(log, cursor, batch_size=7)
        seen.extend(batch)
        time.sleep(0.01)
    for t in threads:
        t.join()
    batch, cursor = drain(log, cursor)
    seen.extend(batch)
    assert not errors
    assert [c.new_row["qty"] for c in seen] == list(range(0, 201))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_binary_values_are_hex_text(user_db: Engine) -> None:
    with user_db.begin() as c:
        c.execute(text("create table files (name text primary key, data blob)"))
    log = watched(user_db, "files")
    cursor = log.cursor("p/audit", "trim_horizon")
    with user_db.begin() as c:
        c.execute(text("insert into files values ('a', :d)"), {"d": b"\x00\xff"})
    changes, _ = drain(log, cursor)
    assert changes[0].new_row == {"name": "a", "data": "\\x00ff"}


def test_tables_without_a_primary_key_are_refused(user_db: Engine) -> None:
    with user_db.begin() as c:
        c.execute(text("create table loose (a integer, b text)"))
    log = open_changelog(Target.parse(user_db.url.render_as_string(hide_password=False), "loose"))
    with pytest.raises(Exception, match="no primary key"):
        log.install(None)
    with pytest.raises(Exception, match="no such table"):
        open_changelog(Target.parse(user_db.url.render_as_string(hide_password=False), "nope")).install(None)
