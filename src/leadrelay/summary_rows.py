"""The rows of ``send --report`` (``Tally`` writes them): one per event read, each with the
same fields in the same order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from leadrelay.outcome import Delivery, State

if TYPE_CHECKING:
    from leadrelay.delivery.store import EventRecord

__all__ = ["BLANK", "duplicate_row", "meta_label", "payload_row", "settled_row"]

FIELDS: Final = (
    "where", "event_id", "event", "lead_id", "event_name", "outcome", "reason", "field",
    "message", "attempts", "code", "subcode", "fbtrace_id",
)  # fmt: skip
BLANK: Final = dict.fromkeys(FIELDS)
"""Every report row has these fields, in this order (null where one does not apply): a table
loaded from the file has the same columns whatever the first rows were."""


def meta_label(result: Delivery | EventRecord) -> str:
    """How the summary names a refusal by Meta: its code/subcode, else our reason."""
    if result.code is None:
        return result.reason or "rejected"
    return f"{result.code}/{result.subcode}" if result.subcode else str(result.code)


def settled_row(
    where: str | None,
    event_id: str,
    event: str,
    lead_id: int | None,
    event_name: str | None,
    said: Delivery | EventRecord,
) -> dict[str, Any]:
    """The report's row of a payload that delivery settled (``said``: what became of it)."""
    outcome = _outcome_name(said) if isinstance(said, Delivery) else said.state.value
    return {
        "where": where,
        "event_id": event_id,
        "event": event,
        "lead_id": lead_id,
        "event_name": event_name,
        "outcome": outcome,
        "reason": said.reason,
        "attempts": said.attempts,
        "code": said.code,
        "subcode": said.subcode,
        "fbtrace_id": said.fbtrace_id,
        "message": said.message,
    }


def payload_row(
    where: str | None,
    event_id: str,
    event: str,
    lead_id: int | None,
    event_name: str | None,
    **said: Any,
) -> dict[str, Any]:
    """The report's row of a payload, with what is ``said`` of it (outcome, reason...)."""
    row = {"where": where, "event_id": event_id, "event": event, "lead_id": lead_id}
    return row | {"event_name": event_name} | said


def reused_message(
    name: str | None, stored: str | None, said: str, done: str, *, same_event: bool = False
) -> str:
    """What a payload not taken because its event id is stored for another stage is told:
    ``said`` how the stored one was come by, ``done`` what became of this one. ``same_event``:
    both come from the same event name of the user's (a [mapping] renamed since, or a formula
    that names several stages)."""
    first = f"a {stored} event" if stored else "another event"
    renamed = (
        f" (or, if [mapping] names this event {name} since {stored} was stored, Meta has that "
        "one: `leadrelay dead-letters replay` sends one Meta refused under its new name)"
        if same_event
        else ""
    )
    return (
        f"{name or 'It'} has the event_id of {first} {said}; leadrelay keeps one event per "
        f"context.event_id, so it was {done}: give each stage change its own context.event_id "
        f"in the CRM's events{renamed}"
    )


def duplicate_row(
    where: str | None, event_id: str, event: str, lead_id: int | None, event_name: str | None
) -> dict[str, Any]:
    """The report's row of a payload not sent for the event id of one before it in the run."""
    return payload_row(
        where, event_id, event, lead_id, event_name,
        outcome="duplicate",
        reason="same_event_id",
        message="the event_id of an event read (or stored) before it in this run: not sent",
    )  # fmt: skip


def _outcome_name(result: Delivery) -> str:
    """The report's outcome of a payload delivery settled, as the summary counts it."""
    if result.state is State.DELIVERED:
        if result.extra.get("retried"):
            return "delivered_after_retry"
        return "delivered_after_split" if result.attempts > 1 else "delivered"
    if result.state is State.QUEUED:
        return "not_sent"
    return result.state.value
