"""What a send makes of the events of its files that it does not settle itself (``delivery.own``),
on a real SQLite store: each event read counted once, whatever the store made of it."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from pathlib import Path

import orjson

from leadrelay.delivery.own import OwnResults
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
    later = [item("e-4")]
    own.added(later, store.add_new(later))
    assert tally.duplicates == 2  # e-3 twice in a chunk, e-4 read again while queued
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
    # 7 events read, each counted once: 3 delivered now, 1 before, 1 refused before, 2 twice
    assert tally.settled == 7
    rows = [orjson.loads(line) for line in tally.report.getvalue().splitlines()]  # type: ignore[union-attr]
    assert sorted((r["event_id"], r["outcome"]) for r in rows if r["outcome"] != "delivered") == [
        ("e-1", "rejected"), ("e-3", "duplicate"), ("e-4", "duplicate"),
    ]  # fmt: skip
    store.close()
