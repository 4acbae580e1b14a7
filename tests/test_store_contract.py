"""The Store protocol as every backend keeps it: each test runs on SQLite (a real file) and on
Redis (a real redis-server). What only one backend does is in test_sqlite_store.py and
test_redis_store.py."""

from __future__ import annotations

import sqlite3
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from leadrelay.delivery import sqlite_store
from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.redis import connection as redis_connection
from leadrelay.delivery.redis import reads as redis_reads
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming, Outcomes, Store, StoreError
from leadrelay.delivery.store_rows import with_other_stages
from leadrelay.outcome import Delivery, FieldNote, Filtered, Payload, Rejected, State

NOW = 1767800000.0
LEAD_17 = 12345678901234567  # 17 digits: beyond a double's exact integers


def lead_of(key: str) -> int:
    """A distinct 17-digit lead per key: Redis holds back an event while an earlier one of its
    lead is in flight, so events of different keys must not share a lead by accident."""
    return LEAD_17 + zlib.crc32(key.encode()) % 10**6


def payload(key: str, *, lead_id: int | None = None, data: dict[str, Any] | None = None) -> Payload:
    body = data if data is not None else {"event_name": "Qualified", "n": key}
    lead = lead_of(key) if lead_id is None else lead_id
    return Payload(key, "lead_qualified", "Qualified", lead, int(NOW) - 60, body)


def incoming(
    outcome: Payload | Filtered | Rejected, at: float = NOW, original: Any = None
) -> Incoming:
    return Incoming(outcome, None if original is None else orjson.dumps(original), at)


def queued(store: Store, *keys: str, at: float = NOW, lead_id: int | None = None) -> list[int]:
    return store.add([incoming(payload(k, lead_id=lead_id), at) for k in keys])


def states(store: Store, ids: list[int]) -> list[State]:
    return [r.state for r in (store.get(i) for i in ids) if r is not None]


def deliver(store: Store, claimed: Any, now: float = NOW) -> None:
    store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in claimed], now)


def refused_by_meta_and_delivered(store: Store, refused: str, delivered: str) -> tuple[int, int]:
    """Store a payload under each key and settle them: the first refused by Meta (its lead
    id), the second delivered. Their ids."""
    refused_id, delivered_id = store.add_new(
        [incoming(payload(refused)), incoming(payload(delivered))]
    ).ids
    claimed = {c.payload.key: c for c in store.claim(10, NOW)}
    store.complete(
        [
            (refused_id, Delivery(claimed[refused].payload, State.REJECTED, 1, "meta_100_2804036")),
            (delivered_id, Delivery(claimed[delivered].payload, State.DELIVERED, 1)),
        ],
        NOW,
    )
    return refused_id, delivered_id


def refused_by_us(key: str) -> Rejected:
    """A Qualified event refused by our rules: its lead id."""
    reason, field = "invalid_lead_id", "user_data.lead_id"
    return Rejected(key, "lead_qualified", reason, field, "4 digits", event_name="Qualified")


