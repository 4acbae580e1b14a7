"""The durable event store: every accepted event and its one outcome, whatever the backend.

Intake (``serve``, ``send``) calls ``add`` and answers only once it returned: from then on the
event is on disk (``send`` reading files it can read again stores each event once, when its
outcome is known, through ``write_behind``). The dispatcher ``claim``s due payloads in batches,
delivers them and records the result with ``complete`` (final) or ``retry_later`` (back to the
queue). ``status``, ``dead-letters`` and the dashboard read ``counts``, ``timeline``, ``events``
and ``get``. This module holds the protocol and the row types, re-exports the encoding rules
every backend shares (payload bytes, the PII policy for originals: ``store_encoding``), and says
nothing about SQL: a Redis Streams store implements the same protocol.

State changes: ``add`` stores a ``Payload`` as QUEUED and a ``Filtered``/``Rejected`` in that final
state. QUEUED -> IN_FLIGHT by ``claim``; IN_FLIGHT -> DELIVERED/REJECTED/EXPIRED/DEAD by
``complete``, or back to QUEUED by ``retry_later`` and, after a crash, ``release_in_flight``.
DEAD/REJECTED/EXPIRED (and FILTERED, given a re-mapped payload) -> QUEUED by ``requeue``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

from leadrelay.delivery.store_encoding import REDACTED as REDACTED
from leadrelay.delivery.store_encoding import OriginalPolicy as OriginalPolicy
from leadrelay.delivery.store_encoding import decode_notes as decode_notes
from leadrelay.delivery.store_encoding import encode_payload as encode_payload
from leadrelay.delivery.store_encoding import keep_original as keep_original
from leadrelay.outcome import (
    DeliveredWhole,
    Delivery,
    FieldNote,
    Filtered,
    Payload,
    Rejected,
    State,
)

FINAL_DELIVERY_STATES: Final = frozenset(
    {State.DELIVERED, State.REJECTED, State.EXPIRED, State.DEAD}
)
"""States ``complete`` records as final (it also accepts QUEUED: not sent, back to the queue)."""

REPLAYABLE_STATES: Final = frozenset({State.DEAD, State.REJECTED, State.EXPIRED, State.FILTERED})
"""States ``requeue`` takes back to the queue. Never DELIVERED: that would send an event twice."""

PURGEABLE_STATES: Final = frozenset({State.DELIVERED, State.FILTERED})
"""States ``purge`` takes: final, and no dead letters (those did not reach Meta: users replay)."""


def purgeable(state: State) -> str:
    """``state``'s value, for ``purge``; ``ValueError`` for a state it must not purge."""
    if state not in PURGEABLE_STATES:
        raise ValueError(f"purge takes delivered or filtered events, not {State(state).value}")
    return state.value


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


# Incoming and Claimed are made once per event: their __init__ sets the slots through their
# descriptors (defined below each class), three times faster than a frozen dataclass's own
# __init__ (object.__setattr__ per field). They stay frozen: setting a field still raises.


@dataclass(frozen=True, slots=True, init=False)
class Incoming:
    """One event to store: what the Mapper made of it and the event as received.

    ``original`` is the received event as JSON bytes; the store keeps it per its PII policy.
    ``received_at`` is when intake received it (epoch seconds); a payload is due from then.
    """

    outcome: Payload | Filtered | Rejected
    original: bytes | None
    received_at: float

    def __init__(
        self, outcome: Payload | Filtered | Rejected, original: bytes | None, received_at: float
    ) -> None:
        _set_outcome(self, outcome)
        _set_original(self, original)
        _set_received_at(self, received_at)


_set_outcome: Final[Any] = Incoming.__dict__["outcome"].__set__
_set_original: Final[Any] = Incoming.__dict__["original"].__set__
_set_received_at: Final[Any] = Incoming.__dict__["received_at"].__set__


@dataclass(frozen=True, slots=True, init=False)
class Claimed:
    """A payload handed to the dispatcher; ``attempts`` counts requests made before this claim.

    Backends hand the payload over as an ``EncodedPayload``: the bytes stored, sent as they are.
    """

    id: int
    payload: Payload
    attempts: int

    def __init__(self, id: int, payload: Payload, attempts: int) -> None:
        _set_id(self, id)
        _set_payload(self, payload)
        _set_attempts(self, attempts)


