"""Retention: what the store keeps of delivered events, and for how long (``[store]`` settings).

Once an event is delivered its original and payload are no longer needed to deliver or replay it,
so with ``drop_originals_after_delivery`` they are dropped (the outcome stays visible); after
``retention_days`` the delivered record itself is deleted. Events that did not reach Meta are
kept: they are the dead letters users replay.
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

log = structlog.get_logger("leadrelay.retention")


@dataclass(frozen=True, slots=True)
class Purged:
    """How many delivered events lost their original (``dropped``) or were deleted."""

    dropped: int
    deleted: int


def apply_retention(store: Store, policy: StoreSettings, now: float) -> Purged:
    """Apply the ``[store]`` retention settings once."""
    dropped = (
        store.purge(delivered_before=now, drop_originals=True)
        if policy.drop_originals_after_delivery
        else 0
    )
    deleted = store.purge(
        delivered_before=now - policy.retention_days * 86400, drop_originals=False
    )
    return Purged(dropped, deleted)


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
            if purged.dropped or purged.deleted:
                log.info("retention", originals_dropped=purged.dropped, deleted=purged.deleted)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
