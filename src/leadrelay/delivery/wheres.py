"""Where each event a send stored was read, by id, until its ``--report`` row is written.

A send far ahead of a slow Meta has stored every event it read before most of them are settled,
and each one's row needs its ``where`` ("crm.ndjson line 812345") then. Held in a dict, a
million of them took 130 MB. ``Wheres`` keeps ``keep`` of them in memory and the rest in a
temporary SQLite database (SQLite deletes its file when the connection closes, or at once on
Unix: a killed send leaves nothing behind), so memory does not grow with the file. A send that
keeps up with Meta holds its 10,000 payloads in memory and the batches in flight at most: it
never opens the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Final

import orjson

KEEP: Final = 50_000
"""Entries held in memory (about 8 MB of them); the others wait on disk."""
_AMONG: Final = "id IN (SELECT value FROM json_each(?))"
_TAKEN: Final = f"SELECT id, at FROM wheres WHERE {_AMONG}"
_FORGET: Final = f"DELETE FROM wheres WHERE {_AMONG}"


class Wheres:
    """``id -> where`` of the events a send stored: put by the reader's thread, taken by the
    worker's as their results come (each taken once), and at the end by the accounting."""

    def __init__(self, keep: int | None = None) -> None:
        self._keep = KEEP if keep is None else keep
        self._memory: dict[int, str] = {}
        self._disk: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._memory) + self.on_disk

    @property
    def on_disk(self) -> int:
        """How many wait on disk (0 until the memory's ``keep`` is full)."""
        with self._lock:
            if self._disk is None:
                return 0
            count: int = self._disk.execute("SELECT count(*) FROM wheres").fetchone()[0]
            return count

    def put(self, pairs: Iterable[tuple[int, str]]) -> None:
        """Remember where each event of ``pairs`` (its id, where) was read."""
        memory = self._memory
        room = self._keep - len(memory)
        extra: list[tuple[int, str]] = []
        for id_, where in pairs:
            if room > 0:
                memory[id_] = where
                room -= 1
            else:
                extra.append((id_, where))
        if extra:
            with self._lock:
                # IGNORE: an id put twice keeps where it was read first.
                self._open().executemany("INSERT OR IGNORE INTO wheres VALUES (?, ?)", extra)

    def take(self, ids: Sequence[int]) -> list[str | None]:
        """Where each of ``ids`` was read (None: not known), forgetting them."""
        memory = self._memory
        disk = self._disk  # once open, open to the end; a put holds the lock while it stores
        if not memory and disk is None:  # nothing put (no report): a batch each, not an id each
            return [None] * len(ids)
        found = [memory.pop(id_, None) for id_ in ids]
        if disk is None:
            return found
        missing = [id_ for id_, where in zip(ids, found, strict=True) if where is None]
        if not missing:
            return found
        among = (orjson.dumps(missing),)  # one parameter, any number of ids (as sqlite_sql)
        with self._lock:
            # (Not DELETE ... RETURNING: SQLite 3.35 and later only.)
            stored: dict[int, str] = dict(disk.execute(_TAKEN, among))
            disk.execute(_FORGET, among)
        pairs = zip(ids, found, strict=True)
        return [stored.get(id_) if where is None else where for id_, where in pairs]

    def _open(self) -> sqlite3.Connection:
        if self._disk is None:
            # "": a private temporary database on disk; only its page cache (2 MB) is in memory.
            disk = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            disk.execute("PRAGMA journal_mode = OFF")
            disk.execute("PRAGMA synchronous = OFF")
            disk.execute("CREATE TABLE wheres (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
            self._disk = disk
        return self._disk
