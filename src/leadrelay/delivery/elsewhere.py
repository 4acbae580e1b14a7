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
the store at one instant (``account_elsewhere``): still open, they are not sent yet
(``Tally.elsewhere``: exit code 2) and the fleet's workers deliver them; or another process
delivered them, or saw them refused by Meta, expire or die (exit code 2). So the summary, the
report and the exit code hold every event, once. It knows its events by their ids (``Spans``: a
few numbers for a file of any size): those it stored, and those it found stored and still open
(found settled, they are "not sent again"); and those it settled itself by runs of ids. SQLite
needs none of this: one process delivers from a store, and a send takes back at its start what
a stopped one left in flight.

``deliver`` has no events of its own: it counts what it delivers, says what the fleet holds
(``say_held_elsewhere``), and counts those it put back in the queue (retries ran out) that are
still there as not sent yet (``PutBack``: exit code 2).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from itertools import compress
from typing import Final

import structlog

from leadrelay.delivery.intake import Spans, merge_spans
from leadrelay.delivery.results import requeued
from leadrelay.delivery.store import Added, FleetControl, Incoming, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State
from leadrelay.summary import Tally

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up
_OPEN: Final = (State.QUEUED, State.IN_FLIGHT)


class OwnResults:
    """``on_results`` for a send on a fleet's queue: what became of the file's events goes to the
    tally, not what became of the fleet's; remembers which of them it settled. ``added`` (the
    intake's ``on_added``) learns the file's events' ids (``spans``)."""

    def __init__(self, fleet: FleetControl, tally: Tally) -> None:
        self.spans = Spans()
        self._fleet = fleet
        self._tally = tally
        self._settled: list[tuple[int, int]] = []  # runs of ids, a batch's at a time
        self._accounting: asyncio.Future[None] | None = None

    def added(self, items: Sequence[Incoming], added: Added) -> None:
        """The ids of a chunk's payloads (the reader counted the others): those this run stored,
        and those it found stored that are still open. Found settled (by an earlier run, or
        another process), a payload is "not sent again"."""
        ours = [
            (i, new)
            for i, new, item in zip(added.ids, added.stored, items, strict=True)
            if isinstance(item.outcome, Payload)
        ]
        found = [i for i, new in ours if not new]
        still = set(compress(found, self._fleet.open_of(found))) if found else set()
        self.spans.add(i for i, new in ours if new or i in still)

    def __call__(self, ids: Sequence[int], results: Sequence[Delivery]) -> None:
        spans = self.spans
        if type(results) is DeliveredWhole and all(i in spans for i in ids):
            self._tally.deliveries(results)
            self._settled += _runs(ids)
            return
        # Those put back in the queue (retries ran out) are not settled: still open at the end,
        # or settled elsewhere. Those a pause holds are counted now ("not sent"), as on SQLite.
        ours = [(i, d) for i, d in zip(ids, results, strict=True) if i in spans and not requeued(d)]
        self._settled += _runs(i for i, _ in ours)
        self._tally.deliveries([d for _, d in ours])

    def unsettled(self) -> list[tuple[int, int]]:
        """The spans of the file's ids that this process did not settle, in order."""
        return _without(self.spans.merged(), merge_spans(self._settled))

    async def account(self, *, stopped: bool = False) -> None:
        """``account_elsewhere``, once: at the send's end, on SIGTERM or on Ctrl-C. Called again
        (a Ctrl-C while it runs), it waits for the same run: the tally is counted once.
        ``stopped`` (Ctrl-C): a failure is logged, not raised; the summary then says where the
        events not accounted for may be."""
        if self._accounting is None:
            self._accounting = asyncio.ensure_future(
                asyncio.to_thread(account_elsewhere, self._fleet, self, self._tally)
            )
        try:
            await asyncio.shield(self._accounting)
        except Exception as exc:
            if not stopped:
                raise
            log.warning(
                "stopped before the events held elsewhere were accounted for",
                error=f"{type(exc).__name__}: {exc}",
            )


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
    once, as the store had them at one instant. What a report row or a failure's reason needs
    is read for those; without a report, the delivered and open ones are only counted."""
    report = tally.report is not None
    accounted = fleet.account_among(own.unsettled(), list_all=report)
    tally.elsewhere = accounted.open
    if not report:
        tally.delivered_elsewhere += accounted.delivered
    found = {r.id: r for r in fleet.outcomes([i for i, _ in accounted.listed])}
    for id_, state in accounted.listed:
        record = found.get(id_)
        if state in _OPEN:
            if record is not None:
                tally.held_elsewhere(record)  # a row: counted in ``open``
        elif record is not None:
            tally.settled_elsewhere(record)
        elif state is State.DELIVERED:  # purged since (retention): counted, with no row
            tally.delivered_elsewhere += 1
        else:
            tally.dead["purged before its outcome could be read"] += 1


def _runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """``ids`` as spans of consecutive ones, in order."""
    out: list[tuple[int, int]] = []
    for id_ in sorted(ids):
        if out and id_ <= out[-1][1] + 1:
            if id_ > out[-1][1]:
                out[-1] = (out[-1][0], id_)
        else:
            out.append((id_, id_))
    return out


def _without(spans: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What of ``spans`` no span of ``taken`` covers (both in order, neither overlapping)."""
    out: list[tuple[int, int]] = []
    k = 0
    for first, last in spans:
        while k < len(taken) and taken[k][1] < first:
            k += 1
        start, j = first, k
        while j < len(taken) and taken[j][0] <= last:
            if taken[j][0] > start:
                out.append((start, taken[j][0] - 1))
            start = max(start, taken[j][1] + 1)
            j += 1
        if start <= last:
            out.append((start, last))
    return out


async def say_held_elsewhere(
    store: Store, claim_idle_s: float, put_back: PutBack, tally: Tally
) -> None:
    """What ``deliver`` leaves to the fleet: events in flight in other processes, and queued
    ones it could not take (not due yet, or behind an earlier event of their lead). Those it put
    back in the queue itself and are still open are counted (``Tally.elsewhere``: exit 2)."""
    if put_back.ids and isinstance(store, FleetControl):
        among = await asyncio.to_thread(_runs, put_back.ids)
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
