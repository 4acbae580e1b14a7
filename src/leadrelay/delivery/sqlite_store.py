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

The file format (schema, migration, row encoding) lives in ``sqlite_schema`` and the statements
in ``sqlite_sql`` (house rule: modules under ~300 lines); ``SCHEMA_VERSION`` and
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
from typing import Any, Final, Literal, cast

import orjson

from leadrelay.delivery.sqlite_admin import purge_delivered, requeue_rows
from leadrelay.delivery.sqlite_reads import SQLiteReads
from leadrelay.delivery.sqlite_schema import (
    APPLICATION_ID,
    INSERT,
    INSERT_BODY,
    INSERT_DELIVERED,
    INSERT_QUEUED,
    INSERT_SETTLED,
    SCHEMA_VERSION,
    Row,
    decode_claimed,
    encode_completions,
    encode_row,
    encode_settled_rows,
    init_schema,
    journal_in_memory,
    open_connection,
)
from leadrelay.delivery.sqlite_sql import (
    CLAIM,
    COMPLETE,
    DROP_DELIVERED,
    KEYS,
    MARK_IN_FLIGHT,
    PAYLOADS,
    RETRY,
    insert_delivered,
    insert_rows,
)
from leadrelay.delivery.store import (
    Claimed,
    Incoming,
    OriginalPolicy,
    Store,
    StoreError,
)
from leadrelay.delivery.wal_sync import WalSync
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

_PURGE_CHUNK: Final = 5000  # rows per transaction, so intake is not held up by a big purge


