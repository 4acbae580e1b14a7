"""What a send makes of the events of its files that it does not settle itself (``delivery.own``),
on a real SQLite store: each event read counted once, whatever the store made of it."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from leadrelay.delivery import wheres
from leadrelay.delivery.own import OwnResults, span_pieces
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State
from leadrelay.summary import Tally

NOW = time.time()


def item(key: str, at: float = NOW) -> Incoming:
    lead = 120000000000000 + int(key.split("-")[1])
    return Incoming(Payload(key, "lead", "Lead", lead, int(at) - 60, {"k": key}), b"{}", at)


def test_each_event_read_is_counted_once_whatever_the_store_made_of_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    # An earlier run: e-0 delivered, e-1 refused by Meta, e-2 still queued.
    before = [item(f"e-{n}", NOW - 3600) for n in range(3)]
    ids = store.add(before)
    claimed = store.claim(2, NOW - 3600)
    refused = Delivery(claimed[1].payload, State.REJECTED, 1, "meta_100_2804036", "unknown lead")
    refused = replace(refused, code=100, subcode=2804036)
    delivered = Delivery(claimed[0].payload, State.DELIVERED, 1)
    store.complete([(claimed[0].id, delivered), (claimed[1].id, refused)], NOW - 3600)
    tally = Tally(report=io.BytesIO())
    own = OwnResults(store, tally, fleet=None, started=NOW - 1)
    # This run reads e-0..e-2 again, two new events, then e-3 again in the same chunk, and
    # e-4 again in a later chunk while it is still queued.
    chunk = [*(item(f"e-{n}") for n in range(5)), item("e-3")]
    own.added(chunk, store.add_new(chunk))
    later = [item("e-4"), item("e-0")]
    own.added(later, store.add_new(later))
    # e-3 twice in a chunk, e-4 read again while queued, e-0 found stored a second time
    assert tally.duplicates == 3
    # Its worker delivers what is open: e-2 (queued by the earlier run), e-3 and e-4.
    mine = [c.id for c in store.claim(10, NOW)]
    assert len(mine) == 3 and ids[2] in mine
    payloads = [Payload(f"x-{i}", "lead", "Lead", 1, 1, {}) for i in mine]
    own(mine, DeliveredWhole(payloads, None, "T"))
    asyncio.run(own.account())
    assert tally.delivered_now == 3
    assert tally.delivered_before == 1
    assert tally.meta_rejected == {"100/2804036 (an earlier run)": 1}
    assert tally.queued_left == 0
    # 8 events read, each counted once: 3 delivered now, 1 before, 1 refused before, 3 twice
    assert tally.settled == 8
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    assert sorted((r["event_id"], r["outcome"]) for r in rows if r["outcome"] != "delivered") == [
        ("e-0", "duplicate"), ("e-1", "rejected"), ("e-3", "duplicate"), ("e-4", "duplicate"),
    ]  # fmt: skip
    store.close()


def test_a_duplicate_row_says_where_the_repeat_was_read(tmp_path: Path) -> None:
    """A duplicate's report row had no "where" (nor event_name): its event_id is the one of the
    event it repeats, so nothing told which line of the files it was. Both repeats say their
    line: one read while the first was in the same chunk, one read after the first was
    delivered and stored (counted at the end). The delivered ones say theirs too."""
    store = SQLiteStore(tmp_path / "s.db")
    store.add([item("old-0", NOW - 3600)])  # an earlier run's, delivered then
    (claimed,) = store.claim(1, NOW - 3600)
    store.complete([(claimed.id, Delivery(claimed.payload, State.DELIVERED, 1))], NOW - 3600)
    tally = Tally(report=io.BytesIO())
    own = OwnResults(store, tally, fleet=None, started=NOW - 1)
    first = [item("e-0"), item("e-1"), item("e-1")]
    for n, incoming in enumerate(first):
        tally.read_at[id(incoming)] = f"crm.ndjson line {n + 1}"
    own.added(first, store.add_new(first))
    mine = store.claim(10, NOW)
    results = [Delivery(c.payload, State.DELIVERED, 1) for c in mine]
    store.complete([(c.id, d) for c, d in zip(mine, results, strict=True)], NOW)
    own([c.id for c in mine], results)
    again = [item("e-0"), item("old-0")]  # e-0 after it was delivered; old-0 sent before
    for n, incoming in enumerate(again):
        tally.read_at[id(incoming)] = f"crm.ndjson line {n + 4}"
    own.added(again, store.add_new(again))
    asyncio.run(own.account())
    assert not tally.read_at  # nothing kept once the store took them
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    said = sorted((r["event_id"], r["outcome"], r["where"], r["event_name"]) for r in rows)
    assert said == [
        ("e-0", "delivered", "crm.ndjson line 1", "Lead"),
        ("e-0", "duplicate", "crm.ndjson line 4", "Lead"),
        ("e-1", "delivered", "crm.ndjson line 2", "Lead"),
        ("e-1", "duplicate", "crm.ndjson line 3", "Lead"),
        ("old-0", "delivered", "an earlier run", "Lead"),
    ]
    store.close()


def test_the_backlog_delivered_before_the_reader_comes_to_it_is_counted_once(
    tmp_path: Path,
) -> None:
    """A send delivers the store's backlog (events a stopped run left queued) while it reads:
    those its files hold, delivered before the reader came to them, were counted twice, as
    delivered now and as "delivered by an earlier run" (21,050 rows for 20,000 events in a
    review). They are this run's, once; the backlog its files do not hold is counted apart."""
    store = SQLiteStore(tmp_path / "s.db")
    ids = store.add([item(f"b-{n}", NOW - 3600) for n in range(3)])  # left queued
    tally = Tally(report=io.BytesIO())
    own = OwnResults(store, tally, fleet=None, started=NOW - 1)
    claimed = store.claim(10, NOW)
    assert [c.id for c in claimed] == ids
    results = [Delivery(c.payload, State.DELIVERED, 1) for c in claimed]
    store.complete(list(zip(ids, results, strict=True)), NOW)
    own(ids, results)  # before the reader came to them: the backlog's, for now
    assert (tally.delivered_now, tally.backlog_delivered) == (0, 3)
    chunk = [item("b-0"), item("b-1")]  # the file holds two of them
    own.added(chunk, store.add_new(chunk))
    asyncio.run(own.account())
    assert (tally.delivered_now, tally.delivered_before, tally.backlog_delivered) == (2, 0, 1)
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    assert sorted((r["event_id"], r["where"], r["outcome"]) for r in rows) == [
        ("b-0", None, "delivered"), ("b-1", None, "delivered"),
    ]  # fmt: skip
    store.close()


