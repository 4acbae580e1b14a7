"""A batch Meta took whole at its first request (``DeliveredWhole``) is recorded and counted in
one go: the store rows and the summary are what a ``Delivery`` per event makes, on a real SQLite
file, whether the batch waited in memory (``send``'s write-behind) or in the store."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import EventRecord, Incoming, Store
from leadrelay.delivery.write_behind import WriteBehindStore
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State
from leadrelay.summary import Tally

NOW = 1767800000.0
LATER = NOW + 5.0


def item(key: str, n: int) -> Incoming:
    body = orjson.dumps({"event_name": "Qualified", "event_id": key, "n": n})
    payload = EncodedPayload(
        key, "lead_qualified", "Qualified", 123456789012345 + n, 1767799000 + n, body
    )
    return Incoming(payload, orjson.dumps({"event_name": "lead_qualified", "k": key}), NOW + n)


def visible(record: EventRecord | None) -> dict[str, Any]:
    """What status, dead-letters and the dashboard show of an event, but its id."""
    assert record is not None
    return {k: v for k, v in dataclasses.asdict(record).items() if k != "id"}


def settle(store: Store, keys: list[str], whole: bool, message: str | None) -> None:
    """Add, claim and complete ``keys`` as delivered whole, one way or the other."""
    store.add([item(k, n) for n, k in enumerate(keys)])
    claimed = store.claim(len(keys), NOW + 1000)
    assert [c.payload.key for c in claimed] == keys
    delivered = DeliveredWhole([c.payload for c in claimed], message, "Atrace")
    ids = [c.id for c in claimed]
    if whole:
        store.complete_delivered(ids, delivered, LATER)
    else:
        store.complete([(i, Delivery(p, State.DELIVERED, 1, None, message, None, None, "Atrace"))
                        for i, p in zip(ids, delivered.payloads, strict=True)], LATER)  # fmt: skip


def write_behind(path: Path, drop: bool, limit: int) -> WriteBehindStore:
    return WriteBehindStore(SQLiteStore(path, drop_delivered_bodies=drop), limit=limit)


def queue(path: Path, drop: bool, limit: int) -> SQLiteStore:
    return SQLiteStore(path, drop_delivered_bodies=drop)


KEYS = [f"k{n:03}" for n in range(157)]  # 100 + 5 x 10 + 7 x 1: each statement size


@pytest.mark.parametrize("message", [None, "a warning"])
@pytest.mark.parametrize("drop", [False, True], ids=["keep-bodies", "drop-delivered-bodies"])
@pytest.mark.parametrize(
    ("make", "limit"),
    [(write_behind, 1000), (write_behind, 40), (queue, 0)],
    ids=["from-memory", "partly-from-the-store", "queue"],
)
def test_recorded_as_a_delivery_per_event_records_it(
    tmp_path: Path, make: Any, limit: int, drop: bool, message: str | None
) -> None:
    stores = [make(tmp_path / f"{way}.db", drop, limit) for way in ("each", "whole")]
    try:
        for store, whole in zip(stores, (False, True), strict=True):
            settle(store, KEYS, whole, message)
        each, whole = stores
        for key in KEYS:
            assert visible(whole.get(key)) == visible(each.get(key))
        assert whole.counts().by_state == each.counts().by_state
        assert {s: n for s, n in whole.counts().by_state.items() if n} == {"delivered": len(KEYS)}
    finally:
        for store in stores:
            store.close()
    files = {}
    for way in ("each", "whole"):
        with sqlite3.connect(tmp_path / f"{way}.db") as db:
            files[way] = (
                db.execute("SELECT id, key FROM events ORDER BY id").fetchall(),
                db.execute("SELECT * FROM bodies ORDER BY id").fetchall(),
            )
    assert files["whole"] == files["each"]  # the same ids, one row per key, the same bodies
    rows, bodies = files["whole"]
    assert sorted(key for _, key in rows) == KEYS and len(bodies) == (0 if drop else len(KEYS))


@pytest.mark.parametrize("limit", [999, 12], ids=["999-parameters", "12-parameters"])
def test_a_connection_binding_fewer_parameters_records_the_same(tmp_path: Path, limit: int) -> None:
    # 999 before SQLite 3.32 unless built otherwise: fewer rows to a statement, the same rows.
    stores = [write_behind(tmp_path / f"{way}.db", True, 1000) for way in ("each", "whole")]
    try:
        for store, whole in zip(stores, (False, True), strict=True):
            store._store._writer.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
            settle(store, KEYS, whole, "a warning")
        each, whole = stores
        for key in KEYS:
            assert visible(whole.get(key)) == visible(each.get(key))
    finally:
        for store in stores:
            store.close()


def test_ids_are_never_reused_after_a_purge(tmp_path: Path) -> None:
    store = write_behind(tmp_path / "wb.db", True, 1000)
    try:
        settle(store, KEYS[:10], True, None)
        assert store.purge(delivered_before=LATER + 1, drop_originals=False) == 10
        settle(store, KEYS[10:20], True, None)
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "wb.db") as db:
        ids = [i for (i,) in db.execute("SELECT id FROM events ORDER BY id")]
    assert ids == list(range(11, 21))  # as a Delivery per event numbers them


@pytest.mark.parametrize("writer", ["another process", "the same connection"])
def test_a_key_stored_meanwhile_keeps_its_row(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "wb.db"
    inner = SQLiteStore(path, drop_delivered_bodies=True)
    store = WriteBehindStore(inner)
    try:
        store.add([item("a", 1), item("b", 2), item("c", 3)])
        claimed = store.claim(10, NOW + 100)
        if writer == "another process":  # e.g. serve --no-worker on the same data_dir
            with SQLiteStore(path) as intake:
                intake.add([item("b", 9)])
        else:  # keys are not looked up again: the insert meets it, and is done again
            inner.add([item("b", 9)])
        delivered = DeliveredWhole([c.payload for c in claimed], None, "Atrace")
        store.complete_delivered([c.id for c in claimed], delivered, LATER)
        a, b, c = (store.get(k) for k in "abc")
        assert a is not None and c is not None and b is not None
        assert (a.state, c.state, a.fbtrace_id) == (State.DELIVERED, State.DELIVERED, "Atrace")
        assert (b.state, b.lead_id) == (State.QUEUED, 123456789012345 + 9)  # the first one wins
        assert store.counts().in_flight == 0  # none held any more
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (3,)


def _report(rows: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in rows.getvalue().splitlines()]


def test_the_tally_counts_a_whole_batch_as_its_deliveries() -> None:
    payloads: list[Payload] = [item(f"k{n}", n).outcome for n in range(3)]  # type: ignore[misc]
    delivered = DeliveredWhole(payloads, "a warning", "Atrace")
    reports = [io.BytesIO(), io.BytesIO()]
    tallies = [Tally(report=reports[0]), Tally(report=reports[1]), Tally(), Tally()]
    wheres = ["f line 1", None, "f line 3"]
    tallies[0].deliveries(delivered, wheres)
    tallies[1].deliveries(list(delivered), wheres)
    tallies[2].deliveries(delivered)
    for d in delivered:
        tallies[3].delivery(d)
    assert [t.delivered_now for t in tallies] == [3, 3, 3, 3]
    # The rows of a batch delivered whole, written at once, are each event's row byte for byte.
    assert reports[0].getvalue() == reports[1].getvalue()
    assert [(r["event_id"], r["where"]) for r in _report(reports[0])] == list(
        zip(["k0", "k1", "k2"], wheres, strict=True)
    )
    assert {(r["outcome"], r["message"], r["fbtrace_id"]) for r in _report(reports[0])} == {
        ("delivered", "a warning", "Atrace")
    }
