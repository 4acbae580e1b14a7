"""The embedded default ``Store``: one SQLite file in WAL mode.

Writes are batched: one ``BEGIN IMMEDIATE`` transaction and one ``executemany`` per call, never a
commit per event. With ``synchronous="FULL"`` a commit is on disk (fsync) before ``add`` returns;
``"NORMAL"`` survives a crash of the process but may lose the last commits on power loss.

Threads: safe to share. Writes go through one connection under one lock; reads (``counts``,
``events``...) through a second connection with its own lock, so a dashboard query never holds up
intake (WAL lets readers and the writer run side by side). Every call blocks, a commit waits for
fsync: from asyncio, call it with ``asyncio.to_thread``. Processes: any number may read, but only
one may deliver from a file (``release_in_flight`` takes back what another one holds).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import orjson

from leadrelay.delivery.store import (
    FINAL_DELIVERY_STATES,
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
    keep_original,
)
from leadrelay.outcome import Delivery, Filtered, Payload, State

SCHEMA_VERSION: Final = 1
APPLICATION_ID: Final = 0x4C52454C  # "LREL": tells our files from any other SQLite database

_SCHEMA: Final = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused, even after a purge
        key TEXT NOT NULL, state TEXT NOT NULL, source_event TEXT NOT NULL,
        event_name TEXT, lead_id INTEGER, event_time INTEGER,
        received_at REAL NOT NULL, updated_at REAL NOT NULL, next_attempt_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT, message TEXT, field TEXT, value TEXT,
        code INTEGER, subcode INTEGER, fbtrace_id TEXT,
        payload BLOB, notes BLOB, original BLOB, response BLOB)""",
    "CREATE UNIQUE INDEX events_key ON events (key) WHERE key != ''",
    # claim walks (state, next_attempt_at, id) in order and stops at the limit; received_at rides
    # along so the oldest queued event is found without reading the table.
    "CREATE INDEX events_claim ON events (state, next_attempt_at, id, received_at)",
    "CREATE INDEX events_updated ON events (updated_at, state, reason)",
)

_INSERT: Final = (
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at, reason, message, field, value, code, subcode,"
    " fbtrace_id, payload, notes, original) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
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
_RECORD: Final = (
    "SELECT id, key, state, source_event, event_name, lead_id, event_time, received_at,"
    " updated_at, attempts, reason, message, field, code, subcode, fbtrace_id, payload, original,"
    " response, value, notes, next_attempt_at FROM events"
)
_CHECKPOINT_PAGES: Final = 10000
_PURGE_CHUNK: Final = 5000  # rows per transaction, so intake is not held up by a big purge


def _open_connection(
    path: str, busy_timeout_s: float, opened: list[sqlite3.Connection]
) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    opened.append(conn)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    # Event keys are random, so each event dirties its own key-index page; checkpointing every
    # ~40 MB of WAL instead of 4 MB writes a page back once for many commits (1.5x intake).
    conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
    return conn


def _init_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file must not both create it
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StoreError(f"{path} is a SQLite database but not a leadrelay store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store schema version {version}, newer than this leadrelay supports "
                f"({SCHEMA_VERSION}); upgrade leadrelay to use it"
            )
        if version == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _int64(v: int | None) -> int | None:
    # SQLite integers are 64-bit; a wild lead id on a rejected event must not fail the batch
    return v if v is None or -(2**63) <= v < 2**63 else None


# fmt: off
# Row layout of _INSERT after the id: key, state, source_event, event_name, lead_id, event_time,
# received_at, updated_at, next_attempt_at, reason, message, field, value, code, subcode,
# fbtrace_id, payload, notes, original.
def _payload_row(o: Payload, original: bytes | None, at: float) -> tuple[Any, ...]:
    try:
        data, notes = encode_payload(o)
        if _int64(o.lead_id) is None or _int64(o.event_time) is None:
            raise TypeError("lead_id or event_time does not fit in 64 bits")
    except TypeError as exc:  # not plain JSON: say so on the event instead of failing the batch
        message = f"the mapped event cannot be encoded as JSON ({exc}); it was not sent"
        return (o.key, "rejected", o.source_event, o.event_name, _int64(o.lead_id),
                _int64(o.event_time), at, at, None, "unencodable", message, None, None, None,
                None, None, None, None, original)
    return (o.key, "queued", o.source_event, o.event_name, o.lead_id, o.event_time, at, at, at,
            None, None, None, None, None, None, None, data, notes, original)


def _row(item: Incoming, policy: OriginalPolicy) -> tuple[Any, ...]:
    o, at = item.outcome, item.received_at
    original = keep_original(item.original, policy)
    if isinstance(o, Payload):
        return _payload_row(o, original, at)
    if isinstance(o, Filtered):
        return (o.key, "filtered", o.source_event, None, None, None, at, at, None, o.reason,
                o.message, None, None, None, None, None, None, None, original)
    return (o.key, "rejected", o.source_event, o.event_name, _int64(o.lead_id), None, at, at,
            None, o.reason, o.message, o.field, o.value, o.code, o.subcode, o.fbtrace_id, None,
            None, original)


def _completion(id_: int, d: Delivery, now: float) -> tuple[Any, ...]:
    if d.state not in FINAL_DELIVERY_STATES and d.state is not State.QUEUED:
        raise ValueError(f"event {id_}: cannot complete with state {d.state.value!r}")
    return (d.state.value, now, now if d.state is State.QUEUED else None, d.attempts, d.reason,
            d.message, d.code, d.subcode, d.fbtrace_id,
            orjson.dumps(d.extra) if d.extra else None, id_)
# fmt: on


def _loads(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)


# fmt: off
def _record(r: tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        id=r[0], key=r[1], state=State(r[2]), source_event=r[3], event_name=r[4], lead_id=r[5],
        event_time=r[6], received_at=r[7], updated_at=r[8], attempts=r[9], reason=r[10],
        message=r[11], field=r[12], code=r[13], subcode=r[14], fbtrace_id=r[15],
        payload=_loads(r[16]), original=_loads(r[17]), response=_loads(r[18]), value=r[19],
        notes=decode_notes(r[20]), next_attempt_at=r[21],
    )
# fmt: on


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
            self._writer = _open_connection(self.path, busy_timeout_s, opened)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {synchronous}")
            _init_schema(self._writer, self.path)
            if self.path == ":memory:" or self.path.startswith("file::memory:"):
                self._reader, self._read_lock = self._writer, self._write_lock
            else:
                self._reader = _open_connection(self.path, busy_timeout_s, opened)
                self._reader.execute("PRAGMA query_only = ON")
                self._read_lock = threading.Lock()
        except BaseException as exc:
            for conn in opened:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"cannot open the event store {self.path}: {exc}") from exc
            raise

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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
        rows = [_row(item, self._policy) for item in items]  # encode before taking the lock
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
            conn.executemany(_INSERT, new)
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
        rows = [_completion(id_, d, now) for id_, d in results]  # validates before writing
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
        sql = f"{_RECORD} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id LIMIT ?"
        with self._reading() as conn:
            return [_record(r) for r in conn.execute(sql, (*args, max(0, limit)))]

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """See ``Store.get``."""
        arg: int | str
        if isinstance(id_or_key, str):
            sql, arg = f"{_RECORD} WHERE key = ? AND key != ''", id_or_key
        else:
            sql, arg = f"{_RECORD} WHERE id = ?", int(id_or_key)
        with self._reading() as conn:
            row = conn.execute(sql, (arg,)).fetchone()
        return None if row is None else _record(row)

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
