"""The outcomes of events the ``Mapper`` refuses for their Facebook event name or their CRM's
name (lead_event_source), the clipped value a ``Rejected`` outcome quotes, and the keys of
events without a usable event id.

Split out of ``engine`` (house rule: modules under ~300 lines). Nothing here runs for the usual
event that is sent (an event id, a time, a name from [mapping] as text).
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import orjson

from leadrelay.mapping.expressions import MISSING
from leadrelay.meta.field_rules import number_text
from leadrelay.outcome import Filtered, Rejected


def unmapped(key: str, ours: Any) -> Filtered | Rejected:
    """The outcome of an event whose event_name is not in [mapping] (and there is no ``*``):
    filtered, or rejected when the event has no event_name at all."""
    source = ours if isinstance(ours, str) else ""
    if not source:
        why = "the event has no event_name"
        if ours is not None and ours != "":
            why = f"the event's event_name {clip(ours)} is not text"
        return Rejected(key, source, "missing_event_name", "event_name", why)
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
        f"{_gives(source, sources)} for this event, which has no value",
    )


def name_of_value(key: str, ours: Any, value: Any, sources: Mapping[str, str]) -> str | Rejected:
    """The Facebook event name when [mapping] reads a value that is not text: a number as its
    digits; anything else (true, a list, an object) rejects the event, quoting the value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    source = ours if isinstance(ours, str) else ""
    return Rejected(
        key,
        source,
        "invalid_event_name",
        "event_name",
        f"{_gives(source, sources)}, which reads a {type(value).__name__} in this event, not text",
        clip(value),
    )


def name_failed(key: str, ours: Any, error: Exception, sources: Mapping[str, str]) -> Rejected:
    """The rejection of an event whose [mapping] formula cannot use its values."""
    source = ours if isinstance(ours, str) else ""
    message = f"{_gives(source, sources)}, which fails: {error}"
    return Rejected(key, source, "invalid_event_name", "event_name", message)


def _gives(source: str, sources: Mapping[str, str]) -> str:
    return f"[mapping] gives {sources.get(source, sources.get('*'))!r}"


def no_source(key: str, source: str, read: str, lead_id: int, name: str) -> Rejected:
    """The rejection of an event that has no lead_event_source (``read`` is where it is read
    from) while the setting cannot stand in: it is not plain text."""
    return Rejected(
        key,
        source,
        "missing_lead_event_source",
        "custom_data.lead_event_source",
        f"lead_event_source {read!r} has no value in this event; Meta takes an event as a "
        "Conversion Lead only with the name of its CRM",
        lead_id=lead_id,
        event_name=name,
    )


def id_text(raw_id: Any) -> str:
    """The key of an event whose context.event_id is not text: a number's digits (the event_id
    sent is the same); else "" (none, true, a list), and the key is the event_id the ``Mapper``
    makes, as for an event without one, so two events with odd ids are never taken for one."""
    if isinstance(raw_id, int | float) and not isinstance(raw_id, bool):
        return number_text(raw_id) or ""  # a float that lost digits: none (finish_text says so)
    return ""


def content_key(lead_id: int, name: str, event: Mapping[str, Any]) -> str:
    """The key, and the event_id sent, of an event with neither an event id nor a time: its time
    is when it was read, which a resend of it would not share, so it is known by its content (a
    resend of the same event is the same event; two events alike in every field are one)."""
    try:
        content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not plain JSON (a caller's own objects): its text
        content = repr(sorted(event.items(), key=repr)).encode()
    return f"{lead_id}:{name}:{sha256(content).hexdigest()[:20]}"


def clip(value: Any) -> str | None:
    """``value`` as a rejection quotes it: text as is, anything else as its repr, cut to 60
    characters; None for MISSING."""
    if value is MISSING:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
