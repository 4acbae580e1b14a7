"""What became of each event a send read from its files, once, whatever the store made of it.

A send counts the files' payloads as its delivery settles them (``OwnResults`` is the worker's
``on_results``). Some it does not settle itself, and they are counted at its end, each once:
- **found stored and settled** when read: an earlier run of the same files (or ``serve``)
  delivered them, or Meta refused them, they expired or died (retries ran out) then; or the
  event id came before in this run. They are not sent again: what the store holds of them is
  read (``Outcomes.outcomes``) and counted as such ("delivered by an earlier run"; refused,
  expired or dead "in an earlier run", exit code 2, as ``dead-letters`` lists them; "the
  event_id of an event before it"), each with its report row. An event id already held in
  memory (write-behind) is a duplicate at once. One stored (or read before) for another stage
  (Meta tells events apart by event_id and event_name, the store by event_id) is "not sent",
  exit code 2, with what to do (but one Meta never saw gives its place: ``Store.add``);
- **left queued** when delivery stopped (Ctrl-C, SIGTERM, a refused token): in the store (ids
  the send stored or found open, not settled) or in memory (the write-behind stores them queued
  as it closes): "not sent yet", each with its row;
- on a fleet's queue (Redis), those another process holds or settled: ``delivery.elsewhere``.

The files' events are known by their ids (``Spans``: a few numbers for a file of any size):
those the send stored, and those it found stored still open (``Outcomes.stages_of``), which it
delivers (SQLite: one process delivers from a store) or another process does (a fleet). Ids of
events held in memory (write-behind, negative) are the send's by definition. Its worker also
delivers the store's backlog (events ``serve`` or a stopped run left queued; on a fleet, the
fleet's): counted apart on SQLite ("queued in the store before this run"), not at all on a
fleet, and remembered by runs of ids, so that one the reader then finds in its files is counted
as this run's, once (``Tally.settled_here``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Final

import structlog

from leadrelay.delivery.intake import Spans, merge_spans
from leadrelay.delivery.results import requeued
from leadrelay.delivery.store import Added, FleetControl, Incoming, Outcomes
from leadrelay.delivery.store_rows import Stage, other_stage
from leadrelay.delivery.wheres import Wheres
from leadrelay.outcome import DeliveredWhole, Delivery, Payload, State
from leadrelay.summary import Tally

__all__ = ["OPEN", "READ_AT_ONCE", "OwnResults", "runs", "span_pieces", "without"]

log = structlog.get_logger("leadrelay.send")

OPEN: Final = (State.QUEUED, State.IN_FLIGHT)  # the states of an event not settled yet
READ_AT_ONCE: Final = 10_000  # records read back per call at the end


class OwnResults:
    """``on_results`` for a send with files: what became of the files' events goes to the
    tally (on a fleet, not what became of the fleet's); remembers which of them it settled.
    ``added`` (the intake's ``on_added``) learns the files' events' ids; ``account`` counts, at
    the end, those it did not settle (see the module). ``started``: when the send began."""

    def __init__(
        self, store: Outcomes, tally: Tally, *, fleet: FleetControl | None, started: float
    ) -> None:
        self.spans = Spans()
        self._store = store
        self._fleet = fleet
        self._tally = tally
        self._started = started
        self._settled: list[tuple[int, int]] = []  # runs of ids, a batch's at a time
        self._found = Spans()  # found stored settled: read at the end
        # With a report: where those found settled during this run (by it, before its reader
        # came to them, or by another process) were read, for their rows at the end; not those
        # an earlier run settled (all of a big file sent again).
        self._found_where: dict[int, str] = {}
        # With a report: where each event this run stored or holds was read, by id, until it is
        # settled (its row says it). Those open at once: a few thousand unless Meta is slow,
        # every event read if it is (past Wheres' keep, on disk).
        self._where = Wheres()
        # Runs of ids this process settled that were not the files' (yet): the store's backlog,
        # or (a fleet) the fleet's. The reader may find some of them later: the files' then.
        self._foreign: list[tuple[int, int]] = []
        # Of those, the ones delivered after a split of their batch (the store keeps how many
        # requests carried an event, not whether one of them failed): a few, if any.
        self._split: set[int] = set()
        self._accounting: asyncio.Future[None] | None = None

    def added(self, items: Sequence[Incoming], added: Added) -> None:
        """The ids of a chunk's payloads (the reader counted the others): those this run stored
        or holds in memory, those it found stored that are still open, and those found settled
        (read at the end: "not sent again", as what they are)."""
        ids = added.ids
        read_at = self._tally.read_at  # a report's: where each was read
        wheres = [read_at.pop(id(item), None) for item in items] if read_at else None
        if wheres is not None:  # kept for the rows of those this run stored or holds
            self._where.put(
                (i, where)
                for i, new, item, where in zip(ids, added.stored, items, wheres, strict=True)
                if new and where is not None and isinstance(item.outcome, Payload)
            )
        if all(added.stored) and (not ids or max(ids) < 0):
            return  # the usual chunk: new events, all held in memory (write-behind)
        ours: list[tuple[int, bool, Payload, str | None]] = []
        places: list[int] = []  # of each of ours among items
        for n, (i, new, item, where) in enumerate(
            zip(ids, added.stored, items, wheres or repeat(None, len(items)), strict=True)
        ):
            if isinstance(o := item.outcome, Payload):
                ours.append((i, new, o, where))
                places.append(n)
        seen = {i for i, new, _, _ in ours if new and i > 0}
        others = added.other_stages  # by place: those the store tells (write-behind's memory)
        again: list[tuple[int, Payload, str | None]] = []  # stored by this run
        stored_before: list[tuple[int, Payload, str | None]] = []  # found, in read order
        for n, (i, new, p, where) in enumerate(ours):
            if new:
                continue
            if i < 0:  # the event id of one held in memory (write-behind): it tells
                self._said(p, where, others.get(places[n]) if others else None)
            elif i in seen or i in self.spans or i in self._found:
                # the event id of one read before in this run: stored (and still open), or
                # found stored earlier in the run
                again.append((i, p, where))
            else:
                stored_before.append((i, p, where))
        if again:  # the same stage again, or another under its event id
            stages = self._store.stages_of(sorted({i for i, _, _ in again}))
            for i, p, where in again:
                self._repeated(p, where, stages.get(i))
        found: list[int] = []
        found_where: dict[int, str] = {}
        still: set[int] = set()
        if stored_before:  # what the store holds of them: open (this run sends it) or settled
            stages = self._store.stages_of(sorted({i for i, _, _ in stored_before}))
            for i, p, where in stored_before:
                stage = stages.get(i)
                other = None if stage is None else other_stage(p, stage)
                if other is not None:
                    # Stored (by an earlier run, another process, or this run) for another
                    # stage: not "delivered before", nor sent (the store keeps one per id).
                    self._said(p, where, other)
                    continue
                if i in seen:  # the first of this id in the chunk came before it
                    self._said(p, where, None)
                    continue
                seen.add(i)
                found.append(i)
                if where is not None:
                    found_where[i] = where
                if stage is None:
                    continue
                if stage.state in OPEN:
                    still.add(i)
                elif stage.updated_at >= self._started and where is not None:
                    # settled during this run (by it, before its reader came, or by another
                    # process): its row at the end says where; an earlier run's say so instead
                    self._found_where[i] = where
        self._found.add(i for i in found if i not in still)
        # found open (queued by an earlier run): this run settles it
        self._where.put((i, where) for i in still if (where := found_where.get(i)) is not None)
        self.spans.add(i for i, new, _, _ in ours if i > 0 and (new or i in still))

    def _repeated(self, p: Payload, where: str | None, stage: Stage | None) -> None:
        """A payload whose event id was read or stored before, as ``stage`` (what the store
        says of it, None: not known): see ``_said``."""
        self._said(p, where, None if stage is None else other_stage(p, stage))

    def _said(self, p: Payload, where: str | None, other: tuple[str, str, bool] | None) -> None:
        """A payload whose event id was read or stored before: the same stage again (``other``
        None: a duplicate), or another one (its ``Added.other_stages`` entry), which is not sent
        (the store keeps one event per event id)."""
        if other is None:
            self._tally.duplicate(p.key, p.source_event, p.lead_id, p.event_name, where)
            return
        _, stored, same = other
        self._tally.reused_id(
            p.key, p.source_event, p.lead_id, p.event_name, stored, where, same_event=same
        )

    def __call__(self, ids: Sequence[int], results: Sequence[Delivery]) -> None:
        spans, where_of = self.spans, self._where
        if type(results) is DeliveredWhole:
            if ids and max(ids) < 0:  # all from memory: the files' own (write-behind)
                self._tally.deliveries(results, where_of.take(ids))
                return
            if all(i < 0 or i in spans for i in ids):
                self._tally.deliveries(results, where_of.take(ids))
                self._settled += runs(i for i in ids if i > 0)
                return
        # Those put back in the queue (retries ran out, or cut short at a stop) are not settled:
        # still open at the end, or settled elsewhere; but those a send held in memory (negative
        # ids) are stored under new ids, and are counted now ("not sent yet"). Those a pause
        # holds are counted now ("not sent"), as on SQLite.
        told = [(i, d) for i, d in zip(ids, results, strict=True) if i < 0 or not requeued(d)]
        mine = [(i, d) for i, d in told if i < 0 or i in spans]
        self._settled += runs(i for i, _ in mine if i > 0)
        self._tally.deliveries([d for _, d in mine], where_of.take([i for i, _ in mine]))
        if len(mine) < len(told):  # the store's backlog (SQLite), or the fleet's events
            theirs = [(i, d) for i, d in told if i > 0 and i not in spans]
            self._foreign += runs(i for i, _ in theirs)
            self._split.update(i for i, d in theirs if _split(d))
            if self._fleet is None:  # counted apart: the summary says so, with no rows
                self._tally.backlog([d for _, d in theirs])

    def unsettled(self) -> list[tuple[int, int]]:
        """The spans of the files' stored ids that this process did not settle, in order."""
        return without(self.spans.merged(), merge_spans(self._settled))

    async def account(
        self, *, stopped: bool = False, waiting: Iterable[tuple[int, Payload]] = ()
    ) -> None:
        """Count, once, what this run did not settle itself (see the module): at the send's
        end, on SIGTERM or on Ctrl-C. ``waiting``: the payloads still in memory (write-behind),
        by id, stored queued as it closes. Called again (a Ctrl-C while it runs), it waits for
        the same run: the tally is counted once. ``stopped`` (Ctrl-C): a failure is logged, not
        raised; the summary then says where the events not accounted for may be."""
        if self._accounting is None:
            left = list(waiting)
            self._accounting = asyncio.ensure_future(asyncio.to_thread(self._account, left))
        try:
            await asyncio.shield(self._accounting)
        except Exception as exc:
            if not stopped:
                raise
            self._tally.store_failed = True  # the summary says these events are not known
            log.warning(
                "stopped before every event read was accounted for",
                error=f"{type(exc).__name__}: {exc}",
            )

    def _account(self, waiting: list[tuple[int, Payload]]) -> None:
        tally, started = self._tally, self._started
        foreign = Spans.of(merge_spans(self._foreign))
        for ids in _pieces(self._found.merged()):
            for record in self._store.outcomes(ids):
                if record.id in foreign:  # settled here before the reader came to it
                    split = record.id in self._split
                    where = self._found_where.get(record.id)
                    backlog = self._fleet is None
                    tally.settled_here(record, backlog=backlog, split=split, where=where)
                elif self._fleet is not None and record.updated_at >= started:
                    tally.settled_elsewhere(record)  # by another process meanwhile
                elif record.received_at >= started:  # stored by this run (write-behind)
                    where = self._found_where.get(record.id)
                    r = record
                    tally.duplicate(r.key, r.source_event, r.lead_id, r.event_name, where)
                else:
                    tally.found_settled(record)
        if self._fleet is not None:
            from leadrelay.delivery.elsewhere import account_elsewhere

            account_elsewhere(self._fleet, self, tally)
            return
        where_of = self._where
        for (_, p), where in zip(waiting, where_of.take([i for i, _ in waiting]), strict=True):
            tally.left_queued(p.key, p.source_event, p.lead_id, p.event_name, where)
        for ids in _pieces(self.unsettled()):
            # still open, or its result came as the reader found it open
            rs = [r for r in self._store.outcomes(ids) if r.state in OPEN or r.id in foreign]
            for r, where in zip(rs, where_of.take([r.id for r in rs]), strict=True):
                if r.state in OPEN:
                    tally.left_queued(r.key, r.source_event, r.lead_id, r.event_name, where)
                else:
                    tally.settled_here(r, backlog=True, split=r.id in self._split, where=where)


def _split(d: Delivery) -> bool:
    """Delivered by more than one request, none of which failed: its batch was split."""
    return d.state is State.DELIVERED and d.attempts > 1 and not d.extra.get("retried")


def _pieces(spans: list[tuple[int, int]]) -> Iterable[list[int]]:
    """The ids of ``spans``, ``READ_AT_ONCE`` at a time."""
    for piece in span_pieces(spans, READ_AT_ONCE):
        yield [i for first, last in piece for i in range(first, last + 1)]


def span_pieces(spans: list[tuple[int, int]], size: int) -> Iterable[list[tuple[int, int]]]:
    """``spans`` (in order) in pieces of ``size`` ids at most, a span cut where a piece ends."""
    piece: list[tuple[int, int]] = []
    room = size
    for first, last in spans:
        while last - first + 1 > room:
            piece.append((first, first + room - 1))
            yield piece
            first += room
            piece, room = [], size
        piece.append((first, last))
        room -= last - first + 1
        if not room:
            yield piece
            piece, room = [], size
    if piece:
        yield piece


def runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """``ids`` as spans of consecutive ones, in order."""
    out: list[tuple[int, int]] = []
    for id_ in sorted(ids):
        if out and id_ <= out[-1][1] + 1:
            if id_ > out[-1][1]:
                out[-1] = (out[-1][0], id_)
        else:
            out.append((id_, id_))
    return out


def without(spans: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
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
