"""The one input every diagnostic reads: a ``StageRecord`` per event, from files or the store.

A record says which lead reached which Facebook stage when (when known) and what became of the
event. ``state`` is a ``State`` value, or ``"mapped"`` for an event read from a file that would be
sent (files are analysed before going live, so nothing was delivered yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAPPED: Final = "mapped"

FUNNEL_STATES: Final = frozenset({"delivered", "queued", "in_flight", MAPPED})
"""States of events that reached, or will reach, Meta: the funnel counts these."""

ACCEPTED_STATES: Final = frozenset({"delivered", MAPPED})
"""States of events Meta accepted (delivered), or would accept (mapped from a file)."""

LEAD_ID_REASONS: Final = frozenset({"missing_lead_id", "invalid_lead_id", "meta_100_2804036"})
"""Reasons that mean the lead id itself is missing or wrong (ours, and Meta's 100/2804036)."""

DAY: Final = 86400


@dataclass(slots=True)
class StageRecord:
    """One event as the diagnostics see it.

    ``stage`` is the Facebook event name (``None`` when the event could not be mapped that far),
    ``event_time`` the event's time in seconds (``None`` when unknown), ``updated_at`` when its
    outcome was recorded (store only). ``historical`` marks an event read from a file that is older
    than Meta's 7-day window: it can no longer be sent, but it still describes the funnel.
    """

    lead_id: int | None
    stage: str | None
    event_time: int | None
    state: str
    reason: str | None = None
    code: int | None = None
    subcode: int | None = None
    updated_at: float | None = None
    source_event: str = ""
    message: str | None = None
    historical: bool = False
