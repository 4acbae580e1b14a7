"""The Mapper: one Commanders Act event in, one ``Payload``, ``Filtered`` or ``Rejected`` out.

The config is compiled once into a list of ``Plan`` objects (one per Facebook field), each holding
plain callables: the expression that reads the event and the treatment that turns the value into
what Meta wants. ``Mapper.map`` is the hot loop; it touches no pydantic model and no settings dict.
Each ordinary field is one ``fill(event, region)`` closure there (read and finish in one call,
``MISSING`` when there is nothing to send), so a field costs a call or two, not a walk through
layers.

The plans themselves are compiled in ``plans`` (house rule: modules under ~300 lines); ``Plan``,
``compile_plans`` and the callable types are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from leadrelay.config import Settings
from leadrelay.mapping.expressions import MISSING, EvaluationError, compile_expression, compile_path
from leadrelay.mapping.fields import FIXED
from leadrelay.mapping.plans import Fill, Finisher, Plan, compile_field, compile_plans
from leadrelay.meta.normalize import region_hint
from leadrelay.meta.rules import MAX_AGE_S, MAX_FUTURE_S, FieldProblem, check_window
from leadrelay.outcome import FieldNote, Filtered, Outcome, Payload, Rejected

__all__ = ["Fill", "Finisher", "Mapper", "Plan", "compile_plans"]

_FIELD_ERRORS: Final = (FieldProblem, EvaluationError)
_REGION_FIELDS: Final = frozenset({"user_data.ph", "user_data.zp", "user_data.st"})
_ACTION_SOURCE: Final = FIXED["action_source"]
_EVENT_SOURCE: Final = FIXED["custom_data.event_source"]


class Mapper:
    """Compiled mapping for one config. ``map`` is pure apart from reading the clock."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        names: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
        self._catch_all: Callable[[Mapping[str, Any]], Any] | None = None
        for ours, theirs in settings.mapping.items():
            read = compile_expression(theirs, key=f"mapping.{ours}").evaluate
            if ours == "*":
                self._catch_all = read
            else:
                names[ours] = read
        self._names = names
        self._name_sources = dict(settings.mapping)
        self._consent = settings.consent_category
        self._consent_of = compile_path("user.consent_categories")
        self._event_id_of = compile_path("context.event_id")
        plans = compile_plans(settings)
        self.plans: tuple[Plan, ...] = tuple(plans)
        by_target = {p.target: p for p in plans}
        self._lead = by_target.get("user_data.lead_id")
        self._time = by_target.get("event_time")
        self._id = by_target.get("event_id")
        special = {"user_data.lead_id", "event_time", "event_id"}
        self._fields = tuple(
            compile_field(p, settings.default_country) for p in plans if p.target not in special
        )
        self._needs_region = any(p.target in _REGION_FIELDS for p in plans)
        self._country = by_target.get("user_data.country")

    def event_name_for(self, event: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(Facebook event name, why not) for an event; the name is None when not sendable."""
        ours = event.get("event_name")
        read = self._names.get(ours) if isinstance(ours, str) else None
        if read is None:
            read = self._catch_all
        if read is None:
            return None, "unmapped"
        name = read(event)
        if name is MISSING or name == "":
            return None, "empty_event_name"
        return (name if isinstance(name, str) else str(name)), None

    def _unnamed(self, key: str, ours: Any, unmapped: bool) -> Outcome:
        """The outcome of an event that gets no Facebook event name."""
        source = ours if isinstance(ours, str) else ""
        if unmapped:
            if not source:
                return Rejected(
                    key, source, "missing_event_name", "event_name", "the event has no event_name"
                )
            return Filtered(key, source, "unmapped", f"{ours!r} is not in [mapping]")
        return Rejected(
            key,
            source,
            "empty_event_name",
            "event_name",
            f"[mapping] gives {self._name_sources.get(source, self._name_sources.get('*'))!r}"
            " for this event, which has no value",
        )

    def map(self, event: Mapping[str, Any]) -> Outcome:
        """Turn one event into exactly one outcome."""
        ours = event.get("event_name")
        raw_id = self._event_id_of(event)
        key = raw_id if type(raw_id) is str else "" if raw_id is MISSING else str(raw_id)
        # event_name_for, inline: this runs for every event.
        read = self._names.get(ours) if isinstance(ours, str) else None
        if read is None:
            read = self._catch_all
            if read is None:
                return self._unnamed(key, ours, True)
        name = read(event)
        if name is MISSING or name == "":
            return self._unnamed(key, ours, False)
        if not isinstance(name, str):
            name = str(name)
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
            raw = lead.read(event)
            if raw is MISSING:
                return Rejected(
                    key,
                    source,
                    "missing_lead_id",
                    "user_data.lead_id",
                    f"lead_id {lead.source!r} has no value in this event",
                    event_name=name,
                )
            lead_id = lead.finish(raw, None)
        except _FIELD_ERRORS as exc:
            return Rejected(
                key,
                source,
                getattr(exc, "reason", "invalid_lead_id"),
                "user_data.lead_id",
                str(exc),
                _clip(raw),
                event_name=name,
            )
        now = self._clock()
        raw_time: Any = MISSING
        try:
            plan = self._time
            if plan is not None:
                raw_time = plan.read(event)
            seconds = (
                int(now) if plan is None or raw_time is MISSING else plan.finish(raw_time, None)
            )
            if seconds <= now - MAX_AGE_S or seconds > now + MAX_FUTURE_S:
                check_window(seconds, now)  # raises, saying which way and by how much
        except _FIELD_ERRORS as exc:
            return Rejected(
                key,
                source,
                getattr(exc, "reason", "invalid_event_time"),
                "event_time",
                str(exc),
                _clip(raw_time),
                lead_id=lead_id,
                event_name=name,
            )
        user_data: dict[str, Any] = {"lead_id": lead_id}
        custom_data: dict[str, Any] = {}
        data: dict[str, Any] = {
            "event_name": name,
            "event_time": seconds,
            "action_source": _ACTION_SOURCE,
        }
        event_id: Any = MISSING
        notes: list[FieldNote] = []
        if self._id is not None:
            try:
                event_id = self._id.read(event)
                if event_id is not MISSING:
                    event_id = self._id.finish(event_id, None)
            except _FIELD_ERRORS as exc:
                notes.append(_note(self._id.target, exc))
        if event_id is MISSING:
            # Deterministic, so a resend of the same stage change can be deduplicated by Meta.
            event_id = f"{lead_id}:{name}:{seconds}"
        data["event_id"] = event_id
        region = None
        if self._country is not None and self._needs_region:
            # The country is the region for national phone numbers, zip codes and states.
            try:
                country = self._country.read(event)
            except EvaluationError:
                country = MISSING
            region = region_hint(country) if isinstance(country, str) else None
        sections = (data, user_data, custom_data)
        for slot, field, target, fill, head, keys, digest_text, finish in self._fields:
            try:
                if head is not None and type(box := event.get(head)) is dict:
                    # What fill would do, without its calls: the first non-empty sibling...
                    for sibling in keys:
                        value = box.get(sibling)
                        if value is not None and value != "":
                            break
                    else:
                        continue
                    # ... hashed in one call when it is text (lists and numbers: finish).
                    if type(value) is str and (text := value.strip()):
                        sections[slot][field] = [digest_text(text, value, region)]  # type: ignore[misc]
                        continue
                    value = finish(value, region)
                else:
                    value = fill(event, region)
            except _FIELD_ERRORS as exc:
                notes.append(_note(target, exc))
                continue
            if value is not MISSING:
                sections[slot][field] = value
        custom_data["event_source"] = _EVENT_SOURCE
        data["user_data"] = user_data
        data["custom_data"] = custom_data
        return Payload(key or event_id, source, name, lead_id, seconds, data, tuple(notes))

    def _consented(self, event: Mapping[str, Any]) -> bool:
        granted = self._consent_of(event)
        if granted is MISSING:
            return False
        if isinstance(granted, str):
            granted = granted.split(",")
        elif not isinstance(granted, list):
            granted = [granted]
        wanted = self._consent
        return any(str(g).strip() == wanted for g in granted)


def _clip(value: Any) -> str | None:
    if value is MISSING:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _note(target: str, exc: Exception) -> FieldNote:
    reason = getattr(exc, "reason", None) or "expression_error"
    message = getattr(exc, "message", None) or str(exc)
    return FieldNote(target, reason, message)
