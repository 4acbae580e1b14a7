"""What only the SQLite event store does, on real files: durable intake through a SIGKILL, the
write-ahead log synced on demand, schema migration, query plans, options only it has. The Store
protocol both backends keep is tested in test_store_contract.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadrelay.delivery import sqlite_schema, sqlite_sql, sqlite_store, wal_sync
from leadrelay.delivery.encoded import request_body
from leadrelay.delivery.sqlite_store import SCHEMA_VERSION, SQLiteStore
from leadrelay.delivery.store import Incoming, StoreError
from leadrelay.outcome import Delivery, FieldNote, Payload, State
from test_store_contract import LEAD_17, NOW, incoming, payload, queued, states

NOTE = FieldNote("user_data.ph", "invalid_phone", "not a phone number")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(path: Path) -> Any:
    with SQLiteStore(path) as s:
        yield s


def test_claims_skip_fsync_but_leave_the_store_durable(store: SQLiteStore) -> None:
    queued(store, "a")
    store.claim(1, NOW)
    full = 2
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == full


_WRITER = """
import sys
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming
from leadrelay.outcome import Payload

store = SQLiteStore(sys.argv[1], synchronous=sys.argv[2])
n = 0
while True:
    batch = [Incoming(Payload(f"e{i}", "lead_qualified", "Q", 10**16 + i, 1767800000, {"i": i}),
                      None, 1767800000.0) for i in range(n, n + 50)]
    ids = store.add(batch)
    print(n, *ids, flush=True)
    n += 50
