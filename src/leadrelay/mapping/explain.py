"""Field-by-field explanation of a mapping, for ``leadrelay preview`` and the playground."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.expressions import MISSING, EvaluationError
from leadrelay.meta.normalize import region_hint
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


@dataclass(frozen=True, slots=True)
class Explanation:
    """The outcome of mapping one event, with every field explained."""

    outcome: Outcome
    fields: tuple[FieldLine, ...]


def explain(mapper: Mapper, event: Mapping[str, Any]) -> Explanation:
    """Map ``event`` and explain each field of the result."""
    outcome = mapper.map(event)
    data = outcome.data if isinstance(outcome, Payload) else {}
    region = None
    lines = []
    for plan in mapper.plans:
        try:
            raw = plan.read(event)
        except EvaluationError as exc:
            lines.append(
                FieldLine(plan.target, plan.origin, plan.source, MISSING, MISSING, str(exc))
            )
            continue
        if plan.target == "user_data.country" and isinstance(raw, str):
            region = region_hint(raw)
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
        lines.append(FieldLine(plan.target, plan.origin, plan.source, raw, sent, why))
    return Explanation(outcome, tuple(lines))


def _dig(data: Mapping[str, Any], target: str) -> Any:
    node: Any = data
    for part in target.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node
