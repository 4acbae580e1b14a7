"""How the delivery worker sorts a batch's results into what the store records."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from leadrelay.compiled import compiled_modules
from leadrelay.delivery.encoded import EncodedPayload
from leadrelay.delivery.results import Recorder, RequeuePolicy, sort_results
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Claimed, Incoming
from leadrelay.delivery.store_calls import StoreCalls
from leadrelay.outcome import DeliveredWhole, Delivery, Filtered, Payload, State

NOW = 1767800000.0


def _claimed(n: int, attempts: int = 0) -> list[Claimed]:
    return [
        Claimed(i + 1, EncodedPayload(f"k{i}", "lead", "Lead", 1, 2, b"{}"), attempts)
        for i in range(n)
    ]


def _delivered(c: Claimed, **kw: object) -> Delivery:
    return Delivery(c.payload, State.DELIVERED, **kw)  # type: ignore[arg-type]


def test_a_batch_delivered_whole_is_all_final_and_counted_once() -> None:
    claimed = _claimed(3)
    results = [_delivered(c, fbtrace_id="T") for c in claimed]
    s = sort_results(claimed, results, RequeuePolicy(), NOW)
    assert s.finals == [(c.id, d) for c, d in zip(claimed, results, strict=True)]
    assert (s.paused, s.later) == ([], {})
    assert dict(s.counts) == {("delivered", ""): 3}


def test_an_empty_batch_counts_nothing() -> None:
    s = sort_results([], [], None, NOW)
    assert (s.finals, s.paused, s.later, dict(s.counts)) == ([], [], {}, {})


@pytest.mark.parametrize("requeue", [None, RequeuePolicy(base_delay_s=30.0)])
def test_a_mixed_batch_is_sorted_by_what_the_store_must_do(requeue: RequeuePolicy | None) -> None:
    claimed = _claimed(5, attempts=6)
    results = [
        _delivered(claimed[0]),
        _delivered(claimed[1], extra={"retried": True}, attempts=2),
        Delivery(claimed[2].payload, State.QUEUED, 0, "paused_auth", "paused"),
        Delivery(claimed[3].payload, State.DEAD, 6, "retries_exhausted", "gave up"),
        Delivery(claimed[4].payload, State.REJECTED, 1, "invalid_parameter", "bad"),
    ]
    s = sort_results(claimed, results, requeue, NOW)
    assert s.paused == [3] and s.paused_message == "paused"
    counts = {
        ("delivered", ""): 2,
        ("requeued", "paused_auth"): 1,
        ("rejected", "invalid_parameter"): 1,
    }
    told = [(i, d.state, d.reason) for i, d in s.held]  # what on_results hears of the rest
    if requeue is None:  # send: retries ran out for good
        assert [i for i, _ in s.finals] == [1, 2, 4, 5]
        assert s.later == {}
        assert told == [(3, State.QUEUED, "paused_auth")]
        counts["dead", "retries_exhausted"] = 1
    else:  # serve: back to the queue, after one earlier round of retries (6 // 6)
        assert [i for i, _ in s.finals] == [1, 2, 5]
        assert s.later == {(NOW + 60.0, 6): ([4], "gave up; trying again in 60 s")}
        assert told == [(3, State.QUEUED, "paused_auth"), (4, State.QUEUED, "retries_exhausted")]
        counts["requeued", "retries_exhausted"] = 1
    assert dict(s.counts) == counts


def test_a_requeue_waits_at_least_as_long_as_meta_asked() -> None:
    claimed = _claimed(2, attempts=1)
    results = [
        Delivery(claimed[0].payload, State.DEAD, 1, "retries_exhausted", "throttled",
                 extra={"retry_after": 900.0}),
        Delivery(claimed[1].payload, State.DEAD, 1, "retries_exhausted", "down", extra={}),
    ]  # fmt: skip
    s = sort_results(claimed, results, RequeuePolicy(base_delay_s=30.0), NOW)
    assert s.later == {
        (NOW + 900.0, 1): ([1], "throttled; trying again in 900 s"),
        (NOW + 60.0, 1): ([2], "down; trying again in 60 s"),
    }


def test_results_that_do_not_match_the_batch_are_refused() -> None:
    claimed = _claimed(2)
    with pytest.raises(ValueError):
        sort_results(claimed, [_delivered(claimed[0])], None, NOW)


def test_incoming_and_claimed_are_values() -> None:
    p = Payload("k", "lead", "Lead", 1, 2, {})
    item = Incoming(p, b"{}", NOW)
    assert (item.outcome, item.original, item.received_at) == (p, b"{}", NOW)
    assert item == Incoming(p, b"{}", NOW) and item != Incoming(p, b"{}", NOW + 1)
    assert repr(item) == f"Incoming(outcome={p!r}, original=b'{{}}', received_at={NOW!r})"
    assert pickle.loads(pickle.dumps(item)) == item
    c = Claimed(7, p, 1)
    assert (c.id, c.payload, c.attempts) == (7, p, 1) and c == Claimed(7, p, 1)
    assert c != Claimed(7, p, 2) and c != (7, p, 1)
    assert repr(c) == f"Claimed(id=7, payload={p!r}, attempts=1)"
    assert pickle.loads(pickle.dumps(c)) == c
    f = Filtered("k", "lead", "unmapped", "no mapping")
    assert hash(Incoming(f, None, NOW)) == hash(Incoming(f, None, NOW))


@pytest.mark.skipif(
    "leadrelay.delivery.store_items" not in compiled_modules(), reason="the compiled build's"
)
def test_incoming_and_claimed_refuse_changes_when_compiled() -> None:
    # Interpreted, mypy refuses the assignments (Final attributes); compiled, so does the class.
    item = Incoming(Payload("k", "lead", "Lead", 1, 2, {}), b"{}", NOW)
    c = Claimed(7, item.outcome, 1)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        c.id = 8  # type: ignore[misc]
    with pytest.raises(AttributeError):
        item.received_at = 0.0  # type: ignore[misc]


def test_a_batch_taken_whole_is_recorded_counted_and_told_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    seen: list[Mapping[tuple[str, str], int]] = []
    told: list[tuple[Sequence[int], Sequence[Delivery]]] = []

    class Observer:
        def outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
            seen.append(dict(counts))

        def batch_finished(self, seconds: float, size: int) -> None:
            pass

    async def sleep(seconds: float) -> None:
        pass

    try:
        store.add([Incoming(c.payload, None, NOW) for c in _claimed(3)])
        claimed = store.claim(10, NOW)
        whole = DeliveredWhole([c.payload for c in claimed], None, "T")
        recorder = Recorder(
            store,
            StoreCalls(lambda: False, sleep),
            requeue=RequeuePolicy(),
            clock=lambda: NOW + 1,
            observer=Observer(),
            on_results=lambda ids, results: told.append((ids, results)),
        )
        asyncio.run(recorder.record(claimed, whole))
        assert seen == [{("delivered", ""): 3}]
        assert told == [([c.id for c in claimed], whole)]
        records = [store.get(c.id) for c in claimed]
        assert [(r.state, r.fbtrace_id) for r in records if r] == [(State.DELIVERED, "T")] * 3
    finally:
        store.close()


def test_an_event_tried_before_and_delivered_now_is_delivered_after_retry(tmp_path: Path) -> None:
    """An event put back after its retries ran out (a fleet's requeue) or stored by ``serve``
    after failed requests, then delivered at the first request of a later batch, was counted
    "delivered immediately": the request that took it was the batch's first. The store knows
    it was tried before; it is "after retry", whole batch or not, and its attempts add up."""
    store = SQLiteStore(tmp_path / "q.db")
    told: list[Delivery] = []

    async def sleep(seconds: float) -> None:
        pass

    try:
        store.add([Incoming(c.payload, None, NOW) for c in _claimed(3)])
        first = store.claim(10, NOW)
        store.retry_later([first[0].id], NOW, "retries_exhausted", "gave up", attempts=2, now=NOW)
        store.retry_later([c.id for c in first[1:]], NOW, "interrupted", "stopped", attempts=0)
        claimed = store.claim(10, NOW + 1)
        assert sorted(c.attempts for c in claimed) == [0, 0, 2]
        recorder = Recorder(
            store,
            StoreCalls(lambda: False, sleep),
            requeue=RequeuePolicy(),
            clock=lambda: NOW + 2,
            observer=None,
            on_results=lambda ids, results: told.extend(results),
        )
        asyncio.run(
            recorder.record(claimed, DeliveredWhole([c.payload for c in claimed], None, "T"))
        )
        retried = {d.payload.key: bool(d.extra.get("retried")) for d in told}
        assert retried == {"k0": True, "k1": False, "k2": False}
        record = store.get("k0")
        assert record is not None and (record.state, record.attempts) == (State.DELIVERED, 3)
    finally:
        store.close()
