"""Field-by-field explanation of a mapping, for ``leadrelay preview`` and the playground."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.expressions import MISSING, EvaluationError
from leadrelay.mapping.fields import Treatment
from leadrelay.mapping.filling import region_reader
from leadrelay.meta.normalize import is_sha256, normalizer
from leadrelay.meta.rules import FieldProblem
from leadrelay.outcome import Outcome, Payload


@dataclass(frozen=True, slots=True)
class FieldLine:
    """One Facebook field: where its value came from, what was read, what is sent or why not."""

    target: str
    origin: str
    source: str
    read: Any  # the raw value read from the event, or MISSING
    sent: Any  # the value in the payload, or MISSING
    why_not: str | None
    # A hashed field's value as normalized, what its digest is of ("jane@example.com", "06000"):
    # None for others, for a list, and for a value that already was a digest.
    hashed: str | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """The outcome of mapping one event, with every field explained."""

    outcome: Outcome
    fields: tuple[FieldLine, ...]


def explain(mapper: Mapper, event: Mapping[str, Any]) -> Explanation:
    """Map ``event`` and explain each field of the result."""
    outcome = mapper.map(event)
    data = outcome.data if isinstance(outcome, Payload) else {}
    region = _region(mapper, event)
    lines = []
    for plan in mapper.plans:
        try:
            raw = plan.read(event)
        except EvaluationError as exc:
            lines.append(
                FieldLine(plan.target, plan.origin, plan.source, MISSING, MISSING, str(exc))
            )
            continue
        sent = _dig(data, plan.target)
        why = None
        if sent is MISSING:
            if raw is MISSING:
                why = "no value in this event"
            else:
                try:
                    plan.finish(raw, region)
                    why = "not sent (the event was not sent)" if not data else None
                except (FieldProblem, EvaluationError) as exc:
                    why = getattr(exc, "message", None) or str(exc)
        hashed = None
        if sent is not MISSING and plan.treatment is Treatment.HASHED:
            hashed = _normalized(mapper, plan.target, raw, region)
        lines.append(FieldLine(plan.target, plan.origin, plan.source, raw, sent, why, hashed))
    return Explanation(outcome, tuple(lines))


def _region(mapper: Mapper, event: Mapping[str, Any]) -> str | None:
    """The event's region, as the mapper reads it for every field (its country's value)."""
    country = next((p for p in mapper.plans if p.target == "user_data.country"), None)
    return None if country is None else region_reader(country)(event)


def _normalized(mapper: Mapper, target: str, raw: Any, region: str | None) -> str | None:
    """The text a hashed field's value is normalized to before hashing (see ``FieldLine``)."""
    if raw is MISSING or isinstance(raw, list) or (isinstance(raw, str) and is_sha256(raw)):
        return None
    field = target.rpartition(".")[2]
    try:
        return normalizer(field, **mapper.reading._asdict())(raw, region)
    except (FieldProblem, ValueError):
        return None


def _dig(data: Mapping[str, Any], target: str) -> Any:
    node: Any = data
    for part in target.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node
