"""The durable event store: every accepted event and its one outcome, whatever the backend.

Intake (``serve``, ``send``) calls ``add`` and answers only once it returned: from then on the
event is on disk (``send`` reading files it can read again stores each event once, when its
outcome is known, through ``write_behind``). The dispatcher ``claim``s due payloads in batches,
delivers them and records the result with ``complete`` (final) or ``retry_later`` (back to the
queue). ``status``, ``dead-letters`` and the dashboard read ``counts``, ``timeline``, ``events``
and ``get``. This module holds the protocol, re-exports the row types (``store_rows``) and the
encoding rules every backend shares (payload bytes, the PII policy for originals:
``store_encoding``), and says nothing about SQL: a Redis Streams store implements the same
protocol.

State changes: ``add`` stores a ``Payload`` as QUEUED and a ``Filtered``/``Rejected`` in that final
state. QUEUED -> IN_FLIGHT by ``claim``; IN_FLIGHT -> DELIVERED/REJECTED/EXPIRED/DEAD by
``complete``, or back to QUEUED by ``retry_later`` and, after a crash, ``release_in_flight``.
DEAD/REJECTED/EXPIRED (and FILTERED, given a re-mapped payload) -> QUEUED by ``requeue``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

from leadrelay.delivery.store_encoding import REDACTED as REDACTED
from leadrelay.delivery.store_encoding import OriginalPolicy as OriginalPolicy
from leadrelay.delivery.store_encoding import decode_notes as decode_notes
from leadrelay.delivery.store_encoding import encode_payload as encode_payload
from leadrelay.delivery.store_encoding import keep_original as keep_original
from leadrelay.delivery.store_rows import Accounted as Accounted
from leadrelay.delivery.store_rows import Added as Added
from leadrelay.delivery.store_rows import Claimed as Claimed
from leadrelay.delivery.store_rows import Counts as Counts
from leadrelay.delivery.store_rows import EventRecord as EventRecord
from leadrelay.delivery.store_rows import Incoming as Incoming
from leadrelay.delivery.store_rows import Stage as Stage
from leadrelay.delivery.store_rows import StoreError as StoreError
from leadrelay.delivery.store_rows import add_in_passes as add_in_passes
from leadrelay.delivery.store_rows import passes as passes
from leadrelay.outcome import (
    DeliveredWhole,
    Delivery,
    Payload,
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
        event never sent when it says something else. Neither does for another event of the CRM
        (another stage: ``store_rows.another_stage``) but a payload in place of one never sent
        (Meta saw nothing under the key). A payload that cannot be encoded is stored
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

    def outcomes(self, ids: Sequence[int]) -> list[EventRecord]:
        """The events of ``ids`` still stored, in that order, with what a report's row says of
        them (state, key, source event, names, lead id, attempts, reason, message, Meta's codes
        and trace, when it was received) and nothing else."""
        ...

    def stages_of(self, ids: Sequence[int]) -> dict[int, Stage]:
        """The state, Facebook event name, last change (``updated_at``), user's event name and
        attempts of each of ``ids`` still stored: all a send needs of the events it finds stored
        as it reads (``outcomes`` reads whole records: a send of a file sent before took 23%
        longer)."""
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
