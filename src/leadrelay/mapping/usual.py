"""``Mapper.map_parts`` for the usual event: one pass, nothing checked twice, no detour.

Most configs are shaped alike (the lead_id read from a top-level key, event_time and the prebuilt
event_id from the context, no consent category, custom_data closed by event_source), and most
events are too: a name in [mapping], an event_id, a lead_id as 15-17 digits, a timestamp that
converts. For those ``usual_parts`` builds the payload's fields straight away; any event that
departs from that on the way (a missing or odd value, a time outside Meta's window, an error)
is handed whole to the general ``map_parts`` (``otherwise``), which gives its outcome and its
message. Both give the same result for every event (the tests compare them): the general way is
only longer, checking for each event what the config already settled (it ran 270 bytecodes per
bench event, this way 179; 1.7% of a dry run's instructions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from leadrelay.mapping.plans import LEAD_DIGITS, LEAD_END, LEAD_MIN, MS_DIGITS, MS_END, MS_MIN
from leadrelay.mapping.siblings import FIELD_ERRORS
from leadrelay.meta.rules import MAX_FUTURE_S, SENDABLE_AGE_S

if TYPE_CHECKING:
    from leadrelay.mapping.engine import Parts
    from leadrelay.mapping.filling import EventRun
    from leadrelay.outcome import FieldNote, Outcome

PartsOf = Callable[[Mapping[str, Any]], "Outcome | Parts"]

_TIME_KEY: Final = "event_timestamp"


def usual_parts(
    *,
    names: Mapping[str, str],
    lead_key: str,
    finish_time: Callable[[Any, str | None], int],
    clock: Callable[[], float],
    run: EventRun,
    custom: dict[str, Any],
    action_source: str,
    otherwise: PartsOf,
) -> PartsOf:
    """``map_parts`` for a config shaped as the module says: ``names`` are [mapping]'s fixed
    Facebook names, ``lead_key`` the top-level key of lead_id, ``finish_time`` event_time's
    finisher, ``run`` the field steps, ``custom`` custom_data's constants (event_source last)."""
    errors = FIELD_ERRORS

    def parts(event: Mapping[str, Any]) -> Outcome | Parts:
        ours = event.get("event_name")
        context = event.get("context")
        if type(context) is not dict or type(ours) is not str:
            return otherwise(event)
        raw_id = context.get("event_id")
        name = names.get(ours)
        if type(raw_id) is not str or name is None:
            return otherwise(event)
        raw = event.get(lead_key)
        if type(raw) is int and LEAD_MIN <= raw < LEAD_END:
            lead_id = raw
        elif type(raw) is str and LEAD_DIGITS(raw) is not None:
            lead_id = int(raw)
        else:
            return otherwise(event)
        raw_time = context.get(_TIME_KEY)
        if type(raw_time) is int and MS_MIN <= raw_time < MS_END:
            seconds = raw_time // 1000
        elif type(raw_time) is str and MS_DIGITS(raw_time) is not None:
            seconds = int(raw_time) // 1000
        elif raw_time is None:
            return otherwise(event)
        else:
            try:
                seconds = finish_time(raw_time, None)
            except errors:
                return otherwise(event)
        now = clock()
        event_id = raw_id.strip()
        if seconds <= now - SENDABLE_AGE_S or seconds > now + MAX_FUTURE_S or not event_id:
            return otherwise(event)
        data: dict[str, Any] = {
            "event_name": name,
            "event_time": seconds,
            "action_source": action_source,
            "event_id": event_id,
        }
        user_data: dict[str, Any] = {"lead_id": lead_id}
        custom_data = custom.copy()
        notes: list[FieldNote] = []
        run(event, (data, user_data, custom_data), notes)
        data["user_data"] = user_data
        data["custom_data"] = custom_data
        return (event_id, ours, name, lead_id, seconds, data, tuple(notes) if notes else ())

    return parts