"""


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
def test_sigkill_during_intake_loses_no_acknowledged_event(path: Path, synchronous: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 40:
            line = child.stdout.readline()
            assert line, f"writer died early: {child.stderr.read() if child.stderr else ''}"
            acknowledged.append(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
    acknowledged += child.stdout.readlines()
    child.wait()
    assert child.returncode == -signal.SIGKILL

    with SQLiteStore(path) as store:
        seen = 0
        for line in acknowledged:
            if not line.endswith("\n"):
                continue  # cut off by the kill: not acknowledged
            first, *ids = (int(x) for x in line.split())
            for offset, id_ in enumerate(ids):
                record = store.get(id_)
                assert record is not None, f"acknowledged event {id_} lost"
                assert (record.key, record.lead_id) == (
                    f"e{first + offset}",
                    10**16 + first + offset,
                )
                seen += 1
        assert seen >= 40 * 50
        assert store.counts().queued >= seen


@pytest.mark.parametrize("drop", [True, False])
def test_drop_delivered_bodies_drops_what_retention_would_as_events_are_delivered(
    path: Path, drop: bool
) -> None:
    with SQLiteStore(path, drop_delivered_bodies=drop) as store:
        ids = store.add([incoming(payload(f"e{i}"), original={"i": i}) for i in range(4)])
        c = {x.id: x.payload for x in store.claim(10, NOW)}
        store.complete(
            [
                (ids[0], Delivery(c[ids[0]], State.DELIVERED)),
                (ids[1], Delivery(c[ids[1]], State.DELIVERED, extra={"retried": True})),
                (ids[2], Delivery(c[ids[2]], State.REJECTED, reason="meta_100", code=100)),
            ],
            NOW,
        )
        store.complete([(ids[0], Delivery(c[ids[0]], State.DEAD))], NOW)  # not open: left alone
        records = [store.get(i) for i in ids]
        kept = [(r.payload is not None, r.original is not None) for r in records if r]
        assert kept == [(not drop, not drop), (not drop, not drop), (True, True), (True, True)]
        assert [r.state for r in records if r] == [
            State.DELIVERED, State.DELIVERED, State.REJECTED, State.IN_FLIGHT
        ]  # fmt: skip
        # Retention then finds nothing more to drop, or drops the same.
        dropped = store.purge(delivered_before=NOW + 1, drop_originals=True)
        assert dropped == (0 if drop else 2)


@pytest.mark.parametrize("remember", [0, 2, 100])
def test_payloads_remembered_until_claimed_are_the_stored_ones(path: Path, remember: int) -> None:
    with SQLiteStore(path, remember_unclaimed=remember) as store:
        sent = [payload(f"e{i}", data={"n": i, "x": [1.5, None]}) for i in range(3)]
        noted = Payload("noted", "lead_created", "Raw Lead", 1, int(NOW), {"n": 9}, (NOTE,))
        ids = store.add([incoming(p) for p in [*sent, noted]])
        assert store.add([incoming(payload("e0", data={"n": "resent"}))]) == ids[:1]
        first = store.claim(2, NOW)
        assert [(c.id, c.payload) for c in first] == list(zip(ids[:2], sent[:2], strict=True))
        store.retry_later([ids[0]], NOW, "interrupted", None, attempts=0, now=NOW)
        fixed = payload("e1", data={"n": "fixed"})
        store.complete([(ids[1], Delivery(first[1].payload, State.DEAD))], NOW)
        assert store.requeue([ids[1]], [fixed], now=NOW) == 1
        rest = {c.id: c.payload for c in store.claim(10, NOW + 1)}
        assert rest == {ids[0]: sent[0], ids[1]: fixed, ids[2]: sent[2], ids[3]: noted}
        assert all(request_body(p) == orjson.dumps(p.data) for p in rest.values())
        assert store.claim(10, NOW + 1) == []


def test_no_statement_reads_the_whole_table(store: SQLiteStore) -> None:
    # A planner picking the wrong index made completing a batch walk the whole backlog once.
    statements = {
        name: sql
        for name, sql in vars(sqlite_sql).items()
        if isinstance(sql, str) and sql.startswith(("SELECT", "UPDATE", "INSERT", "DELETE"))
    }
    assert {"CLAIM", "COMPLETE", "DROP_DELIVERED", "BODIES_PURGEABLE"} <= set(statements)
    for name, sql in statements.items():
        args = [1] * sql.count("?")  # json_each(1) is a valid (one-element) list too
        plan = [row[3] for row in store._writer.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
        scans = [step for step in plan if step.startswith("SCAN") and "json_each" not in step]
        assert scans == [], (name, plan)
        if "json_each(?)" in sql or "id = ?" in sql:  # given ids: the primary key, no state walk
            assert not any("events_claim" in step for step in plan), (name, plan)


def test_statement_journals_stay_in_memory_once_the_schema_is_settled(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A statement inserting 100 rows journals the pages it changes; SQLite spilled that journal
    # to a file in /var/tmp past 64 KiB (a file written and deleted per statement, about one
    # write per event sent) unless the writer's temporary storage is in memory.
    # Not while the schema is set up: the upgrade from version 1 rewrites the whole table in one
    # statement, whose journal in memory would be as big as the store.
    during: list[int] = []
    init = sqlite_store.init_schema

    def watched(conn: sqlite3.Connection, where: str) -> None:
        during.append(conn.execute("PRAGMA temp_store").fetchone()[0])
        init(conn, where)

    monkeypatch.setattr(sqlite_store, "init_schema", watched)
    with SQLiteStore(path) as store:
        assert during == [0]  # DEFAULT: files, as SQLite was built
        assert store._writer.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        # The reader writes no journal; its sorts over every row (counts for status) spill.
        assert store._reader.execute("PRAGMA temp_store").fetchone()[0] == 0


def test_a_begin_that_fails_leaves_commits_syncing(path: Path) -> None:
    # add(durable=False) relaxes synchronous for its commit; a BEGIN refused (the file locked by
    # another writer past the busy timeout) must not leave it relaxed for the commits after.
    with SQLiteStore(path, busy_timeout_s=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store.add([incoming(payload("a"))], durable=False)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_reopening_keeps_the_schema_and_the_data(path: Path) -> None:
    with SQLiteStore(path) as store:
        queued(store, "a")
    with SQLiteStore(path) as store:
        assert store.counts().queued == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # A new file has bigger pages than SQLite's default (a queued event's body fills them).
        assert conn.execute("PRAGMA page_size").fetchone()[0] == sqlite_schema.PAGE_SIZE == 8192


def test_the_writer_has_a_page_cache_big_enough_for_a_million_random_keys(path: Path) -> None:
    with SQLiteStore(path) as store:
        writer = store._writer.execute("PRAGMA cache_size").fetchone()[0]
        reader = store._reader.execute("PRAGMA cache_size").fetchone()[0]
    assert writer == -sqlite_schema.WRITER_CACHE_KIB == -(64 << 10)  # KiB: 64 MiB
    assert reader != writer  # SQLite's default: emptied by each commit of the writer anyway


# A store written by leadrelay before schema version 2 (payloads inside the events table).
_V1_SCHEMA = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL, state TEXT NOT NULL, source_event TEXT NOT NULL,
        event_name TEXT, lead_id INTEGER, event_time INTEGER,
        received_at REAL NOT NULL, updated_at REAL NOT NULL, next_attempt_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT, message TEXT, field TEXT, value TEXT,
        code INTEGER, subcode INTEGER, fbtrace_id TEXT,
        payload BLOB, notes BLOB, original BLOB, response BLOB)""",
    "CREATE UNIQUE INDEX events_key ON events (key) WHERE key != ''",
    "CREATE INDEX events_claim ON events (state, next_attempt_at, id, received_at)",
    "CREATE INDEX events_updated ON events (updated_at, state, reason)",
)
_V1_INSERT = (
    "INSERT INTO events (id, key, state, source_event, event_name, lead_id, event_time,"
    " received_at, updated_at, next_attempt_at, attempts, reason, message, fbtrace_id, payload,"
    " notes, original, response) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def test_a_version_1_store_is_migrated_with_everything_it_holds(path: Path) -> None:
    data = {"event_name": "Qualified", "user_data": {"lead_id": LEAD_17}}
    notes = orjson.dumps([["user_data.ph", "invalid_phone", "not a phone number"]])
    with sqlite3.connect(path) as conn:
        for statement in _V1_SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {sqlite_store.APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        rows = [  # queued with notes, delivered, filtered, and a purged id (9) never reused
            (1, "q", "queued", "lead_qualified", "Qualified", LEAD_17, int(NOW) - 60, NOW, NOW,
             NOW, 0, None, None, None, orjson.dumps(data), notes, b'{"raw":1}', None),
            (2, "d", "delivered", "lead_qualified", "Qualified", LEAD_17, int(NOW) - 60, NOW,
             NOW + 1, None, 1, None, None, "Atrace", orjson.dumps(data), None, None,
             b'{"retried":true}'),
            (3, "f", "filtered", "lead_lost", None, None, None, NOW, NOW, None, 0, "unmapped",
             "not mapped", None, None, None, b'{"raw":3}', None),
            (9, "gone", "delivered", "x", None, None, None, NOW, NOW, None, 1, None, None,
             None, None, None, None, None),
        ]  # fmt: skip
        conn.executemany(_V1_INSERT, rows)
        conn.execute("DELETE FROM events WHERE id = 9")

    with sqlite3.connect(path) as conn:  # made as older leadrelays made it: SQLite's 4 KiB pages
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    with SQLiteStore(path) as store:
        q, d, f = store.get(1), store.get("d"), store.get(3)
        assert q is not None and d is not None and f is not None
        assert (q.state, q.payload, q.original) == (State.QUEUED, data, {"raw": 1})
        assert q.notes == (FieldNote("user_data.ph", "invalid_phone", "not a phone number"),)
        assert (d.state, d.payload, d.fbtrace_id, d.response) == (
            State.DELIVERED,
            data,
            "Atrace",
            {"retried": True},
        )
        assert (f.state, f.reason, f.payload, f.original) == (
            State.FILTERED,
            "unmapped",
            None,
            {"raw": 3},
        )
        assert store.counts().queued == 1
        [claimed] = store.claim(10, NOW)
        assert (claimed.id, claimed.payload.data, claimed.payload.notes) == (1, data, q.notes)
        assert store.add([incoming(payload("new"))]) == [10]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096  # an existing file's own


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)"), "not a leadrelay store"),
        (lambda p: p.write_bytes(b"this is not a database, " * 100), "cannot open the event store"),
    ],
)
def test_refuses_a_file_that_is_not_an_event_store(path: Path, setup: Any, message: str) -> None:
    setup(path)
    with pytest.raises(StoreError, match=message):
        SQLiteStore(path)


