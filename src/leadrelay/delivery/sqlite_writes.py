"""The writes of ``SQLiteStore`` that store events: ``add``, ``record``, ``record_delivered``
and ``sync``; and ``stored_keys``, the lookup through the writer that comes before a record.

``add`` stores events queued for delivery; ``record`` and ``record_delivered`` store them with
what delivery already made of them (``send``'s write-behind). Each call is one write transaction
(the store's ``_writing``), rows inserted 100 to a statement (``insert_rows``) with explicit ids.
How ``add(durable=False)`` and ``sync`` make events durable, and how ``claim`` relies on them, is
told in ``sqlite_store``, which opens the connections, the WAL descriptor and the state below.
Split out of ``sqlite_store`` (house rule: modules under ~300 lines); the statements are in
``sqlite_sql``, the record layout in ``sqlite_schema``
and ``sqlite_rows``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from leadrelay.delivery.encoded import compact
from leadrelay.delivery.sqlite_rows import Row, encode_row, encode_settled_rows
from leadrelay.delivery.sqlite_schema import (
    INSERT,
    INSERT_BODY,
    INSERT_DELIVERED,
    INSERT_QUEUED,
    INSERT_SETTLED,
)
from leadrelay.delivery.sqlite_sql import (
    REFUSE_WITH,
    REPLACE_BODY,
    TAKE_PLACE,
    insert_delivered,
    insert_rows,
    not_taken,
    stored_ids,
)
from leadrelay.delivery.store import Added, Incoming, OriginalPolicy, add_in_passes
from leadrelay.delivery.store_encoding import same_but_time
from leadrelay.delivery.store_rows import another_stage
from leadrelay.delivery.wal_sync import WalSync
from leadrelay.outcome import DeliveredWhole, Delivery, Payload

__all__ = ["SQLiteWrites"]


class SQLiteWrites:
    """The ``Store`` writes that store events, of ``SQLiteStore``, which sets the state below."""

    _policy: OriginalPolicy
    _drop_delivered: bool
    _unclaimed: dict[int, tuple[bytes, bytes | None]]
    _remember: int
    _deferred: int
    _wal: WalSync
    _data_version: int
    _foreign_writes: bool
    # ``SQLiteStore._writing(*, fsync=True)``: Callable[..., ...], as mypy rejects a method that
    # overrides an attribute typed with a callback Protocol.
    _writing: Callable[..., AbstractContextManager[sqlite3.Connection]]
    _holding_writer: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def stored_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """The ids of those of ``keys`` that are stored (by key); the empty key is never.

        Looked up through the writer, which inserts them next: the pages the lookup reads stay
        in its cache (``writer_cache``) for the insert and for later lookups, across its own
        commits. The reader's cache is emptied by every commit of the writer: with random event
        ids, each key looked up through it read its page from the file again."""
        with self._holding_writer() as conn:
            return stored_ids(conn, keys)

    def add(self, items: Sequence[Incoming], *, durable: bool = True) -> list[int]:
        """See ``Store.add``. ``durable=False``: the events are durable only once ``sync`` (called
        after this returned) returns; other connections see them at once."""
        return self.add_new(items, durable=durable).ids

    def add_new(self, items: Sequence[Incoming], *, durable: bool = True) -> Added:
        """See ``Store.add_new``; ``durable`` as for ``add``."""
        if not items:
            return Added([], [])
        rows = [encode_row(item, self._policy) for item in items]  # encode before taking the lock
        keys = [item.outcome.key for item in items]
        remembered: list[int] = []
        try:
            deferred = not durable and self._wal.fd is not None
            with self._writing(fsync=not deferred) as conn:

                def add_part(places: list[int]) -> Added:  # passes share the transaction
                    stored: list[bool] = []
                    part_keys = [keys[n] for n in places]
                    part_rows = [rows[n] for n in places]
                    ids = self._add(conn, part_keys, part_rows, remembered, stored=stored)
                    return Added(ids, stored)

                added = add_in_passes(keys, add_part)
                # Under the lock, so a claim that sees these rows sees this too (should the
                # commit fail, the next claim merely syncs once more).
                self._deferred += deferred
        except BaseException:
            for id_ in remembered:  # not stored after all
                self._unclaimed.pop(id_, None)
            raise
        return added

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
        stored: list[bool] | None = None,
    ) -> list[int]:
        """Insert what is new (in the transaction of ``conn``); returns one id per row, and says
        in ``stored`` whether it stored each row (``Added.stored``). Without ``look_up`` the
        caller knows that none of ``keys`` is stored (see ``record``)."""
        ids: list[int] = []
        new: dict[str, list[tuple[Any, ...]]] = {
            INSERT_QUEUED: [],
            INSERT: [],
            INSERT_SETTLED: [],
            INSERT_DELIVERED: [],
            INSERT_BODY: [],
        }
        known: dict[str, int] = stored_ids(conn, keys) if look_up else {}
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        next_id = seq[0] + 1 if seq else 1
        first_new = next_id
        again: list[tuple[int, bool, tuple[Any, ...], tuple[Any, ...] | None]] = []
        again_at: list[int] = []  # where each of ``again`` is in ``ids``
        for key, (sql, row, body) in zip(keys, rows, strict=True):
            if key:
                found = known.get(key)
                if found is not None:
                    if (sql is INSERT_QUEUED or sql is INSERT) and found < first_new:  # before
                        again.append((found, sql is INSERT_QUEUED, row, body))
                        again_at.append(len(ids))
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
        if stored is not None:  # each new id is given once, to the item that brought it
            fresh = set(range(first_new, next_id))
            for id_ in ids:
                stored.append(id_ in fresh)
                fresh.discard(id_)
        if again:
            took = _map_again(conn, again)
            if stored is not None:
                for at, took_place in zip(again_at, took, strict=True):
                    stored[at] = took_place
        if remembered is None:  # not queued: nothing to remember for claim
            return ids
        room = self._remember - len(self._unclaimed)
        for id_, data, notes, _ in new[INSERT_BODY][:room]:  # under the lock, like claim
            if data is not None:
                # Kept until claimed: not in the buffers orjson wrote them to (see compact).
                self._unclaimed[id_] = (compact(data), None if notes is None else compact(notes))
                remembered.append(id_)
        return ids

    def sync(self) -> None:
        """Make durable what every ``add(durable=False)`` that returned before this call stored:
        one fsync of the WAL file (the GIL is released once for all of it, not per row).

        Raises ``StoreError`` when the fsync fails, and from then on (see ``wal_sync``)."""
        self._wal.sync()


def _map_again(
    conn: sqlite3.Connection,
    again: list[tuple[int, bool, tuple[Any, ...], tuple[Any, ...] | None]],
) -> list[bool]:
    """Outcomes for keys stored before: ``(id, is a payload, its INSERT_QUEUED or INSERT row,
    body)``. The first of a key to qualify takes the stored event's place; returns, for each of
    ``again``, whether it did.

    A payload takes the place of an event Meta never took, queued, as a replay would: one never
    sent (filtered, refused by our rules: the config or the event was fixed since), or one Meta
    refused when the payload differs from the one it refused in more than its event_time
    (``same_but_time``: the event was fixed at its source). What Meta took, or refused as it
    is, stays as it is: nothing is sent twice. A refusal takes the place of an event never sent
    when it says something else (a replay that still fails, for another reason): the store says
    what the latest mapping says. Neither takes the place of another event of the CRM
    (``another_stage``), but for a payload in place of one never sent: Meta saw nothing."""
    waiting = not_taken(conn, [found for found, _, _, _ in again])
    took: list[bool] = []
    for found, payload, row, body in again:
        stored, stored_name, stored_source = waiting.get(found, (None, None, ""))
        if payload:
            # INSERT_QUEUED's row: key, source_event, event_name, lead_id, event_time, at
            refused = stored if isinstance(stored, bytes) else None
            new = None if body is None else body[0]
            if stored is None or (
                refused is not None
                and (
                    another_stage(row[2], row[1], stored_name, stored_source)
                    or (new is not None and same_but_time(new, refused))
                )
            ):
                took.append(False)
                continue
            _, source_event, event_name, lead_id, event_time, at = row
            conn.execute(
                TAKE_PLACE, (at, at, at, source_event, event_name, lead_id, event_time, found)
            )
        else:  # a refusal (filtered, or refused by our rules): only of one never sent, if changed
            # INSERT's row: key, state, source_event, event_name, lead_id, event_time,
            # received_at, updated_at, next_attempt_at, reason, message, field, value, code,
            # subcode, fbtrace_id
            state, says = row[1], (row[1], row[9], row[10])
            other = another_stage(row[3], row[2], stored_name, stored_source)
            if not isinstance(stored, tuple) or stored == says or other:
                took.append(False)
                continue
            # event_time: None but for a payload that cannot be encoded (stored rejected)
            conn.execute(REFUSE_WITH, (state, *row[2:8], *row[9:16], found))
        del waiting[found]
        conn.execute(REPLACE_BODY, (found, *(body or (None, None, None))))
        took.append(True)
    return took
