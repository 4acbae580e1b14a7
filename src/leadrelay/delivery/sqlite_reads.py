"""The read side of ``SQLiteStore``: ``counts``, ``timeline``, ``events`` and ``get``.

Reads go through the store's second connection under its own lock, so a dashboard query never
holds up intake (WAL lets readers and the writer run side by side); in memory there is one
connection, and one lock, for both. Split out of ``sqlite_store`` (house rule: modules under ~300
lines); the statements are in ``sqlite_sql``, the record layout in ``sqlite_schema``
and ``sqlite_rows``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import orjson

from leadrelay.delivery.sqlite_rows import decode_record
from leadrelay.delivery.sqlite_schema import RECORD, RECORD_LEAN
from leadrelay.delivery.sqlite_sql import BACKLOG, COUNTS, TIMELINE
from leadrelay.delivery.store import Counts, EventRecord, Stage, StoreError
from leadrelay.outcome import State

__all__ = ["SQLiteReads"]

_AMONG: Final = "(SELECT value FROM json_each(?))"  # ids given as one JSON array


class SQLiteReads:
    """The ``Store`` queries of ``SQLiteStore``, which opens the connections and locks below."""

    path: str
    _closed: bool
    _writer: sqlite3.Connection
    _reader: sqlite3.Connection
    _read_lock: threading.Lock

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            if self._closed:
                raise StoreError(f"the event store {self.path} is closed")
            conn = self._reader
            if conn is self._writer:
                yield conn
                return
            conn.execute("BEGIN")  # one snapshot for the queries of one call
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def counts(self, since: float | None = None) -> Counts:
        """See ``Store.counts``."""
        low = float("-inf") if since is None else since
        by_state = {s.value: 0 for s in State}
        by_reason: dict[tuple[str, str], int] = {}
        with self._reading() as conn:
            rows = conn.execute(COUNTS, (low,)).fetchall()
            backlog = conn.execute(BACKLOG).fetchall()
        for state, reason, n in rows:
            by_state[state] = by_state.get(state, 0) + n
            if reason is not None:
                by_reason[(state, reason)] = n
        current = {state: n for state, n, _ in backlog}
        # The oldest event not delivered yet, waiting or being sent (tried again and again in an
        # outage: "oldest waiting" fell to nothing while its batch was in flight).
        oldest = min((at for _, _, at in backlog if at is not None), default=None)
        return Counts(
            by_state,
            by_reason,
            current.get(State.QUEUED.value, 0),
            current.get(State.IN_FLIGHT.value, 0),
            oldest,
        )

    def timeline(self, since: float, bucket_s: int) -> list[tuple[float, dict[str, int]]]:
        """See ``Store.timeline``."""
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        out: list[tuple[float, dict[str, int]]] = []
        with self._reading() as conn:
            for b, state, n in conn.execute(TIMELINE, (bucket_s, since)):
                start = float(b * bucket_s)
                if not out or out[-1][0] != start:
                    out.append((start, {}))
                out[-1][1][state] = n
        return out

    def events(
        self,
        *,
        states: Sequence[State] | None = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after_id: int | None = None,
        bodies: bool = True,
    ) -> list[EventRecord]:
        """See ``Store.events``."""
        where: list[str] = []
        args: list[Any] = []
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(State(s).value for s in states)
        for clause, value in (
            ("reason = ?", reason),
            ("updated_at >= ?", since),
            ("e.id > ?", after_id),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        select = RECORD if bodies else RECORD_LEAN
        sql = f"{select} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY e.id LIMIT ?"
        with self._reading() as conn:
            return [decode_record(r) for r in conn.execute(sql, (*args, max(0, limit)))]

    def last_id(self) -> int:
        """See ``Store.last_id`` (AUTOINCREMENT's counter: ids are never given twice)."""
        with self._reading() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def stages_of(self, ids: Sequence[int]) -> dict[int, Stage]:
        """See ``Outcomes.stages_of``."""
        sql = (
            "SELECT id, state, event_name, updated_at, source_event, attempts FROM events"
            f" WHERE id IN {_AMONG}"
        )
        with self._reading() as conn:
            rows = conn.execute(sql, (orjson.dumps(ids),)).fetchall()
        return {row[0]: Stage(State(row[1]), *row[2:]) for row in rows}

    def outcomes(self, ids: Sequence[int]) -> list[EventRecord]:
        """See ``Outcomes.outcomes`` (records without the bodies)."""
        with self._reading() as conn:
            rows = conn.execute(f"{RECORD_LEAN} WHERE e.id IN {_AMONG}", (orjson.dumps(ids),))
            found = {row[0]: decode_record(row) for row in rows}
        return [found[i] for i in ids if i in found]

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """See ``Store.get``."""
        arg: int | str
        if isinstance(id_or_key, str):
            sql, arg = f"{RECORD} WHERE key = ? AND key != ''", id_or_key
        else:
            sql, arg = f"{RECORD} WHERE e.id = ?", int(id_or_key)
        with self._reading() as conn:
            row = conn.execute(sql, (arg,)).fetchone()
        return None if row is None else decode_record(row)
