"""Reading the two fields that decide whether an event can be sent at all: lead_id and
event_time, for ``Mapper``'s general path (``usual`` inlines the same fast paths).

Split out of ``engine`` (house rule: modules under ~300 lines). Each reader gives the value as
read (``MISSING`` when the event has none), then the finished one: the usual forms (a lead id of
15 to 17 digits as a number or as text; milliseconds as a number or as text) without a call to
the plan's finisher, any other through it, which raises one of ``FIELD_ERRORS`` saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from leadrelay.mapping.expressions import MISSING
from leadrelay.mapping.plans import (
    LEAD_END,
    LEAD_MIN,
    MS_END,
    MS_MIN,
    Plan,
    lead_digits,
    ms_digits,
    top_level_key,
)
from leadrelay.meta.rules import MAX_FUTURE_S, SENDABLE_AGE_S, check_window

__all__ = ["LeadReader", "TimeReader"]

_TIME_SOURCE: Final = "{{context.event_timestamp}}"
_TIME_KEY: Final = "event_timestamp"


class LeadReader:
    """lead_id of an event, by its plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # Read from a top-level key ({{facebook_lead_id}}, the usual): read in place.
        self.key = top_level_key(plan)

    def raw(self, event: Mapping[str, Any]) -> Any:
        """The value as read, ``MISSING`` for none (what ``plan.read`` gives)."""
        key = self.key
        if key is None:
            return self.plan.read(event)
        raw = event.get(key)
        return MISSING if raw is None else raw

    def finish(self, raw: Any) -> int:
        """The lead id Meta gets (``plan.finish``, raising ``FIELD_ERRORS`` for a bad one)."""
        if type(raw) is int and LEAD_MIN <= raw < LEAD_END:
            return raw
        if type(raw) is str and lead_digits(raw):
            return int(raw)  # the digits CRMs send as text
        return int(self.plan.finish(raw, None))


class TimeReader:
    """event_time of an event, in whole seconds within Meta's window, by its plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.in_context = plan.source == _TIME_SOURCE  # read from the context read already

    def raw(self, event: Mapping[str, Any], context: Any) -> Any:
        """The value as read, ``MISSING`` for none; ``context`` is ``event["context"]``."""
        if self.in_context and type(context) is dict:
            raw = context.get(_TIME_KEY)
            return MISSING if raw is None else raw
        return self.plan.read(event)

    def seconds(self, raw: Any, now: float) -> int:
        """event_time: the clock's for ``MISSING``; raises ``FIELD_ERRORS`` for a bad value or
        one outside Meta's window (saying which way, and by how much)."""
        if type(raw) is int and MS_MIN <= raw < MS_END:
            seconds = raw // 1000
        elif type(raw) is str and ms_digits(raw):
            seconds = int(raw) // 1000  # milliseconds as text
        elif raw is MISSING:
            seconds = int(now)
        else:
            seconds = int(self.plan.finish(raw, None))
        if seconds <= now - SENDABLE_AGE_S or seconds > now + MAX_FUTURE_S:
            check_window(seconds, now)
        return seconds
