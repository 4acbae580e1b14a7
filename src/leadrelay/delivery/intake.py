"""Feeding the store from a blocking source (a file, a pipe), in chunks by size or age.

``ChunkedIntake`` is the file counterpart of the HTTP intake: it collects ``Incoming`` events and
adds them to the store in one transaction per chunk, when the chunk is full or has waited
``max_age_s`` (so a slow pipe still flows), and tells the worker there is something to deliver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from leadrelay.delivery.store import Incoming, Store


class ChunkedIntake:
    """Collects incoming events and stores them in chunks; thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        size: int = 1000,
        max_age_s: float = 1.0,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._size = size
        self.max_age_s = max_age_s
        self._on_stored = on_stored
        self._pending: list[Incoming] = []
        self._since = 0.0
        # Held while adding, so chunks reach the store in the order they were read.
        self._lock = threading.Lock()
        self.stored = 0
        self.waiting: list[int] = []
        """Ids of events an earlier run stored and another process holds in flight
        (``Added.waiting``)."""

    def put(self, item: Incoming) -> None:
        """Add one event; stores the chunk when it is full."""
        with self._lock:
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append(item)
            if len(self._pending) >= self._size:
                self._flush()

    def put_many(self, items: Sequence[Incoming]) -> None:
        """Add events read together (``put`` for each of them, with the lock taken once)."""
        if not items:
            return
        size = self._size
        with self._lock:
            pending = self._pending
            if not pending:
                self._since = time.monotonic()
            pending += items
            while len(self._pending) >= size:
                self._flush(size)

    def flush_if_old(self) -> None:
        """Store a partial chunk that has waited ``max_age_s`` (called from a timer)."""
        with self._lock:
            if self._pending and time.monotonic() - self._since >= self.max_age_s:
                self._flush()

    def flush(self) -> None:
        """Store whatever is pending."""
        with self._lock:
            if self._pending:
                self._flush()

    def _flush(self, size: int | None = None) -> None:
        """Store the first ``size`` pending events (all of them by default)."""
        pending = self._pending
        if size is None or size >= len(pending):
            chunk, self._pending = pending, []
        else:
            chunk, self._pending = pending[:size], pending[size:]
            if self._pending:
                self._since = time.monotonic()  # what is left waits from now
        added = self._store.add_new(chunk)
        self.stored += len(chunk)
        self.waiting += added.waiting
        if self._on_stored is not None:
            self._on_stored()
