"""The SQLite event store on real files: nothing accepted is lost, every event has one outcome."""

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

from leadrelay.delivery import sqlite_sql, sqlite_store, wal_sync
from leadrelay.delivery.encoded import request_body
from leadrelay.delivery.sqlite_store import SCHEMA_VERSION, SQLiteStore
from leadrelay.delivery.store import Incoming, StoreError
from leadrelay.outcome import Delivery, FieldNote, Filtered, Payload, Rejected, State

NOW = 1767800000.0
LEAD_17 = 12345678901234567  # 17 digits: beyond a double's exact integers
NOTE = FieldNote("user_data.ph", "invalid_phone", "not a phone number")


def payload(key: str, *, lead_id: int = LEAD_17, data: dict[str, Any] | None = None) -> Payload:
    body = data if data is not None else {"event_name": "Qualified", "n": key}
    return Payload(key, "lead_qualified", "Qualified", lead_id, int(NOW) - 60, body)


def incoming(
    outcome: Payload | Filtered | Rejected, at: float = NOW, original: Any = None
) -> Incoming:
    return Incoming(outcome, None if original is None else orjson.dumps(original), at)


def queued(store: SQLiteStore, *keys: str, at: float = NOW) -> list[int]:
    return store.add([incoming(payload(k), at) for k in keys])


def states(store: SQLiteStore, ids: list[int]) -> list[State]:
    return [r.state for r in (store.get(i) for i in ids) if r is not None]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(path: Path) -> Any:
    with SQLiteStore(path) as s:
        yield s


def test_payload_round_trips_exactly_and_survives_reopening(path: Path) -> None:
    data = {
        "event_name": "Qualified",
        "event_time": 1767799940,
        "action_source": "system_generated",
        "user_data": {"lead_id": LEAD_17, "em": ["a" * 64], "ph": None},
        "custom_data": {"lead_event_source": "CRM ü €", "value": 0.1 + 0.2, "flag": True},
    }
    notes = (FieldNote("user_data.ph", "invalid_phone", "left out: not a phone number"),)
    sent = Payload("evt-1", "lead_qualified", "Qualified", LEAD_17, 1767799940, data, notes)
    store = SQLiteStore(path)
    [id_] = store.add([incoming(sent)])
    [claimed] = store.claim(10, NOW)
    assert (claimed.id, claimed.payload, claimed.attempts) == (id_, sent, 0)
    assert type(claimed.payload.lead_id) is int
    assert claimed.payload.data["user_data"]["lead_id"] == LEAD_17
    delivery = Delivery(
        sent, State.DELIVERED, attempts=2, fbtrace_id="AbC", extra={"retried": True}
    )
    store.complete([(id_, delivery)], NOW + 5)
    store.close()

    with SQLiteStore(path) as again:
        record = again.get(id_)
    assert record is not None
    assert (record.state, record.attempts, record.fbtrace_id) == (State.DELIVERED, 2, "AbC")
    assert (record.payload, record.notes, record.response) == (data, notes, {"retried": True})
    assert (record.lead_id, record.received_at, record.updated_at) == (LEAD_17, NOW, NOW + 5)


def test_filtered_and_rejected_are_stored_final_and_never_claimed(store: SQLiteStore) -> None:
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
                    lead_id=None,
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
            ),  # wider than SQLite's int64
        ]
    )
    assert store.claim(10, NOW + 1) == []
    f, r, wide = (store.get(i) for i in ids)
    assert f is not None and (f.state, f.reason, f.message) == (
        State.FILTERED,
        "unmapped",
        "page_view is not in the mapping",
    )
    assert r is not None and (r.state, r.reason, r.field, r.value) == (
        State.REJECTED,
        "invalid_lead_id",
        "user_data.lead_id",
        "12ab",
    )
    assert wide is not None and (wide.state, wide.lead_id, wide.value) == (
        State.REJECTED,
        None,
        "1" * 25,
    )


def test_a_payload_that_is_not_json_is_rejected_alone_not_the_batch(store: SQLiteStore) -> None:
    bad = payload("bad", data={"when": {1, 2}})  # a set: not JSON
    ids = store.add([incoming(payload("ok")), incoming(bad)])
    ok, rejected = (store.get(i) for i in ids)
    assert ok is not None and ok.state is State.QUEUED
    assert rejected is not None and (rejected.state, rejected.reason) == (
        State.REJECTED,
        "unencodable",
    )
    assert "JSON" in (rejected.message or "")