_set_id: Final[Any] = Claimed.__dict__["id"].__set__
_set_payload: Final[Any] = Claimed.__dict__["payload"].__set__
_set_attempts: Final[Any] = Claimed.__dict__["attempts"].__set__


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


class Store(Protocol):
    """Durable event store shared by intake, the dispatcher and the read-only commands."""

    def add(self, items: Sequence[Incoming]) -> list[int]:
        """Store ``items`` in one transaction; durable when this returns. Returns one id per item.

        An item whose (non-empty) key is already stored, or appears earlier in ``items``, is not
        stored again: its id is the existing one (a client resending after a timeout). The first
        outcome stored for a key wins, but for a payload in place of an event Meta never took:
        one filtered or refused by our rules (the config or the event was fixed since, nothing
        was sent), or one Meta refused when the payload differs in more than its event_time (the
        event was fixed at its source: its lead id, say). That payload is queued under the stored
        event's id. A refusal (filtered, or refused by our rules) likewise takes the place of an
        event never sent when it says something else. A payload that cannot be encoded is stored
        REJECTED with reason ``unencodable`` rather than failing the whole batch.
        """
        return self.add_new(items).ids

    def add_new(self, items: Sequence[Incoming]) -> Added:
        """``add``, saying which items it stored and which it found stored (``Added``)."""
        ...

    def claim(self, limit: int, now: float) -> list[Claimed]:
        """Mark up to ``limit`` due payloads IN_FLIGHT and return them, longest due first.

        Due means QUEUED with ``next_attempt_at <= now``. Order is by due time (received_at for a
        new event, the retry time for a retried one), then id, so a backlog cannot starve retries.
        """
        ...

    def complete(self, results: Sequence[tuple[int, Delivery]], now: float) -> None:
        """Record delivery results in one transaction.

        DELIVERED/REJECTED/EXPIRED/DEAD are final; QUEUED (not sent, e.g. delivery paused) goes
        back to the queue, due at ``now``. ``Delivery.attempts`` is added to the stored attempts.
        Rows that are no longer QUEUED or IN_FLIGHT are left alone.
        """
        ...

    def complete_delivered(self, ids: Sequence[int], delivered: DeliveredWhole, now: float) -> None:
        """``complete`` of a batch Meta took whole (``ids`` aligned with ``delivered``); a store
        may record it without reading a ``Delivery`` per event."""
        self.complete(list(zip(ids, delivered, strict=True)), now)

    def retry_later(
        self,
        ids: Sequence[int],
        next_attempt_at: float,
        reason: str,
        message: str | None,
        *,
        attempts: int = 1,
        now: float | None = None,
    ) -> None:
        """Put IN_FLIGHT (or QUEUED) rows back in the queue, not due before ``next_attempt_at``.

        ``attempts`` is how many requests carried them since the claim (0: not sent, e.g. paused);
        ``reason``/``message`` say why they wait. ``now`` stamps ``updated_at`` (default: the
        wall clock). Rows that are no longer QUEUED or IN_FLIGHT are left alone.
        """
        ...

    def release_in_flight(self) -> int:
        """Put every IN_FLIGHT row back in the queue (start-up after a crash); returns how many.

        Only one delivering process may use a store: this takes back whatever another one holds.
        """
        ...

    def counts(self, since: float | None = None) -> Counts:
        """Counts by state and reason, of events last updated at or after ``since``."""
        ...

    def timeline(self, since: float, bucket_s: int) -> list[tuple[float, dict[str, int]]]:
        """Counts by current state of events updated since ``since``, per ``bucket_s`` bucket.

        Buckets start at multiples of ``bucket_s`` (epoch-aligned, so they stay put between
        polls), ascending; empty buckets are left out.
        """
        ...

    def events(
        self,
        *,
        states: Sequence[State] | None = None,
        reason: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after_id: int | None = None,
        bodies: bool = True,
    ) -> list[EventRecord]:
        """Stored events by ascending id, filtered; page on with ``after_id`` (the last id seen).
        Without ``bodies`` their payload, original, notes and response are not read (None, and
        no notes): what a count over many events needs, at a fraction of the cost."""
        ...

    def last_id(self) -> int:
        """The highest id given to a stored event so far (0 before the first): ids only grow,
        so ``events(after_id=last_id() - n)`` reads at most the ``n`` events stored last."""
        ...

    def get(self, id_or_key: int | str) -> EventRecord | None:
        """One event by store id (int) or by key (str), ``None`` when not stored."""
        ...

    def requeue(
        self,
        ids: Sequence[int],
        payloads: Sequence[Payload] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """Replay: put rows in a ``REPLAYABLE_STATES`` state back in the queue, due at ``now``.

        Attempts and the previous reason are reset. ``payloads`` (aligned with ``ids``) replace the
        stored payload, e.g. after re-mapping with a fixed config; the row keeps its key. Rows in
        another state, or without a payload to send, are left alone. Returns how many were queued.
        """
        ...

    def purge(
        self, *, delivered_before: float, drop_originals: bool, state: State = State.DELIVERED
    ) -> int:
        """Retention for DELIVERED (or FILTERED) events last updated before ``delivered_before``.

        Deletes them, or with ``drop_originals`` keeps the record but drops its original and
        payload (the outcome stays visible). Returns how many rows were affected. Other states
        are refused (``ValueError``): those events did not reach Meta, they are dead letters.
        """
        ...

    def close(self) -> None:
        """Release the backend; later calls raise ``StoreError``."""
        ...

    # Backends subclass Store, so they share this: ``with SQLiteStore(path) as store: ...``.
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@runtime_checkable
class Outcomes(Protocol):
    """What a send asks the store of the events it found stored (an earlier run, or an event id
    that came before) and of those it left queued: every backend has it."""

    def open_of(self, ids: Sequence[int]) -> list[bool]:
        """Whether each of ``ids`` is queued or in flight, whichever process holds it."""
        ...

    def outcomes(self, ids: Sequence[int]) -> list[EventRecord]:
        """The events of ``ids`` still stored, in that order, with what a report's row says of
        them (state, key, source event, names, lead id, attempts, reason, message, Meta's codes
        and trace, when it was received) and nothing else."""
        ...


@runtime_checkable
class FleetControl(Outcomes, Protocol):
    """What a store shared by many delivering processes adds (``RedisStore``): a pause every
    process honours, and renewing the events a process still works on so others do not take
    them over. The delivery worker uses it when the store has it."""

    def pause_until(self, until: float, reason: str, *, now: float | None = None) -> float:
        """Pause delivery fleet-wide until ``until`` (epoch s); only ever extends a pause.
        Returns when the pause now ends."""
        ...

    def paused_until(self, *, now: float | None = None) -> tuple[float, str] | None:
        """The current fleet-wide pause: (until, reason), or None."""
        ...

    def renew(self, ids: Sequence[int]) -> int:
        """Keep the events ``ids`` held by this process from being taken over; returns how
        many it still holds."""
        ...

    def open_among(self, spans: Sequence[tuple[int, int]]) -> int:
        """How many events whose ids are in ``spans`` (first and last id, both included) are
        queued or in flight, whichever process holds them."""
        ...

    def account_among(self, spans: Sequence[tuple[int, int]], *, list_all: bool) -> Accounted:
        """What became of the events among ``spans`` (in order, none overlapping), each event
        read at one instant: it is counted once, open or settled. The delivered and the open
        ones are listed only with ``list_all``."""
        ...


@runtime_checkable
class DeferredSync(Protocol):
    """What a store that can commit without waiting for the disk adds (``SQLiteStore``):
    ``add(items, durable=False)`` returns before the events are durable, and ``sync`` makes
    durable everything such adds stored before it was called. Group commit uses it when the
    store has it, to map the next requests while the disk syncs. ``claim`` syncs first when
    such adds came before it, so an event is durable before any request carries it."""

    def add(self, items: Sequence[Incoming], *, durable: bool = True) -> list[int]:
        """``Store.add``; with ``durable=False`` durable only once a later ``sync`` returned."""
        ...

    def add_new(self, items: Sequence[Incoming], *, durable: bool = True) -> Added:
        """``Store.add_new``; with ``durable=False`` as ``add``."""
        ...

    def sync(self) -> None:
        """Make durable what the ``add(durable=False)`` calls that returned before stored."""
        ...
