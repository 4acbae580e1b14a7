"""The Redis store against a real redis-server: the Store protocol as SQLite keeps it, plus the
fleet: several consumers, one killed mid-batch, poison events, a shared pause, per-lead order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from leadrelay.delivery.redis import RedisStore
from leadrelay.delivery.redis import store as redis_store
from leadrelay.delivery.redis.connection import SCHEMA_VERSION
from leadrelay.delivery.store import Incoming, StoreError
from leadrelay.outcome import Delivery, FieldNote, Filtered, Payload, Rejected, State
from redis_server import running_redis

NOW = 1767800000.0
LEAD_17 = 12345678901234567  # 17 digits: beyond a double's exact integers
SRC = str(Path(__file__).resolve().parents[1] / "src")


def lead_of(key: str) -> int:
    """A distinct 17-digit lead per key, so events of different keys are not ordered together."""
    return LEAD_17 + zlib.crc32(key.encode()) % 10**6


def payload(key: str, *, lead_id: int | None = None, data: dict[str, Any] | None = None) -> Payload:
    body = data if data is not None else {"event_name": "Qualified", "n": key}
    lead = lead_of(key) if lead_id is None else lead_id
    return Payload(key, "lead_qualified", "Qualified", lead, int(NOW) - 60, body)


def incoming(
    outcome: Payload | Filtered | Rejected, at: float = NOW, original: Any = None
) -> Incoming:
    return Incoming(outcome, None if original is None else orjson.dumps(original), at)


def queued(store: RedisStore, *keys: str, at: float = NOW, lead_id: int | None = None) -> list[int]:
    return store.add([incoming(payload(k, lead_id=lead_id), at) for k in keys])


def states(store: RedisStore, ids: list[int]) -> list[State]:
    return [r.state for r in (store.get(i) for i in ids) if r is not None]


def deliver(store: RedisStore, claimed: Any, now: float = NOW) -> None:
    store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in claimed], now)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    r.flushall()
    yield r
    r.close()


@pytest.fixture
def open_store(client: redis.Redis, redis_url: str) -> Iterator[Any]:
    opened: list[RedisStore] = []

    def make(consumer: str = "a", **options: Any) -> RedisStore:
        opened.append(RedisStore(redis_url, consumer=consumer, **options))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Any) -> RedisStore:
    s: RedisStore = open_store()
    return s


# --- the Store protocol, as the SQLite store keeps it ---------------------------------------


def test_payload_round_trips_exactly_and_survives_a_new_connection(open_store: Any) -> None:
    data = {
        "event_name": "Qualified",
        "event_time": 1767799940,
        "action_source": "system_generated",
        "user_data": {"lead_id": LEAD_17, "em": ["a" * 64], "ph": None},
        "custom_data": {"lead_event_source": "CRM ü €", "value": 0.1 + 0.2, "flag": True},
    }
    notes = (FieldNote("user_data.ph", "invalid_phone", "left out: not a phone number"),)
    sent = Payload("evt-1", "lead_qualified", "Qualified", LEAD_17, 1767799940, data, notes)
    store = open_store()
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

    record = open_store("other").get(id_)
    assert record is not None
    assert (record.state, record.attempts, record.fbtrace_id) == (State.DELIVERED, 2, "AbC")
    assert (record.payload, record.notes, record.response) == (data, notes, {"retried": True})
    assert (record.lead_id, record.received_at, record.updated_at) == (
        LEAD_17,
        NOW + 0.123456789,
        NOW + 5,
    )


def test_filtered_and_rejected_are_stored_final_and_never_claimed(store: RedisStore) -> None:
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
            ),  # wider than 64 bits: Redis keeps it exactly
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
    assert wide is not None and (wide.state, wide.lead_id) == (State.REJECTED, 10**24)


def test_a_payload_that_is_not_json_is_rejected_alone_not_the_batch(store: RedisStore) -> None:
    bad = payload("bad", data={"when": {1, 2}})  # a set: not JSON
    ok, rejected = (store.get(i) for i in store.add([incoming(payload("ok")), incoming(bad)]))
    assert ok is not None and ok.state is State.QUEUED
    assert rejected is not None
    assert (rejected.state, rejected.reason) == (State.REJECTED, "unencodable")
    assert "JSON" in (rejected.message or "")
    assert [c.payload.key for c in store.claim(10, NOW)] == ["ok"]


def test_a_resent_event_is_stored_once(store: RedisStore) -> None:
    first = queued(store, "a", "b")
    again = store.add([incoming(payload("b")), incoming(payload("c")), incoming(payload("c"))])
    assert again[0] == first[1]
    assert again[1] == again[2] != first[0]
    assert store.counts().by_state["queued"] == 3
    assert [c.payload.key for c in store.claim(10, NOW)] == ["a", "b", "c"]


def test_the_first_outcome_stored_for_a_key_wins(store: RedisStore) -> None:
    [id_] = store.add([incoming(Filtered("k", "lead_qualified", "consent", "no consent"))])
    assert queued(store, "k") == [id_]
    assert states(store, [id_]) == [State.FILTERED]


def test_events_without_a_key_are_never_merged(store: RedisStore) -> None:
    ids = store.add([incoming(Filtered("", "x", "unmapped", "m"))] * 2)
    assert ids[0] != ids[1]
    assert store.get("") is None


def test_two_consumers_never_get_the_same_event(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    ids = queued(a, *"abcde")
    first, second = a.claim(3, NOW), b.claim(3, NOW)
    assert [c.id for c in first] == ids[:3]
    assert [c.id for c in second] == ids[3:]
    assert a.claim(3, NOW) == b.claim(3, NOW) == []
    assert states(a, ids) == [State.IN_FLIGHT] * 5
    assert b.counts().in_flight == 5


def test_claim_takes_nothing_that_is_not_due_yet(store: RedisStore) -> None:
    queued(store, "later", at=NOW + 10)
    assert store.claim(10, NOW) == []
    assert len(store.claim(10, NOW + 10)) == 1


def test_retry_later_waits_until_due(store: RedisStore) -> None:
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


def test_events_go_out_in_the_order_they_fell_due(store: RedisStore) -> None:
    first, second = queued(store, "first", "second")
    store.claim(10, NOW)
    store.retry_later([first], NOW + 60, "throttled", None, now=NOW)
    store.retry_later([second], NOW + 30, "throttled", None, now=NOW)
    [later] = queued(store, "received-later", at=NOW + 45)
    claimed = store.claim(2, NOW + 100)
    assert [c.id for c in claimed] == [second, later]  # a backlog does not starve retries
    assert [c.id for c in store.claim(2, NOW + 100)] == [first]


@pytest.mark.parametrize(("requests", "expected"), [(0, 0), (1, 1), (3, 3)])
def test_retry_later_counts_the_requests_made(
    store: RedisStore, requests: int, expected: int
) -> None:
    [id_] = queued(store, "a")
    store.claim(1, NOW)
    store.retry_later([id_], NOW, "paused_auth", None, attempts=requests, now=NOW)
    [claimed] = store.claim(1, NOW)
    assert claimed.attempts == expected


def test_a_late_retry_does_not_reopen_a_finished_event(store: RedisStore) -> None:
    [id_] = queued(store, "a")
    [c] = store.claim(1, NOW)
    deliver(store, [c])
    store.retry_later([id_], NOW, "transient", None, now=NOW)
    store.complete([(id_, Delivery(c.payload, State.DEAD, reason="retries_exhausted"))], NOW)
    assert states(store, [id_]) == [State.DELIVERED]
    assert store.claim(1, NOW + 1) == []


def test_complete_records_every_final_state_and_dead_letters_them(
    store: RedisStore, client: redis.Redis
) -> None:
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
    [(_, letter)] = client.xrange(store.dead_letter_key)
    assert letter == {
        b"i": str(ids[4]).encode(),
        b"k": b"e",
        b"r": b"retries_exhausted",
        b"m": b"gave up",
        b"at": repr(NOW + 1).encode(),
    }
    assert client.xlen(store.stream_key) == 1  # acknowledged entries are deleted


def test_complete_refuses_a_state_that_is_not_a_result_and_writes_nothing(
    store: RedisStore,
) -> None:
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


def _mixed(store: RedisStore) -> list[int]:
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


def test_counts_by_state_and_reason_with_the_backlog(store: RedisStore) -> None:
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


def test_counts_since_only_look_at_recent_changes_but_backlog_stays_whole(
    store: RedisStore,
) -> None:
    _mixed(store)
    counts = store.counts(since=NOW + 10)
    assert {k: v for k, v in counts.by_state.items() if v} == {"delivered": 2, "dead": 1}
    assert counts.by_reason == {("dead", "retries_exhausted"): 1}
    assert (counts.queued, counts.in_flight) == (2, 1)


def test_counts_since_further_back_than_two_hours_are_to_the_minute(store: RedisStore) -> None:
    minute = NOW - NOW % 60 - 3 * 3600
    queued(store, "old", at=minute + 5)
    queued(store, "new", at=NOW)
    assert store.counts(since=minute + 10).by_state["queued"] == 2  # second buckets are gone
    assert store.counts(since=minute + 60).by_state["queued"] == 1
    assert store.counts(since=NOW - 30).by_state["queued"] == 1


def test_timeline_buckets_by_state(store: RedisStore) -> None:
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


def test_events_filters_and_pages(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _mixed(store)
    monkeypatch.setattr(redis_store, "_CHUNK", 2)  # several script calls per page
    filtered = store.events(states=[State.FILTERED, State.REJECTED])
    assert [e.key for e in filtered] == ["f1", "f2", "r1"]
    assert [e.key for e in store.events(reason="consent")] == ["f2"]
    assert [e.key for e in store.events(since=NOW + 10)] == ["d1", "d2", "dead"]
    page1 = store.events(limit=4)
    page2 = store.events(limit=4, after_id=page1[-1].id)
    assert [e.id for e in page1 + page2] == ids[:8]
    assert store.events(limit=0) == []


def test_get_by_id_or_key(store: RedisStore) -> None:
    [id_] = queued(store, "evt-42")
    by_id, by_key = store.get(id_), store.get("evt-42")
    assert by_id is not None and by_id == by_key
    assert store.get(id_ + 1) is None and store.get("nope") is None


def test_requeue_replays_dead_letters_only(store: RedisStore) -> None:
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


def test_requeue_with_remapped_payloads(store: RedisStore) -> None:
    [f] = store.add([incoming(Filtered("k", "lead_won", "unmapped", "lead_won is not mapped"))])
    assert store.requeue([f]) == 0  # nothing to send without a payload
    fixed = payload("k", data={"event_name": "Won"})
    assert store.requeue([f], [fixed], now=NOW) == 1
    [claimed] = store.claim(1, NOW)
    assert (claimed.id, claimed.payload) == (f, fixed)
    with pytest.raises(ValueError, match="1 ids but 2 payloads"):
        store.requeue([f], [fixed, fixed])


def test_purge_drops_originals_then_deletes_old_delivered_events(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "_CHUNK", 3)  # several chunks
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


def _everything(client: redis.Redis) -> bytes:
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            out += [k + v for k, v in client.hgetall(key).items()]
        elif kind == b"stream":
            out += [orjson.dumps(str(e)) for e in client.xrange(key)]
        elif kind == b"string":
            out.append(client.get(key) or b"")
    return b"".join(out)


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
def test_original_policy(open_store: Any, client: redis.Redis, policy: Any, expected: Any) -> None:
    store = open_store(original_policy=policy)
    [id_] = store.add([incoming(payload("evt-1"), original=EVENT)])
    record = store.get(id_)
    assert record is not None and record.original == expected
    assert (b"jane.doe@example.com" in _everything(client)) is (policy == "keep")


def test_refuses_a_newer_schema(open_store: Any, client: redis.Redis) -> None:
    open_store().close()
    client.hset("{lr}:meta", "schema", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=r"schema version 2, newer.*upgrade"):
        open_store()


def test_opening_without_create_needs_an_existing_store(open_store: Any) -> None:
    with pytest.raises(StoreError, match=r"no event store under \{lr\}:"):
        open_store(create=False)
    open_store().close()
    assert open_store(create=False).counts().queued == 0


def test_refuses_a_redis_that_may_evict_events(open_store: Any, client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(StoreError, match=r"allkeys-lru.*noeviction"):
            open_store()
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_an_unreachable_redis_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        RedisStore("redis://:s3cret-pass@127.0.0.1:1/0", socket_timeout_s=1.0)
    assert "127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(StoreError, match="invalid Redis URL"):
        RedisStore("http://:s3cret-pass@localhost")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"original_policy": "hash"}, "original_policy"),
        ({"claim_idle_s": 0}, "claim_idle_s"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"prefix": "{x}"}, "prefix"),
    ],
)
def test_bad_options_are_named(redis_url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore(redis_url, **options)


def test_a_closed_store_says_so(open_store: Any) -> None:
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add([incoming(payload("a"))])
    with pytest.raises(StoreError, match="closed"):
        store.counts()


def test_shared_between_threads_every_event_is_claimed_exactly_once(store: RedisStore) -> None:
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
            deliver(store, batch)

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


# --- the fleet: several consumers on one queue ------------------------------------------------


def test_events_held_by_a_consumer_that_stopped_are_taken_over(open_store: Any) -> None:
    a, b = open_store("a", claim_idle_s=0.5), open_store("b", claim_idle_s=0.5)
    ids = queued(a, "x", "y", "z")
    assert [c.id for c in a.claim(10, NOW)] == ids  # a dies here: never completes
    assert b.claim(10, NOW) == []  # not idle long enough: a may still be working
    time.sleep(0.6)
    taken = b.claim(10, NOW)
    assert [(c.id, c.attempts) for c in taken] == [(i, 0) for i in ids]
    deliver(b, taken)
    a.complete([(ids[0], Delivery(taken[0].payload, State.DEAD, reason="late"))], NOW + 1)
    assert states(b, ids) == [State.DELIVERED] * 3  # a late answer does not undo the outcome
    assert b.counts().by_state["delivered"] == 3


def test_release_in_flight_takes_back_only_what_this_consumer_held(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    mine, theirs = queued(a, "a1", "a2"), queued(b, "b1")
    a.claim(2, NOW)
    b.claim(2, NOW)
    restarted = open_store("a")  # the same consumer name after a restart
    assert restarted.release_in_flight() == 2
    assert states(a, mine + theirs) == [State.QUEUED, State.QUEUED, State.IN_FLIGHT]
    assert [c.id for c in restarted.claim(10, NOW)] == mine
    assert open_store("c").release_in_flight() == 0


def test_consumers_of_processes_gone_for_long_are_forgotten(
    open_store: Any, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, holding, restarted = open_store("done"), open_store("holding"), open_store("new")
    queued(done, "a", "b")
    deliver(done, done.claim(1, NOW))
    holding.claim(1, NOW)
    monkeypatch.setattr(redis_store, "_GONE_AFTER_MS", -1)  # as if a day had passed
    restarted.release_in_flight()
    names = {c["name"] for c in client.xinfo_consumers(restarted.stream_key, "delivery")}
    assert names == {b"holding"}  # a consumer that still holds events is kept


def test_renew_keeps_a_long_delivery_from_being_taken_over(open_store: Any) -> None:
    a, b = open_store("a", claim_idle_s=1.0), open_store("b", claim_idle_s=1.0)
    ids = queued(a, "slow")
    a.claim(1, NOW)
    time.sleep(0.6)
    assert a.renew(ids) == 1
    time.sleep(0.6)  # 1.2 s since the claim, 0.6 s since the renewal
    assert b.claim(10, NOW) == []
    assert b.renew(ids) == 0  # b does not hold it


def test_a_poison_event_goes_to_the_dead_letters_after_max_deliveries(
    open_store: Any, client: redis.Redis
) -> None:
    a = open_store("a", claim_idle_s=0.1, max_deliveries=2)
    b = open_store("b", claim_idle_s=0.1, max_deliveries=2)
    [id_] = queued(a, "poison")
    [ok] = queued(a, "fine")
    assert len(a.claim(10, NOW)) == 2  # delivery 1: a dies on the batch
    time.sleep(0.15)
    assert [c.id for c in b.claim(10, NOW)] == [id_, ok]  # delivery 2: b dies too
    time.sleep(0.15)
    assert a.claim(10, NOW) == []  # a third time would be one too many
    for i in (id_, ok):
        record = a.get(i)
        assert record is not None and (record.state, record.reason) == (State.DEAD, "poison")
        assert "handed out 3 times" in (record.message or "")
    letters = [e for _, e in client.xrange(a.dead_letter_key)]
    assert [(e[b"i"], e[b"r"]) for e in letters] == [
        (str(id_).encode(), b"poison"),
        (str(ok).encode(), b"poison"),
    ]
    assert [e.id for e in a.events(states=[State.DEAD])] == [id_, ok]
    assert a.requeue([ok], now=NOW) == 1  # a dead letter can be replayed once fixed
    assert [c.id for c in a.claim(10, NOW)] == [ok]


def test_a_pause_is_seen_by_the_whole_fleet(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    assert b.paused_until(now=NOW) is None
    assert a.pause_until(NOW + 30, "throttled", now=NOW) == NOW + 30
    assert b.paused_until(now=NOW) == (NOW + 30, "throttled")
    assert b.pause_until(NOW + 10, "throttled again", now=NOW) == NOW + 30  # never shortened
    assert a.paused_until(now=NOW + 29) == (NOW + 30, "throttled")
    assert a.paused_until(now=NOW + 30) is None


def test_events_of_one_lead_go_out_in_order_one_holder_at_a_time(open_store: Any) -> None:
    a, b = open_store("a"), open_store("b")
    lead = LEAD_17
    first = queued(a, "l1", "l2", "l3", lead_id=lead)
    [other] = queued(a, "other")
    assert [c.id for c in a.claim(10, NOW)] == [*first, other]  # accepted together: one batch
    [later] = queued(b, "l4", lead_id=lead)
    assert b.claim(10, NOW) == []  # waits while a holds earlier events of its lead
    a.retry_later(first, NOW + 60, "throttled", None, now=NOW)
    assert b.claim(10, NOW + 30) == []  # still behind the retried ones
    retried = b.claim(10, NOW + 60)
    assert [c.id for c in retried] == first
    deliver(b, retried, NOW + 60)
    assert [c.id for c in a.claim(10, NOW + 60)] == [later]


def test_per_lead_order_holds_with_two_consumers_and_retries(open_store: Any) -> None:
    stores = [open_store("a"), open_store("b")]
    intake = open_store("intake")
    leads = [LEAD_17 + n for n in range(20)]
    total = 300
    lock = threading.Lock()
    holder: dict[int, str] = {}
    sent: dict[int, list[int]] = defaultdict(list)
    accepted: dict[int, list[int]] = defaultdict(list)
    errors: list[str] = []
    rng = random.Random(7)
    plan = [rng.choice(leads) for _ in range(total)]

    def add_all() -> None:
        for start in range(0, total, 15):
            chunk = plan[start : start + 15]
            ids = intake.add(
                [incoming(payload(f"e{start + n}", lead_id=lead)) for n, lead in enumerate(chunk)]
            )
            for id_, lead in zip(ids, chunk, strict=True):
                accepted[lead].append(id_)

    def consume(store: RedisStore, seed: int) -> None:
        local = random.Random(seed)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if sum(map(len, sent.values())) >= total:
                    return
            batch = store.claim(local.randint(1, 8), NOW)
            with lock:
                for c in batch:
                    if holder.get(c.payload.lead_id, store.consumer) != store.consumer:
                        errors.append(f"lead {c.payload.lead_id} held by two consumers")
                    holder[c.payload.lead_id] = store.consumer
            if not batch:
                continue
            retry = local.random() < 0.25
            with lock:
                for c in batch:
                    holder.pop(c.payload.lead_id, None)
                    if not retry:
                        sent[c.payload.lead_id].append(c.id)
            if retry:
                store.retry_later([c.id for c in batch], NOW, "transient", None, now=NOW)
            else:
                deliver(store, batch)

    threads = [threading.Thread(target=add_all)]
    threads += [threading.Thread(target=consume, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(map(len, sent.values())) == total
    assert dict(sent) == dict(accepted)  # per lead: delivered in the order accepted, once each


_VICTIM = """
import sys
import redis
from leadrelay.delivery.redis import RedisStore
from leadrelay.outcome import Delivery, State

