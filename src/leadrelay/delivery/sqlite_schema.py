"""The SQLite store's file format: schema creation and version checks, and the statements that
write and read its rows.

Split out of ``sqlite_store`` (house rule: modules under ~300 lines). This module knows the table
layout (``SCHEMA_VERSION`` and the migration from older versions, the ``INSERT`` and ``RECORD``
column orders); ``sqlite_rows`` the tuples that match them; ``sqlite_store`` knows transactions,
locking and the ``Store`` operations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final, cast

from leadrelay.delivery.store import (
    StoreError,
)

SCHEMA_VERSION: Final = 2
APPLICATION_ID: Final = 0x4C52454C  # "LREL": tells our files from any other SQLite database

# Version 2 keeps what an event carries (payload, notes, original: most of its bytes) in
# ``bodies``, written once, apart from its state in ``events``, which claim and complete rewrite:
# a rewritten row is a rewritten page, and small rows make for ten times fewer of them.
_EVENTS_CLAIM: Final = (
    # claim walks (state, next_attempt_at, id) in order and stops at the limit; received_at rides
    # along so the oldest queued event is found without reading the table. Only open events are
    # in it (a query uses it when its WHERE has one of these terms, as OPEN does).
    "CREATE INDEX events_claim ON events (state, next_attempt_at, id, received_at)"
    " WHERE state = 'queued' OR state = 'in_flight'"
)
OPEN: Final = "(state = 'queued' OR state = 'in_flight')"
_BODIES: Final = (
    "CREATE TABLE bodies (id INTEGER PRIMARY KEY, payload BLOB, notes BLOB, original BLOB)"
)
_SCHEMA: Final = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused, even after a purge
        key TEXT NOT NULL, state TEXT NOT NULL, source_event TEXT NOT NULL,
        event_name TEXT, lead_id INTEGER, event_time INTEGER,
        received_at REAL NOT NULL, updated_at REAL NOT NULL, next_attempt_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT, message TEXT, field TEXT, value TEXT,
        code INTEGER, subcode INTEGER, fbtrace_id TEXT, response BLOB)""",
    _BODIES,
    "CREATE UNIQUE INDEX events_key ON events (key) WHERE key != ''",
    _EVENTS_CLAIM,
    "CREATE INDEX events_updated ON events (updated_at, state, reason)",
)
_FROM_V1: Final = (
    _BODIES,
    "INSERT INTO bodies SELECT id, payload, notes, original FROM events"
    " WHERE payload IS NOT NULL OR notes IS NOT NULL OR original IS NOT NULL",
    "ALTER TABLE events DROP COLUMN payload",
    "ALTER TABLE events DROP COLUMN notes",
    "ALTER TABLE events DROP COLUMN original",
    "DROP INDEX events_claim",
    _EVENTS_CLAIM,
)

INSERT: Final = (
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at, reason, message, field, value, code, subcode,"
    " fbtrace_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_QUEUED: Final = (  # the common row, a payload to send: fewer parameters to bind
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?7,"
    " ?7)"
)
INSERT_SETTLED: Final = (  # a payload stored once its delivery is settled (``record``)
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at, attempts, reason, message, code, subcode,"
    " fbtrace_id, response) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_DELIVERED: Final = (  # a settled row as most are: delivered, nothing else to say
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, attempts, message, fbtrace_id)"
    " VALUES (?, ?, 'delivered', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_BODY: Final = "INSERT INTO bodies (id, payload, notes, original) VALUES (?, ?, ?, ?)"
RECORD: Final = (
    "SELECT e.id, key, state, source_event, event_name, lead_id, event_time, received_at,"
    " updated_at, attempts, reason, message, field, code, subcode, fbtrace_id, payload, original,"
    " response, value, notes, next_attempt_at FROM events e LEFT JOIN bodies b ON b.id = e.id"
)
RECORD_LEAN: Final = (  # RECORD without the bodies (see Store.events)
    "SELECT e.id, key, state, source_event, event_name, lead_id, event_time, received_at,"
    " updated_at, attempts, reason, message, field, code, subcode, fbtrace_id, NULL, NULL,"
    " NULL, value, NULL, next_attempt_at FROM events e"
)
_CHECKPOINT_PAGES: Final = 10000
# A new file's pages; an existing file keeps the size it was made with. A queued event's body row
# (payload and original, ~1.5 KB) left a quarter of each 4 KiB page empty: with 8 KiB pages the
# file is 18% smaller and intake writes that much less (serve, batches of 100: 6-9% less CPU
# per event; a send 4%). Not bigger: with 16 KiB pages each random event key dirties twice the
# bytes, and a send with UUID event ids took 24% more CPU; with 8 KiB it is unchanged.
PAGE_SIZE: Final = 8192

# Python 3.11's sqlite3 binds int, float and str directly but looks every other value (None,
# bytes) up in its adapter registry and then asks the type for ``__adapt__``, which raises and
# formats an AttributeError each time: 0.27 us per NULL or blob bound, a third of what storing
# a delivered event costs. Registered adapters are found first; these bind the same values
# (``bytes(b)`` is ``b``; ``{}.get`` is a C callable that gives None). Process-wide, as the
# registry is, and harmless to any other user of sqlite3 here.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bytes, bytes)


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
    # Before anything is written (journal_mode included): only an empty file takes it.
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    # Event keys are random, so each event dirties its own key-index page; checkpointing every
    # 10,000 pages (~80 MB of WAL, 40 with the 4 KiB pages of older files) instead of 1,000
    # writes a page back once for many commits (1.5x intake).
    conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
    return conn


def journal_in_memory(conn: sqlite3.Connection) -> None:
    """Statement journals in memory, once the schema is settled (``init_schema``).

    A statement inserting many rows (``insert_rows``) keeps the pages it changes in a statement
    journal, to undo itself alone should a row fail; past 64 KiB SQLite spilled that journal to
    a temporary file in /var/tmp, one per statement: about a write per event sent. In memory it is
    a few hundred KiB at most, freed with the statement. Not before the schema is settled: the
    upgrade from version 1 rewrites the whole table in one statement, whose journal is as big as
    the store. The writer's only: the reader writes no journal, and its sorts (``counts``, the
    timeline, over every row for ``leadrelay status``) would be held in memory whole."""
    conn.execute("PRAGMA temp_store = MEMORY")


WRITER_CACHE_KIB: Final = 64 << 10


def writer_cache(conn: sqlite3.Connection) -> None:
    """The writer's page cache: 64 MiB, where SQLite's default is 2 MiB.

    With random event ids (UUIDs) each event's key lands on a page of its own in the key index,
    which outgrows 2 MiB after some 30,000 events: every lookup and insert then read its page
    from the file again (a ``pread`` of 8 KiB each), about two per event. 64 MiB holds the key
    index of about a million such events. Measured with UUIDs, alternated runs: a send of
    1,000,000 events 72.2 -> 56.2 s of CPU (-22%), serve taking 200,000 in batches of 100 78 ->
    62 us of CPU per event. With ids in order the same instructions (callgrind), and CPU within
    the VM's noise (1,000,000 events, 4 runs each in ABBA order: medians 35.5 -> 36.6 s). SQLite
    fills the cache as it reads and writes pages, so a long run holds up to 64 MiB more (a send
    of 1,000,000 events peaks at 139 MB instead of 72). The writer's only: the reader's cache is
    emptied by each commit of another connection, the writer's included, so a big one would not
    stay filled (keys are looked up through the writer for that reason:
    ``SQLiteWrites.stored_keys``)."""
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")


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
        elif version == 1:  # rewrites the table once: a while for a big store, then never
            for statement in _FROM_V1:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