def test_a_resent_event_is_stored_once(store: SQLiteStore) -> None:
    first = queued(store, "a", "b")
    again = store.add([incoming(payload("b")), incoming(payload("c")), incoming(payload("c"))])
    assert again[0] == first[1]
    assert again[1] == again[2] != first[0]
    assert store.counts().by_state["queued"] == 3
    assert [c.payload.key for c in store.claim(10, NOW)] == ["a", "b", "c"]


def test_the_first_outcome_stored_for_a_key_wins(store: SQLiteStore) -> None:
    [id_] = store.add([incoming(Filtered("k", "lead_qualified", "consent", "no consent"))])
    assert queued(store, "k") == [id_]
    assert states(store, [id_]) == [State.FILTERED]


def test_events_without_a_key_are_never_merged(store: SQLiteStore) -> None:
    ids = store.add([incoming(Filtered("", "x", "unmapped", "m"))] * 2)
    assert ids[0] != ids[1]
    assert store.get("") is None


def test_claim_marks_in_flight_and_never_hands_out_a_row_twice(store: SQLiteStore) -> None:
    ids = queued(store, *"abcde")
    first = store.claim(3, NOW)
    second = store.claim(3, NOW)
    assert [c.id for c in first] == ids[:3]
    assert [c.id for c in second] == ids[3:]
    assert store.claim(3, NOW) == []
    assert states(store, ids) == [State.IN_FLIGHT] * 5
    assert store.counts().in_flight == 5


def test_claims_skip_fsync_but_leave_the_store_durable(store: SQLiteStore) -> None:
    queued(store, "a")
    store.claim(1, NOW)
    full = 2
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == full


def test_claim_takes_nothing_that_is_not_due_yet(store: SQLiteStore) -> None:
    queued(store, "later", at=NOW + 10)
    assert store.claim(10, NOW) == []
    assert len(store.claim(10, NOW + 10)) == 1


def test_crash_between_claim_and_complete_loses_nothing(path: Path) -> None:
    crashed = SQLiteStore(path)
    ids = queued(crashed, *"abc")
    assert len(crashed.claim(10, NOW)) == 3
    del crashed  # no close, no complete: the process died mid-batch

    restarted = SQLiteStore(path)
    assert restarted.release_in_flight() == 3
    assert [c.id for c in restarted.claim(10, NOW)] == ids
    assert restarted.release_in_flight() == 3
    restarted.close()


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


def test_retry_later_waits_until_due(store: SQLiteStore) -> None:
    [id_] = queued(store, "a")
    store.claim(10, NOW)
    store.retry_later([id_], NOW + 60, "throttled", "Meta asked us to slow down", now=NOW + 1)
    assert store.claim(10, NOW + 59) == []
    record = store.get(id_)
    assert record is not None
    assert (record.state, record.reason, record.next_attempt_at) == (
        State.QUEUED,
        "throttled",
        NOW + 60,
    )
    assert [(c.id, c.attempts) for c in store.claim(10, NOW + 60)] == [(id_, 1)]


def test_events_go_out_in_the_order_they_fell_due(store: SQLiteStore) -> None:
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
    store: SQLiteStore, requests: int, expected: int
) -> None:
    [id_] = queued(store, "a")
    store.claim(1, NOW)
    store.retry_later([id_], NOW, "paused_auth", None, attempts=requests, now=NOW)
    [claimed] = store.claim(1, NOW)
    assert claimed.attempts == expected


def test_a_late_retry_does_not_reopen_a_finished_event(store: SQLiteStore) -> None:
    [id_] = queued(store, "a")
    [c] = store.claim(1, NOW)
    store.complete([(id_, Delivery(c.payload, State.DELIVERED))], NOW)
    store.retry_later([id_], NOW, "transient", None, now=NOW)
    store.complete([(id_, Delivery(c.payload, State.DEAD, reason="retries_exhausted"))], NOW)
    assert states(store, [id_]) == [State.DELIVERED]
    assert store.claim(1, NOW + 1) == []


def test_complete_records_every_final_state_with_its_reason(store: SQLiteStore) -> None:
    ids = queued(store, *"abcd")
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
        ],
        NOW + 1,
    )
    records = [store.get(i) for i in ids]
    assert [(r.state, r.attempts, r.reason, r.code, r.subcode) for r in records if r] == [
        (State.DELIVERED, 1, None, None, None),
        (State.REJECTED, 3, "invalid_parameter", 100, 2804019),
        (State.EXPIRED, 0, "expired", None, None),
        (State.QUEUED, 1, "paused_auth", 190, None),
    ]
    assert [x.id for x in store.claim(10, NOW + 1)] == [ids[3]]


