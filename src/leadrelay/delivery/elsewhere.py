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
the file's (``OwnResults``), and what the fleet's workers made of the others (delivered, refused
by Meta, dead or expired) is read back from the store at the end (``count_settled_elsewhere``),
so that the summary, the report and the exit code hold every event. It knows its events by
their ids (``Spans``: a few numbers for a file of any size), and those it settled itself by runs
of ids. SQLite needs none of this: one process delivers from a store, and a send takes back at
its start what a stopped one left in flight.

``deliver`` has no events of its own: it counts what it delivers, says what the fleet holds
(``say_held_elsewhere``), and counts those it put back in the queue (retries ran out) that are
still there as not sent yet (``PutBack``: exit code 2).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Final

import structlog

from leadrelay.delivery.intake import Spans, merge_spans
from leadrelay.delivery.results import requeued
from leadrelay.delivery.store import FleetControl, Store
from leadrelay.delivery.worker import DeliveryWorker
from leadrelay.meta.errors import GraphError
from leadrelay.outcome import DeliveredWhole, Delivery, State
from leadrelay.summary import FAILED, Tally

log = structlog.get_logger("leadrelay.send")

_TAKEOVER_SLACK_S: Final = 5.0  # beyond claim_idle_s, before events held elsewhere are given up
_CLOCK_SKEW_S: Final = 300.0
_PAGE: Final = 1000  # events read back from the store per call
_SETTLED: Final = (State.DELIVERED, *FAILED)


class OwnResults:
    """``on_results`` for a send on a fleet's queue: what became of the file's events (``spans``)
    goes to the tally, not what became of the fleet's; remembers which of them it settled."""

    def __init__(self, spans: Spans, tally: Tally) -> None:
        self.spans = spans
        self._tally = tally
        self._settled: list[tuple[int, int]] = []  # runs of ids, a batch's at a time

    def __call__(self, ids: Sequence[int], results: Sequence[Delivery]) -> None:
        spans = self.spans
        if type(results) is DeliveredWhole and all(i in spans for i in ids):
            self._tally.deliveries(results)
            self._settled += _runs(ids)
            return
        # Those back in the queue are not settled: still open at the end, or settled elsewhere.
        ours = [(i, d) for i, d in zip(ids, results, strict=True) if i in spans]
        self._settled += _runs(i for i, d in ours if d.state is not State.QUEUED)
        self._tally.deliveries([d for _, d in ours if not requeued(d)])

    def unsettled(self) -> list[tuple[int, int]]:
        """The spans of the file's ids that this process did not settle, in order."""
        return _without(self.spans.merged(), merge_spans(self._settled))


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


def count_settled_elsewhere(store: Store, own: OwnResults, since: float, tally: Tally) -> None:
    """The file's events that other processes settled (delivered, refused by Meta, expired or
    dead), counted in ``tally`` (blocking: run it in a thread). Read from the store a page at a
    time, over the ids this process did not settle; not those refused by our own rules (those
    never went out: the reader counted them). Those this run stored were settled since, by any
    clock. Those it found stored count when settled since ``since`` (this run's start), less a
    few minutes: other processes write updated_at by their own clocks, and skew between machines
    must not hide a refusal (so what an earlier run settled that recently counts too; it was
    another process). Settled before, they are "not sent again"."""
    gaps = own.unsettled()
    found = own.spans.found
    if found is None:
        _read_settled(store, gaps, None, tally)
        return
    before = found.merged()
    _read_settled(store, _without(gaps, before), None, tally)
    _read_settled(store, _without(gaps, _without(gaps, before)), since - _CLOCK_SKEW_S, tally)


def _read_settled(
    store: Store, gaps: list[tuple[int, int]], since: float | None, tally: Tally
) -> None:
    """``count_settled_elsewhere`` over ``gaps`` (spans of ids, in order)."""
    firsts = [first for first, _ in gaps]
    for first, last in _windows(gaps):
        after = first - 1
        while after < last:
            limit = min(_PAGE, last - after)
            page = store.events(
                states=_SETTLED, since=since, after_id=after, limit=limit, bodies=False
            )
            for record in page:
                id_ = record.id
                k = bisect_right(firsts, id_) - 1
                if id_ > last or k < 0 or id_ > gaps[k][1]:
                    continue  # settled here, or not the file's
                if record.state is not State.REJECTED or record.attempts > 0:
                    tally.settled_elsewhere(record)
            if len(page) < limit:
                break
            after = page[-1].id


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


def _windows(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges of ids to read ``gaps`` through: gaps less than a page apart are read in one range
    (ids found out of order make many gaps of one id; a call for each would take long)."""
    out: list[tuple[int, int]] = []
    for first, last in gaps:
        if out and first - out[-1][1] <= _PAGE:
            out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
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
