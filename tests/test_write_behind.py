"""send's write-behind store on a real SQLite file: what it reads waits in memory and is stored
once, with its outcome, exactly as the queue (add, claim, complete) would have left it."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from conftest import make_settings
from leadrelay import send, send_store
from leadrelay.delivery import wal_sync
from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import EventRecord, Incoming, StoreError
from leadrelay.delivery.write_behind import WriteBehindStore
from leadrelay.outcome import Delivery, FieldNote, Filtered, Payload, State
from leadrelay.sandbox import SandboxOptions, SandboxServer

NOW = 1767800000.0
LATER = NOW + 5.0


def encoded(key: str, n: int = 0, notes: tuple[FieldNote, ...] = ()) -> EncodedPayload:
    body = orjson.dumps({"event_name": "Qualified", "event_id": key, "n": n})
    return EncodedPayload(
        key, "lead_qualified", "Qualified", 123456789012345 + n, 1767799000, body, notes
    )


def item(key: str, n: int = 0, at: float = NOW, **kw: Any) -> Incoming:
    return Incoming(
        encoded(key, n, **kw), orjson.dumps({"event_name": "lead_qualified", "k": key}), at
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WriteBehindStore]:
    s = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"), limit=100)
    yield s
    s.close()


def visible(record: EventRecord | None) -> dict[str, Any]:
    """What status, dead-letters and the dashboard show of an event, but its id."""
    assert record is not None
    return {k: v for k, v in dataclasses.asdict(record).items() if k != "id"}


RESULTS = [
    Delivery(encoded("x"), State.DELIVERED),
    Delivery(encoded("x"), State.DELIVERED, attempts=2, message="a warning", fbtrace_id="Btrace"),
    Delivery(encoded("x"), State.DELIVERED, attempts=3, extra={"retried": True}),
    Delivery(
        encoded("x"),
        State.REJECTED,
        reason="meta_rejected",
        message="Invalid parameter",
        code=100,
        subcode=2804036,
        fbtrace_id="Atrace",
    ),
    Delivery(encoded("x"), State.DEAD, attempts=5, reason="retries_exhausted", message="500"),
    Delivery(encoded("x"), State.EXPIRED, reason="too_old", message="8 days old"),
    Delivery(encoded("x"), State.QUEUED, attempts=0, reason="paused_auth", message="token"),
]


@pytest.mark.parametrize("drop", [False, True], ids=["keep-bodies", "drop-delivered-bodies"])
@pytest.mark.parametrize("result", RESULTS, ids=lambda d: f"{d.state.value}-{d.attempts}")
def test_stored_once_exactly_as_the_queue_leaves_it(
    tmp_path: Path, result: Delivery, drop: bool
) -> None:
    notes = (FieldNote("user_data.ph", "invalid_phone", "not a phone number"),)
    queue = SQLiteStore(tmp_path / "queue.db", drop_delivered_bodies=drop)
    behind = WriteBehindStore(SQLiteStore(tmp_path / "behind.db", drop_delivered_bodies=drop))
    try:
        for s in (queue, behind):
            [id_] = s.add([item("k1", 7, notes=notes)])
            [claimed] = s.claim(10, NOW + 1)
            assert claimed.id == id_ and claimed.payload == encoded("k1", 7, notes)
            s.complete([(claimed.id, dataclasses.replace(result, payload=claimed.payload))], LATER)
        assert visible(behind.get("k1")) == visible(queue.get("k1"))
        assert behind.counts().by_state == queue.counts().by_state
    finally:
        queue.close()
        behind.close()


def test_a_payload_stays_in_memory_until_its_outcome_is_known(store: WriteBehindStore) -> None:
    ids = store.add([item("a"), item("b")])
    assert all(i < 0 for i in ids)
    assert store.get("a") is None  # nothing written yet
    counts = store.counts()
    assert (counts.queued, counts.in_flight, counts.oldest_queued_at) == (2, 0, NOW)
    claimed = store.claim(1, NOW)
    assert [c.id for c in claimed] == ids[:1]
    assert (store.counts().queued, store.counts().in_flight) == (1, 1)
    store.complete([(claimed[0].id, Delivery(claimed[0].payload, State.DELIVERED))], LATER)
    record = store.get("a")
    assert record is not None and record.state is State.DELIVERED and record.id > 0
    assert store.counts().by_state["delivered"] == 1 and store.counts().queued == 1


def test_the_first_outcome_of_a_key_wins_and_is_sent_once(store: WriteBehindStore) -> None:
    """But for a key stored as an event Meta never saw (filtered here): a payload added later
    takes its place (the config was fixed), under its id."""
    [stored] = store.add([Incoming(Filtered("f", "lead_qualified", "unmapped", "no"), None, NOW)])
    ids = store.add([item("f"), item("a", 1), item("a", 2), item("b")])
    assert ids[0] == stored and ids[1] == ids[2]
    claimed = store.claim(10, NOW)
    assert sorted((c.payload.key, c.payload.lead_id) for c in claimed) == [
        ("a", 123456789012346),
        ("b", 123456789012345),
        ("f", 123456789012345),
    ]
    assert [c.id for c in claimed if c.payload.key == "f"] == [stored]
    # A key read first as a filtered event, then as a payload, in the same chunk: as across
    # chunks, the payload takes the place of the filtered event (it stayed filtered).
    both = store.add(
        [Incoming(Filtered("g", "lead_qualified", "unmapped", "no"), None, NOW), item("g")]
    )
    assert both[0] == both[1] > 0
    assert [(c.id, c.payload.key) for c in store.claim(10, NOW)] == [(both[0], "g")]
    # A key recorded is found in the store: an earlier run's events are not sent again.
    store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in claimed], LATER)
    again = store.add([item("a"), item("b")])
    assert again == [store.get("a").id, store.get("b").id]  # type: ignore[union-attr]
    assert store.claim(10, NOW) == []


def test_a_key_another_process_stored_before_it_is_read_is_sent_once_as_stored(
    tmp_path: Path,
) -> None:
    # Keys are looked up through the writer, whose cache has read the key index by then: what
    # another process committed since is seen all the same.
    store = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"))
    try:
        store.add([item("a", 1)])
        with SQLiteStore(tmp_path / "wb.db") as intake:  # e.g. serve --no-worker
            [theirs] = intake.add([item("b", 9)])
        ids = store.add([item("b", 2), item("c", 3)])
        assert ids[0] == theirs > 0 and ids[1] < 0  # "c" waits in memory
        # "b" is sent once: as the other process stored it (queued), not as read here.
        claimed = {c.payload.key: c.payload.lead_id for c in store.claim(10, NOW)}
        assert claimed == {"a": 123456789012346, "c": 123456789012348, "b": 123456789012354}
    finally:
        store.close()


def test_past_the_limit_the_store_holds_the_backlog(tmp_path: Path) -> None:
    store = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"), limit=3)
    try:
        ids = store.add([item(f"k{i}", i) for i in range(5)])
        assert [i < 0 for i in ids] == [True, True, True, False, False]
        assert store.get("k3") is not None and store.get("k2") is None
        claimed = store.claim(10, NOW)
        assert [c.payload.key for c in claimed] == ["k0", "k1", "k2", "k3", "k4"]
        assert [c.payload for c in claimed] == [encoded(f"k{i}", i) for i in range(5)]
        store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in claimed], LATER)
        assert store.counts().by_state["delivered"] == 5
    finally:
        store.close()


def test_a_full_memory_makes_the_reader_wait_while_delivery_takes_events(tmp_path: Path) -> None:
    """With send --jobs 2 the reader outpaced delivery, and what it read past the limit went to
    the store, queued, to be written again once delivered (a million events: 37 s instead of
    27). Now it waits for room while delivery takes events: every event stays in memory until
    its outcome is known."""
    store = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"), limit=10, wait_for_delivery_s=30)
    delivered: list[str] = []

    def deliver() -> None:  # slower than the reader: 4 events every 20 ms
        deadline = time.monotonic() + 60
        while len(delivered) < 50 and time.monotonic() < deadline:
            claimed = store.claim(4, NOW)
            store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in claimed], LATER)
            delivered.extend(c.payload.key for c in claimed)
            time.sleep(0.02)

    delivery = threading.Thread(target=deliver)
    delivery.start()
    try:
        kept = [store.add([item(f"k{c}-{i}", i) for i in range(10)]) for c in range(5)]
    finally:
        delivery.join()
    try:
        assert all(i < 0 for ids in kept for i in ids)  # none went to the store unsettled
        assert delivered == [f"k{c}-{i}" for c in range(5) for i in range(10)]
        assert store.counts().by_state["delivered"] == 50
    finally:
        store.close()


def test_a_reader_waits_for_room_only_while_delivery_takes_events(tmp_path: Path) -> None:
    """Delivery paused (Meta's throttling, retries) or stopped: what does not fit in memory goes
    to the store, as before, after the wait; and closing stops a wait at once."""
    path = tmp_path / "wb.db"
    store = WriteBehindStore(SQLiteStore(path), limit=3, wait_for_delivery_s=0.5)
    try:
        assert all(i < 0 for i in store.add([item(f"k{i}", i) for i in range(3)]))
        assert all(i > 0 for i in store.add([item("k3", 3), item("k4", 4)]))
        # Once a wait ran out, the next adds do not wait again (10 of them: 5 s if they did)
        # until delivery takes events.
        started = time.monotonic()
        for n in range(10):
            assert store.add([item(f"j{n}", n)])[0] > 0
        assert time.monotonic() - started < 4
        store.claim(1, NOW)
        assert store.add([item("k5", 5)])[0] < 0  # room for one
    finally:
        store.close()
    store = WriteBehindStore(SQLiteStore(path), limit=3, wait_for_delivery_s=600)
    store.add([item(f"m{i}", i) for i in range(3)])
    late = threading.Thread(target=store.add, args=([item("m3", 3)],))
    late.start()
    late.join(0.2)
    assert late.is_alive()  # waiting for room
    store.close()  # stores what is in memory, and the waiting add's event
    late.join(30)
    assert not late.is_alive()
    with SQLiteStore(path) as reopened:
        keys = sorted(c.payload.key for c in reopened.claim(100, NOW))
    assert keys == [
        *(f"j{n}" for n in range(10)),
        *(f"k{n}" for n in range(6)),
        "m0",
        "m1",
        "m2",
        "m3",
    ]


def test_closing_stores_what_is_still_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    store = WriteBehindStore(SQLiteStore(path))
    store.add([item(f"k{i}", i) for i in range(4)])
    store.claim(1, NOW)  # held by a batch that never finished
    store.close()
    with SQLiteStore(path) as reopened:
        assert reopened.release_in_flight() == 0
        claimed = reopened.claim(10, NOW)
        assert sorted(c.payload.key for c in claimed) == ["k0", "k1", "k2", "k3"]
        assert {c.payload.key: c.payload for c in claimed}["k2"] == encoded("k2", 2)
        original = reopened.get("k1")
        assert original is not None and original.original == {
            "event_name": "lead_qualified",
            "k": "k1",
        }


def test_a_retry_waits_in_the_store(store: WriteBehindStore) -> None:
    store.add([item("a"), item("b")])
    claimed = store.claim(10, NOW)
    store.retry_later([c.id for c in claimed], NOW + 60, "retries_exhausted", "500", attempts=3)
    for key in ("a", "b"):
        record = store.get(key)
        assert record is not None
        assert (record.state, record.attempts, record.next_attempt_at, record.reason) == (
            State.QUEUED,
            3,
            NOW + 60,
            "retries_exhausted",
        )
    assert store.claim(10, NOW) == []  # not due yet
    assert [c.payload.key for c in store.claim(10, NOW + 61)] == ["a", "b"]


def test_released_events_are_claimed_again_first(store: WriteBehindStore) -> None:
    store.add([item("a"), item("b"), item("c")])
    first = store.claim(2, NOW)
    assert store.release_in_flight() == 2
    again = store.claim(10, NOW)
    assert [c.payload.key for c in again] == ["a", "b", "c"]
    assert [c.id for c in again[:2]] == [c.id for c in first]


def test_payloads_mapped_in_other_processes_are_encoded_once_here(store: WriteBehindStore) -> None:
    data = {"event_name": "Qualified", "event_id": "p", "n": 1}
    plain = Payload("p", "lead_qualified", "Qualified", 123456789012346, 1767799000, data)
    odd = Payload("odd", "lead_qualified", "Qualified", 123456789012347, 1767799000, {"x": {1}})
    huge = Payload("huge", "lead_qualified", "Qualified", 2**64, 1767799000, {"x": 1})
    ids = store.add([Incoming(o, None, NOW) for o in (plain, odd, huge)])
    assert ids[0] < 0 < ids[1] and ids[2] > 0
    [claimed] = store.claim(10, NOW)
    assert type(claimed.payload) is EncodedPayload and claimed.payload.body == orjson.dumps(data)
    assert claimed.payload == plain
    for key in ("odd", "huge"):  # stored at once, as the queue stores them: never sent
        record = store.get(key)
        assert record is not None
        assert (record.state, record.reason) == (State.REJECTED, "unencodable")


@pytest.mark.parametrize(
    ("lead_id", "event_time"),
    [(2**63, 1767799000), (-(2**63) - 1, 1767799000), (123456789012345, 2**63)],
    ids=["lead-past-64-bits", "lead-below-64-bits", "time-past-64-bits"],
)
def test_an_encoded_payload_past_64_bits_is_stored_rejected_not_kept(
    store: WriteBehindStore, lead_id: int, event_time: int
) -> None:
    odd = EncodedPayload("odd", "lead_qualified", "Qualified", lead_id, event_time, b"{}")
    edge = EncodedPayload("edge", "lead_qualified", "Qualified", 2**63 - 1, -(2**63), b"{}")
    ids = store.add([Incoming(odd, None, NOW), Incoming(edge, None, NOW)])
    assert ids[0] > 0 > ids[1]  # stored at once; the one that fits waits in memory
    record = store.get("odd")
    assert record is not None and (record.state, record.reason) == (State.REJECTED, "unencodable")
    assert [c.payload.key for c in store.claim(10, NOW)] == ["edge"]


def test_what_the_reader_stores_waits_for_no_disk_and_close_makes_it_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    failing: list[OSError] = []

    def fsync(fd: int) -> None:
        if failing:
            raise failing[0]
        synced.append(fd)

    monkeypatch.setattr(wal_sync, "_fsync", fsync)
    unmapped = Filtered("f", "lead_lost", "unmapped", "not in [mapping]")
    for fails in (False, True):
        store = WriteBehindStore(SQLiteStore(tmp_path / f"wb-{fails}.db"))
        synced.clear()
        store.add([Incoming(unmapped, None, NOW), item("a")])
        assert store.get("f") is not None and synced == []
        assert store._store._deferred == 1  # committed without SQLite's fsync: left to a sync
        if fails:
            failing.append(OSError(5, "Input/output error"))
            with pytest.raises(StoreError, match="cannot sync the write-ahead log"):
                store.close()  # said, not swallowed: the filtered event may not be on disk
            failing.clear()
        else:
            store.close()
            assert len(synced) >= 1


def test_memory_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    size = len(encoded("k0").body or b"") + len(item("k0").original or b"")
    store = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"), limit=100, limit_bytes=2 * size)
    try:
        ids = store.add([item(f"k{i}") for i in range(4)])
        assert [i < 0 for i in ids] == [True, True, False, False]
        store.claim(2, NOW)  # claimed: no longer waiting, room for two more
        assert [i < 0 for i in store.add([item("k4"), item("k5"), item("k6")])] == [
            True,
            True,
            False,
        ]
    finally:
        store.close()


def test_the_longest_due_is_claimed_first_from_the_store_or_memory(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    with SQLiteStore(path) as earlier:  # left queued by an earlier run
        earlier.add([item("old", at=NOW - 100)])
    store = WriteBehindStore(SQLiteStore(path))
    try:
        store.add([item("a"), item("b")])
        assert [c.payload.key for c in store.claim(2, NOW + 1)] == ["old", "a"]
        [b] = store.claim(10, NOW + 1)
        store.retry_later([b.id], NOW + 60, "retries_exhausted", "500", attempts=3, now=NOW + 1)
        store.add([item("c", at=NOW + 50), item("d", at=NOW + 70)])
        # b waits in the store, due at NOW + 60: after c (read at NOW + 50), before d.
        keys = [c.payload.key for _ in range(3) for c in store.claim(1, NOW + 80)]
        assert keys == ["c", "b", "d"]
    finally:
        store.close()


class FailingOnce(SQLiteStore):
    """A store whose next ``record`` fails as a busy database does."""

    fail = 1

    def record(self, settled: Any, now: float, **options: Any) -> list[int]:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().record(settled, now, **options)


def test_a_retry_that_failed_to_be_stored_can_be_stored_again(tmp_path: Path) -> None:
    store = WriteBehindStore(FailingOnce(tmp_path / "wb.db"))
    try:
        store.add([item("a"), item("b")])
        ids = [c.id for c in store.claim(10, NOW)]
        with pytest.raises(sqlite3.OperationalError):
            store.retry_later(ids, NOW + 60, "internal_error", "boom", attempts=0, now=NOW)
        assert store.get("a") is None and store.counts().in_flight == 2  # still held
        store.retry_later(ids, NOW + 60, "internal_error", "boom", attempts=0, now=NOW)
        for key in ("a", "b"):
            record = store.get(key)
            assert record is not None
            assert (record.state, record.next_attempt_at, record.reason) == (
                State.QUEUED,
                NOW + 60,
                "internal_error",
            )
        assert store.claim(10, NOW + 59) == []
        assert [c.payload.key for c in store.claim(10, NOW + 60)] == ["a", "b"]
    finally:
        store.close()


@pytest.mark.parametrize("drop", [False, True], ids=["keep-bodies", "drop-delivered-bodies"])
@pytest.mark.parametrize("result", RESULTS[:4], ids=["delivered", "warned", "retried", "rejected"])
def test_a_key_another_process_stored_meanwhile_keeps_its_row(
    tmp_path: Path, result: Delivery, drop: bool
) -> None:
    path = tmp_path / "wb.db"
    store = WriteBehindStore(SQLiteStore(path, drop_delivered_bodies=drop))
    try:
        store.add([item("a", 1), item("b", 2)])
        [a, b] = store.claim(10, NOW)
        with SQLiteStore(path) as intake:  # e.g. serve --no-worker on the same data_dir
            intake.add([item("a", 9)])
        done = [(c.id, dataclasses.replace(result, payload=c.payload)) for c in (a, b)]
        store.complete(done, LATER)
        kept, ours = store.get("a"), store.get("b")
        assert kept is not None and ours is not None
        assert (kept.state, kept.lead_id) == (State.QUEUED, 123456789012345 + 9)
        assert (ours.state, ours.lead_id) == (result.state, 123456789012345 + 2)
        dropped = drop and result.state is State.DELIVERED  # its body is not kept
        assert ours.payload == (None if dropped else orjson.loads(encoded("b", 2).body or b""))
        with sqlite3.connect(path) as db:  # no body without its event
            orphans = "SELECT count(*) FROM bodies WHERE id NOT IN (SELECT id FROM events)"
            assert db.execute(orphans).fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM events").fetchone() == (2,)
    finally:
        store.close()


def test_a_write_by_another_process_is_remembered_for_keys_looked_up_before_it(
    tmp_path: Path,
) -> None:
    # The store looks up no key it was told is new, unless another connection wrote since it
    # opened: a write seen at one record still counts at the next, whose keys predate it.
    path = tmp_path / "wb.db"
    store = WriteBehindStore(SQLiteStore(path, drop_delivered_bodies=True))
    try:
        store.add([item("a", 1), item("b", 2)])
        a, b = store.claim(10, NOW)
        with SQLiteStore(path) as intake:
            intake.add([item("b", 9)])
        store.complete([(a.id, Delivery(a.payload, State.DELIVERED))], LATER)
        store.complete([(b.id, Delivery(b.payload, State.DELIVERED))], LATER)
        stored_a, stored_b = store.get("a"), store.get("b")
        assert stored_a is not None and stored_a.state == State.DELIVERED
        assert stored_b is not None and (stored_b.state, stored_b.lead_id) == (
            State.QUEUED,
            123456789012345 + 9,
        )
    finally:
        store.close()


def test_a_retry_keeps_the_row_another_process_stored_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "wb.db"
    store = WriteBehindStore(SQLiteStore(path))
    try:
        store.add([item("a", 1), item("b", 2)])
        ids = [c.id for c in store.claim(10, NOW)]
        with SQLiteStore(path) as intake:
            intake.add([item("a", 9)])
        store.retry_later(ids, NOW + 60, "internal_error", "boom", attempts=1, now=NOW)
        kept, ours = store.get("a"), store.get("b")
        assert kept is not None and (kept.lead_id, kept.reason) == (123456789012345 + 9, None)
        assert ours is not None and (ours.state, ours.reason) == (State.QUEUED, "internal_error")
    finally:
        store.close()


def test_a_key_stored_through_the_same_connection_meanwhile_keeps_its_row(
    tmp_path: Path,
) -> None:
    # No other connection wrote, so the keys are not looked up: the insert meets the stored key
    # (a race in this process), and the store records the batch again, looking keys up.
    inner = SQLiteStore(tmp_path / "wb.db", drop_delivered_bodies=True)
    store = WriteBehindStore(inner)
    try:
        store.add([item("a", 1), item("b", 2)])
        a, b = store.claim(10, NOW)
        inner.add([item("a", 9)])
        done = [(c.id, Delivery(c.payload, State.DELIVERED)) for c in (a, b)]
        store.complete(done, LATER)
        kept, ours = store.get("a"), store.get("b")
        assert kept is not None and (kept.state, kept.lead_id) == (
            State.QUEUED,
            123456789012345 + 9,
        )
        assert ours is not None and ours.state == State.DELIVERED
        with sqlite3.connect(tmp_path / "wb.db") as db:
            assert db.execute("SELECT count(*) FROM events").fetchone() == (2,)
    finally:
        store.close()


def test_a_send_past_the_memory_limit_delivers_through_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meta slower than reading: past the limit, the backlog is stored as queued and delivered
    from the store; every event reaches Meta once and is stored once, delivered."""
    monkeypatch.setattr(send_store, "_WAITING", 10)
    spilled: list[int] = []
    add = SQLiteStore.add_new

    def counting_add(self: SQLiteStore, items: Any, **kw: Any) -> Any:
        spilled.append(sum(isinstance(i.outcome, Payload) for i in items))
        return add(self, items, **kw)

    monkeypatch.setattr(SQLiteStore, "add_new", counting_add)
    ms = int((time.time() - 600) * 1000)
    src = tmp_path / "events.ndjson"
    src.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "event_name": "lead_qualified",
                    "facebook_lead_id": 100000000000000 + i,
                    "user": {"email": f"u{i}@example.com"},
                    "context": {"event_id": f"e{i}", "event_timestamp": ms},
                }
            )
            + b"\n"
            for i in range(400)
        )
    )
    with SandboxServer(SandboxOptions(slow_ms=20)) as server:
        settings = make_settings(
            graph_url=server.url,
            access_token="sandbox-token",
            delivery={"batch_size": 25},
            server={"data_dir": str(tmp_path / "data")},
        )
        options = send.SendOptions(files=[str(src)])
        assert send.run_send(settings, options, err=Console(file=io.StringIO())) == 0
        ids = [e["event_id"] for e in server.state.received()]
    assert sorted(ids) == sorted(f"e{i}" for i in range(400))
    assert sum(spilled) > 0  # the store held part of the backlog
    with SQLiteStore(tmp_path / "data" / "leadrelay.db") as stored:
        assert stored.counts().by_state["delivered"] == 400


