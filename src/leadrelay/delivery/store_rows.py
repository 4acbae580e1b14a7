"""The rows the event store takes and gives (``store`` holds the protocol): events to store
(``Incoming``) and payloads handed out (``Claimed``), both from ``store_items``; stored events as
the commands show them (``EventRecord``), counts, and what ``add_new`` did; and how ``add`` takes
a batch whose keys repeat (``passes``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from leadrelay.delivery.store_items import Claimed as Claimed
from leadrelay.delivery.store_items import Incoming as Incoming
from leadrelay.outcome import FieldNote, Filtered, Payload, Rejected, State


def passes(keys: Sequence[str]) -> list[list[int]]:
    """The places of ``keys`` in passes where no key comes twice: the first of each key in the
    first pass, the second in the second, and so on (one pass, usually). ``add`` takes them in
    turn, so a later outcome for a key is weighed against what the earlier one stored, as if it
    came in a later request: a fixed event right behind its refusal takes its place, whether
    the two share a request, a group commit or a chunk of a file, or not. The empty key never
    repeats (events without a key are never merged)."""
    counts: dict[str, int] = {}
    out: list[list[int]] = [[]]
    for n, key in enumerate(keys):
        k = counts.get(key, 0) if key else 0
        if key:
            counts[key] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(n)
    return out


def add_in_passes(keys: Sequence[str], add: Callable[[list[int]], Added]) -> Added:
    """What ``add`` makes of ``keys``' items in ``passes``: ``add(places)`` stores the items at
    ``places`` (no key twice) and says what it did of each; the answers go back in order."""
    first, *later = passes(keys)
    if not later:  # the usual case: no key comes twice
        return add(first)
    ids, stored = [0] * len(keys), [False] * len(keys)
    for places in (first, *later):
        part = add(places)
        for n, id_, new in zip(places, part.ids, part.stored, strict=True):
            ids[n], stored[n] = id_, new
    return Added(ids, stored)


class StoreError(Exception):
    """The store cannot be opened or used (wrong file, newer schema, closed)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event as ``status``, ``dead-letters`` and the dashboard show it.

    ``payload`` is the server event as it is (or was) sent to Meta, ``original`` the event as
    received (``None`` when the PII policy or a purge dropped it), ``response`` what delivery kept
    of Meta's answer beyond the columns. ``attempts`` counts every request that carried the event.
    ``next_attempt_at`` is set while QUEUED: the event is not sent before then.
    """

    id: int
    key: str
    state: State
    source_event: str
    event_name: str | None
    lead_id: int | None
    event_time: int | None
    received_at: float
    updated_at: float
    attempts: int
    reason: str | None
    message: str | None
    field: str | None
    code: int | None
    subcode: int | None
    fbtrace_id: str | None
    payload: dict[str, Any] | None
    original: dict[str, Any] | None
    response: dict[str, Any] | None
    value: str | None = None
    notes: tuple[FieldNote, ...] = ()
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """How many events are in which state, and why.

    ``by_state`` has every ``State`` value (0 included); ``by_reason`` maps (state, reason) to a
    count for every event that has a reason (filtered/rejected/expired/dead, and queued ones
    waiting for a retry). Both honour ``since``. ``queued``, ``in_flight`` and ``oldest_queued_at``
    always describe the whole current backlog, whatever ``since`` says: ``oldest_queued_at`` is
    when the oldest event not settled yet (queued or in flight) was received.
    """

    by_state: dict[str, int]
    by_reason: dict[tuple[str, str], int] = field(default_factory=dict)
    queued: int = 0
    in_flight: int = 0
    oldest_queued_at: float | None = None


@dataclass(frozen=True, slots=True)
class Accounted:
    """What became of the events among spans of ids, at one instant (``FleetControl``):
    ``open`` queued or in flight, ``delivered`` delivered, and ``listed`` the ids of those
    refused by Meta or by our rules, expired or dead (and of the delivered and open ones, when
    asked), each with its state."""

    open: int
    delivered: int
    listed: list[tuple[int, State]]


@dataclass(frozen=True, slots=True)
class Added:
    """What ``Store.add_new`` did: one id per item, and whether it stored the item (a new event,
    or a payload in place of a stored event Meta never took) or found it stored (left as it
    was: a client's resend)."""

    ids: list[int]
    stored: list[bool]
    # Of the outcomes found stored, those whose event id the store holds for another stage, by
    # place: their Facebook event name ("" for none) and the one stored under it
    # (``with_other_stages``; ``WriteBehindStore`` says it of payloads held in memory).
    # Third: whether both come from the same event name of the user's (``reused_message``).
    other_stages: dict[int, tuple[str, str, bool]] = field(default_factory=dict)
    # Of the other outcomes found stored, the places of the refusals by our rules and filtered
    # events found stored as such (``said_alike``): a client's retry of one is told what the
    # first answer said, not only that it was stored (``with_other_stages``).
    alike: frozenset[int] = frozenset()


class Stage(NamedTuple):
    """What a send or the intake needs of an event found stored under an event id
    (``Outcomes.stages_of``): to tell another stage under it from the same event again."""

    state: State
    event_name: str | None  # the Facebook event name
    updated_at: float
    source_event: str  # the user's event name
    attempts: int

    @property
    def never_sent(self) -> bool:
        """Filtered, refused by our rules, or expired before it was sent: Meta never saw it."""
        return self.attempts == 0 and self.state in _NEVER_SENT


_NEVER_SENT: Final = (State.FILTERED, State.REJECTED, State.EXPIRED)


def another_stage(
    name: str | None, source: str, stored_name: str | None, stored_source: str
) -> bool:
    """Whether an outcome (Facebook event name ``name``, of the user's event ``source``) is
    another event of the CRM than the one stored under its event id (a CRM that gives every
    stage of a deal the deal's id): by the Facebook names when both have one (Meta tells events
    apart by event_id and event_name; the store by event_id alone), else (a filtered event, an
    unnamed refusal) by the user's event names. It takes no place of the stored one
    (``Store.add``), but for a payload in place of one Meta never saw (``is_another``)."""
    if name is not None and stored_name is not None:
        return name != stored_name
    return source != stored_source


def with_other_stages(
    stages_of: Callable[[Sequence[int]], dict[int, Stage]],
    items: Sequence[Incoming],
    added: Added,
) -> Added:
    """``added`` with ``other_stages``: of the outcomes it found stored, those whose event id
    the store holds for another stage (a CRM that sends one id for each stage of a deal), asked
    of ``stages_of`` (``Outcomes.stages_of``). A resend of the same stage is none of them: of
    those, the ones stored as they are now (``said_alike``) are its ``alike``."""
    found = {
        n: i
        for n, (item, i, new) in enumerate(zip(items, added.ids, added.stored, strict=True))
        if not new
    }
    if not found:
        return added
    stages = stages_of(sorted(set(found.values())))
    others = other_stages(items, found.items(), stages)
    alike = frozenset(
        n
        for n, i in found.items()
        if n not in others and (s := stages.get(i)) is not None and said_alike(items[n].outcome, s)
    )
    return Added(added.ids, added.stored, others, alike) if others or alike else added


def said_alike(outcome: Payload | Filtered | Rejected, stage: Stage) -> bool:
    """Whether ``outcome``, of the event stored as ``stage`` says, is what that one was: a
    refusal by our rules found refused by them (never sent), or a filtered event found
    filtered. The intake then answers it as it did the first time."""
    if type(outcome) is Rejected:
        return stage.state is State.REJECTED and stage.never_sent
    return type(outcome) is Filtered and stage.state is State.FILTERED


def other_stages(
    items: Sequence[Incoming], found: Iterable[tuple[int, int]], stages: dict[int, Stage]
) -> dict[int, tuple[str, str, bool]]:
    """``Added.other_stages`` of the items at ``found`` (place, id) whose event id ``stages``
    holds for another stage (``other_stage``); none for those it does not hold."""
    others: dict[int, tuple[str, str, bool]] = {}
    for n, i in found:
        stage = stages.get(i)
        if stage is not None and (other := other_stage(items[n].outcome, stage)) is not None:
            others[n] = other
    return others


def other_stage(
    outcome: Payload | Filtered | Rejected, stage: Stage
) -> tuple[str, str, bool] | None:
    """The ``Added.other_stages`` entry of ``outcome`` against the event stored (or held)
    under its event id, as ``stage`` says it; None for the same event (``is_another``)."""
    if not is_another(outcome, stage):
        return None
    name = None if isinstance(outcome, Filtered) else outcome.event_name
    return (name or "", stage.event_name or "", outcome.source_event == stage.source_event != "")


def is_another(outcome: Payload | Filtered | Rejected, stage: Stage) -> bool:
    """Whether ``outcome`` was not stored for being another event than the one stored under
    its event id (``another_stage``). A payload takes the place of one Meta never saw
    (filtered, refused by our rules), of any stage: Meta has nothing under the id to collide
    with, and the stage is sent (``Store.add``)."""
    if isinstance(outcome, Payload) and stage.never_sent:
        return False
    return another_stage(
        None if isinstance(outcome, Filtered) else outcome.event_name,
        outcome.source_event,
        stage.event_name,
        stage.source_event,
    )
