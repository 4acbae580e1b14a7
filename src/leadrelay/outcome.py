"""What became of one event: the types every stage of the pipeline speaks.

The core (``Mapper.map``) turns an incoming event into exactly one of ``Payload`` (ready to send),
``Filtered`` (not for Meta, not an error) or ``Rejected`` (cannot be sent as it is, with the field
and the reason). Delivery then turns each ``Payload`` into a ``Delivery`` result. Every event
ends in exactly one recorded outcome; these classes are that record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Final (or current) state of an event, as shown to users."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    FILTERED = "filtered"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DEAD = "dead"


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
