"""Invocation ids: UUIDs (version 7) that sort by the time they were made."""

from __future__ import annotations

import uuid

from stoker.platform.envelope import new_invocation_id


def test_ids_are_version_7_uuids_and_unique() -> None:
    ids = [new_invocation_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        u = uuid.UUID(text)
        assert str(u) == text and u.version == 7 and u.variant == uuid.RFC_4122


def test_ids_sort_by_the_millisecond_they_were_made() -> None:
    made = [new_invocation_id(at_ms=ms) for ms in (1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000)]
    assert made == sorted(made)
    assert made[0].startswith("018bcfe5-6800-7")  # 1_700_000_000_000 ms is 0x018bcfe56800
