"""SQLiteStore: an event added without waiting for the disk is durable before it is claimed,
and completing a batch in one go records what completing each event would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leadrelay.delivery import wal_sync
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import StoreError
from leadrelay.outcome import Delivery, State
from test_store_contract import NOW, incoming, payload, states


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


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


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
