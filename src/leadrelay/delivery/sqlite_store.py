"""The embedded default ``Store``: one SQLite file in WAL mode.

Writes are batched: one ``BEGIN IMMEDIATE`` transaction per call, rows inserted 100 to a
statement (``insert_rows``), never a commit per event. With ``synchronous="FULL"`` a commit is on
disk (fsync) before ``add`` returns; ``"NORMAL"`` survives a crash of the process but may lose
the last commits on power loss.

Threads: safe to share. Writes go through one connection under one lock; reads (``counts``,
``events``..., in ``sqlite_reads``) through a second connection with its own lock, so a dashboard
query never holds up intake (WAL lets readers and the writer run side by side). Every call blocks,
a commit waits for fsync: from asyncio, call it with ``asyncio.to_thread``. Processes: any number
may read, but only one may deliver from a file (``release_in_flight`` takes back what another one
holds).

Deferred sync (``add(items, durable=False)``, then ``sync()``): the commit leaves out SQLite's fsync
(``synchronous = NORMAL`` for that commit) and ``sync`` fsyncs the write-ahead log afterwards; why
that is as durable as FULL once ``sync`` returned, and why a failed fsync fails every later
``sync``, is told in ``wal_sync``, which holds the WAL descriptor. With ``synchronous="NORMAL"``
(the user's choice) ``sync`` does nothing. ``claim`` syncs as well when such adds came before it,
so an event is durable before any request carries it, whoever else calls ``sync`` and when.

This module opens the store and holds its transactions (``_writing``), the delivery side (``claim``,
``complete``, ``retry_later``...) and ``close``. The writes that store events (``add``, ``record``,
``record_delivered``, ``sync``) are in ``sqlite_writes``, the reads in ``sqlite_reads``, the file
format (schema, migration) in ``sqlite_schema``, its rows in ``sqlite_rows``, the statements in
``sqlite_sql`` (house rule: modules under ~300 lines); ``SCHEMA_VERSION`` and
``APPLICATION_ID`` are re-exported here. A payload claimed is handed over as the bytes stored
(``EncodedPayload``): delivery sends them as they are, without decoding and encoding them again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Final, Literal

import orjson

from leadrelay.delivery.sqlite_admin import purge_state, requeue_rows
from leadrelay.delivery.sqlite_reads import SQLiteReads
from leadrelay.delivery.sqlite_rows import decode_claimed, encode_completions
from leadrelay.delivery.sqlite_schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    init_schema,
    journal_in_memory,
    open_connection,
    writer_cache,
)
from leadrelay.delivery.sqlite_sql import (
    CLAIM,
    COMPLETE,
    DROP_DELIVERED,
    MARK_IN_FLIGHT,
    PAYLOADS,
    RETRY,
)
from leadrelay.delivery.sqlite_writes import SQLiteWrites
from leadrelay.delivery.store import (
    Claimed,
    OriginalPolicy,
    Store,
    StoreError,
    purgeable,
)
from leadrelay.delivery.wal_sync import WalSync
from leadrelay.outcome import Delivery, Payload, State

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

_PURGE_CHUNK: Final = 5000  # rows per transaction, so intake is not held up by a big purge


class SQLiteStore(SQLiteWrites, SQLiteReads, Store):
    """``Store`` on a SQLite file (created with its schema on first open).

    ``original_policy`` applies to the events as received: ``keep`` them, ``redact`` the values
    under ``user`` (consent_categories stays), or ``drop`` them. Access tokens are never stored.
    ``drop_delivered_bodies`` drops an event's payload and original as soon as ``complete``
    records it delivered, what retention with ``drop_originals_after_delivery`` does later
    (``send`` uses it: dropped as it goes rather than in one long purge at the end).
    ``remember_unclaimed``: how many of the payloads it adds to keep in memory until it claims
    them, sparing claim reading them back (for a process that delivers what it stores).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        original_policy: OriginalPolicy = "keep",
        busy_timeout_s: float = 10.0,
        drop_delivered_bodies: bool = False,
        remember_unclaimed: int = 0,
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
        self._drop_delivered = drop_delivered_bodies
        # Encoded payloads (and notes) this store added and has not claimed yet, by id: claim
        # takes them from here rather than reading them back. Safe as a queued event's payload
        # never changes (requeue replaces only those of final events) and only one process
        # claims from a file. Bounded: beyond it, claim reads the payloads from the file.
        self._unclaimed: dict[int, tuple[bytes, bytes | None]] = {}
        self._remember = max(0, remember_unclaimed)
        self._write_lock = threading.Lock()
        # add(durable=False) transactions counted (under the write lock, so a claim that sees
        # their rows sees them counted), and how many of them a sync made by a claim covers: a
        # claim that may hand out rows of an add not covered yet syncs before it returns, so no
        # event is sent before it is durable (see ``claim``).
        self._deferred = 0
        self._synced = 0
        self._closed = False
        self._wal = WalSync(self.path)
        opened: list[sqlite3.Connection] = []
        try:
            self._writer = open_connection(self.path, busy_timeout_s, opened)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {synchronous}")
            init_schema(self._writer, self.path)
            journal_in_memory(self._writer)
            writer_cache(self._writer)
            # What the file's other writers have committed, as of now (see ``_only_ours``).
            self._data_version = self._writer.execute("PRAGMA data_version").fetchone()[0]
            self._foreign_writes = False
            if self.path == ":memory:" or self.path.startswith("file::memory:"):
                self._reader, self._read_lock = self._writer, self._write_lock
            else:
                self._reader = open_connection(self.path, busy_timeout_s, opened)
                self._reader.execute("PRAGMA query_only = ON")
                self._read_lock = threading.Lock()
            # With NORMAL, or in memory, every commit syncs itself (or need not). init_schema
            # wrote a transaction, so SQLite has created the WAL file and keeps it until its last
            # connection (our writer at the latest) closes.
            if synchronous == "FULL" and self._reader is not self._writer:
                self._wal.open()
        except BaseException as exc:
            for conn in opened:
                conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"cannot open the event store {self.path}: {exc}") from exc
            raise

    @contextmanager
    def _holding_writer(self) -> Iterator[sqlite3.Connection]:
        """The writer connection, under the write lock, outside any transaction."""
        with self._write_lock:
            if self._closed:
                raise StoreError(f"the event store {self.path} is closed")
            yield self._writer

    @contextmanager
    def _writing(self, *, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        with self._holding_writer() as conn:
            relax = not fsync and self._synchronous == "FULL"
            if relax:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:  # FULL again whatever happens, a BEGIN that fails (the file locked) included
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

    def claim(self, limit: int, now: float) -> list[Claimed]:
        """See ``Store.claim``."""
        if limit < 1:
            return []
        # No fsync: a claim lost to a power cut leaves the rows QUEUED, which is what
        # release_in_flight would make of them anyway; the next durable commit syncs it.
        with self._writing(fsync=False) as conn:
            rows = conn.execute(CLAIM, (now, limit)).fetchall()  # in claim order
            if rows:
                conn.execute(MARK_IN_FLIGHT, (orjson.dumps([r[1] for r in rows]),))
            take = self._unclaimed.pop
            bodies = {r[1]: body for r in rows if (body := take(r[1], None)) is not None}
            if len(bodies) < len(rows):
                missing = orjson.dumps([r[1] for r in rows if r[1] not in bodies])
                for id_, data, notes in conn.execute(PAYLOADS, (missing,)):
                    bodies[id_] = (data, notes)
            # Every add counted here has committed (or failed): they count under this lock.
            needed = self._deferred if rows else 0
        if needed > self._synced:
            # Rows an add(durable=False) committed may be among these: one fsync, after this
            # transaction and so after every commit it read, makes them durable before any is
            # sent (the adds go on meanwhile). Only a sync that returned counts: if it fails,
            # the rows stay IN_FLIGHT, unsent, until the next start takes them back, and every
            # later claim that needs a sync fails too (see ``wal_sync``). Two claims at once
            # both sync: the second fsync waits for the first and covers the second's rows.
            self.sync()
            self._synced = max(self._synced, needed)
        return decode_claimed(rows, bodies)

    def complete(self, results: Sequence[tuple[int, Delivery]], now: float) -> None:
        """See ``Store.complete``."""
        rows = encode_completions(results, now)  # validates before writing
        if not rows:
            return
        delivered = State.DELIVERED.value
        with self._writing() as conn:
            conn.executemany(COMPLETE, rows)
            if self._drop_delivered:
                conn.executemany(DROP_DELIVERED, [(r[-1],) for r in rows if r[0] == delivered])

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
                conn.executemany(RETRY, rows)

    def release_in_flight(self) -> int:
        """See ``Store.release_in_flight``."""
        with self._writing() as conn:
            return conn.execute(
                "UPDATE events SET state = 'queued' WHERE state = 'in_flight'"
            ).rowcount

    def requeue(
        self,
        ids: Sequence[int],
        payloads: Sequence[Payload] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """See ``Store.requeue``."""
        at = time.time() if now is None else now
        return requeue_rows(self._writing, ids, payloads, at, forget=self._forget)

    def purge(
        self, *, delivered_before: float, drop_originals: bool, state: State = State.DELIVERED
    ) -> int:
        """See ``Store.purge``. Works in chunks of a few thousand rows, one transaction each."""
        return purge_state(
            self._writing,
            delivered_before,
            drop_originals,
            chunk=_PURGE_CHUNK,
            state=purgeable(state),
        )

    def _forget(self, id_: int) -> None:
        """A payload replaced by ``requeue``: the remembered one (if any) is not sent."""
        self._unclaimed.pop(id_, None)  # there only if completed unclaimed

    def close(self) -> None:
        """See ``Store.close``. Closing twice is harmless."""
        shared = self._read_lock is self._write_lock
        with self._write_lock, nullcontext() if shared else self._read_lock:
            if self._closed:
                return
            self._closed = True
            self._wal.close()  # before the writer: the WAL may outlive it (other connections)
            if self._reader is not self._writer:
                self._reader.close()
            self._writer.close()
