"""The deferred sync of ``SQLiteStore``: one fsync of the write-ahead log for many commits.

``add(items, durable=False)`` commits without SQLite's fsync (``synchronous = NORMAL`` for that
commit) and ``sync`` fsyncs the write-ahead log afterwards, so one thread can go on with other work
while another waits for the disk. It is as durable as FULL once ``sync`` returned: SQLite wrote the
transaction's frames to the WAL before COMMIT returned, and fsync of any descriptor of the file
makes every write made before it durable. If a checkpoint ran in between, it synced the WAL before
copying it and the database file after (NORMAL still syncs checkpoints); SQLite restarts
(overwrites), truncates or deletes the WAL only after such a complete checkpoint, so the frames it
overwrites are durable in the database file by then. The descriptor stays on the same file: SQLite
deletes the WAL only when the last connection closes (the store's writer is open until ``close``,
which syncs first), and the store never sets ``journal_size_limit`` (a truncation would keep the
file anyway). A failed fsync may have dropped the written pages (Linux marks them clean), so a
later fsync would prove nothing: ``sync`` then fails until the store is reopened. With
``synchronous="NORMAL"`` (the user's choice) ``sync`` does nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from leadrelay.delivery.store import StoreError

__all__ = ["WalSync"]

# SQLite syncs the WAL with fdatasync where there is one: data and size, without the timestamps.
_fsync: Final = getattr(os, "fdatasync", os.fsync)


class WalSync:
    """The descriptor of one store's WAL file, the lock its fsyncs take, and the latch that keeps
    ``sync`` failing once an fsync failed (see the module docstring).

    ``fd`` is None (every commit syncs itself) until ``open`` found the file, and after ``close``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self._lock = threading.Lock()
        self._error: str | None = None

    def open(self) -> None:
        """Take a descriptor of the WAL file to fsync, so that commits may leave it to ``sync``.

        Call it only with FULL on a file (NORMAL, or memory: every commit syncs itself, or need
        not) and after a transaction was written: SQLite has created the file then, and keeps it
        until its last connection (the store's writer at the latest) closes. ``fd`` stays None
        when the file cannot be opened."""
        try:
            # not O_CREAT: a file SQLite does not use would sync nothing
            self.fd = os.open(f"{self.path}-wal", os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            self.fd = None

    def sync(self) -> None:
        """Make durable what every commit left to it that returned before this call stored: one
        fsync of the WAL file (the GIL is released once for all of it, not per row).

        Raises ``StoreError`` when the fsync fails, and from then on (see the module docstring)."""
        with self._lock:
            if self._error is not None:
                raise StoreError(self._error)
            if self.fd is None:  # closed (synced then) or every commit synced itself
                return
            try:
                _fsync(self.fd)
            except OSError as exc:
                self._error = (
                    f"cannot sync the write-ahead log of {self.path} ({exc}); "
                    "nothing more is made durable until the store is reopened"
                )
                raise StoreError(self._error) from exc

    def close(self) -> None:
        """Sync what ``sync`` has not synced yet, then close the WAL descriptor."""
        with self._lock:
            fd, self.fd = self.fd, None
            if fd is None:
                return
            try:
                if self._error is None:
                    _fsync(fd)
            except OSError as exc:
                self._error = f"cannot sync the write-ahead log of {self.path} ({exc})"
            finally:
                os.close(fd)