class SQLiteStore(SQLiteReads, Store):
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
    def _writing(self, *, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._closed:
                raise StoreError(f"the event store {self.path} is closed")
            conn = self._writer
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

    def add(self, items: Sequence[Incoming], *, durable: bool = True) -> list[int]:
        """See ``Store.add``. ``durable=False``: the events are durable only once ``sync`` (called
        after this returned) returns; other connections see them at once."""
        if not items:
            return []
        rows = [encode_row(item, self._policy) for item in items]  # encode before taking the lock
        keys = [item.outcome.key for item in items]
        remembered: list[int] = []
        try:
            deferred = not durable and self._wal.fd is not None
            with self._writing(fsync=not deferred) as conn:
                ids = self._add(conn, keys, rows, remembered)
                # Under the lock, so a claim that sees these rows sees this too (should the
                # commit fail, the next claim merely syncs once more).
                self._deferred += deferred
        except BaseException:
            for id_ in remembered:  # not stored after all
                self._unclaimed.pop(id_, None)
            raise
        return ids

    def record(
        self,
        settled: Sequence[tuple[Incoming, Delivery]],
        now: float,
        *,
        due: float | None = None,
        new_keys: bool = False,
    ) -> list[int]:
        """Store payloads that were delivered (or tried) before they were stored, each with what
        delivery made of it, in one transaction: one write per event where ``add``, ``claim``
        and ``complete`` make three (``send``'s write-behind, ``write_behind``). The rows are as
        those calls would have left them (QUEUED ones due at ``due``: ``retry_later``); a key
        already stored keeps its row and id (the first outcome stored for a key wins). Durable
        when this returns; one id per item.

        ``new_keys``: the caller looked the keys up in this store (``stored_keys``) after it was
        opened, found none, and stored none of them since. The store then does not look them up
        again, unless another connection (another process) has written to the file since it was
        opened: only such a write can have stored one of them meanwhile. Should one be stored
        all the same (a race in the caller), the transaction is rolled back and done again with
        the lookup, and the store looks keys up from then on."""
        if not settled:
            return []
        rows = encode_settled_rows(settled, now, self._policy, self._drop_delivered, due)
        keys = [item.outcome.key for item, _ in settled]
        if new_keys and not self._foreign_writes:
            try:
                with self._writing() as conn:
                    return self._add(conn, keys, rows, None, look_up=not self._only_ours(conn))
            except sqlite3.IntegrityError:  # a key is stored: the first outcome stored wins
                self._foreign_writes = True
        with self._writing() as conn:
            return self._add(conn, keys, rows, None)

    def record_delivered(
        self,
        items: Sequence[Incoming],
        message: str | None,
        fbtrace_id: str | None,
        now: float,
    ) -> list[int]:
        """``record(..., new_keys=True)`` of payloads that Meta took in one request, whole, at
        the first attempt (``DeliveredWhole``): the same rows, made straight from ``items``. They
        are what ``WriteBehindStore`` holds: payloads whose lead_id and event_time fit in 64
        bits (``fits_int64``), keys distinct, found in no store when they were added."""
        if self._drop_delivered and not self._foreign_writes:
            try:
                with self._writing() as conn:
                    if self._only_ours(conn):
                        return self._insert_delivered(conn, items, message, fbtrace_id, now)
            except sqlite3.IntegrityError:  # a key is stored: the first outcome stored wins
                self._foreign_writes = True
        payloads = cast("list[Payload]", [item.outcome for item in items])
        delivered = DeliveredWhole(payloads, message, fbtrace_id)
        return self.record(list(zip(items, delivered, strict=True)), now, new_keys=True)

    def _insert_delivered(
        self,
        conn: sqlite3.Connection,
        items: Sequence[Incoming],
        message: str | None,
        fbtrace_id: str | None,
        now: float,
    ) -> list[int]:
        """The ``INSERT_DELIVERED`` rows of ``record_delivered``, with ids from the next one on."""
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        first = seq[0] + 1 if seq else 1
        rows = [
            (first + n, o.key, o.source_event, o.event_name, o.lead_id, o.event_time,  # type: ignore[union-attr]  # payloads only (see record_delivered)
             item.received_at)
            for n, item in enumerate(items)
            for o in [item.outcome]
        ]  # fmt: skip
        insert_delivered(conn, rows, now, message, fbtrace_id)
        return list(range(first, first + len(rows)))

    def _only_ours(self, conn: sqlite3.Connection) -> bool:
        """Whether every write to the file since the store opened was through ``conn`` (the
        writer): SQLite changes ``data_version`` for commits of other connections only. Asked by
        ``record`` only while no other writer has been seen: once one is, ``_foreign_writes``
        stays set, as it may write again at any time, and what it wrote since the store opened
        may hold keys looked up before it wrote (compared with the value at opening, not the
        last one read, for that reason)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        self._foreign_writes = version != self._data_version
        return not self._foreign_writes

    def _add(
        self,
        conn: sqlite3.Connection,
        keys: list[str],
        rows: list[Row],
        remembered: list[int] | None,
        *,
        look_up: bool = True,
    ) -> list[int]:
        """Insert what is new (in the transaction of ``conn``); returns one id per row. Without
        ``look_up`` the caller knows that none of ``keys`` is stored (see ``record``)."""
        ids: list[int] = []
        new: dict[str, list[tuple[Any, ...]]] = {
            INSERT_QUEUED: [],
            INSERT: [],
            INSERT_SETTLED: [],
            INSERT_DELIVERED: [],
            INSERT_BODY: [],
        }
        known: dict[str, int] = dict(conn.execute(KEYS, (orjson.dumps(keys),))) if look_up else {}
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        next_id = seq[0] + 1 if seq else 1
        for key, (sql, row, body) in zip(keys, rows, strict=True):
            if key:
                found = known.get(key)
                if found is not None:
                    ids.append(found)
                    continue
                known[key] = next_id
            ids.append(next_id)
            new[sql].append((next_id, *row))
            if body is not None:
                new[INSERT_BODY].append((next_id, *body))
            next_id += 1
        for sql, params in new.items():  # ids are explicit: the order of inserts is free
            if params:
                insert_rows(conn, sql, params)
        if remembered is None:  # not queued: nothing to remember for claim
            return ids
        room = self._remember - len(self._unclaimed)
        for id_, data, notes, _ in new[INSERT_BODY][:room]:  # under the lock, like claim
            if data is not None:
                self._unclaimed[id_] = (data, notes)
                remembered.append(id_)
        return ids

    def sync(self) -> None:
        """Make durable what every ``add(durable=False)`` that returned before this call stored:
        one fsync of the WAL file (the GIL is released once for all of it, not per row).

        Raises ``StoreError`` when the fsync fails, and from then on (see ``wal_sync``)."""
        self._wal.sync()

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

    def purge(self, *, delivered_before: float, drop_originals: bool) -> int:
        """See ``Store.purge``. Works in chunks of a few thousand rows, one transaction each."""
        return purge_delivered(self._writing, delivered_before, drop_originals, chunk=_PURGE_CHUNK)

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
