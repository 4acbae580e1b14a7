"""What became of one event: the types every stage of the pipeline speaks.

The core (``Mapper.map``) turns an incoming event into exactly one of ``Payload`` (ready to send),
``Filtered`` (not for Meta, not an error) or ``Rejected`` (cannot be sent as it is, with the field
and the reason). Delivery then turns each ``Payload`` into a ``Delivery`` result. Every event
ends in exactly one recorded outcome; these classes are that record.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, overload


class State(StrEnum):
    """Final (or current) state of an event, as shown to users."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    FILTERED = "filtered"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DEAD = "dead"


INTERRUPTED: Final = "interrupted"
"""The reason of a ``Delivery`` QUEUED because its batch was cut short as delivery stopped (the
drain timeout, a second Ctrl-C): put back in the queue, for the next run."""


@dataclass(slots=True, frozen=True)
class FieldNote:
    """A field that was left out of a payload (or could not be read), and why.

    ``field`` is the Facebook property path relative to ``data.0`` (``user_data.ph``) and ``reason``
    a short machine-readable code (``invalid_phone``); ``message`` says it for a person.
    """

    field: str
    reason: str
    message: str


@dataclass(slots=True)
class Payload:
    """A mapped, validated event, ready to go into a Conversions API request's ``data`` array.

    ``key`` identifies the incoming event (its ``context.event_id``, else a derived id) and is what
    reports, stores and retries use. ``data`` is the server event exactly as it will be encoded.
    """

    key: str
    source_event: str
    event_name: str
    lead_id: int
    event_time: int
    data: dict[str, Any]
    notes: tuple[FieldNote, ...] = ()


@dataclass(slots=True, frozen=True)
class Filtered:
    """Not for Meta by the user's own settings (``unmapped``, ``consent``). Not an error."""

    key: str
    source_event: str
    reason: str
    message: str


@dataclass(slots=True, frozen=True)
class Rejected:
    """Cannot be sent as it is. Names the field, the reason code and, when useful, the value.

    Before sending, the core rejects on our own rules (``invalid_lead_id``...). After sending,
    Meta's answer fills ``code``, ``subcode`` and ``fbtrace_id``.
    """

    key: str
    source_event: str
    reason: str
    field: str
    message: str
    value: str | None = None
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    lead_id: int | None = None
    event_name: str | None = None


Outcome = Payload | Filtered | Rejected


@dataclass(slots=True)
class Delivery:
    """What delivery made of one payload.

    ``state`` is DELIVERED, REJECTED (Meta refused this very event), EXPIRED (too old to be accepted
    by the time it could be sent) or QUEUED (not sent: delivery stopped, e.g. on an auth failure).
    ``attempts`` counts the requests that carried the event; ``extra["retried"]`` marks a
    delivery that needed a retry after a transient error.
    """

    payload: Payload
    state: State
    attempts: int = 1
    reason: str | None = None
    message: str | None = None
    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class DeliveredWhole(Sequence[Delivery]):
    """The results of a batch Meta took whole at its first request: every payload DELIVERED after
    one attempt, with that request's message and fbtrace_id, in the batch's order.

    ``Dispatcher.deliver`` returns it for such a batch, most batches: what handles a batch as a
    whole (the store, the tally) reads ``payloads`` and the two fields, without a ``Delivery``
    per event; anything else reads the ``Delivery`` of each payload, made as it is read.
    """

    __slots__ = ("fbtrace_id", "message", "payloads")

    def __init__(
        self, payloads: Sequence[Payload], message: str | None, fbtrace_id: str | None
    ) -> None:
        self.payloads = payloads
        self.message = message
        self.fbtrace_id = fbtrace_id

    def __len__(self) -> int:
        return len(self.payloads)

    @overload
    def __getitem__(self, index: int) -> Delivery: ...

    @overload
    def __getitem__(self, index: slice) -> list[Delivery]: ...

    def __getitem__(self, index: int | slice) -> Delivery | list[Delivery]:
        if isinstance(index, slice):
            return [self._of(p) for p in self.payloads[index]]
        return self._of(self.payloads[index])

    def __iter__(self) -> Iterator[Delivery]:
        return map(self._of, self.payloads)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same deliveries (a list of them, say)."""
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # compares as the list it stands for

    def __repr__(self) -> str:
        return f"DeliveredWhole({len(self)} payloads, fbtrace_id={self.fbtrace_id!r})"

    def _of(self, payload: Payload) -> Delivery:
        return Delivery(
            payload, State.DELIVERED, 1, None, self.message, None, None, self.fbtrace_id
        )