def test_bad_options_are_named(path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(path, synchronous="OFF")  # type: ignore[arg-type]


class Fsyncs:
    """Stands in for the fsync of the WAL: records the inode of each file synced, and fails
    while ``error`` is set."""

    def __init__(self) -> None:
        self.inodes: list[int] = []
        self.error: OSError | None = None

    def __call__(self, fd: int) -> None:
        if self.error is not None:
            raise self.error
        self.inodes.append(os.fstat(fd).st_ino)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    fake = Fsyncs()
    monkeypatch.setattr(wal_sync, "_fsync", fake)
    return fake


def test_a_deferred_add_is_stored_at_once_and_sync_fsyncs_the_wal(
    path: Path, fsyncs: Fsyncs
) -> None:
    with SQLiteStore(path) as store:
        ids = store.add([incoming(payload("a")), incoming(payload("b"))], durable=False)
        assert states(store, ids) == [State.QUEUED, State.QUEUED]  # readers see it already
        assert store.add([incoming(payload("a"))], durable=False) == ids[:1]  # keys still count
        assert fsyncs.inodes == []
        store.sync()
        assert fsyncs.inodes == [os.stat(f"{path}-wal").st_ino]
    with SQLiteStore(path) as reopened:
        assert states(reopened, ids) == [State.QUEUED, State.QUEUED]


@pytest.mark.parametrize("where", ["NORMAL", ":memory:"])
def test_sync_does_nothing_where_commits_are_not_fsynced_by_choice(
    path: Path, fsyncs: Fsyncs, where: str
) -> None:
    store = (
        SQLiteStore(":memory:") if where == ":memory:" else SQLiteStore(path, synchronous="NORMAL")
    )
    with store:
        ids = store.add([incoming(payload("a"))], durable=False)
        store.sync()
        assert fsyncs.inodes == []
        assert states(store, ids) == [State.QUEUED]


def test_a_failed_sync_fails_every_later_one_but_durable_adds_go_on(
    path: Path, fsyncs: Fsyncs
) -> None:
    """After a failed fsync the kernel may have dropped the pages: a later fsync proves nothing."""
    with SQLiteStore(path) as store:
        store.add([incoming(payload("a"))], durable=False)
        fsyncs.error = OSError(5, "Input/output error")
        with pytest.raises(StoreError, match=r"cannot sync the write-ahead log .*Input/output"):
            store.sync()
        fsyncs.error = None
        store.add([incoming(payload("b"))], durable=False)
        with pytest.raises(StoreError, match="until the store is reopened"):
            store.sync()
        assert states(store, store.add([incoming(payload("c"))])) == [State.QUEUED]
    with SQLiteStore(path) as reopened:
        reopened.add([incoming(payload("d"))], durable=False)
        reopened.sync()


def test_closing_syncs_what_was_not_synced_yet(path: Path, fsyncs: Fsyncs) -> None:
    store = SQLiteStore(path)
    wal = os.stat(f"{path}-wal").st_ino
    store.add([incoming(payload("a"))], durable=False)
    store.close()
    assert fsyncs.inodes == [wal]
    store.sync()  # a group answered after the store closed: close synced it


# An event added without waiting for the disk is durable before it is claimed, and completing a
# batch in one go records what completing each event would.


@pytest.mark.parametrize("remember", [0, 100])  # payloads read back, or kept since the add
def test_claiming_deferred_adds_syncs_the_wal_once_before_handing_them_out(
    path: Path, fsyncs: Fsyncs, remember: int
) -> None:
    with SQLiteStore(path, remember_unclaimed=remember) as store:
        store.add([incoming(payload("a")), incoming(payload("b"))], durable=False)
        assert fsyncs.inodes == []
        claimed = store.claim(1, NOW)
        assert [c.payload.key for c in claimed] == ["a"]
        assert fsyncs.inodes == [os.stat(f"{path}-wal").st_ino]
        assert [c.payload.key for c in store.claim(10, NOW)] == ["b"]  # synced already
        assert len(fsyncs.inodes) == 1
        store.add([incoming(payload("c"))], durable=False)
        assert [c.payload.key for c in store.claim(10, NOW)] == ["c"]
        assert len(fsyncs.inodes) == 2


def test_claims_after_durable_adds_only_do_not_sync_again(path: Path, fsyncs: Fsyncs) -> None:
    with SQLiteStore(path) as store:
        store.add([incoming(payload("a"))])
        assert [c.payload.key for c in store.claim(10, NOW)] == ["a"]
        assert fsyncs.inodes == []  # the add's own commit was synced by SQLite


def test_a_claim_that_finds_nothing_leaves_the_sync_to_the_next_one(
    path: Path, fsyncs: Fsyncs
) -> None:
    with SQLiteStore(path) as store:
        store.add([incoming(payload("later"), at=NOW + 60)], durable=False)
        assert store.claim(10, NOW) == []  # not due yet: nothing to send, nothing synced
        assert fsyncs.inodes == []
        assert [c.payload.key for c in store.claim(10, NOW + 60)] == ["later"]
        assert len(fsyncs.inodes) == 1


def test_a_failed_sync_hands_nothing_out_and_a_restart_takes_the_events_back(
    path: Path, fsyncs: Fsyncs
) -> None:
    with SQLiteStore(path) as store:
        ids = store.add([incoming(payload("a"))], durable=False)
        fsyncs.error = OSError(5, "Input/output error")
        with pytest.raises(StoreError, match="cannot sync the write-ahead log"):
            store.claim(10, NOW)
        assert states(store, ids) == [State.IN_FLIGHT]  # not sent: nothing was handed out
    fsyncs.error = None
    with SQLiteStore(path) as reopened:
        assert reopened.release_in_flight() == 1
        assert [c.payload.key for c in reopened.claim(10, NOW)] == ["a"]


TRACE = "AbC123"
OUTCOMES: list[Delivery] = [
    Delivery(payload("x"), State.DELIVERED, attempts=1, fbtrace_id=TRACE),
    Delivery(payload("x"), State.DELIVERED, attempts=2, fbtrace_id=TRACE, extra={"retried": True}),
    Delivery(payload("x"), State.DELIVERED, attempts=1, message="warn", fbtrace_id=TRACE),
    Delivery(
        payload("x"),
        State.REJECTED,
        attempts=1,
        reason="invalid_parameter",
        message="bad",
        code=100,
        subcode=2804019,
        fbtrace_id=TRACE,
    ),
    Delivery(payload("x"), State.EXPIRED, attempts=0, reason="expired", message="too old"),
    Delivery(payload("x"), State.QUEUED, attempts=0, reason="paused_auth", message="paused"),
    Delivery(payload("x"), State.DEAD, attempts=6, reason="retries_exhausted", message="gave up"),
]


@pytest.mark.parametrize(
    "pattern",
    [
        [0] * 6,  # a batch delivered whole
        [0, 1, 0, 2, 0, 0],  # one retried, one with a message
        [0, 3, 0, 3, 4, 0],  # rejected and expired among delivered
        [5, 5, 6, 0, 6, 1],  # paused, dead and delivered
        list(range(len(OUTCOMES))) * 2,
    ],
)
def test_completing_a_batch_records_what_completing_each_event_alone_does(
    tmp_path: Path, pattern: list[int]
) -> None:
    records = []
    for together in (True, False):
        with SQLiteStore(tmp_path / f"{together}.db") as store:
            ids = store.add([incoming(payload(f"k{i}")) for i in range(len(pattern))])
            claimed = store.claim(len(ids), NOW)
            results = [(c.id, OUTCOMES[k]) for c, k in zip(claimed, pattern, strict=True)]
            if together:
                store.complete(results, NOW + 1)
            else:
                for result in results:
                    store.complete([result], NOW + 1)
            records.append([store.get(i) for i in ids])
    assert records[0] == records[1]
    assert [r.state for r in records[0] if r is not None] == [OUTCOMES[k].state for k in pattern]


def test_completing_with_a_state_that_is_not_final_names_the_event(path: Path) -> None:
    with SQLiteStore(path) as store:
        (id_,) = store.add([incoming(payload("a"))])
        store.claim(1, NOW)
        ok = Delivery(payload("a"), State.DELIVERED)
        with pytest.raises(ValueError, match=f"event {id_}: cannot complete with state"):
            store.complete([(id_, ok), (id_, Delivery(payload("a"), State.IN_FLIGHT))], NOW)
        assert states(store, [id_]) == [State.IN_FLIGHT]  # nothing written


def test_after_a_failed_sync_no_claim_hands_out_what_was_never_synced(
    path: Path, fsyncs: Fsyncs
) -> None:
    with SQLiteStore(path) as store:
        store.add([incoming(payload("a")), incoming(payload("b"))], durable=False)
        fsyncs.error = OSError(5, "Input/output error")
        with pytest.raises(StoreError, match="cannot sync"):
            store.claim(1, NOW)
        # Even once the disk answers again: the failed fsync may have dropped "b"'s pages.
        fsyncs.error = None
        with pytest.raises(StoreError, match="cannot sync"):
            store.claim(10, NOW)


def test_a_claim_returns_nothing_before_the_sync_another_claim_started_has_finished(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    happened: list[object] = []

    def slow_fsync(fd: int) -> None:
        happened.append("fsync started")
        started.set()
        release.wait(10)
        happened.append("fsync done")

    def claim(name: str, limit: int) -> None:
        happened.append((name, [c.payload.key for c in store.claim(limit, NOW)]))

    monkeypatch.setattr(wal_sync, "_fsync", slow_fsync)
    with SQLiteStore(path) as store:
        store.add([incoming(payload("a")), incoming(payload("b"))], durable=False)
        first = threading.Thread(target=claim, args=("first", 1))
        first.start()
        assert started.wait(10)
        second = threading.Thread(target=claim, args=("second", 10))
        second.start()
        second.join(0.5)  # time for it to return early, were it to
        release.set()
        first.join(10)
        second.join(10)
    assert ("second", ["b"]) in happened
    assert happened.index("fsync done") < happened.index(("second", ["b"]))


def test_nulls_and_blobs_are_stored_as_such_through_the_registered_adapters(
    store: SQLiteStore, path: Path
) -> None:
    # The store registers sqlite3 adapters for None and bytes (binding them is a third cheaper);
    # they must store exactly what sqlite3 itself would: NULL and the same BLOB.
    original = '{"user": {"firstname": "Zo\u00e9"}, "raw": "\\u0000"}'.encode()
    [id_] = store.add([Incoming(payload("k"), original, NOW)])
    [claimed] = store.claim(1, NOW + 1)
    store.complete([(claimed.id, Delivery(claimed.payload, State.DELIVERED))], NOW + 2)
    with sqlite3.connect(path) as conn:
        kinds = conn.execute(
            "SELECT typeof(reason), typeof(code), typeof(response) FROM events WHERE id = ?",
            (id_,),
        ).fetchone()
        stored = conn.execute("SELECT original FROM bodies WHERE id = ?", (id_,)).fetchone()
    assert kinds == ("null", "null", "null")
    assert stored == (original,)
