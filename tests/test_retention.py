"""Retention on a real store file: originals dropped after delivery, old deliveries deleted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from conftest import make_settings
from leadrelay.config import StoreSettings
from leadrelay.delivery.retention import apply_retention, retention_loop
from leadrelay.delivery.sqlite_store import SQLiteStore
from leadrelay.delivery.store import Incoming
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Delivery, State


def _seed(store: SQLiteStore, now: float) -> None:
    mapper = Mapper(make_settings(), clock=lambda: now)
    events = [
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012345 + i,
            "user": {"email": f"u{i}@example.com"},
            "context": {"event_id": f"e{i}"},
        }
        for i in range(3)
    ]
    unmapped = {"event_name": "page_view", "context": {"event_id": "pv"}}  # not for Meta
    store.add([Incoming(mapper.map(e), orjson.dumps(e), now) for e in [*events, unmapped]])
    a, b, c = store.claim(10, now)
    store.complete(
        [
            (a.id, Delivery(a.payload, State.DELIVERED)),
            (b.id, Delivery(b.payload, State.DELIVERED)),
            (c.id, Delivery(c.payload, State.REJECTED, reason="meta_100_2804036", code=100)),
        ],
        now,
    )


def test_originals_dropped_then_records_deleted(tmp_path: Path) -> None:
    now = time.time()
    store = SQLiteStore(tmp_path / "s.db")
    _seed(store, now)
    policy = StoreSettings(retention_days=1, drop_originals_after_delivery=True)
    first = apply_retention(store, policy, now + 1)
    assert (first.dropped, first.deleted, first.filtered) == (2, 0, 0)
    delivered = store.get("e0")
    assert delivered is not None and delivered.state is State.DELIVERED
    assert delivered.original is None and delivered.payload is None
    rejected = store.get("e2")
    assert rejected is not None and rejected.original is not None  # dead letters stay whole
    later = apply_retention(store, policy, now + 2 * 86400)
    assert (later.deleted, later.filtered) == (2, 1)  # filtered ones too: they grew for ever
    assert store.get("e0") is None and store.get("pv") is None
    assert store.get("e2") is not None  # a dead letter: kept
    store.close()


def test_keep_originals_when_asked(tmp_path: Path) -> None:
    now = time.time()
    store = SQLiteStore(tmp_path / "s.db")
    _seed(store, now)
    purged = apply_retention(store, StoreSettings(drop_originals_after_delivery=False), now + 1)
    assert (purged.dropped, purged.deleted) == (0, 0)
    record = store.get("e0")
    assert record is not None and record.original is not None
    store.close()


def test_loop_runs_until_stopped(tmp_path: Path) -> None:
    now = time.time()
    store = SQLiteStore(tmp_path / "s.db")
    _seed(store, now)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            retention_loop(store, StoreSettings, stop, interval_s=0.01, clock=lambda: now + 1)
        )
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(run())
    record = store.get("e1")
    assert record is not None and record.original is None
    store.close()


def test_a_reload_says_a_restart_is_needed_only_for_what_the_open_store_was_made_with() -> None:
    """retention_days and drop_originals_after_delivery apply at the next retention pass: the
    reload said "restart needed" for them, and a restart then purged at once."""
    from leadrelay.service.reload import store_needs_restart

    base = StoreSettings()
    assert not store_needs_restart(base, StoreSettings(retention_days=3))
    assert not store_needs_restart(base, StoreSettings(drop_originals_after_delivery=False))
    assert store_needs_restart(base, StoreSettings(originals="drop"))
    assert store_needs_restart(base, StoreSettings(synchronous="NORMAL"))
