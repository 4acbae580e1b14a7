"""A send on a fleet's store (Redis, ``[queue]``): the events other processes have a hand in.

On a fleet's queue, a send's worker delivers what it can claim, and stops when there is nothing
left to claim (``DeliveryWorker.run_until_idle``): the other processes' backlog is theirs. Some of
the send's own events may still be open then:
- in flight in another process: a worker of the fleet that took them (and is delivering them), or
  a process that stopped (killed, crashed) holding them under its consumer name, until they
  have been idle ``claim_idle_s``; then any worker may take them over;
- queued behind an earlier event of their lead that another process holds, or that waits for a
  retry (per-lead order), found stored by an earlier run or read from these files;
- queued for a retry: on a fleet's queue a send follows the fleet's policy (``RequeuePolicy``),
  and events whose retries ran out go back to the queue, not to the dead letters.

The send waits for them up to ``claim_idle_s`` and a little (``settle_elsewhere``), delivering
those it can take, and counts the rest as not sent yet (``Tally.elsewhere``: exit code 2); the
fleet's workers deliver them. It knows its events by their ids (``Spans``: a few numbers for a
file of any size). SQLite needs none of this: one process delivers from a store, and a send
takes back at its start what a stopped one left in flight. ``deliver`` says what the fleet
holds (``say_held_elsewhere``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog

from leadrelay.delivery.intake import Spans
from leadrelay.delivery.store import FleetControl, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.summary import Tally

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up


async def say_held_elsewhere(store: Store, claim_idle_s: float) -> None:
    """What ``deliver`` leaves to the fleet: events in flight in other processes, and queued
    ones it could not take (not due yet, or behind an earlier event of their lead)."""
    counts = await asyncio.to_thread(store.counts, time.time())
    if counts.in_flight:
        log.warning(
            "events are in flight in other processes: the fleet's workers deliver them, and "
            f"those of a process that stopped are taken back after claim_idle_s ({claim_idle_s:g}"
            " s), by a worker or the next deliver",
            events=counts.in_flight,
        )
    if counts.queued:
        log.warning(
            "events are queued for later (a retry not due yet) or behind an earlier event of "
            "their lead: the fleet's workers deliver them when they can go, or the next deliver",
            events=counts.queued,
        )


async def settle_elsewhere(
    fleet: FleetControl,
    worker: DeliveryWorker,
    spans: Spans,
    claim_idle_s: float,
    tally: Tally,
    halt: asyncio.Event,
) -> GraphError | None:
    """The events of these files (``spans``) still open once the send's worker found nothing
    to claim: waits up to ``claim_idle_s`` (and a little) for them, delivering what it can take
    meanwhile; those still open are counted (``Tally.elsewhere``: exit code 2). Returns why
    delivery paused."""
    among = await asyncio.to_thread(spans.merged)  # ids found out of order: many spans
    loop = asyncio.get_running_loop()
    deadline = loop.time() + claim_idle_s + _TAKEOVER_SLACK_S
    left = await asyncio.to_thread(fleet.open_among, among)
    if left:
        log.warning(
            "events read from these files are held by other processes (or one that stopped), "
            "queued for a retry, or behind an earlier event of their lead; waiting for them",
            events=left,
            wait_s=round(claim_idle_s + _TAKEOVER_SLACK_S),
        )
    paused = None
    while left and loop.time() < deadline and not halt.is_set():
        await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
        paused = await worker.run_until_idle(halt)
        if paused is not None:
            break
        left = await asyncio.to_thread(fleet.open_among, among)
    tally.elsewhere = left
    return paused
