"""Reading a worker's processes from /proc: its whole tree, because a sandboxed worker's pid
may be the init of its PID namespace, with the runtime one level below."""

from __future__ import annotations


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def tree(pid: int, limit: int = 4096) -> list[int]:
    """pid and its descendants (breadth first, at most `limit`)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < limit:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children(p))
    return out


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    except OSError:
        return {}


def _kb(value: str | None) -> int:
    try:
        return int((value or "0").split()[0])
    except (ValueError, IndexError):
        return 0


def tree_memory(pid: int) -> tuple[bool, int, int]:
    """(alive, resident kB summed over the tree, the largest peak resident kB of one process)."""
    root = _status(pid)
    if not root or root.get("State", "").split()[:1] in (["Z"], ["X"]):
        return False, 0, 0
    rss, peak = 0, 0
    for p in tree(pid):
        status = root if p == pid else _status(p)
        rss += _kb(status.get("VmRSS"))
        peak = max(peak, _kb(status.get("VmHWM")))
    return True, rss, peak
