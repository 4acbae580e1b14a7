"""Feeding the store from a blocking source (a file, a pipe), in chunks by size or age.

``ChunkedIntake`` is the file counterpart of the HTTP intake: it collects ``Incoming`` events and
adds them to the store in one transaction per chunk, when the chunk is full or has waited
``max_age_s`` (so a slow pipe still flows), and tells the worker there is something to deliver.
With a ``patience_s`` (a send: ``delivery.store_patience_s``), a chunk the store refuses is tried
again with backoff for that long, then the store is given up on (``StoreError``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence

import structlog

from leadrelay.delivery.store import Added, Incoming, Store, StoreError
from leadrelay.delivery.store_calls import described, given_up, retry_delay_s

log = structlog.get_logger("leadrelay.send")


class Spans:
    """A set of ids, kept as spans of consecutive ones: a chunk's new events take the next ids, so
    there is a span per chunk at most (a million events, a thousand spans). Ids found out of
    order (events an earlier run stored) are kept one by one. One thread adds (the reader, right
    after the store gave the ids), others may look up meanwhile."""

    def __init__(self) -> None:
        self._firsts: list[int] = []  # the spans, in order: each one starts past the last
        self._lasts: list[int] = []
        self._strays: set[int] = set()

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> Spans:
        """The ids of ``spans`` (first and last id; in order, none overlapping or touching)."""
        out = cls()
        for first, last in spans:
            out._firsts.append(first)
            out._lasts.append(last)
        return out

    def add(self, ids: Iterable[int]) -> None:
        firsts, lasts = self._firsts, self._lasts
        for id_ in ids:
            if lasts and id_ == lasts[-1] + 1:
                lasts[-1] = id_
            elif not lasts or id_ > lasts[-1]:
                lasts.append(id_)  # first: a look-up from another thread finds both or neither
                firsts.append(id_)
            elif id_ not in self:
                self._strays.add(id_)

    def __contains__(self, id_: object) -> bool:
        if not isinstance(id_, int):
            return False
        k = bisect_right(self._firsts, id_) - 1
        return (k >= 0 and id_ <= self._lasts[k]) or id_ in self._strays

    def merged(self) -> list[tuple[int, int]]:
        """The spans in order, none overlapping or touching another."""
        strays = ((i, i) for i in self._strays)
        return merge_spans([*zip(self._firsts, self._lasts, strict=True), *strays])

    def __bool__(self) -> bool:
        return bool(self._firsts or self._strays)


def merge_spans(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans of ids (first, last), in any order, as the fewest spans in order: none overlapping
    or touching another."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(pairs):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


class ChunkedIntake:
    """Collects incoming events and stores them in chunks; thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        size: int = 1000,
        max_age_s: float = 1.0,
        on_stored: Callable[[], None] | None = None,
        on_added: Callable[[Sequence[Incoming], Added], None] | None = None,
        patience_s: float = 0.0,
    ) -> None:
        self._store = store
        self._patience_s = patience_s
        self._gave_up: str | None = None
        self._size = size
        self.max_age_s = max_age_s
        self._on_stored = on_stored
        self._pending: list[Incoming] = []
        self._since = 0.0
        # Held while adding, so chunks reach the store in the order they were read.
        self._lock = threading.Lock()
        self.stored = 0
        self._on_added = on_added
        """Told each chunk and what the store did with it, before ``on_stored`` (a fleet's send
        learns its events' ids: ``delivery.elsewhere``)."""

    @property
    def gave_up(self) -> str | None:
        """Why the store was given up on (``patience_s`` ran out), or None."""
        return self._gave_up

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

    def flush(self, *, patient: bool = True) -> None:
        """Store whatever is pending; tried once, without ``patient``."""
        with self._lock:
            if self._pending:
                self._flush(patient=patient)

    def _flush(self, size: int | None = None, *, patient: bool = True) -> None:
        """Store the first ``size`` pending events (all of them by default)."""
        pending = self._pending
        if size is None or size >= len(pending):
            chunk, self._pending = pending, []
        else:
            chunk, self._pending = pending[:size], pending[size:]
            if self._pending:
                self._since = time.monotonic()  # what is left waits from now
        added = self._add(chunk, self._patience_s if patient else 0.0)
        self.stored += len(chunk)
        if self._on_added is not None:
            self._on_added(chunk, added)
        if self._on_stored is not None:
            self._on_stored()

    def _add(self, chunk: list[Incoming], patience_s: float) -> Added:
        """``add_new(chunk)``, tried again for ``patience_s`` while the store fails (see the
        module); a chunk given up on is not stored, and neither is any after it."""
        if self._gave_up is not None:
            raise StoreError(self._gave_up)
        since = time.monotonic()
        attempt = 0
        while True:
            try:
                return self._store.add_new(chunk)
            except (StoreError, sqlite3.Error, OSError) as exc:  # the store's, not a bug
                left = since + patience_s - time.monotonic()
                if left <= 0:
                    if patience_s > 0:
                        self._gave_up = given_up(patience_s, exc)
                        raise StoreError(self._gave_up) from exc
                    raise
                log.error("event store call failed", error=described(exc), events=len(chunk))
                time.sleep(min(retry_delay_s(attempt), left))
                attempt += 1
