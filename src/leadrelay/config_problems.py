"""What is wrong with a config, said key by key: pydantic's errors (``pydantic_problems``) and
the expressions' (``expression_problems``). Split out of ``config`` (house rule: modules under
~300 lines)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from leadrelay.config_env import Problem, key_name
from leadrelay.mapping.expressions import ExpressionError, compile_expression
from leadrelay.mapping.fields import TargetError, treatment

__all__ = ["expression_problems", "pydantic_problems"]


def pydantic_problems(
    exc: ValidationError, sections: Mapping[str, type[BaseModel]], top: type[BaseModel]
) -> list[Problem]:
    """pydantic's errors as problems of their keys: an unknown setting with the name it may be
    (among the fields of its section in ``sections``, or of ``top``), a missing one as
    required, the rest in pydantic's words."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            import difflib  # only to suggest a name for an unknown setting

            section = sections.get(str(loc[0]), top) if len(loc) > 1 else top
            hint = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1)
            suffix = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(Problem(key_name(loc), f"unknown setting{suffix}"))
        elif err["type"] == "missing":
            problems.append(Problem(key_name(loc), "is required"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "string_pattern_mismatch" and loc == ("pixel_id",):
                msg = "must be the digits of your Pixel (dataset) Id"
            problems.append(Problem(key_name(loc), msg))
    return problems


# The fields a smart mapping may point elsewhere but not remove, and why.
_REQUIRED: Final = {
    "custom_data.lead_event_source": "cannot be removed: Meta takes an event as a Conversion "
    "Lead only with the name of its CRM; point it at a field of your events, or remove this "
    "row to send the lead_event_source setting",
    "user_data.lead_id": "cannot be removed: every Conversion Leads event needs its lead id; "
    "point it at a field of your events, or remove this row to use the lead_id setting",
}


def expression_problems(raw: dict[str, Any]) -> list[Problem]:
    """Compile every expression of a config once to report its errors with key and position;
    and the rows of [mapping] and [smart_mapping] that say nothing, or name no Facebook field."""
    problems: list[Problem] = []

    def check(key: tuple[str, ...], source: Any) -> None:
        if isinstance(source, str) and source:
            try:
                compile_expression(source, key=key_name(key))
            except ExpressionError as exc:
                problems.append(
                    Problem(key_name(key), f"{exc.message} (at position {exc.position})")
                )

    check(("lead_id",), raw.get("lead_id"))
    check(("lead_event_source",), raw.get("lead_event_source"))
    mapping = raw.get("mapping")
    if isinstance(mapping, dict):
        for name, target in mapping.items():
            if isinstance(target, str) and not target.strip():
                problems.append(
                    Problem(
                        key_name(("mapping", name)),
                        "is empty; write the Facebook event name for this event, or remove the row",
                    )
                )
            check(("mapping", name), target)
    smart = raw.get("smart_mapping")
    if isinstance(smart, dict):
        for target, source in smart.items():
            try:
                treatment(target)
            except TargetError as exc:
                problems.append(Problem(key_name(("smart_mapping", target)), str(exc)))
            if target in _REQUIRED and source == "":
                problems.append(Problem(key_name(("smart_mapping", target)), _REQUIRED[target]))
            check(("smart_mapping", target), source)
    return problems