store = RedisStore(sys.argv[1], consumer="victim", claim_idle_s=2.0)
meta = redis.Redis.from_url(sys.argv[1])
for round_ in range(1000):
    batch = store.claim(20, 1767800000.0)
    print("C", *(c.id for c in batch), flush=True)
    if round_ == 1:
        sys.stdin.readline()  # killed while delivering this batch
    for c in batch:
        meta.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
    store.complete([(c.id, Delivery(c.payload, State.DELIVERED)) for c in batch], 1767800001.0)
"""


def test_a_worker_killed_mid_backlog_loses_nothing_and_delivers_nothing_twice(
    open_store: Any, client: redis.Redis, redis_url: str
) -> None:
    intake, survivor = open_store("intake"), open_store("survivor", claim_idle_s=2.0)
    leads = [LEAD_17 + n for n in range(60)]
    rng = random.Random(3)
    total = 0

    def add(n: int) -> None:
        nonlocal total
        intake.add(
            [incoming(payload(f"e{total + i}", lead_id=rng.choice(leads))) for i in range(n)]
        )
        total += n

    add(300)
    victim = subprocess.Popen(
        [sys.executable, "-c", _VICTIM, redis_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert victim.stdout is not None
    held: list[int] = []
    try:
        for round_ in range(2):
            line = victim.stdout.readline()
            assert line.startswith("C"), (
                f"victim failed: {victim.stderr.read() if victim.stderr else ''}"
            )
            if round_ == 1:
                held = [int(x) for x in line.split()[1:]]
            else:  # the survivor works alongside from the start, intake goes on
                for _ in range(3):
                    batch = survivor.claim(10, NOW)
                    for c in batch:
                        client.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
                    deliver(survivor, batch)
                    add(20)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert held, "the victim should have been holding a batch when it was killed"

    add(100)
    deadline = time.monotonic() + 20
    while survivor.counts().by_state["delivered"] < total and time.monotonic() < deadline:
        batch = survivor.claim(50, NOW)
        for c in batch:
            client.rpush("meta-received", f"{c.payload.lead_id}:{c.id}")
        deliver(survivor, batch)
        if not batch:
            time.sleep(0.05)  # waiting for the victim's entries to be idle long enough

    received = [x.decode().split(":") for x in client.lrange("meta-received", 0, -1)]
    ids = [int(i) for _, i in received]
    assert Counter(ids).most_common(1)[0][1] == 1  # nothing delivered twice
    assert sorted(ids) == list(range(1, total + 1))  # nothing lost
    assert set(held) <= set(ids)
    per_lead: dict[str, list[int]] = defaultdict(list)
    for lead, i in received:
        per_lead[lead].append(int(i))
    assert all(order == sorted(order) for order in per_lead.values())
    counts = survivor.counts()
    assert (counts.by_state["delivered"], counts.queued, counts.in_flight) == (total, 0, 0)


def test_a_deployment_lives_in_one_cluster_slot(tmp_path: Path) -> None:
    with running_redis(tmp_path, cluster=True) as url:
        store = RedisStore(url, cluster=True, prefix="lr:123456789012345", consumer="a")
        try:
            ids = queued(store, "a", "b")
            claimed = store.claim(10, NOW)
            store.complete([(claimed[0].id, Delivery(claimed[0].payload, State.DEAD))], NOW)
            store.retry_later([claimed[1].id], NOW, "throttled", None, now=NOW)
            assert store.requeue(ids[:1], now=NOW) == 1
            assert [c.id for c in store.claim(10, NOW)] == ids
            assert store.counts(since=NOW).in_flight == 2
            record = store.get("a")
            assert record is not None and record.payload == payload("a").data
            assert [e.key for e in store.events(states=[State.IN_FLIGHT])] == ["a", "b"]
            store.pause_until(NOW + 1, "throttled", now=NOW)
            node = redis.Redis.from_url(url)
            slots = {node.cluster("keyslot", k) for k in node.scan_iter(count=1000)}
            node.close()
            assert len(slots) == 1
        finally:
            store.close()
