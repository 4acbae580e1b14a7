"""The field loop of ``Mapper.map``: each step (see ``steps``) as one closure, run per event.

This is the hottest code of the mapping: every ordinary field of every event passes here. A
closure reads what its step's object holds with plain dict look-ups, and calls out only to
normalize, hash, or take the general way (``fill``) for what the look-ups cannot settle:
objects that are not dicts, values that are not text, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from leadrelay.mapping.expressions import MISSING, EvaluationError
from leadrelay.mapping.plans import Fill, Plan, finish_text
from leadrelay.mapping.siblings import FIELD_ERRORS, field_note
from leadrelay.mapping.steps import CONSTANT, PLAIN, SIBLINGS, PlainField, SiblingField, Step
from leadrelay.meta.normalize import region_hint, sha256
from leadrelay.meta.places import SEEN_REGIONS
from leadrelay.outcome import FieldNote

_FIELD_ERRORS: Final = FIELD_ERRORS

Sections = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
Notes = list[FieldNote]
Run = Callable[[Mapping[str, Any], "str | None", Sections, Notes], None]


def step_runner(step: Step) -> Run:
    """The closure that runs ``step``: ``run(event, region, sections, notes)``, ``sections``
    being the server event, its user_data and its custom_data (see ``Step.slot``)."""
    if step.kind == CONSTANT:
        return _constant_runner(step.slot, step.name, step.detail)
    if step.kind == SIBLINGS:
        return _siblings_runner(*step.detail)
    if step.kind == PLAIN:
        return _plain_runner(*step.detail)
    if step.fill is None:  # pragma: no cover - compile_steps gives every general step a fill
        raise ValueError(f"{step.target}: a general step needs a fill")
    return _general_runner(step.slot, step.name, step.target, step.fill)


def step_runners(steps: Sequence[Step]) -> tuple[Run, ...]:
    """The closures that run ``steps``, in order: ``step_runner`` of each, but consecutive plain
    steps of two-key objects in one closure (``{{partners.facebook.fbc}}`` then
    ``{{context.device.ip}}``...: objects most events lack, one call for them all)."""
    runs: list[Run] = []
    group: list[Step] = []
    for step in (*steps, None):
        if step is not None and step.kind == PLAIN and len(step.detail[0]) == 2:
            group.append(step)
            continue
        if len(group) > 1:
            runs.append(_plain_group_runner(group))
        else:
            runs.extend(step_runner(grouped) for grouped in group)
        group = []
        if step is not None:
            runs.append(step_runner(step))
    return tuple(runs)


def _plain_group_runner(steps: list[Step]) -> Run:
    # Each step as its own runner reads it: (first key, second key, fields, that runner).
    groups = tuple((*step.detail[0], step.detail[1], step_runner(step)) for step in steps)

    def run(event: Mapping[str, Any], region: Any, sections: Sections, notes: Notes) -> None:
        for first, second, fields, run_one in groups:
            box = event.get(first)
            if type(box) is dict:
                box = box.get(second)
                if type(box) is dict:
                    _plain(fields, box, sections, notes)
                    continue
            if box is not None:
                run_one(event, region, sections, notes)

    return run


def _constant_runner(slot: int, name: str, value: Any) -> Run:
    def run(event: Mapping[str, Any], region: Any, sections: Sections, notes: Notes) -> None:
        sections[slot][name] = value

    return run


def _general_runner(slot: int, name: str, target: str, fill: Fill) -> Run:
    def run(event: Mapping[str, Any], region: Any, sections: Sections, notes: Notes) -> None:
        try:
            value = fill(event, region)
        except _FIELD_ERRORS as exc:
            notes.append(field_note(target, exc))
            return
        if value is not MISSING:
            sections[slot][name] = value

    return run


def _siblings_runner(head: str, fields: tuple[SiblingField, ...]) -> Run:
    """The step's closure, written out for its fields: one block of code per field, in order.

    The same code as a loop over the fields, without the loop: unpacking each field's spec
    and testing its kind, per field and per event, was some 4% of a dry run. The source only
    holds ``repr`` literals of the keys and names; everything else is bound by name."""
    scope: dict[str, Any] = {
        "sha256": sha256,
        "_FIELD_ERRORS": _FIELD_ERRORS,
        "_fill_each": _fill_each,
        "fields": fields,
    }
    lines = [
        "def run(event, region, sections, notes):",
        f"    box = event.get({head!r})",
        "    if type(box) is dict:",
        "        user_data = sections[1]",
    ]
    for n, field in enumerate(fields):
        scope[f"put_{n}"] = field.put
        put = f"put_{n}(box, region, user_data, notes)"
        if field.rule is not None:
            # Most values: text in the first key, to normalize and hash right here (not a
            # digest already: those are 64 characters long). The rest is put's, which meets
            # the same error as the rule, if any, and notes it.
            scope[f"rule_{n}"] = field.rule
            lines += [
                f"        value = box.get({field.key!r})",
                "        if type(value) is str and (text := value.strip()) and len(text) != 64:",
                "            try:",
                f"                user_data[{field.name!r}] = ["
                f"sha256(rule_{n}(text, value, region).encode()).hexdigest()]",
                "            except _FIELD_ERRORS:",
                f"                {put}",
                "        else:",
                f"            {put}",
            ]
        elif field.memo is not None:
            # A field that remembers digests: its value found as put finds it (the first
            # sibling neither null nor ""), and looked up right here (the memo holds digests
            # of text only).
            scope[f"memo_{n}"] = field.memo
            seen = "(value, region)" if field.regional else "value"
            first, *rest = field.keys
            lines.append(f"        value = box.get({first!r})")
            for key in rest:
                lines += [
                    '        if value is None or value == "":',
                    f"            value = box.get({key!r})",
                ]
            lines += [
                f"        if type(value) is str and (digest := memo_{n}.get({seen})) is not None:",
                f"            user_data[{field.name!r}] = [digest]",
                "        else:",
                f"            {put}",
            ]
        else:
            lines.append(f"        {put}")
    lines += [
        "    elif box is not None:  # not a dict: each field the general way",
        "        _fill_each(fields, event, region, sections, notes)",
    ]
    exec(compile("\n".join(lines), f"<siblings step {head!r}>", "exec"), scope)
    run: Run = scope["run"]
    return run


def _plain_runner(path: tuple[str, ...], fields: tuple[PlainField, ...]) -> Run:
    def run(event: Mapping[str, Any], region: Any, sections: Sections, notes: Notes) -> None:
        box: Any = event
        for key in path:
            if type(box) is not dict:
                break
            box = box.get(key)
        if type(box) is dict:
            _plain(fields, box, sections, notes)
        elif box is not None:  # not a dict: each field the general way
            _fill_each(fields, event, region, sections, notes)

    if len(path) != 2:
        return run
    first, second = path

    def run_two(event: Mapping[str, Any], region: Any, sections: Sections, notes: Notes) -> None:
        box = event.get(first)
        if type(box) is dict:
            box = box.get(second)
            if type(box) is dict:
                _plain(fields, box, sections, notes)
                return
        if box is not None:
            run(event, region, sections, notes)

    return run_two


def _plain(
    fields: tuple[PlainField, ...],
    box: dict[str, Any],
    sections: Sections,
    notes: list[FieldNote],
) -> None:
    for slot, name, target, key, text, _ in fields:
        value = box.get(key)
        if value is None:
            continue
        if text:
            if type(value) is str:
                value = value.strip()
                if not value:
                    continue
            else:
                try:
                    value = finish_text(value, None)
                except _FIELD_ERRORS as exc:
                    notes.append(field_note(target, exc))
                    continue
        sections[slot][name] = value


def _fill_each(
    fields: tuple[SiblingField, ...] | tuple[PlainField, ...],
    event: Mapping[str, Any],
    region: str | None,
    sections: Sections,
    notes: list[FieldNote],
) -> None:
    for field in fields:
        try:
            value = field.fill(event, region)
        except _FIELD_ERRORS as exc:
            notes.append(field_note(field.target, exc))
            continue
        if value is not MISSING:
            slot = field.slot if isinstance(field, PlainField) else 1
            sections[slot][field.name] = value


def region_reader(country: Plan) -> Callable[[Mapping[str, Any]], str | None]:
    """``f(event)``: the event's region (alpha-2) as read by the ``country`` plan, or None."""
    read = country.read

    def region_of(event: Mapping[str, Any]) -> str | None:
        try:
            value = read(event)
        except EvaluationError:
            return None
        return region_hint(value) if isinstance(value, str) else None

    if country.siblings is None:
        return region_of
    head, keys = country.siblings
    seen = SEEN_REGIONS

    def sibling_region(event: Mapping[str, Any]) -> str | None:
        box = event.get(head)
        if type(box) is not dict:
            return region_of(event)
        for key in keys:
            value = box.get(key)
            if value is not None and value != "":
                if type(value) is str and value in seen:
                    return seen[value]  # region_hint's answer, without the call
                return region_hint(value) if isinstance(value, str) else None
        return None

    return sibling_region
