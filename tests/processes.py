"""The processes a test started, as Linux shows them in /proc: what runs below a process, each
one's parent, and whether it still runs."""

from __future__ import annotations

import contextlib
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux: /proc/<pid>/task/*/children)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        todo.append(int(child))
    return found


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def parent(pid: int) -> int:
    """The pid of ``pid``'s parent."""
    return int(_stat(pid)[1])


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie has ended (reaped by init once its parent is gone)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False
