"""Dropped files: `[[triggers]] type = "files"` fires a function once for every file that finishes
arriving in a folder. config.py checks the manifest table and says which files count,
watcher.py and arrivals.py tell when a file is whole, records.py keeps what fired, and
source.py ties them together. User documentation: docs/files.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoker.platform.manifest import register_trigger_type
from stoker.triggers.base import TriggerBinding, TriggerSource, register_source
from stoker.triggers.files.config import validate

if TYPE_CHECKING:
    from stoker.platform.context import PlatformContext


def _source(ctx: PlatformContext, binding: TriggerBinding) -> TriggerSource:
    from stoker.triggers.files.source import FilesSource

    return FilesSource.from_binding(ctx, binding)


register_trigger_type("files", validate)
register_source("files", _source)
