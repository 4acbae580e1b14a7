"""The outcomes of events the ``Mapper`` gives no Facebook event name, and the clipped value a
``Rejected`` outcome quotes.

Split out of ``engine`` (house rule: modules under ~300 lines). Nothing here runs for an event
that is sent: the ``Mapper`` calls these only on its way to a ``Filtered`` or ``Rejected``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leadrelay.mapping.expressions import MISSING
from leadrelay.outcome import Filtered, Rejected


def unmapped(key: str, ours: Any) -> Filtered | Rejected:
    """The outcome of an event whose event_name is not in [mapping] (and there is no ``*``):
    filtered, or rejected when the event has no event_name at all."""
    source = ours if isinstance(ours, str) else ""
    if not source:
        return Rejected(
            key, source, "missing_event_name", "event_name", "the event has no event_name"
        )
    return Filtered(key, source, "unmapped", f"{ours!r} is not in [mapping]")


def unnamed(key: str, ours: Any, sources: Mapping[str, str]) -> Rejected:
    """The rejection of an event whose [mapping] entry (from ``sources``, the [mapping] table)
    gives no value for it."""
    source = ours if isinstance(ours, str) else ""
    return Rejected(
        key,
        source,
        "empty_event_name",
        "event_name",
        f"[mapping] gives {sources.get(source, sources.get('*'))!r}"
        " for this event, which has no value",
    )


def clip(value: Any) -> str | None:
    """``value`` as a rejection quotes it: text as is, anything else as its repr, cut to 60
    characters; None for MISSING."""
    if value is MISSING:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
