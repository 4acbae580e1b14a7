"""Retention: what the store keeps of delivered events, and for how long (``[store]`` settings).

Once an event is delivered its original and payload are no longer needed to deliver or replay it,
so with ``drop_originals_after_delivery`` they are dropped (the outcome stays visible); after
``retention_days`` the delivered record itself is deleted, and so are filtered events (not meant
for Meta). Events that did not reach Meta are kept: they are the dead letters users replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from leadrelay.config import StoreSettings
from leadrelay.delivery.store import Store
from leadrelay.outcome import State

log = structlog.get_logger("leadrelay.retention")


@dataclass(frozen=True, slots=True)
class Purged:
    """How many delivered events lost their original (``dropped``) or were deleted, and how
    many filtered ones were deleted."""

    dropped: int
    deleted: int
    filtered: int = 0


def apply_retention(store: Store, policy: StoreSettings, now: float) -> Purged:
    """Apply the ``[store]`` retention settings once."""
    dropped = (
        store.purge(delivered_before=now, drop_originals=True)
        if policy.drop_originals_after_delivery
        else 0
    )
    before = now - policy.retention_s
    deleted = store.purge(delivered_before=before, drop_originals=False)
    # Events not meant for Meta (a CDP's page views, unmapped) may be most of what comes in:
    # kept for ever, they made the store grow without bound.
    filtered = store.purge(delivered_before=before, drop_originals=False, state=State.FILTERED)
    return Purged(dropped, deleted, filtered)


async def retention_loop(
    store: Store,
    policy: Callable[[], StoreSettings],
    stop: asyncio.Event,
    *,
    interval_s: float = 600.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """Apply retention every ``interval_s`` until ``stop`` is set (``policy`` is re-read each
    time, so a config reload applies)."""
    while not stop.is_set():
        try:
            purged = await asyncio.to_thread(apply_retention, store, policy(), clock())
        except Exception as exc:  # a failed purge must not stop the service; it retries later
            log.error("retention failed", error=f"{type(exc).__name__}: {exc}")
        else:
            if purged.dropped or purged.deleted or purged.filtered:
                log.info(
                    "retention",
                    originals_dropped=purged.dropped,
                    deleted=purged.deleted,
                    filtered_deleted=purged.filtered,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
