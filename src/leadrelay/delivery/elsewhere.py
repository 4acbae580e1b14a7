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
fleet's workers deliver them. Its worker delivers the fleet's events too: the summary counts only
the file's (``OwnResults``), and those of them the fleet's workers saw refused by Meta, dead or
expired are read back from the store at the end (``count_failed_elsewhere``), so that the exit
code says so. It knows its events by their ids (``Spans``: a few numbers for a file of any size).
SQLite needs none of this: one process delivers from a store, and a send takes back at its start
what a stopped one left in flight. ``deliver`` says what the fleet holds (``say_held_elsewhere``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

import structlog

from leadrelay.delivery.intake import Spans
from leadrelay.delivery.store import FleetControl, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, State
from leadrelay.summary import FAILED, Tally

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up


_CLOCK_SKEW_S: Final = 300.0


class OwnResults:
    """``on_results`` for a send on a fleet's queue: what became of the file's events (``spans``)
    goes to the tally, not what became of the fleet's; remembers which of them failed."""

    def __init__(self, spans: Spans, tally: Tally) -> None:
        self.spans = spans
        self._tally = tally
        self.failed: set[int] = set()

    def __call__(self, ids: Sequence[int], results: Sequence[Delivery]) -> None:
        spans = self.spans
        if type(results) is DeliveredWhole and all(i in spans for i in ids):
            self._tally.deliveries(results)
            return
        ours = [(i, d) for i, d in zip(ids, results, strict=True) if i in spans]
        self.failed.update(i for i, d in ours if d.state in FAILED)
        self._tally.deliveries([d for _, d in ours])


def count_failed_elsewhere(store: Store, own: OwnResults, since: float, tally: Tally) -> None:
    """The file's events that other processes settled since ``since`` as refused by Meta,
    expired or dead, counted in ``tally`` (blocking: run it in a thread). Read from the store's
    failures past the file's first id, a page at a time: those that are the file's, and not
    refused by our own rules (those never went out: the reader counted them)."""
    spans = own.spans
    among = spans.merged()
    if not among:
        return
    after, last = among[0][0] - 1, among[-1][1]
    # The other processes write updated_at by their own clocks: a few minutes of skew between
    # machines must not hide a refusal (what an earlier run settled that recently counts too).
    since -= _CLOCK_SKEW_S
    while after < last:
        page = store.events(states=FAILED, since=since, after_id=after, limit=1000, bodies=False)
        for record in page:
            id_ = record.id
            went_out = record.state is not State.REJECTED or record.attempts > 0
            if went_out and id_ in spans and id_ not in own.failed:
                tally.settled_elsewhere(record)
        if len(page) < 1000:
            break
        after = page[-1].id


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