class Backend:
    """One backend's storage for a test, and the few things a test needs to reach behind the
    protocol: open a store on it (again), see every byte it holds, fake a newer schema."""

    name: str
    schema_version: int
    wide_lead_id: int | None
    """What a lead id wider than 64 bits reads back as (SQLite's integers stop at 64 bits)."""

    def __init__(self) -> None:
        self.opened: list[Store] = []

    def open(self, **options: Any) -> Store:
        """A store on this backend's data, as a (re)started process opens it; closed at the end
        of the test unless the test takes it out of ``opened``."""
        self.opened.append(self._open(**options))
        return self.opened[-1]

    def _open(self, **options: Any) -> Store:
        raise NotImplementedError

    def stored_bytes(self) -> bytes:
        """Every byte the backend holds, to look for what must not be kept."""
        raise NotImplementedError

    def write_schema_version(self, version: int) -> None:
        """Mark the stored data as written by a leadrelay with schema ``version``."""
        raise NotImplementedError

    def walk_in_chunks_of(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        """Make calls that walk many events (purge; Redis: events too) go in chunks of ``n``."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"
    schema_version = sqlite_store.SCHEMA_VERSION
    wide_lead_id = None

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self, **options: Any) -> Store:
        return SQLiteStore(self.path, **options)

    def stored_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.path.parent.iterdir())  # with the WAL

    def write_schema_version(self, version: int) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(f"PRAGMA user_version = {version}")

    def walk_in_chunks_of(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        monkeypatch.setattr(sqlite_store, "_PURGE_CHUNK", n)


class RedisBackend(Backend):
    name = "redis"
    schema_version = redis_connection.SCHEMA_VERSION
    wide_lead_id = 10**24  # Redis keeps it as text: exactly

    def __init__(self, url: str, client: redis.Redis) -> None:
        super().__init__()
        self.url, self.client = url, client

    def _open(self, **options: Any) -> Store:
        options.setdefault("consumer", "a")  # a restarted process keeps its consumer name
        return RedisStore(self.url, **options)

    def stored_bytes(self) -> bytes:
        out = []
        for key in self.client.scan_iter(count=1000):
            kind = self.client.type(key)
            if kind == b"hash":
                out += [k + v for k, v in self.client.hgetall(key).items()]
            elif kind == b"stream":
                out += [orjson.dumps(str(e)) for e in self.client.xrange(key)]
            elif kind == b"string":
                out.append(self.client.get(key) or b"")
        return b"".join(out)

    def write_schema_version(self, version: int) -> None:
        self.client.hset("{lr}:meta", "schema", version)

    def walk_in_chunks_of(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        monkeypatch.setattr(redis_reads, "CHUNK", n)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: Backend
    client: redis.Redis | None = None
    if request.param == "sqlite":
        folder = tmp_path / "store"  # holds nothing but the store's files
        folder.mkdir()
        made = SQLiteBackend(folder / "events.db")
    else:
        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url)
        client.flushall()
        made = RedisBackend(url, client)
    yield made
    for s in made.opened:
        s.close()
    if client is not None:
        client.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def test_payload_round_trips_exactly_and_survives_reopening(backend: Backend) -> None:
    data = {
        "event_name": "Qualified",
        "event_time": 1767799940,
        "action_source": "system_generated",
        "user_data": {"lead_id": LEAD_17, "em": ["a" * 64], "ph": None},
        "custom_data": {"lead_event_source": "CRM ü €", "value": 0.1 + 0.2, "flag": True},
    }
    notes = (FieldNote("user_data.ph", "invalid_phone", "left out: not a phone number"),)
    sent = Payload("evt-1", "lead_qualified", "Qualified", LEAD_17, 1767799940, data, notes)
    store = backend.open()
    [id_] = store.add([incoming(sent, at=NOW + 0.123456789)])
    [claimed] = store.claim(10, NOW + 1)
    assert (claimed.id, claimed.payload, claimed.attempts) == (id_, sent, 0)
    assert type(claimed.payload.lead_id) is int
    assert claimed.payload.data["user_data"]["lead_id"] == LEAD_17
    delivery = Delivery(
        sent, State.DELIVERED, attempts=2, fbtrace_id="AbC", extra={"retried": True}
    )
    store.complete([(id_, delivery)], NOW + 5)
    store.close()

    record = backend.open().get(id_)
    assert record is not None
    assert (record.state, record.attempts, record.fbtrace_id) == (State.DELIVERED, 2, "AbC")
    assert (record.payload, record.notes, record.response) == (data, notes, {"retried": True})
    assert (record.lead_id, record.received_at, record.updated_at) == (
        LEAD_17,
        NOW + 0.123456789,
        NOW + 5,
    )


def test_filtered_and_rejected_are_stored_final_and_never_claimed(
    store: Store, backend: Backend
) -> None:
    ids = store.add(
        [
            incoming(Filtered("f1", "page_view", "unmapped", "page_view is not in the mapping")),
            incoming(
                Rejected(
                    "r1",
                    "lead_qualified",
                    "invalid_lead_id",
                    "user_data.lead_id",
                    "lead id must have 15 to 17 digits",
                    value="12ab",
                )
            ),
            incoming(
                Rejected(
                    "r2",
                    "lead_qualified",
                    "invalid_lead_id",
                    "user_data.lead_id",
                    "too long",
                    value="1" * 25,
                    lead_id=10**24,
                )
            ),  # wider than 64 bits
        ]
    )
    assert store.claim(10, NOW + 1) == []
    f, r, wide = (store.get(i) for i in ids)
    assert f is not None and (f.state, f.reason, f.message, f.event_name) == (
        State.FILTERED,
        "unmapped",
        "page_view is not in the mapping",
        None,
    )
    assert r is not None and (r.state, r.reason, r.field, r.value, r.lead_id) == (
        State.REJECTED,
        "invalid_lead_id",
        "user_data.lead_id",
        "12ab",
        None,
    )
    assert wide is not None and (wide.state, wide.lead_id, wide.value) == (
        State.REJECTED,
        backend.wide_lead_id,
        "1" * 25,
    )


def test_a_payload_that_is_not_json_is_rejected_alone_not_the_batch(store: Store) -> None:
    bad = payload("bad", data={"when": {1, 2}})  # a set: not JSON
    ok, rejected = (store.get(i) for i in store.add([incoming(payload("ok")), incoming(bad)]))
    assert ok is not None and ok.state is State.QUEUED
    assert rejected is not None
    assert (rejected.state, rejected.reason) == (State.REJECTED, "unencodable")
    assert "JSON" in (rejected.message or "")
    assert [c.payload.key for c in store.claim(10, NOW)] == ["ok"]


def test_an_unencodable_payload_that_takes_a_place_keeps_its_event_time(store: Store) -> None:
    """A payload that cannot be encoded, resent in place of an event refused by our rules, is
    stored rejected (``unencodable``) under that id with its event_time, on every backend
    (SQLite left it NULL, Redis kept it)."""
    refused = Rejected("u", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "12 digits")
    [id_] = store.add([incoming(refused)])
    bad = payload("u", data={"when": {1, 2}})  # a set: not JSON
    assert store.add([incoming(bad)]) == [id_]
    record = store.get(id_)
    assert record is not None
    assert (record.state, record.reason) == (State.REJECTED, "unencodable")
    assert (record.lead_id, record.event_time) == (bad.lead_id, bad.event_time)


def test_a_resent_event_is_stored_once(store: Store) -> None:
    first = queued(store, "a", "b")
    again = store.add([incoming(payload("b")), incoming(payload("c")), incoming(payload("c"))])
    assert again[0] == first[1]
    assert again[1] == again[2] != first[0]
    assert store.counts().by_state["queued"] == 3
    assert [c.payload.key for c in store.claim(10, NOW)] == ["a", "b", "c"]


def test_the_first_outcome_stored_for_a_key_wins(store: Store) -> None:
    """Of outcomes a request carried: delivered, refused by Meta. A payload takes the place of
    an event Meta never saw (filtered, refused by our rules), under its id, queued; again, it
    stays."""
    [id_] = store.add([incoming(Filtered("k", "lead_qualified", "consent", "no consent"))])
    assert queued(store, "k") == [id_]
    assert states(store, [id_]) == [State.QUEUED]
    (claimed,) = store.claim(10, NOW)
    assert (claimed.id, claimed.payload.key) == (id_, "k")
    refused = Delivery(claimed.payload, State.REJECTED, 1, "meta_100_2804036", "bad lead", 100)
    store.complete([(id_, refused)], NOW)
    assert queued(store, "k") == [id_]  # Meta saw it: not again
    assert states(store, [id_]) == [State.REJECTED]
    assert store.claim(10, NOW) == []
    counts = store.counts()
    assert (counts.by_state["filtered"], counts.by_state["rejected"], counts.queued) == (0, 1, 0)


def test_a_refused_event_resent_fixed_takes_its_place(store: Store) -> None:
    refused = Rejected("r", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "12 digits")
    [id_] = store.add([incoming(refused)])
    assert queued(store, "r") == [id_]
    record = store.get("r")
    assert record is not None and record.state is State.QUEUED and record.reason is None
    assert [c.id for c in store.claim(10, NOW)] == [id_]


def test_an_event_meta_refused_resent_fixed_takes_its_place_and_add_new_says_so(
    store: Store,
) -> None:
    """The CRM fixed the lead id and sent the event again under its id: Meta refused the one it
    got, so the fixed one is queued in its place (the same one again is not: it would be refused
    again). What Meta took stays as it was, fixed or not. ``add_new`` says which it stored."""
    fixed_lead = LEAD_17 + 999_999

    def fixed(key: str) -> Payload:  # its lead id, in the payload as in what Meta gets
        body = {"event_name": "Qualified", "n": key, "user_data": {"lead_id": fixed_lead}}
        return payload(key, lead_id=fixed_lead, data=body)

    refused_id, delivered_id = refused_by_meta_and_delivered(store, "r", "d")
    again = store.add_new(
        [
            incoming(payload("r")),  # as refused
            incoming(fixed("r")),
            incoming(fixed("d")),  # Meta took it
            incoming(payload("new")),
        ]
    )
    assert again.ids[:3] == [refused_id, refused_id, delivered_id]
    assert again.stored == [False, True, False, True]
    record = store.get("r")
    assert record is not None and (record.state, record.lead_id) == (State.QUEUED, fixed_lead)
    assert record.reason is None and record.attempts == 0
    assert {c.payload.key for c in store.claim(10, NOW)} == {"r", "new"}
    delivered = store.get("d")
    assert delivered is not None and delivered.state is State.DELIVERED
    assert delivered.lead_id == lead_of("d")


def test_an_event_meta_refused_read_again_later_with_the_clocks_time_is_not_sent_again(
    store: Store,
) -> None:
    """An event with no time of its own is read with the clock's: read again later, its payload
    differs from the refused one in its event_time only. It is the same event: it waits for a
    replay (it was sent again at every send, and refused again). One fixed at its source (its
    lead id) still takes the refused one's place."""

    def read_at(seconds: int, lead_id: int = LEAD_17) -> Payload:
        body = {"event_name": "Qualified", "event_time": seconds, "user_data": {"lead_id": lead_id}}
        return Payload("t", "lead_qualified", "Qualified", lead_id, seconds, body)

    [id_] = store.add([incoming(read_at(int(NOW) - 3600))])
    [claimed] = store.claim(10, NOW)
    store.complete([(id_, Delivery(claimed.payload, State.REJECTED, 1, "meta_100_2804036"))], NOW)
    assert store.add_new([incoming(read_at(int(NOW)))]).stored == [False]
    assert store.claim(10, NOW) == []
    fixed = read_at(int(NOW), lead_id=LEAD_17 + 1)
    assert store.add_new([incoming(fixed)]).stored == [True]
    assert [c.id for c in store.claim(10, NOW)] == [id_]


def test_another_stage_takes_no_place_of_one_meta_saw_nor_of_a_refusal_by_a_refusal(
    store: Store,
) -> None:
    """A CRM that gives every stage of a deal one event_id: the second stage (another Facebook
    event name) took the place of the first when Meta had refused it (its dead letter gone; a
    send then said it was not sent, or sent it, by timing). It takes no place of an event Meta
    saw, and a refusal of it none of a refusal; a payload of it takes the place of one Meta
    never saw (refused by our rules), and is sent: Meta has nothing under the id."""

    def won(key: str, lead_id: int | None = None) -> Payload:
        p = payload(key, lead_id=lead_id)
        return Payload(key, "deal_won", "Converted", p.lead_id, p.event_time, {"n": key})

    [meta_id] = queued(store, "m")
    [claimed] = store.claim(10, NOW)
    store.complete(
        [(meta_id, Delivery(claimed.payload, State.REJECTED, 1, "meta_100_2804036"))], NOW
    )
    [ours_id] = store.add([incoming(refused_by_us("o"))])
    refused = Rejected(
        "o", "deal_won", "missing_lead_id", "user_data.lead_id", "no value", event_name="Converted"
    )
    added = store.add_new([incoming(won("m", lead_id=LEAD_17 + 7)), incoming(refused)])
    assert (added.ids, added.stored) == ([meta_id, ours_id], [False, False])
    kept = {r.key: r for r in (store.get("m"), store.get("o")) if r is not None}
    assert (kept["m"].event_name, kept["m"].reason) == ("Qualified", "meta_100_2804036")
    assert (kept["o"].event_name, kept["o"].reason) == ("Qualified", "invalid_lead_id")
    assert store.claim(10, NOW) == []
    assert store.add_new([incoming(won("o"))]).stored == [True]
    [sent] = store.claim(10, NOW)
    assert (sent.id, sent.payload.event_name) == (ours_id, "Converted")


def test_a_refusal_or_filtered_event_found_stored_as_such_is_told_alike(store: Store) -> None:
    """What the intake needs to answer a client's retry as it answered the first time: which of
    the outcomes found stored are what the stored event is (a refusal by our rules, a filtered
    event), rather than a refusal of an event Meta saw or will see."""
    assert isinstance(store, Outcomes)
    unmapped = Filtered("f", "deal_updated", "unmapped", "not in [mapping]")
    refused_by_meta_and_delivered(store, "m", "d")
    store.add([incoming(refused_by_us("o")), incoming(unmapped)])
    items = [
        incoming(refused_by_us("o")),  # refused by our rules, stored so
        incoming(unmapped),  # filtered, stored so
        incoming(refused_by_us("m")),  # Meta refused the one stored: not what it was
        incoming(refused_by_us("d")),  # delivered
        # another event of the CRM under a refused one's id: not a resend (other_stages)
        incoming(Filtered("o", "deal_updated", "unmapped", "not in [mapping]")),
        incoming(payload("d")),  # a resend of a delivered one
    ]
    added = with_other_stages(store.stages_of, items, store.add_new(items))
    assert added.stored == [False] * 6
    assert (added.alike, added.other_stages) == (frozenset({0, 1}), {4: ("", "Qualified", False)})


def test_the_same_event_renamed_by_a_fixed_config_takes_the_place_of_one_never_sent(
    store: Store,
) -> None:
    """Review: a config fixed since an event was refused by our rules, that also renames its
    Facebook event name ([mapping]), made the fixed event "another stage", not sent. Of an
    event Meta never saw, another stage is another event of the user's as well; and an event
    of another of the user's events that is filtered takes no place of it either (it took the
    refused one's place, and its dead letter was gone)."""
    refused = Rejected(
        "g",
        "lead_qualified",
        "missing_lead_id",
        "user_data.lead_id",
        "no value",
        event_name="Qualified Lead",
    )
    [g_id] = store.add([incoming(refused)])
    renamed = payload("g")  # lead_qualified, now "Qualified"
    assert store.add_new([incoming(renamed)]).stored == [True]
    assert [c.id for c in store.claim(10, NOW)] == [g_id]
    first = Rejected(
        "a", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "abc", event_name="Qualified"
    )
    [a_id] = store.add([incoming(first)])
    no_consent = Filtered("a", "deal_won", "consent", "no consent")
    unmapped = Filtered("a", "crm_other", "unmapped", "not in [mapping]")
    assert store.add_new([incoming(no_consent), incoming(unmapped)]).stored == [False, False]
    kept = store.get("a")
    assert kept is not None and (kept.id, kept.state, kept.reason) == (
        a_id,
        State.REJECTED,
        "invalid_lead_id",
    )
    config_fixed = Filtered("a", "lead_qualified", "consent", "no consent")  # the same event
    assert store.add_new([incoming(config_fixed)]).stored == [True]


def test_a_refusal_that_says_something_else_takes_the_place_of_one_never_sent(
    store: Store,
) -> None:
    """A replay that still fails, for another reason: the store says what the latest mapping
    says (status and dead-letters list showed the old reason). The same refusal again changes
    nothing, and a refusal does not take the place of what Meta answered."""
    first = Rejected("r", "lead_qualified", "missing_lead_id", "user_data.lead_id", "no value")
    [id_] = store.add([incoming(first)])
    again = Rejected("r", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "4 digits")
    assert store.add_new([incoming(again)]).stored == [True]
    assert store.add_new([incoming(again)]).stored == [False]
    record = store.get("r")
    assert record is not None and record.id == id_ and record.state is State.REJECTED
    assert (record.reason, record.message) == ("invalid_lead_id", "4 digits")
    assert store.counts().by_reason == {("rejected", "invalid_lead_id"): 1}
    [sent] = queued(store, "m")
    (claimed,) = store.claim(10, NOW)
    meta = Delivery(claimed.payload, State.REJECTED, 1, "meta_100_2804036", "bad lead", 100)
    store.complete([(sent, meta)], NOW)
    ours = Rejected("m", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "4 digits")
    assert store.add_new([incoming(ours)]).stored == [False]
    kept = store.get("m")
    assert kept is not None and kept.reason == "meta_100_2804036"


def test_a_fix_right_behind_its_refusal_in_one_batch_takes_its_place(store: Store) -> None:
    """Two requests of one group commit (or one chunk of a file) carry an event filtered, then
    fixed: as in two batches, the fix takes the place and is queued (the first outcome in the
    batch won, and the fix was answered already_stored and dropped). A third refusal saying
    something else takes the place of the second; the same one again does not."""
    no_consent = Filtered("x", "lead_qualified", "consent", "no consent")
    added = store.add_new([incoming(no_consent), incoming(payload("x")), incoming(payload("x"))])
    assert added.stored == [True, True, False] and len(set(added.ids)) == 1
    record = store.get("x")
    assert record is not None and record.state is State.QUEUED
    first = Rejected("y", "lead_qualified", "missing_lead_id", "user_data.lead_id", "no value")
    other = Rejected("y", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "4 digits")
    added = store.add_new([incoming(first), incoming(first), incoming(other)])
    assert added.stored == [True, False, True]
    refused = store.get("y")
    assert refused is not None and refused.reason == "invalid_lead_id"
    assert store.counts().by_reason == {("rejected", "invalid_lead_id"): 1}


def test_an_event_that_takes_a_place_is_received_anew(store: Store) -> None:
    """Its age in the queue is its own: the one it replaced was received days ago (the oldest
    queued age, on status, the dashboard and /metrics, said 5 days)."""
    store.add([incoming(Filtered("z", "lead_qualified", "consent", "no"), at=NOW - 5 * 86400)])
    store.add([incoming(payload("z"), at=NOW)])
    assert store.counts().oldest_queued_at == NOW
    record = store.get("z")
    assert record is not None and record.received_at == NOW


def test_events_without_a_key_are_never_merged(store: Store) -> None:
    ids = store.add([incoming(Filtered("", "x", "unmapped", "m"))] * 2)
    assert ids[0] != ids[1]
    assert store.get("") is None


def test_claim_marks_in_flight_and_never_hands_out_a_row_twice(store: Store) -> None:
    ids = queued(store, *"abcde")
    first = store.claim(3, NOW)
    second = store.claim(3, NOW)
    assert [c.id for c in first] == ids[:3]
    assert [c.id for c in second] == ids[3:]
    assert store.claim(3, NOW) == []
    assert states(store, ids) == [State.IN_FLIGHT] * 5
    assert store.counts().in_flight == 5


def test_a_send_learns_which_events_are_open_and_what_became_of_the_others(store: Store) -> None:
    """What a send asks of the events it finds stored (``Outcomes``), on every backend: open or
    not, and a settled one's outcome with when it was received and settled, in the order asked,
    the ids no longer stored left out."""
    assert isinstance(store, Outcomes)
    ids = queued(store, *"abcd", at=NOW - 5)
    claimed = store.claim(3, NOW)  # a, b, c in flight; d queued
    deliver(store, claimed[:1])
    meta = Delivery(claimed[1].payload, State.REJECTED, 1, "meta_100_2804036", "unknown lead")
    store.complete([(claimed[1].id, replace(meta, code=100, subcode=2804036))], NOW)
    stages = store.stages_of([ids[3], ids[0], ids[2], ids[1], 999_999])
    assert {i: (s.state, s.event_name, s.attempts) for i, s in stages.items()} == {
        ids[3]: (State.QUEUED, "Qualified", 0), ids[0]: (State.DELIVERED, "Qualified", 1),
        ids[2]: (State.IN_FLIGHT, "Qualified", 0), ids[1]: (State.REJECTED, "Qualified", 1),
    }  # fmt: skip
    assert {s.source_event for s in stages.values()} == {"lead_qualified"}
    assert stages[ids[0]].updated_at == NOW  # when it was settled
    got = store.outcomes([ids[1], 999_999, ids[0]])
    assert [(r.id, r.key, r.state) for r in got] == [
        (ids[1], "b", State.REJECTED),
        (ids[0], "a", State.DELIVERED),
    ]
    refused = got[0]
    assert (refused.reason, refused.code, refused.subcode) == ("meta_100_2804036", 100, 2804036)
    assert (refused.message, refused.attempts, refused.lead_id) == ("unknown lead", 1, lead_of("b"))
    assert (refused.source_event, refused.event_name) == ("lead_qualified", "Qualified")
    assert got[1].received_at == pytest.approx(NOW - 5)
    assert got[0].updated_at == pytest.approx(NOW)  # settled while a send ran: by whom


def test_claim_takes_nothing_that_is_not_due_yet(store: Store) -> None:
    queued(store, "later", at=NOW + 10)
    assert store.claim(10, NOW) == []
    assert len(store.claim(10, NOW + 10)) == 1


def test_crash_between_claim_and_complete_loses_nothing(backend: Backend) -> None:
    crashed = backend.open()
    ids = queued(crashed, *"abc")
    assert len(crashed.claim(10, NOW)) == 3
    backend.opened.remove(crashed)
    del crashed  # no close, no complete: the process died mid-batch

    restarted = backend.open()
    assert restarted.release_in_flight() == 3
    assert [c.id for c in restarted.claim(10, NOW)] == ids
    assert restarted.release_in_flight() == 3


def test_retry_later_waits_until_due(store: Store) -> None:
    [id_] = queued(store, "a")
    store.claim(10, NOW)
    store.retry_later([id_], NOW + 60, "throttled", "Meta asked us to slow down", now=NOW + 1)
    assert store.claim(10, NOW + 59) == []
    record = store.get(id_)
    assert record is not None
    assert (record.state, record.reason, record.message, record.next_attempt_at) == (
        State.QUEUED,
        "throttled",
        "Meta asked us to slow down",
        NOW + 60,
    )
    assert [(c.id, c.attempts) for c in store.claim(10, NOW + 60)] == [(id_, 1)]


def test_events_go_out_in_the_order_they_fell_due(store: Store) -> None:
    first, second = queued(store, "first", "second")
    store.claim(10, NOW)
    store.retry_later([first], NOW + 60, "throttled", None, now=NOW)
    store.retry_later([second], NOW + 30, "throttled", None, now=NOW)
    [later] = queued(store, "received-later", at=NOW + 45)
    claimed = store.claim(2, NOW + 100)
    assert [c.id for c in claimed] == [second, later]  # a backlog does not starve retries
    assert [c.id for c in store.claim(2, NOW + 100)] == [first]


@pytest.mark.parametrize(("requests", "expected"), [(0, 0), (1, 1), (3, 3)])
def test_retry_later_counts_the_requests_made(store: Store, requests: int, expected: int) -> None:
    [id_] = queued(store, "a")
    store.claim(1, NOW)
    store.retry_later([id_], NOW, "paused_auth", None, attempts=requests, now=NOW)
    [claimed] = store.claim(1, NOW)
    assert claimed.attempts == expected


def test_a_late_retry_does_not_reopen_a_finished_event(store: Store) -> None:
    [id_] = queued(store, "a")
    [c] = store.claim(1, NOW)
    deliver(store, [c])
    store.retry_later([id_], NOW, "transient", None, now=NOW)
    store.complete([(id_, Delivery(c.payload, State.DEAD, reason="retries_exhausted"))], NOW)
    assert states(store, [id_]) == [State.DELIVERED]
    assert store.claim(1, NOW + 1) == []


def test_complete_records_every_final_state_with_its_reason(store: Store) -> None:
    ids = queued(store, *"abcde")
    c = {x.id: x.payload for x in store.claim(10, NOW)}
    store.complete(
        [
            (ids[0], Delivery(c[ids[0]], State.DELIVERED)),
            (
                ids[1],
                Delivery(
                    c[ids[1]],
                    State.REJECTED,
                    attempts=3,
                    reason="invalid_parameter",
                    message="Invalid parameter",
                    code=100,
                    subcode=2804019,
                    fbtrace_id="T",
                ),
            ),
            (ids[2], Delivery(c[ids[2]], State.EXPIRED, attempts=0, reason="expired")),
            (ids[3], Delivery(c[ids[3]], State.QUEUED, attempts=1, reason="paused_auth", code=190)),
            (
                ids[4],
                Delivery(
                    c[ids[4]], State.DEAD, attempts=6, reason="retries_exhausted", message="gave up"
                ),
            ),
        ],
        NOW + 1,
    )
    records = [store.get(i) for i in ids]
    assert [(r.state, r.attempts, r.reason, r.code, r.subcode) for r in records if r] == [
        (State.DELIVERED, 1, None, None, None),
        (State.REJECTED, 3, "invalid_parameter", 100, 2804019),
        (State.EXPIRED, 0, "expired", None, None),
        (State.QUEUED, 1, "paused_auth", 190, None),
        (State.DEAD, 6, "retries_exhausted", None, None),
    ]
    assert [x.id for x in store.claim(10, NOW + 1)] == [ids[3]]


def test_complete_refuses_a_state_that_is_not_a_result_and_writes_nothing(store: Store) -> None:
    ids = queued(store, "a", "b")
    c = store.claim(10, NOW)
    with pytest.raises(ValueError, match=f"event {ids[1]}.*'filtered'"):
        store.complete(
            [
                (ids[0], Delivery(c[0].payload, State.DELIVERED)),
                (ids[1], Delivery(c[1].payload, State.FILTERED)),
            ],
            NOW,
        )
    assert states(store, ids) == [State.IN_FLIGHT] * 2


def _mixed(store: Store) -> list[int]:
    """2 delivered at NOW+10, 1 dead at NOW+70, 2 filtered + 1 rejected at NOW, 3 queued at NOW+1
    of which 1 in flight."""
    ids = queued(store, "d1", "d2", "dead", at=NOW - 5)
    c = {x.id: x.payload for x in store.claim(3, NOW)}
    store.complete([(i, Delivery(c[i], State.DELIVERED)) for i in ids[:2]], NOW + 10)
    store.complete(
        [(ids[2], Delivery(c[ids[2]], State.DEAD, reason="retries_exhausted"))], NOW + 70
    )
    ids += store.add(
        [
            incoming(Filtered("f1", "page_view", "unmapped", "m")),
            incoming(Filtered("f2", "lead_qualified", "consent", "m")),
            incoming(Rejected("r1", "lead_qualified", "invalid_lead_id", "user_data.lead_id", "m")),
        ]
    )
    ids += queued(store, "q1", "q2", "q3", at=NOW + 1)
    store.claim(1, NOW + 1)
    return ids


def test_counts_by_state_and_reason_with_the_backlog(store: Store) -> None:
    _mixed(store)
    counts = store.counts()
    assert counts.by_state == {
        "queued": 2,
        "in_flight": 1,
        "delivered": 2,
        "filtered": 2,
        "rejected": 1,
        "expired": 0,
        "dead": 1,
    }
    assert counts.by_reason == {
        ("dead", "retries_exhausted"): 1,
        ("filtered", "unmapped"): 1,
        ("filtered", "consent"): 1,
        ("rejected", "invalid_lead_id"): 1,
    }
    assert (counts.queued, counts.in_flight, counts.oldest_queued_at) == (2, 1, NOW + 1)


def test_counts_since_only_look_at_recent_changes_but_backlog_stays_whole(store: Store) -> None:
    _mixed(store)
    counts = store.counts(since=NOW + 10)
    assert {k: v for k, v in counts.by_state.items() if v} == {"delivered": 2, "dead": 1}
    assert counts.by_reason == {("dead", "retries_exhausted"): 1}
    assert (counts.queued, counts.in_flight) == (2, 1)


def test_timeline_buckets_by_state(store: Store) -> None:
    _mixed(store)
    base = NOW - NOW % 60
    assert store.timeline(NOW + 5, 60) == [(base, {"delivered": 2}), (base + 60, {"dead": 1})]
    assert store.timeline(NOW - 3600, 3600) == [
        (
            NOW - NOW % 3600,
            {"delivered": 2, "dead": 1, "filtered": 2, "rejected": 1, "queued": 2, "in_flight": 1},
        )
    ]
    with pytest.raises(ValueError, match="bucket_s"):
        store.timeline(NOW, 0)


def test_events_filters_and_pages(
    store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _mixed(store)
    backend.walk_in_chunks_of(monkeypatch, 2)  # Redis: several script calls per page
    filtered = store.events(states=[State.FILTERED, State.REJECTED])
    assert [e.key for e in filtered] == ["f1", "f2", "r1"]
    assert [e.key for e in store.events(reason="consent")] == ["f2"]
    assert [e.key for e in store.events(since=NOW + 10)] == ["d1", "d2", "dead"]
    page1 = store.events(limit=4)
    page2 = store.events(limit=4, after_id=page1[-1].id)
    assert [e.id for e in page1 + page2] == ids[:8]
    assert store.events(limit=0) == []


def test_events_without_bodies_and_the_last_id_read_the_latest_cheaply(store: Store) -> None:
    """What the dashboard's report reads: the events stored last (ids only grow), without
    their payload, original and notes, everything else as ``events`` gives it."""
    assert store.last_id() == 0
    ids = store.add(
        [incoming(payload(f"k{i}"), original={"email": f"u{i}@example.com"}) for i in range(5)]
    )
    assert store.last_id() == max(ids)
    whole = store.events(after_id=store.last_id() - 2)
    lean = store.events(after_id=store.last_id() - 2, bodies=False)
    assert [e.key for e in lean] == ["k3", "k4"]
    assert [e.payload for e in whole] != [None, None] and whole[0].original is not None
    assert [(e.payload, e.original, e.notes, e.response) for e in lean] == [
        (None, None, (), None)
    ] * 2
    strip = {"payload": None, "original": None, "notes": (), "response": None}
    assert [replace(e, **strip) for e in whole] == lean


def test_get_by_id_or_key(store: Store) -> None:
    [id_] = queued(store, "evt-42")
    by_id, by_key = store.get(id_), store.get("evt-42")
    assert by_id is not None and by_id == by_key
    assert store.get(id_ + 1) is None and store.get("nope") is None


def test_requeue_replays_dead_letters_only(store: Store) -> None:
    ids = queued(store, "dead", "done")
    c = {x.id: x.payload for x in store.claim(10, NOW)}
    store.complete(
        [
            (
                ids[0],
                Delivery(c[ids[0]], State.DEAD, attempts=6, reason="retries_exhausted", code=2),
            ),
            (ids[1], Delivery(c[ids[1]], State.DELIVERED)),
        ],
        NOW + 1,
    )
    assert store.requeue(ids, now=NOW + 2) == 1  # a delivered event is never sent again
    record = store.get(ids[0])
    assert record is not None
    assert (record.state, record.attempts, record.reason, record.code) == (
        State.QUEUED,
        0,
        None,
        None,
    )
    [claimed] = store.claim(10, NOW + 2)
    assert (claimed.id, claimed.payload, claimed.attempts) == (ids[0], c[ids[0]], 0)
    assert store.counts().by_state["dead"] == 0


def test_requeue_with_remapped_payloads(store: Store) -> None:
    [f] = store.add([incoming(Filtered("k", "lead_won", "unmapped", "lead_won is not mapped"))])
    assert store.requeue([f]) == 0  # nothing to send without a payload
    fixed = payload("k", data={"event_name": "Won"})
    assert store.requeue([f], [fixed], now=NOW) == 1
    [claimed] = store.claim(1, NOW)
    assert (claimed.id, claimed.payload) == (f, fixed)
    with pytest.raises(ValueError, match="1 ids but 2 payloads"):
        store.requeue([f], [fixed, fixed])


def test_purge_drops_originals_then_deletes_old_delivered_events(
    store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.walk_in_chunks_of(monkeypatch, 3)  # several chunks
    ids = store.add([incoming(payload(f"e{i}"), original={"i": i}) for i in range(8)])
    c = {x.id: x.payload for x in store.claim(10, NOW)}
    store.complete([(ids[0], Delivery(c[ids[0]], State.DEAD, reason="retries_exhausted"))], NOW)
    store.complete([(i, Delivery(c[i], State.DELIVERED)) for i in ids[1:]], NOW + 1)

    assert store.purge(delivered_before=NOW + 1, drop_originals=True) == 0  # not old enough
    assert store.purge(delivered_before=NOW + 2, drop_originals=True) == 7
    record = store.get(ids[1])
    assert record is not None
    assert (record.state, record.original, record.payload) == (State.DELIVERED, None, None)
    assert store.purge(delivered_before=NOW + 2, drop_originals=True) == 0

    assert store.purge(delivered_before=NOW + 2, drop_originals=False) == 7
    assert store.counts().by_state["delivered"] == 0
    assert store.counts(since=NOW).by_state["delivered"] == 0
    assert store.get("e1") is None
    dead = store.get(ids[0])
    assert dead is not None and dead.original == {"i": 0}  # dead letters are kept for replay
    assert store.requeue([ids[0]], now=NOW) == 1
    assert queued(store, "fresh") == [ids[-1] + 1]  # the purged ids are never handed out again


def test_purge_deletes_the_delivered_events_before_the_time_past_dead_letters_and_ties(
    store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.walk_in_chunks_of(monkeypatch, 2)  # chunks end within runs of the same time
    ids = store.add([incoming(payload(f"p{n}")) for n in range(12)])
    claimed = {c.id: c.payload for c in store.claim(20, NOW)}
    for n, id_ in enumerate(ids):  # four settled per second; every fifth one a dead letter
        dead = n % 5 == 0
        state, reason = (State.DEAD, "retries_exhausted") if dead else (State.DELIVERED, None)
        store.complete([(id_, Delivery(claimed[id_], state, reason=reason))], NOW + n // 4)
    # Before NOW + 2: the first eight, of which 0 and 5 are dead letters.
    assert store.purge(delivered_before=NOW + 2, drop_originals=False) == 6
    assert [n for n, id_ in enumerate(ids) if store.get(id_) is not None] == [0, 5, 8, 9, 10, 11]
    assert store.purge(delivered_before=NOW + 2, drop_originals=False) == 0


EVENT = {
    "event_name": "lead_qualified",
    "user": {
        "email": "jane.doe@example.com",
        "phone": "+33612345678",
        "consent_categories": ["1", "4"],
        "address": {"city": "Paris"},
    },
    "context": {"event_id": "evt-1"},
    "facebook_lead_id": str(LEAD_17),
}


def test_purge_deletes_old_filtered_events_and_refuses_dead_letters(store: Store) -> None:
    filtered = store.add([incoming(Filtered("pv", "page_view", "unmapped", "not mapped"))])
    rejected = store.add([incoming(Rejected("r", "x", "invalid_lead_id", None, "12 digits"))])
    assert store.purge(delivered_before=NOW - 1, drop_originals=False, state=State.FILTERED) == 0
    assert store.purge(delivered_before=NOW + 1, drop_originals=False, state=State.FILTERED) == 1
    assert store.get(filtered[0]) is None and store.get(rejected[0]) is not None
    assert store.counts().by_state["filtered"] == 0 and store.counts().by_state["rejected"] == 1
    with pytest.raises(ValueError, match="not rejected"):
        store.purge(delivered_before=NOW + 1, drop_originals=False, state=State.REJECTED)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("keep", EVENT),
        (
            "redact",
            {
                **EVENT,
                "user": {
                    "email": "[redacted]",
                    "phone": "[redacted]",
                    "consent_categories": ["1", "4"],
                    "address": "[redacted]",
                },
            },
        ),
        ("drop", None),
    ],
)
def test_original_policy(backend: Backend, policy: Any, expected: Any) -> None:
    store = backend.open(original_policy=policy)
    [id_] = store.add([incoming(payload("evt-1"), original=EVENT)])
    record = store.get(id_)
    assert record is not None and record.original == expected
    assert (b"jane.doe@example.com" in backend.stored_bytes()) is (policy == "keep")


def test_refuses_a_newer_schema(backend: Backend) -> None:
    backend.open().close()
    newer = backend.schema_version + 1
    backend.write_schema_version(newer)
    with pytest.raises(StoreError, match=f"schema version {newer}, newer.*upgrade"):
        backend.open()


def test_a_bad_original_policy_is_named(backend: Backend) -> None:
    with pytest.raises(ValueError, match="original_policy"):
        backend.open(original_policy="hash")


def test_a_closed_store_says_so(backend: Backend) -> None:
    store = backend.open()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add([incoming(payload("a"))])
    with pytest.raises(StoreError, match="closed"):
        store.counts()


def test_shared_between_threads_every_event_is_claimed_exactly_once(store: Store) -> None:
    claimed: list[int] = []
    added: list[int] = []
    done = threading.Event()

    def intake(t: int) -> None:
        for b in range(20):
            added.extend(queued(store, *(f"t{t}-{b}-{i}" for i in range(25))))

    def dispatcher() -> None:
        while not done.is_set() or store.counts().queued:
            batch = store.claim(40, NOW)
            claimed.extend(c.id for c in batch)
            deliver(store, batch)  # Redis holds back a lead's next event until this

    workers = [threading.Thread(target=intake, args=(t,)) for t in range(4)]
    reader = threading.Thread(target=dispatcher)
    reader.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    reader.join()
    assert len(added) == len(set(added)) == 2000
    assert sorted(claimed) == sorted(added)


def test_the_oldest_event_not_delivered_counts_also_while_it_is_being_sent(store: Store) -> None:
    """In an outage a batch is tried again and again: in flight most of the time. "Oldest
    waiting" (status, the dashboard, oldest_queued_age_seconds) took only the queued ones, and
    fell to nothing while the oldest events were in flight: an alert on it stayed quiet."""
    queued(store, "old", at=NOW - 300)
    queued(store, "new", at=NOW - 5)
    assert [c.payload.key for c in store.claim(1, NOW)] == ["old"]
    counts = store.counts()
    assert (counts.queued, counts.in_flight) == (1, 1)
    assert counts.oldest_queued_at == pytest.approx(NOW - 300)
    store.claim(1, NOW)
    assert store.counts().oldest_queued_at == pytest.approx(NOW - 300)  # nothing queued