def test_an_add_after_close_fails_rather_than_keeping_events_nowhere(tmp_path: Path) -> None:
    store = WriteBehindStore(SQLiteStore(tmp_path / "wb.db"))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add([item("late")])


def test_an_add_while_closing_is_refused_not_kept_in_memory(tmp_path: Path) -> None:
    """A reader not stopped yet (a second Ctrl-C) may add while the store closes: the add
    waits for the close and fails, instead of keeping events in memory that nothing stores."""
    entered, release = threading.Event(), threading.Event()

    class SlowClose(SQLiteStore):
        def close(self) -> None:
            entered.set()
            release.wait(10)
            super().close()

    path = tmp_path / "wb.db"
    store = WriteBehindStore(SlowClose(path))
    closing = threading.Thread(target=store.close)
    closing.start()
    assert entered.wait(10)
    outcome: list[object] = []

    def add() -> None:
        try:
            outcome.append(store.add([item("a")]))
        except StoreError as exc:
            outcome.append(exc)

    adding = threading.Thread(target=add)
    adding.start()
    adding.join(0.3)
    release.set()
    closing.join(10)
    adding.join(10)
    [result] = outcome
    with SQLiteStore(path) as stored:
        assert isinstance(result, StoreError) or stored.get("a") is not None, result


def test_counts_since_a_time_count_only_what_arrived_since_as_the_queue_does(
    tmp_path: Path,
) -> None:
    queue = SQLiteStore(tmp_path / "queue.db")
    behind = WriteBehindStore(SQLiteStore(tmp_path / "behind.db"))
    try:
        for s in (queue, behind):
            s.add([item("old1", at=NOW), item("old2", at=NOW)])
            s.claim(1, NOW + 1)  # old1 in flight, old2 waiting
            s.add([item("new1", at=NOW + 10), item("new2", at=NOW + 10)])
        for since in (None, NOW - 1, NOW + 5, NOW + 20):
            assert behind.counts(since).by_state == queue.counts(since).by_state, since
        assert behind.counts(NOW + 5).by_state["in_flight"] == 0
        assert behind.counts(NOW + 5).by_state["queued"] == 2
        assert behind.counts(NOW + 5).queued == 3  # the backlog, whatever since says
    finally:
        queue.close()
        behind.close()
