"""The embedded default ``Store``: one SQLite file in WAL mode.

Writes are batched: one ``BEGIN IMMEDIATE`` transaction and one ``executemany`` per call, never a
commit per event. With ``synchronous="FULL"`` a commit is on disk (fsync) before ``add`` returns;
``"NORMAL"`` survives a crash of the process but may lose the last commits on power loss.

Threads: safe to share. Writes go through one connection under one lock; reads (``counts``,
``events``...) through a second connection with its own lock, so a dashboard query never holds up
intake (WAL lets readers and the writer run side by side). Every call blocks, a commit waits for
fsync: from asyncio, call it with ``asyncio.to_thread``. Processes: any number may read, but only
one may deliver from a file (``release_in_flight`` takes back what another one holds).

The file format (schema, version checks, row encoding) lives in ``sqlite_schema`` (house rule:
modules under ~300 lines); ``SCHEMA_VERSION`` and ``APPLICATION_ID`` are re-exported here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from leadrelay.delivery.sqlite_schema import (
    APPLICATION_ID,
    INSERT,
    RECORD,
    SCHEMA_VERSION,
    decode_record,
    encode_completion,
    encode_row,
    init_schema,
    open_connection,
)
from leadrelay.delivery.store import (
    REPLAYABLE_STATES,
    Claimed,
    Counts,
    EventRecord,
    Incoming,
    OriginalPolicy,
    Store,
    StoreError,
    decode_notes,
    encode_payload,
)
from leadrelay.outcome import Delivery, Payload, State

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

_KEYS: Final = (
    "SELECT key, id FROM events WHERE key != '' AND key IN (SELECT value FROM json_each(?))"
)
_CLAIM: Final = (
    "UPDATE events SET state = 'in_flight' WHERE id IN (SELECT id FROM events"
    " WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
    " RETURNING next_attempt_at, id, key, source_event, event_name, lead_id, event_time,"
    " attempts, payload, notes"
)
_OPEN: Final = "state IN ('queued', 'in_flight')"
_COMPLETE: Final = (
    "UPDATE events SET state = ?, updated_at = ?, next_attempt_at = ?, attempts = attempts + ?,"
    " reason = ?, message = ?, code = ?, subcode = ?, fbtrace_id = ?, response = ?"
    f" WHERE id = ? AND {_OPEN}"
)
_RETRY: Final = (
    "UPDATE events SET state = 'queued', next_attempt_at = ?, updated_at = ?,"
    " attempts = attempts + ?, reason = ?, message = ?, code = NULL, subcode = NULL,"
    f" fbtrace_id = NULL WHERE id = ? AND {_OPEN}"
)
_REPLAYABLE: Final = "state IN ({})".format(", ".join(f"'{s.value}'" for s in REPLAYABLE_STATES))
_RESET: Final = (
    "state = 'queued', next_attempt_at = ?, updated_at = ?, attempts = 0, reason = NULL,"
    " message = NULL, field = NULL, value = NULL, code = NULL, subcode = NULL,"
    " fbtrace_id = NULL, response = NULL"
)
_REQUEUE: Final = (
    f"UPDATE events SET {_RESET} WHERE id = ? AND {_REPLAYABLE} AND payload IS NOT NULL"
)
_REQUEUE_WITH: Final = (
    f"UPDATE events SET {_RESET}, source_event = ?, event_name = ?, lead_id = ?, event_time = ?,"
    f" payload = ?, notes = ? WHERE id = ? AND {_REPLAYABLE}"
)
# The unary + keeps the planner on the primary key, so each chunk goes on from the last id.
_PURGEABLE: Final = (
    "SELECT id FROM events WHERE id > ? AND +state = 'delivered' AND +updated_at < ?{} ORDER BY id"
    " LIMIT ?"
)
_PURGE_CHUNK: Final = 5000  # rows per transaction, so intake is not held up by a big purge


class SQLiteStore(Store):
    """``Store`` on a SQLite file (created with its schema on first open).

    ``original_policy`` applies to the events as received: ``keep`` them, ``redact`` the values
    under ``user`` (consent_categories stays), or ``drop`` them. Access tokens are never stored.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        original_policy: OriginalPolicy = "keep",
        busy_timeout_s: float = 10.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if original_policy not in ("keep", "redact", "drop"):
            raise ValueError(
                f"original_policy must be 'keep', 'redact' or 'drop', got {original_policy!r}"
            )
        self.path = str(path)
        self._policy: OriginalPolicy = original_policy
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._closed = False
        opened: list[sqlite3.Connection] = []
        try:
            self._writer = open_connection(self.path, busy_timeout_s, opened)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {synchronous}")
            init_schema(self._writer, self.path)
            if self.path == ":memory:" or self.path.startswith("file::memory:"):
                self._reader, self._read_lock = self._writer, self._write_lock
            else:
                self._reader = open_connection(self.path, busy_timeout_s, opened)
                self._reader.execute("PRAGMA query_only = ON")
                self._read_lock = threading.Lock()
        except BaseException as exc:
            for conn in opened:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"cannot open the event store {self.path}: {exc}") from exc
            raise

    @contextmanager
    def _writing(self, *, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._closed:
                raise StoreError(f"the event store {self.path} is closed")
            conn = self._writer
            relax = not fsync and self._synchronous == "FULL"
            if relax:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                if relax:
                    conn.execute("PRAGMA synchronous = FULL")

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

    def add(self, items: Sequence[Incoming]) -> list[int]:
        """See ``Store.add``."""
        if not items:
            return []
        rows = [encode_row(item, self._policy) for item in items]  # encode before taking the lock
        keys = [item.outcome.key for item in items]
        ids: list[int] = []
        new: list[tuple[Any, ...]] = []
        with self._writing() as conn:
            known: dict[str, int] = dict(conn.execute(_KEYS, (orjson.dumps(keys),)))
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            next_id = seq[0] + 1 if seq else 1
            for key, row in zip(keys, rows, strict=True):
                if key:
                    found = known.get(key)
                    if found is not None:
                        ids.append(found)
                        continue
                    known[key] = next_id
                ids.append(next_id)
                new.append((next_id, *row))
                next_id += 1
            conn.executemany(INSERT, new)
        return ids

    def claim(self, limit: int, now: float) -> list[Claimed]:
        """See ``Store.claim``."""
        if limit < 1:
            return []
        # No fsync: a claim lost to a power cut leaves the rows QUEUED, which is what
        # release_in_flight would make of them anyway; the next durable commit syncs it.
        with self._writing(fsync=False) as conn:
            rows = conn.execute(_CLAIM, (now, limit)).fetchall()
        rows.sort()  # RETURNING has no order; claim order is (next_attempt_at, id)
        return [
            Claimed(
                r[1],
                Payload(r[2], r[3], r[4], r[5], r[6], orjson.loads(r[8]), decode_notes(r[9])),
                r[7],
            )
            for r in rows
        ]

    def complete(self, results: Sequence[tuple[int, Delivery]], now: float) -> None:
        """See ``Store.complete``."""
        rows = [encode_completion(id_, d, now) for id_, d in results]  # validates before writing
        if rows:
            with self._writing() as conn:
                conn.executemany(_COMPLETE, rows)

    def retry_later(
        self,
        ids: Sequence[int],
        next_attempt_at: float,
        reason: str,
        message: str | None,
        *,
        attempts: int = 1,
        now: float | None = None,
    ) -> None:
        """See ``Store.retry_later``."""
        at = time.time() if now is None else now
        rows = [(next_attempt_at, at, attempts, reason, message, i) for i in ids]
        if rows:
            with self._writing() as conn:
                conn.executemany(_RETRY, rows)

    def release_in_flight(self) -> int:
        """See ``Store.release_in_flight``."""
        with self._writing() as conn:
            return conn.execute(
                "UPDATE events SET state = 'queued' WHERE state = 'in_flight'"
            ).rowcount

    def counts(self, since: float | None = None) -> Counts:
        """See ``Store.counts``."""
        low = float("-inf") if since is None else since
        by_state = {s.value: 0 for s in State}
        by_reason: dict[tuple[str, str], int] = {}
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT state, reason, count(*) FROM events WHERE updated_at >= ?"
                " GROUP BY state, reason",
                (low,),
            ).fetchall()
            backlog = conn.execute(
                f"SELECT state, count(*), min(received_at) FROM events WHERE {_OPEN} GROUP BY state"
            ).fetchall()
        for state, reason, n in rows:
            by_state[state] = by_state.get(state, 0) + n
            if reason is not None:
                by_reason[(state, reason)] = n
        current = {state: (n, oldest) for state, n, oldest in backlog}
        queued, oldest = current.get(State.QUEUED.value, (0, None))
        return Counts(
            by_state, by_reason, queued, current.get(State.IN_FLIGHT.value, (0,))[0], oldest
        )

    def timeline(self, since: float, bucket_s: int) -> list[tuple[float, dict[str, int]]]:
        """See ``Store.timeline``."""
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        out: list[tuple[float, dict[str, int]]] = []
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT CAST(updated_at / ?1 AS INTEGER) AS b, state, count(*) FROM events"
                " WHERE updated_at >= ?2 GROUP BY b, state ORDER BY b",
                (bucket_s, since),
            )
            for b, state, n in rows:
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
            ("id > ?", after_id),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"{RECORD} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id LIMIT ?"
        with self._reading() as conn:
            return [decode_record(r) for r in conn.execute(sql, (*args, max(0, limit)))]

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """See ``Store.get``."""
        arg: int | str
        if isinstance(id_or_key, str):
            sql, arg = f"{RECORD} WHERE key = ? AND key != ''", id_or_key
        else:
            sql, arg = f"{RECORD} WHERE id = ?", int(id_or_key)
        with self._reading() as conn:
            row = conn.execute(sql, (arg,)).fetchone()
        return None if row is None else decode_record(row)

    def requeue(
        self,
        ids: Sequence[int],
        payloads: Sequence[Payload] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """See ``Store.requeue``."""
        at = time.time() if now is None else now
        rows: list[tuple[Any, ...]]
        if payloads is None:
            sql, rows = _REQUEUE, [(at, at, i) for i in ids]
        else:
            if len(payloads) != len(ids):
                raise ValueError(f"requeue got {len(ids)} ids but {len(payloads)} payloads")
            sql, rows = _REQUEUE_WITH, []
            for i, p in zip(ids, payloads, strict=True):
                try:
                    data, notes = encode_payload(p)
                except TypeError as exc:
                    raise ValueError(
                        f"event {i}: payload cannot be encoded as JSON: {exc}"
                    ) from exc
                rows.append(
                    (at, at, p.source_event, p.event_name, p.lead_id, p.event_time, data, notes, i)
                )
        if not rows:
            return 0
        with self._writing() as conn:
            return conn.executemany(sql, rows).rowcount

    def purge(self, *, delivered_before: float, drop_originals: bool) -> int:
        """See ``Store.purge``. Works in chunks of a few thousand rows, one transaction each."""
        if drop_originals:
            select = _PURGEABLE.format(" AND (original IS NOT NULL OR payload IS NOT NULL)")
            change = "UPDATE events SET original = NULL, payload = NULL, notes = NULL WHERE id = ?"
        else:
            select, change = _PURGEABLE.format(""), "DELETE FROM events WHERE id = ?"
        total, last = 0, 0
        while True:
            with self._writing() as conn:
                ids = conn.execute(select, (last, delivered_before, _PURGE_CHUNK)).fetchall()
                if ids:
                    total += conn.executemany(change, ids).rowcount
            if len(ids) < _PURGE_CHUNK:
                return total
            last = ids[-1][0]

    def close(self) -> None:
        """See ``Store.close``. Closing twice is harmless."""
        shared = self._read_lock is self._write_lock
        with self._write_lock, nullcontext() if shared else self._read_lock:
            if self._closed:
                return
            self._closed = True
            if self._reader is not self._writer:
                self._reader.close()
            self._writer.close()
