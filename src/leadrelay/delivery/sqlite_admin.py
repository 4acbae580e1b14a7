"""The SQLite store's operator commands: replay (``requeue``) and retention (``purge``).

Split out of ``sqlite_store`` (house rule: modules under ~300 lines); ``SQLiteStore.requeue`` and
``SQLiteStore.purge`` call these with the store's ``_writing`` (one write transaction under the
store's lock, as every write there).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from leadrelay.delivery.sqlite_sql import (
    BODIES_PURGEABLE,
    PURGEABLE,
    REPLACE_PAYLOAD,
    REQUEUE,
    REQUEUE_WITH,
)
from leadrelay.delivery.store import encode_payload
from leadrelay.outcome import Payload

Writing = Callable[[], AbstractContextManager[sqlite3.Connection]]
"""Opens a write transaction (``SQLiteStore._writing``): committed when the block ends."""


def requeue_rows(
    writing: Writing,
    ids: Sequence[int],
    payloads: Sequence[Payload] | None,
    at: float,
    *,
    forget: Callable[[int], None],
) -> int:
    """``Store.requeue`` at time ``at``; ``forget`` is told each id whose payload is replaced."""
    if payloads is None:
        if not ids:
            return 0
        with writing() as conn:
            return conn.executemany(REQUEUE, [(at, at, i) for i in ids]).rowcount
    if len(payloads) != len(ids):
        raise ValueError(f"requeue got {len(ids)} ids but {len(payloads)} payloads")
    rows: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
    for i, p in zip(ids, payloads, strict=True):
        try:
            data, notes = encode_payload(p)
        except TypeError as exc:
            raise ValueError(f"event {i}: payload cannot be encoded as JSON: {exc}") from exc
        event = (at, at, p.source_event, p.event_name, p.lead_id, p.event_time, i)
        rows.append((event, (i, data, notes)))
    queued = 0
    if rows:
        with writing() as conn:
            for event, body in rows:  # the payload only of events that were replayable
                if conn.execute(REQUEUE_WITH, event).rowcount:
                    conn.execute(REPLACE_PAYLOAD, body)
                    forget(body[0])
                    queued += 1
    return queued


def purge_state(
    writing: Writing, delivered_before: float, drop_originals: bool, *, chunk: int, state: str
) -> int:
    """``Store.purge`` of events in ``state``, in chunks of ``chunk`` rows, one transaction
    each."""
    changes: tuple[str, ...]
    start: float
    if drop_originals:
        select, changes, start = BODIES_PURGEABLE, ("DELETE FROM bodies WHERE id = ?",), 0
    else:
        select, start = PURGEABLE, -math.inf
        changes = ("DELETE FROM bodies WHERE id = ?", "DELETE FROM events WHERE id = ?")
    total = 0
    while True:
        with writing() as conn:
            rows = conn.execute(select, (start, delivered_before, state, chunk)).fetchall()
            if rows:
                ids = [(id_,) for id_, _ in rows]
                counted = [conn.executemany(change, ids).rowcount for change in changes]
                total += counted[-1]  # the events (or bodies) affected
        if len(rows) < chunk:
            return total
        start = rows[-1][1]
