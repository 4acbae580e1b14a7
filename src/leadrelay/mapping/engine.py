"""The Mapper: one Commanders Act event in, one ``Payload``, ``Filtered`` or ``Rejected`` out.

The config is compiled once into a list of ``Plan`` objects (one per Facebook field), each holding
plain callables: the expression that reads the event and the treatment that turns the value into
what Meta wants. ``Mapper.map`` is the hot loop; it touches no pydantic model and no settings dict.
The ordinary fields run as a few closures (``steps`` and ``filling``): constants are set, the
prebuilt customer information is read from ``event["user"]`` once and hashed field by field
(digests of values that repeat are remembered), other fields are one ``fill(event, region)``
call each.

The plans and the event names of [mapping] are compiled in ``plans``, lead_id and event_time are
read in ``key_fields``, and the outcomes of events that get no Facebook event name are built in
``refusals`` (house rule: modules under ~300 lines);
``Plan``, ``compile_plans`` and the callable types are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from leadrelay.config import Settings
from leadrelay.mapping.expressions import MISSING, compile_expression, compile_path
from leadrelay.mapping.fields import FIXED
from leadrelay.mapping.filling import SIBLINGS_LOOP, event_runner
from leadrelay.mapping.key_fields import LeadReader, TimeReader
from leadrelay.mapping.plans import (
    Fill,
    Finisher,
    Plan,
    compile_names,
    compile_plans,
    reading_of,
)
from leadrelay.mapping.refusals import (
    clip,
    content_key,
    id_text,
    name_failed,
    name_of_value,
    no_source,
    unmapped,
    unnamed,
)
from leadrelay.mapping.siblings import FIELD_ERRORS, field_note
from leadrelay.mapping.steps import CONSTANT, Step, compile_steps, sections_of
from leadrelay.mapping.usual import BodyParts, usual_ways
from leadrelay.outcome import FieldNote, Filtered, Outcome, Payload, Rejected

__all__ = ["Fill", "Finisher", "Mapper", "Parts", "Plan", "compile_plans"]

_REGION_FIELDS: Final = frozenset({"user_data.ph", "user_data.zp", "user_data.st"})
_ACTION_SOURCE: Final = FIXED["action_source"]
_EVENT_SOURCE: Final = FIXED["custom_data.event_source"]
_EVENT_ID_SOURCE: Final = "{{context.event_id}}"
_CUSTOM: Final = 2  # custom_data's Step.slot
_SOURCE_TARGET: Final = "custom_data.lead_event_source"

Parts = tuple[str, str, str, int, int, dict[str, Any], tuple[FieldNote, ...]]
"""A payload's fields, in ``Payload``'s order: key, source_event, event_name, lead_id,
event_time, data, notes (see ``Mapper.map_parts``)."""


class Mapper:
    """Compiled mapping for one config. ``map`` is pure apart from reading the clock."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._names, self._catch_all, self._static_names = compile_names(settings.mapping)
        self._name_sources = dict(settings.mapping)
        self._consent = settings.consent_category
        self._consent_of = compile_path("user.consent_categories")
        self._event_id_of = compile_path("context.event_id")
        plans = compile_plans(settings)
        self.plans: tuple[Plan, ...] = tuple(plans)
        self.reading = reading_of(settings)  # how its hashed fields read values
        by_target = {p.target: p for p in plans}
        lead, time_plan = by_target.get("user_data.lead_id"), by_target.get("event_time")
        self._lead = None if lead is None else LeadReader(lead)
        self._time = None if time_plan is None else TimeReader(time_plan)
        self._id = by_target.get("event_id")
        # The prebuilt event_id reads what the key was read from: no need to read it twice.
        self._id_is_key = self._id is not None and self._id.source == _EVENT_ID_SOURCE
        special = {"user_data.lead_id", "event_time", "event_id"}
        steps = compile_steps([p for p in plans if p.target not in special], self.reading)
        # Constants that start custom_data (lead_event_source) are in a dict copied for each
        # event, and so is event_source, which ends it, when nothing else writes custom_data.
        self._custom: dict[str, Any] = {}
        rest: list[Step] = []
        for step in steps:
            if step.kind == CONSTANT and step.slot == _CUSTOM and _CUSTOM not in _written(rest):
                self._custom[step.name] = step.detail
            else:
                rest.append(step)
        self._custom_closed = _CUSTOM not in _written(rest)
        # lead_event_source read from each event (smart mapping, or a setting with {{...}}) may
        # have no value: the setting's text stands in, if it is text, else the event is refused
        # (without it Meta does not take the event as a Conversion Lead).
        self._source_check = not any(
            step.kind == CONSTANT and step.target == _SOURCE_TARGET for step in steps
        )
        setting = compile_expression(settings.lead_event_source, key="lead_event_source")
        read_from = by_target.get(_SOURCE_TARGET)
        self._source_read = settings.lead_event_source if read_from is None else read_from.source
        self._source_fallback = settings.lead_event_source if setting.kind == "static" else None
        if self._custom_closed:
            self._custom["event_source"] = _EVENT_SOURCE
        # The country is the region for national phone numbers, zip codes and states.
        country = by_target.get("user_data.country")
        needs_region = any(p.target in _REGION_FIELDS for p in plans)
        self._run = event_runner(rest, country if needs_region else None)
        # ``map`` without building the ``Payload``: its fields as a plain tuple (in the order
        # ``Payload`` takes them), or the ``Filtered`` or ``Rejected`` outcome. For bulk
        # encoders, which only read a payload's data and notes: the object costs more than the
        # tuple. The usual way (``usual``) where the config allows it, else ``_parts``.
        self.map_parts: Callable[[Mapping[str, Any]], Outcome | Parts] = self._parts
        # ``map_parts`` with the server event as JSON bytes where the compiled build writes them
        # as it reads (see ``usual.usual_body``), else as ``map_parts`` gives it: what the bulk
        # encoders encode, they take as it is.
        self.map_body: Callable[[Mapping[str, Any]], Outcome | Parts | BodyParts] = self._parts
        if (
            self._lead is not None
            and self._lead.key is not None
            and self._consent is None
            and self._time is not None
            and self._time.in_context
            and self._id_is_key
            and self._custom_closed
        ):
            self.map_parts, self.map_body = usual_ways(
                names=self._static_names,
                lead_key=self._lead.key,
                finish_time=self._time.plan.finish,
                clock=clock,
                steps=rest,
                run=self._run,
                country=country if needs_region else None,
                custom=self._custom,
                action_source=_ACTION_SOURCE,
                otherwise=self._parts,
                write_json=SIBLINGS_LOOP,
            )

    def _name_of(self, event: Mapping[str, Any], ours: Any, key: str) -> str | Outcome:
        """The Facebook event name from [mapping], or the outcome of an event without one."""
        read = self._names.get(ours) if isinstance(ours, str) else None
        if read is None:
            read = self._catch_all
            if read is None:
                return unmapped(key, ours)
        try:
            name = read(event)
        except FIELD_ERRORS as exc:  # a formula that cannot use this event's values
            return name_failed(key, ours, exc, self._name_sources)
        if type(name) is str:
            name = name.strip()  # the same stage with a stray space is the same stage
            return name or unnamed(key, ours, self._name_sources)
        if name is MISSING:
            return unnamed(key, ours, self._name_sources)
        return name_of_value(key, ours, name, self._name_sources)

    def map(self, event: Mapping[str, Any]) -> Outcome:
        """Turn one event into exactly one outcome."""
        found = self.map_parts(event)
        if isinstance(found, tuple):
            return Payload(*found)
        return found

    def _parts(self, event: Mapping[str, Any]) -> Outcome | Parts:
        """``map_parts`` for any event and config."""
        ours = event.get("event_name")
        # The key, the prebuilt event_id and event_time all come from the context: read once.
        context = event.get("context")
        if type(context) is dict:
            raw_id = context.get("event_id")
            if raw_id is None:
                raw_id = MISSING
        else:
            raw_id = self._event_id_of(event)
        key = raw_id.strip() if type(raw_id) is str else id_text(raw_id)
        name = self._static_names.get(ours) if type(ours) is str else None
        if name is None:
            named = self._name_of(event, ours, key)
            if not isinstance(named, str):
                return named
            name = named
        source = ours if isinstance(ours, str) else ""  # a catch-all maps events without a name
        if self._consent is not None and not self._consented(event):
            return Filtered(
                key,
                source,
                "consent",
                f"user.consent_categories does not include {self._consent!r}",
            )
        # lead_id and event_time decide whether the event can be sent at all.
        lead = self._lead
        if lead is None:
            return Rejected(
                key,
                source,
                "missing_lead_id",
                "user_data.lead_id",
                "no lead_id mapping",
                event_name=name,
            )
        raw: Any = MISSING
        try:
            raw = lead.raw(event)
            if raw is MISSING:
                return Rejected(
                    key,
                    source,
                    "missing_lead_id",
                    "user_data.lead_id",
                    f"lead_id {lead.plan.source!r} has no value in this event",
                    event_name=name,
                )
            lead_id = lead.finish(raw)
        except FIELD_ERRORS as exc:
            return Rejected(
                key,
                source,
                getattr(exc, "reason", "invalid_lead_id"),
                "user_data.lead_id",
                str(exc),
                clip(raw),
                event_name=name,
            )
        now = self._clock()
        raw_time: Any = MISSING
        try:
            if self._time is None:
                seconds = int(now)
            else:
                raw_time = self._time.raw(event, context)
                seconds = self._time.seconds(raw_time, now)
        except FIELD_ERRORS as exc:
            return Rejected(
                key,
                source,
                getattr(exc, "reason", "invalid_event_time"),
                "event_time",
                str(exc),
                clip(raw_time),
                lead_id=lead_id,
                event_name=name,
            )
        event_id: Any = MISSING
        notes: list[FieldNote] = []
        if self._id is not None:
            try:
                event_id = raw_id if self._id_is_key else self._id.read(event)
                if type(event_id) is str:
                    event_id = event_id.strip() or MISSING  # what finish gives, without the call
                elif event_id is not MISSING:
                    event_id = self._id.finish(event_id, None)
            except FIELD_ERRORS as exc:
                notes.append(field_note(self._id.target, exc))
                event_id = MISSING  # the value left out: never sent as it was read
        if event_id is MISSING:
            # Deterministic, so a resend of the same stage change can be deduplicated by Meta.
            event_id = f"{lead_id}:{name}:{seconds}"
            if not key and raw_time is MISSING:
                # Its time is the clock's, which a resend would not share: it is known, and
                # sent, by its content, so that Meta deduplicates a resend too, and the event_id
                # a report or the intake's answer says is the one Meta has.
                key = event_id = content_key(lead_id, name, event)
        data: dict[str, Any] = {
            "event_name": name,
            "event_time": seconds,
            "action_source": _ACTION_SOURCE,
            "event_id": event_id,
        }
        user_data: dict[str, Any] = {"lead_id": lead_id}
        custom_data = self._custom.copy()
        self._run(event, (data, user_data, custom_data), notes)
        if self._source_check and "lead_event_source" not in custom_data:
            if self._source_fallback is None:
                return no_source(key, source, self._source_read, lead_id, name)
            custom_data["lead_event_source"] = self._source_fallback
        if not self._custom_closed:
            custom_data["event_source"] = _EVENT_SOURCE
        data["user_data"] = user_data
        data["custom_data"] = custom_data
        return (
            key or event_id,
            source,
            name,
            lead_id,
            seconds,
            data,
            tuple(notes) if notes else (),
        )

    def _consented(self, event: Mapping[str, Any]) -> bool:
        granted = self._consent_of(event)
        if granted is MISSING:
            return False
        if isinstance(granted, str):  # "1,4", or a list as text (a CSV cell): '["1", "4"]'
            granted = [g.strip().strip('"') for g in granted.strip().strip("[]").split(",")]
        elif not isinstance(granted, list):
            granted = [granted]
        wanted = self._consent
        return any(str(g).strip() == wanted for g in granted)


def _written(steps: list[Step]) -> frozenset[int]:
    return frozenset().union(*map(sections_of, steps))