def test_complete_refuses_a_state_that_is_not_a_result_and_writes_nothing(
    store: SQLiteStore,
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


def _mixed(store: SQLiteStore) -> list[int]:
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


def test_counts_by_state_and_reason_with_the_backlog(store: SQLiteStore) -> None:
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
    store: SQLiteStore,
) -> None:
    _mixed(store)
    counts = store.counts(since=NOW + 10)
    assert {k: v for k, v in counts.by_state.items() if v} == {"delivered": 2, "dead": 1}
    assert counts.by_reason == {("dead", "retries_exhausted"): 1}
    assert (counts.queued, counts.in_flight) == (2, 1)


def test_timeline_buckets_by_state(store: SQLiteStore) -> None:
    _mixed(store)
    base = NOW - NOW % 60
    assert store.timeline(NOW + 5, 60) == [
        (base, {"delivered": 2}),
        (base + 60, {"dead": 1}),
    ]
    with pytest.raises(ValueError, match="bucket_s"):
        store.timeline(NOW, 0)


def test_events_filters_and_pages(store: SQLiteStore) -> None:
    ids = _mixed(store)
    filtered = store.events(states=[State.FILTERED, State.REJECTED])
    assert [e.key for e in filtered] == ["f1", "f2", "r1"]
    assert [e.key for e in store.events(reason="consent")] == ["f2"]
    assert [e.key for e in store.events(since=NOW + 10)] == ["d1", "d2", "dead"]
    page1 = store.events(limit=4)
    page2 = store.events(limit=4, after_id=page1[-1].id)
    assert [e.id for e in page1 + page2] == ids[:8]


def test_get_by_id_or_key(store: SQLiteStore) -> None:
    [id_] = queued(store, "evt-42")
    by_id, by_key = store.get(id_), store.get("evt-42")
    assert by_id is not None and by_id == by_key
    assert store.get(id_ + 1) is None and store.get("nope") is None


def test_requeue_replays_dead_letters_only(store: SQLiteStore) -> None:
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


def test_requeue_with_remapped_payloads(store: SQLiteStore) -> None:
    [f] = store.add([incoming(Filtered("k", "lead_won", "unmapped", "lead_won is not mapped"))])
    assert store.requeue([f]) == 0  # nothing to send without a payload
    fixed = payload("k", data={"event_name": "Won"})
    assert store.requeue([f], [fixed], now=NOW) == 1
    [claimed] = store.claim(1, NOW)
    assert (claimed.id, claimed.payload) == (f, fixed)
    with pytest.raises(ValueError, match="1 ids but 2 payloads"):
        store.requeue([f], [fixed, fixed])


def test_purge_drops_originals_then_deletes_old_delivered_events(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_PURGE_CHUNK", 3)  # several chunks
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
    dead = store.get(ids[0])
    assert dead is not None and dead.original == {"i": 0}  # dead letters are kept for replay
    assert store.requeue([ids[0]], now=NOW) == 1
    assert queued(store, "fresh") == [ids[-1] + 1]  # the purged ids are never handed out again


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
def test_original_policy(path: Path, policy: Any, expected: Any) -> None:
    with SQLiteStore(path, original_policy=policy) as store:
        [id_] = store.add([incoming(payload("evt-1"), original=EVENT)])
        record = store.get(id_)
        assert record is not None and record.original == expected
        on_disk = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert (b"jane.doe@example.com" in on_disk) is (policy == "keep")


def test_refuses_a_newer_schema(path: Path) -> None:
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer.*upgrade"):
        SQLiteStore(path)


def test_reopening_keeps_the_schema_and_the_data(path: Path) -> None:
    with SQLiteStore(path) as store:
        queued(store, "a")
    with SQLiteStore(path) as store:
        assert store.counts().queued == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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
    with pytest.raises(ValueError, match="original_policy"):
        SQLiteStore(path, original_policy="hash")  # type: ignore[arg-type]


def test_a_closed_store_says_so(path: Path) -> None:
    store = SQLiteStore(path)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add([incoming(payload("a"))])
    with pytest.raises(StoreError, match="closed"):
        store.counts()


def test_shared_between_threads_every_event_is_claimed_exactly_once(store: SQLiteStore) -> None:
    claimed: list[int] = []
    added: list[int] = []
    done = threading.Event()

    def intake(t: int) -> None:
        for b in range(20):
            added.extend(queued(store, *(f"t{t}-{b}-{i}" for i in range(25))))

    def dispatcher() -> None:
        while not done.is_set() or store.counts().queued:
            claimed.extend(c.id for c in store.claim(40, NOW))

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
