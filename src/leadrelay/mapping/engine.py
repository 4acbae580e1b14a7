"""The Mapper: one Commanders Act event in, one ``Payload``, ``Filtered`` or ``Rejected`` out.

The config is compiled once into a list of ``Plan`` objects (one per Facebook field), each holding
plain callables: the expression that reads the event and the treatment that turns the value into
what Meta wants. ``Mapper.map`` is the hot loop; it touches no pydantic model and no settings dict.
Each ordinary field is one ``fill(event, region)`` closure there (read and finish in one call,
``MISSING`` when there is nothing to send), so a field costs a call or two, not a walk through
layers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from leadrelay.config import Settings
from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    Expression,
    compile_expression,
    compile_path,
)
from leadrelay.mapping.fields import FIXED, PREBUILT, Treatment, treatment
from leadrelay.meta.normalize import NormalizeError, TextRule, hasher, region_hint, text_hasher
from leadrelay.meta.rules import (
    MAX_AGE_S,
    MAX_FUTURE_S,
    FieldProblem,
    check_window,
    parse_lead_id,
    to_seconds,
)
from leadrelay.outcome import FieldNote, Filtered, Outcome, Payload, Rejected

Finisher = Callable[[Any, str | None], Any]
Fill = Callable[[Mapping[str, Any], str | None], Any]
_FIELD_ERRORS: Final = (FieldProblem, NormalizeError, EvaluationError)
_REGION_FIELDS: Final = frozenset({"user_data.ph", "user_data.zp", "user_data.st"})
_SECTIONS: Final = ("user_data", "custom_data")
_ACTION_SOURCE: Final = FIXED["action_source"]
_EVENT_SOURCE: Final = FIXED["custom_data.event_source"]


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
    siblings: tuple[str, tuple[str, ...]] | None = None  # see Expression.siblings


def _hashed_list(digest: Finisher, value: list[Any], region: str | None) -> list[str]:
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


def _hashed(field: str, default_country: str | None) -> Finisher:
    digest = hasher(field, default_country=default_country)

    def finish(value: Any, region: str | None) -> Any:
        if type(value) is list:
            return _hashed_list(digest, value, region)
        return [digest(value, region)]

    return finish


def _hashed_fill(read: Callable[[Mapping[str, Any]], Any], digest: Finisher) -> Fill:
    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        if value is MISSING:
            return MISSING
        if type(value) is list:
            return _hashed_list(digest, value, region)
        return [digest(value, region)]

    return fill


def _text_fill(read: Callable[[Mapping[str, Any]], Any]) -> Fill:
    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        if type(value) is str:
            value = value.strip()
            return value if value else MISSING
        return MISSING if value is MISSING else _text(value, region)

    return fill


def _native_fill(read: Callable[[Mapping[str, Any]], Any]) -> Fill:
    return lambda event, region: read(event)


def _fill(plan: Plan, default_country: str | None) -> Fill:
    """One call that reads and finishes ``plan``'s field: the value to send, or MISSING."""
    if plan.treatment is Treatment.HASHED:
        digest = hasher(plan.target.rpartition(".")[2], default_country=default_country)
        return _hashed_fill(plan.read, digest)
    if plan.treatment is Treatment.TEXT:
        return _text_fill(plan.read)
    if plan.treatment is Treatment.NATIVE:
        return _native_fill(plan.read)
    read, finish = plan.read, plan.finish

    def fill(event: Mapping[str, Any], region: str | None) -> Any:
        value = read(event)
        return MISSING if value is MISSING else finish(value, region)

    return fill


def _text(value: Any, region: str | None) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value if value else MISSING
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise FieldProblem("invalid_type", f"expected text, got {type(value).__name__}")


def _native(value: Any, region: str | None) -> Any:
    return value


_LEAD_MIN: Final = 10**14  # 15 digits
_LEAD_END: Final = 10**17  # 18 digits
_MS_MIN: Final = 10**11  # timestamps this large are milliseconds (see rules.to_seconds)
_MS_END: Final = 10**14


def _lead_id(value: Any, region: str | None) -> int:
    # What CRMs send (an int, or a string of 15 to 17 digits) is checked here without a detour;
    # everything else gets parse_lead_id's full checks and messages.
    if type(value) is int:
        if _LEAD_MIN <= value < _LEAD_END:
            return value
    elif (
        type(value) is str
        and 15 <= len(value) <= 17
        and value[0] != "0"
        and value.isdigit()
        and value.isascii()
    ):
        return int(value)
    return parse_lead_id(value)


def _event_time(value: Any, region: str | None) -> int:
    # Milliseconds (number or digits) and ISO-8601 date-times, the common shapes, go straight;
    # everything else, and every problem, goes through to_seconds.
    kind = type(value)
    if kind is int:
        if _MS_MIN <= value < _MS_END:
            return int(value // 1000)
    elif kind is str:
        if value.isdigit():
            number = int(value)
            if _MS_MIN <= number < _MS_END:
                return number // 1000
        elif value[4:5] == "-":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return to_seconds(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return int(parsed.timestamp())
    return to_seconds(value)


def _finisher(target: str, kind: Treatment, default_country: str | None) -> Finisher:
    if kind is Treatment.HASHED:
        return _hashed(target.rpartition(".")[2], default_country)
    if kind is Treatment.TEXT:
        return _text
    if kind is Treatment.LEAD_ID:
        return _lead_id
    if kind is Treatment.EVENT_TIME:
        return _event_time
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
                expr.siblings,
            )
        )
    return plans


class _Field(NamedTuple):
    """One ordinary field as ``Mapper.map`` runs it."""

    slot: int  # where the value goes: 0 the server event, 1 user_data, 2 custom_data
    name: str
    target: str
    fill: Fill  # the general way: read and finish in one call, MISSING for nothing to send
    # The way of the prebuilt customer information (a hashed COALESCE of sibling paths): read
    # in place and, for text, hashed in one call. None for every other field.
    head: str | None
    keys: tuple[str, ...]
    digest_text: TextRule | None
    finish: Finisher


def _field(plan: Plan, default_country: str | None) -> _Field:
    slot = {"user_data": 1, "custom_data": 2}.get(plan.section or "", 0)
    fill = _fill(plan, default_country)
    if plan.treatment is Treatment.HASHED and plan.siblings is not None:
        head, keys = plan.siblings
        field = plan.target.rpartition(".")[2]
        digest_text = text_hasher(field, default_country=default_country)
        return _Field(slot, plan.name, plan.target, fill, head, keys, digest_text, plan.finish)
    return _Field(slot, plan.name, plan.target, fill, None, (), None, plan.finish)


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
            _field(p, settings.default_country) for p in plans if p.target not in special
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
