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
those it can take. Its worker delivers the fleet's events too: the summary counts only the
file's (``OwnResults``). At the end, what became of those it did not settle itself is read from
the store, each event once, 10,000 ids at a time (``account_elsewhere``): still open, they are
not sent yet (``Tally.elsewhere``: exit code 2) and the fleet's workers deliver them; or
another process delivered them, or saw them refused by Meta, expire or die (exit code 2). So
the summary, the report and the exit code hold every event, once. It knows its events by their
ids (``Spans``: a few numbers for a file of any size): those it stored, and those it found
stored and still open; and those it settled itself by runs of ids (``delivery.own``, which also
counts those it found stored settled). SQLite needs none of this: one process delivers from a
store, and a send takes back at its start what a stopped one left in flight.

``deliver`` has no events of its own: it counts what it delivers, says what the fleet holds
(``say_held_elsewhere``), and counts those it put back in the queue (retries ran out) that are
still there as not sent yet (``PutBack``: exit code 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import structlog

from leadrelay.delivery.intake import Spans
from leadrelay.delivery.own import OPEN, READ_AT_ONCE, runs, span_pieces
from leadrelay.delivery.results import requeued
from leadrelay.delivery.store import FleetControl, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, State
from leadrelay.summary import Tally

if TYPE_CHECKING:
    from leadrelay.delivery.own import OwnResults

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up


class PutBack:
    """``on_results`` for ``deliver`` on a fleet's queue: the tally counts what it settles, and
    ``ids`` holds the events it put back in the queue (retries ran out) and did not settle
    later."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self.ids: set[int] = set()

    def __call__(self, ids: Sequence[int], results: Sequence[Delivery]) -> None:
        if self.ids:
            self.ids.difference_update(ids)
        if type(results) is DeliveredWhole:
            self._tally.deliveries(results)
            return
        told = []
        for i, d in zip(ids, results, strict=True):
            if requeued(d):
                self.ids.add(i)
            else:
                told.append(d)
        self._tally.deliveries(told)


def account_elsewhere(fleet: FleetControl, own: OwnResults, tally: Tally) -> None:
    """What became of the file's events that this process did not settle, counted in ``tally``
    (blocking: run it in a thread): still open (``Tally.elsewhere``: not sent yet, exit 2), or
    settled by another process (delivered; refused by Meta, expired or dead: exit 2), each event
    once, as the store had it when its piece of ids was read. What a report row or a failure's
    reason needs is read for those; without a report, the delivered and open ones are only
    counted."""
    report = tally.report is not None
    tally.elsewhere = 0
    # In pieces: with a report, every one of a million events another process settled is
    # listed and read back; all at once, they held hundreds of MB.
    for piece in span_pieces(own.unsettled(), READ_AT_ONCE):
        accounted = fleet.account_among(piece, list_all=report)
        tally.elsewhere += accounted.open
        if not report:
            tally.delivered_elsewhere += accounted.delivered
        found = {r.id: r for r in fleet.outcomes([i for i, _ in accounted.listed])}
        for id_, state in accounted.listed:
            record = found.get(id_)
            if state in OPEN:
                if record is not None:
                    tally.held_elsewhere(record)  # a row: counted in ``open``
            elif record is not None:
                tally.settled_elsewhere(record)
            elif state is State.DELIVERED:  # purged since (retention): counted, with no row
                tally.delivered_elsewhere += 1
            else:
                tally.dead["purged before its outcome could be read"] += 1


async def say_held_elsewhere(
    store: Store, claim_idle_s: float, put_back: PutBack, tally: Tally
) -> None:
    """What ``deliver`` leaves to the fleet: events in flight in other processes, and queued
    ones it could not take (not due yet, or behind an earlier event of their lead). Those it put
    back in the queue itself and are still open are counted (``Tally.elsewhere``: exit 2)."""
    if put_back.ids and isinstance(store, FleetControl):
        among = await asyncio.to_thread(runs, put_back.ids)
        tally.elsewhere = await asyncio.to_thread(store.open_among, among)
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
    halt: asyncio.Event,
) -> GraphError | None:
    """The events of these files (``spans``) still open once the send's worker found nothing
    to claim: waits up to ``claim_idle_s`` (and a little) for them, delivering what it can take
    meanwhile (``account_elsewhere`` then counts what became of them). Returns why delivery
    paused."""
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
    return paused
