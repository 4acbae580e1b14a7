"""The Mapper: one Commanders Act event in, one ``Payload``, ``Filtered`` or ``Rejected`` out.

The config is compiled once into a list of ``Plan`` objects (one per Facebook field), each holding
plain callables: the expression that reads the event and the treatment that turns the value into
what Meta wants. ``Mapper.map`` is the hot loop; it touches no pydantic model and no settings dict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from leadrelay.config import Settings
from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    Expression,
    compile_expression,
    compile_path,
)
from leadrelay.mapping.fields import FIXED, PREBUILT, Treatment, treatment
from leadrelay.meta.normalize import NormalizeError, hasher, region_hint
from leadrelay.meta.rules import FieldProblem, check_window, parse_lead_id, to_seconds
from leadrelay.outcome import FieldNote, Filtered, Outcome, Payload, Rejected

Finisher = Callable[[Any, str | None], Any]
_FIELD_ERRORS: Final = (FieldProblem, NormalizeError, EvaluationError)
_REGION_FIELDS: Final = frozenset({"user_data.ph", "user_data.zp", "user_data.st"})
_SECTIONS: Final = ("user_data", "custom_data")


@dataclass(frozen=True, slots=True)
class Plan:
    """How one Facebook field is filled: where the value comes from and how it is finished."""

    target: str
    section: str | None  # "user_data", "custom_data" or None for a top-level key
    name: str
    treatment: Treatment
    origin: str  # "prebuilt", "smart_mapping" or "setting"
    source: str  # the expression as the user would write it
    read: Callable[[Mapping[str, Any]], Any]
    finish: Finisher


def _hashed(field: str, default_country: str | None) -> Finisher:
    digest = hasher(field, default_country=default_country)

    def finish(value: Any, region: str | None) -> Any:
        if isinstance(value, list):
            out: list[str] = []
            first_error: NormalizeError | None = None
            for item in value:
                try:
                    hashed = digest(item, region)
                except NormalizeError as exc:
                    first_error = first_error or exc
                    continue
                if hashed not in out:
                    out.append(hashed)
            if not out:
                if first_error is not None:
                    raise first_error
                raise FieldProblem("empty", "the list has no values")
            return out
        return [digest(value, region)]

    return finish


def _text(value: Any, region: str | None) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value if value else MISSING
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise FieldProblem("invalid_type", f"expected text, got {type(value).__name__}")


def _native(value: Any, region: str | None) -> Any:
    return value


def _finisher(target: str, kind: Treatment, default_country: str | None) -> Finisher:
    if kind is Treatment.HASHED:
        return _hashed(target.rpartition(".")[2], default_country)
    if kind is Treatment.TEXT:
        return _text
    if kind is Treatment.LEAD_ID:
        return lambda value, region: parse_lead_id(value)
    if kind is Treatment.EVENT_TIME:
        return lambda value, region: to_seconds(value)
    return _native


def compile_plans(settings: Settings) -> list[Plan]:
    """The prebuilt table with the user's smart mapping laid over it, compiled."""
    rows: dict[str, tuple[str, str]] = {}
    for row in PREBUILT:
        if row.source == "${lead_id}":
            rows[row.target] = (settings.lead_id, "setting")
        elif row.source == "${lead_event_source}":
            rows[row.target] = (settings.lead_event_source, "setting")
        else:
            rows[row.target] = (row.source, "prebuilt")
    for target, source in settings.smart_mapping.items():
        if source == "":
            rows.pop(target, None)
        else:
            rows[target] = (source, "smart_mapping")
    plans = []
    for target, (source, origin) in rows.items():
        kind = treatment(target)
        head, _, rest = target.partition(".")
        section, name = (head, rest) if head in _SECTIONS else (None, target)
        expr: Expression = compile_expression(source, key=target)
        plans.append(
            Plan(
                target,
                section,
                name,
                kind,
                origin,
                source,
                expr.evaluate,
                _finisher(target, kind, settings.default_country),
            )
        )
    return plans


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
        self._fields = tuple(p for p in plans if p.target not in special)
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

    def map(self, event: Mapping[str, Any]) -> Outcome:
        """Turn one event into exactly one outcome."""
        ours = event.get("event_name")
        source = ours if isinstance(ours, str) else ""
        raw_id = self._event_id_of(event)
        key = "" if raw_id is MISSING else str(raw_id)
        name, why = self.event_name_for(event)
        if name is None:
            if why == "unmapped":
                if not isinstance(ours, str) or not ours:
                    return Rejected(
                        key,
                        source,
                        "missing_event_name",
                        "event_name",
                        "the event has no event_name",
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
            check_window(seconds, now)
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
            "action_source": FIXED["action_source"],
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
        for plan in self._fields:
            try:
                value = plan.read(event)
                if value is MISSING:
                    continue
                value = plan.finish(value, region)
            except _FIELD_ERRORS as exc:
                notes.append(_note(plan.target, exc))
                continue
            if value is MISSING:
                continue
            section = plan.section
            if section == "user_data":
                user_data[plan.name] = value
            elif section == "custom_data":
                custom_data[plan.name] = value
            else:
                data[plan.name] = value
        custom_data["event_source"] = FIXED["custom_data.event_source"]
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