def test_backlog_found_in_the_files_keeps_how_it_was_delivered(tmp_path: Path) -> None:
    """Events of the store's backlog delivered after a split of their batch (two requests, none
    failed), before the reader came to them, were counted "after retry": the store keeps how
    many requests carried an event, not why. The send saw why as it delivered them."""
    store = SQLiteStore(tmp_path / "s.db")
    ids = store.add([item(f"s-{n}", NOW - 3600) for n in range(3)])
    tally = Tally(report=io.BytesIO())
    own = OwnResults(store, tally, fleet=None, started=NOW - 1)
    claimed = store.claim(10, NOW)
    results = [
        Delivery(claimed[0].payload, State.DELIVERED, 2),  # its batch was split
        Delivery(claimed[1].payload, State.DELIVERED, 2, extra={"retried": True}),
        Delivery(claimed[2].payload, State.DELIVERED, 1),
    ]
    store.complete(list(zip(ids, results, strict=True)), NOW)
    own(ids, results)
    chunk = [item(f"s-{n}") for n in range(3)]
    own.added(chunk, store.add_new(chunk))
    asyncio.run(own.account())
    assert (tally.delivered_split, tally.delivered_retry, tally.delivered_now) == (1, 1, 1)
    assert tally.backlog_delivered == 0
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    assert sorted((r["event_id"], r["outcome"]) for r in rows) == [
        ("s-0", "delivered_after_split"), ("s-1", "delivered_after_retry"), ("s-2", "delivered"),
    ]  # fmt: skip
    store.close()


def test_rows_say_where_events_were_read_when_most_wait_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send far ahead of a slow Meta holds where every event it stored was read until its
    row is written: past ``wheres.KEEP`` of them (here 4), on disk. Each row still says its
    line, whatever order delivery settles them in, and those left queued at the end too."""
    monkeypatch.setattr(wheres, "KEEP", 4)
    store = SQLiteStore(tmp_path / "s.db")
    tally = Tally(report=io.BytesIO())
    own = OwnResults(store, tally, fleet=None, started=NOW - 1)
    line = 0
    for chunk_no in range(3):
        chunk = [item(f"e-{chunk_no * 10 + n}") for n in range(10)]
        for incoming in chunk:
            line += 1
            tally.read_at[id(incoming)] = f"crm.ndjson line {line}"
        own.added(chunk, store.add_new(chunk))
    held = own._where
    assert (len(held), held.on_disk) == (30, 26)
    claimed = store.claim(20, NOW)
    claimed.reverse()  # the latest first: those on disk before those in memory
    for part in (claimed[:7], claimed[7:]):
        results = [Delivery(c.payload, State.DELIVERED, 1) for c in part]
        store.complete([(c.id, d) for c, d in zip(part, results, strict=True)], NOW)
        own([c.id for c in part], results)
    assert (len(held), held.on_disk) == (10, 10)
    asyncio.run(own.account())  # the last 10 are left queued
    assert len(held) == 0
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    said = sorted((r["outcome"], r["where"], r["event_id"]) for r in rows)
    wanted = [("delivered", f"crm.ndjson line {n + 1}", f"e-{n}") for n in range(20)]
    wanted += [("queued", f"crm.ndjson line {n + 1}", f"e-{n}") for n in range(20, 30)]
    assert said == sorted(wanted)
    store.close()


def test_wheres_takes_each_one_once_from_memory_or_disk() -> None:
    held = wheres.Wheres(keep=2)
    held.put([(5, "a line 1"), (6, "a line 2"), (7, "a line 3"), (9, "b line 1")])
    held.put([(7, "a line 3 again")])  # kept where it was read first, counted once
    assert (len(held), held.on_disk) == (4, 2)
    assert held.take([9, 8, 5]) == ["b line 1", None, "a line 1"]
    assert held.take([9, 7, 6]) == [None, "a line 3", "a line 2"]
    assert (len(held), held.on_disk) == (0, 0)


@pytest.mark.parametrize("size", [1, 3, 4, 10])
def test_span_pieces_cover_the_ids_in_order_size_at_most_each(size: int) -> None:
    spans = [(1, 5), (7, 7), (10, 20), (22, 23)]
    pieces = list(span_pieces(spans, size))
    assert [i for p in pieces for a, b in p for i in range(a, b + 1)] == [
        i for a, b in spans for i in range(a, b + 1)
    ]
    assert all(0 < sum(b - a + 1 for a, b in p) <= size for p in pieces)
    assert all(sum(b - a + 1 for a, b in p) == size for p in pieces[:-1])
