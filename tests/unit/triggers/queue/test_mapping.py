"""The queue trigger: its manifest entry (defaults, errors that name the key) and its batches."""

from __future__ import annotations

import pytest

from stoker.errors import ConfigError
from stoker.platform.envelope import SYNC_PAYLOAD_LIMIT
from stoker.platform.manifest import parse_manifest
from stoker.triggers.base import TriggerBinding
from stoker.triggers.queue.mapping import MappingSettings, split_to_fit
from stoker.triggers.queue.messages import Message, Received
from stoker.triggers.queue.records import batch_payload


def manifest(trigger: str, function: str = "") -> str:
    return f'[function]\nname = "c"\n{function}\n[[triggers]]\ntype = "queue"\n{trigger}\n'


def test_defaults() -> None:
    (t,) = parse_manifest(manifest('queue = "orders"')).triggers
    assert t == {"type": "queue", "queue": "orders", "batch_size": 10, "batch_window": 0.0, "max_receive": 5,
                 "report_batch_item_failures": False, "enabled": True}


def test_settings_of_a_binding() -> None:
    spec = parse_manifest(manifest('queue = "orders"\nbatch_window = 0.5\nmax_concurrency = 20',
                                   "timeout = 4\nconcurrency = 3"))
    binding = TriggerBinding(function="c", index=0, config=spec.triggers[0], spec=spec.to_json())
    s = MappingSettings.of(binding)
    assert s.visibility_ms == 24_000  # 6 x the function's timeout
    assert s.max_concurrency == 3  # never more batches than the function may run
    assert s.batch_window == 0.5


@pytest.mark.parametrize("trigger, message", [
    ("", "queue is missing"),
    ('queue = "bad name"', "not a valid queue name"),
    ('queue = "q"\nbatch_size = 0', "batch_size = 0 is not valid"),
    ('queue = "q"\nbatch_size = 10001', "batch_size"),
    ('queue = "q"\nbatch_window = 301', "batch_window"),
    ('queue = "q"\nmax_receive = "3"', "max_receive"),
    ('queue = "q"\nreport_batch_item_failures = 1', "true or false"),
    ('queue = "q"\nbatch_sise = 5', "unknown key 'batch_sise'"),
])
def test_bad_entries_name_the_key(trigger: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        parse_manifest(manifest(trigger))
    assert "trigger #1 (queue)" in e.value.message


def test_a_batch_is_cut_to_fit_one_synchronous_call() -> None:
    body = b'"' + b"x" * 250_000 + b'"'
    batch = [Received("q", f"1-{i}", Message(f"m{i}", body, 1, {}), 1, 1) for i in range(30)]
    fits, rest = split_to_fit(batch)
    assert 20 <= len(fits) < 30 and fits + rest == batch
    assert len(batch_payload(fits)) <= SYNC_PAYLOAD_LIMIT
    assert split_to_fit(batch[:3]) == (batch[:3], [])
