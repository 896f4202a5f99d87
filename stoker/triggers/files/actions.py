"""What happens to a file after its event's final outcome: keep, delete, or move:FOLDER.

A moved file keeps its path below the watched folder (sub-folders are created). If a
file of that name is already there, the new one gets a numbered name (`report-1.csv`,
`report-2.csv`, ...) rather than overwriting it: nothing a user dropped is lost.
"""

from __future__ import annotations

import os
import shutil


def apply_action(action: str, path: str, rel: str) -> str:
    """Apply one action to the file at `path`; returns where it went (for the log)."""
    if action == "keep":
        return path
    if action == "delete":
        os.unlink(path)
        return "(deleted)"
    if action.startswith("move:"):
        target = _free_name(os.path.join(action[5:], *rel.split("/")))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(path, target)
        return target
    raise ValueError(f"unknown file action {action!r}")


def _free_name(target: str) -> str:
    if not os.path.lexists(target):
        return target
    stem, ext = os.path.splitext(target)
    n = 1
    while os.path.lexists(f"{stem}-{n}{ext}"):
        n += 1
    return f"{stem}-{n}{ext}"
