"""The SQLite store's file format: schema creation and version checks, row encoding and decoding.

Split out of ``sqlite_store`` (house rule: modules under ~300 lines). This module knows the table
layout (``SCHEMA_VERSION``, the ``INSERT`` and ``RECORD`` column orders and the tuples that match
them); ``sqlite_store`` knows transactions, locking and the ``Store`` operations.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import orjson

from leadrelay.delivery.store import (
    FINAL_DELIVERY_STATES,
    EventRecord,
    Incoming,
    OriginalPolicy,
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

INSERT: Final = (
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at, reason, message, field, value, code, subcode,"
    " fbtrace_id, payload, notes, original) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
RECORD: Final = (
    "SELECT id, key, state, source_event, event_name, lead_id, event_time, received_at,"
    " updated_at, attempts, reason, message, field, code, subcode, fbtrace_id, payload, original,"
    " response, value, notes, next_attempt_at FROM events"
)
_CHECKPOINT_PAGES: Final = 10000


def open_connection(
    path: str, busy_timeout_s: float, opened: list[sqlite3.Connection]
) -> sqlite3.Connection:
    """A connection to ``path`` with our pragmas, appended to ``opened`` for the caller to close."""
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


def init_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new file, or check that an existing file is a store we can read."""
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
# Row layout of INSERT after the id: key, state, source_event, event_name, lead_id, event_time,
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


def encode_row(item: Incoming, policy: OriginalPolicy) -> tuple[Any, ...]:
    """The ``INSERT`` parameters of an incoming outcome, after the id."""
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


def encode_completion(id_: int, d: Delivery, now: float) -> tuple[Any, ...]:
    """The ``UPDATE`` parameters completing event ``id_``; ``ValueError`` for a non-final state."""
    if d.state not in FINAL_DELIVERY_STATES and d.state is not State.QUEUED:
        raise ValueError(f"event {id_}: cannot complete with state {d.state.value!r}")
    return (d.state.value, now, now if d.state is State.QUEUED else None, d.attempts, d.reason,
            d.message, d.code, d.subcode, d.fbtrace_id,
            orjson.dumps(d.extra) if d.extra else None, id_)
# fmt: on


def _loads(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)


# fmt: off
def decode_record(r: tuple[Any, ...]) -> EventRecord:
    """The ``EventRecord`` of a row selected with ``RECORD``."""
    return EventRecord(
        id=r[0], key=r[1], state=State(r[2]), source_event=r[3], event_name=r[4], lead_id=r[5],
        event_time=r[6], received_at=r[7], updated_at=r[8], attempts=r[9], reason=r[10],
        message=r[11], field=r[12], code=r[13], subcode=r[14], fbtrace_id=r[15],
        payload=_loads(r[16]), original=_loads(r[17]), response=_loads(r[18]), value=r[19],
        notes=decode_notes(r[20]), next_attempt_at=r[21],
    )
# fmt: on
