"""Ledger tables: `invocations` (one row per invocation) and `attempts` (one per try)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Float, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from stoker.platform.db import Base, UTCDateTime


class Invocation(Base):
    __tablename__ = "invocations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    function: Mapped[str] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(16))
    qualifier: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str | None] = mapped_column(String(32))
    invocation_type: Mapped[str | None] = mapped_column(String(8))
    received_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    billed_ms: Mapped[int | None] = mapped_column(Integer)
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer)
    init_ms: Mapped[float | None] = mapped_column(Float)
    cold: Mapped[bool | None] = mapped_column(Boolean)
    attempts: Mapped[int | None] = mapped_column(Integer)
    node: Mapped[str | None] = mapped_column(String(128))
    error_type: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)
    payload_size: Mapped[int | None] = mapped_column(Integer)
    result_size: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    result: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: orders records of one invocation (see stoker.platform.ledger.records.rank)
    rank: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_invocations_function_received", "function", "received_at"),
        Index("ix_invocations_received", "received_at"),
        Index("ix_invocations_status_received", "status", "received_at"),
        # 0003: the other filters (a partial index for cold starts, the rare rows)
        Index("ix_invocations_trigger_received", "trigger", "received_at"),
        Index("ix_invocations_node_received", "node", "received_at"),
        Index("ix_invocations_cold_received", "received_at", sqlite_where=text("cold = 1"),
              postgresql_where=text("cold")),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    invocation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str | None] = mapped_column(String(128))
    worker: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    init_ms: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(32))
    error_type: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)


#: the fields of an invocation row that the API and CLI show, in order
ROW_FIELDS = (
    "id", "function", "version", "qualifier", "status", "trigger", "invocation_type", "received_at",
    "started_at", "ended_at", "duration_ms", "billed_ms", "memory_mb", "max_memory_mb", "init_ms",
    "cold", "attempts", "node", "error_type", "error_message", "payload_size", "result_size",
)
