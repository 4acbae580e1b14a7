"""The field loop of ``Mapper.map``: all the steps (see ``steps``) as one closure, run per event.

This is the hottest code of the mapping: every ordinary field of every event passes here. The
closure is written out for the config's steps, a block of code each; it reads what each step's
object holds with plain dict look-ups, and calls out only to normalize, hash, or take the
general way (``fill``) for what the look-ups cannot settle: objects that are not dicts, values
that are not text, errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import FunctionType
from typing import Any, Final

from leadrelay.mapping.expressions import MISSING, EvaluationError
from leadrelay.mapping.plans import Plan, finish_text
from leadrelay.mapping.sibling_loop import fill_siblings
from leadrelay.mapping.siblings import FIELD_ERRORS, field_note
from leadrelay.mapping.steps import CONSTANT, PLAIN, SIBLINGS, PlainField, SiblingField, Step
from leadrelay.meta.normalize import region_hint, sha256
from leadrelay.meta.person import external_id_rule
from leadrelay.meta.places import SEEN_REGIONS
from leadrelay.outcome import FieldNote

_FIELD_ERRORS: Final = FIELD_ERRORS
SIBLINGS_LOOP: Final = not isinstance(fill_siblings, FunctionType)
"""A siblings step calls ``fill_siblings`` (compiled: faster) instead of a block per field."""
_NESTED_PATH: Final = 8  # keys of a plain step's path read in nested code; a loop beyond

Sections = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]
Notes = list[FieldNote]
Run = Callable[[Mapping[str, Any], "str | None", Sections, Notes], None]
EventRun = Callable[[Mapping[str, Any], Sections, Notes], None]


def step_runner(step: Step) -> Run:
    """The closure that runs ``step``: ``run(event, region, sections, notes)``, ``sections``
    being the server event, its user_data and its custom_data (see ``Step.slot``)."""
    return steps_runner((step,))


def steps_runner(steps: Sequence[Step]) -> Run:
    """One closure that runs ``steps``, in order: ``run(event, region, sections, notes)``, as
    running each step's own closure does (see ``event_runner``)."""
    run: Run = _compiled("def run(event, region, sections, notes):", [], steps, {})
    return run


def event_runner(steps: Sequence[Step], country: Plan | None) -> EventRun:
    """``steps_runner`` that reads the event's region itself, first: ``run(event, sections,
    notes)``, the region being what ``region_reader(country)`` reads (None without a
    ``country`` plan). Written out as code: one block per step, in order (the same code as a
    loop over the steps, each with its own closure, without the loop and the calls: a call per
    step and per event, and unpacking each step's spec, cost more than most steps do)."""
    scope: dict[str, Any] = {}
    prologue = ["    region = None"] if country is None else _region_code(country, scope)
    run: EventRun = _compiled("def run(event, sections, notes):", prologue, steps, scope)
    return run


def _compiled(
    header: str, prologue: list[str], steps: Sequence[Step], scope: dict[str, Any]
) -> Any:
    """The function ``header`` starts, with ``prologue`` then a block per step as its body.
    The source only holds ``repr`` literals of keys, names and section numbers; everything
    else is bound by name in ``scope``, suffixed with the step's number."""
    scope.update(
        MISSING=MISSING,
        sha256=sha256,
        field_note=field_note,
        _FIELD_ERRORS=_FIELD_ERRORS,
        _fill_each=_fill_each,
        _plain=_plain,
    )
    lines = [header, *prologue]
    for n, step in enumerate(steps):
        if step.kind == CONSTANT:
            scope[f"value_{n}"] = step.detail
            lines.append(f"    sections[{step.slot}][{step.name!r}] = value_{n}")
        elif step.kind == SIBLINGS:
            head, fields = step.detail
            lines += _siblings_code(n, head, fields, scope)
        elif step.kind == PLAIN:
            path, plain = step.detail
            lines += _plain_code(n, path, plain, scope)
        else:
            if step.fill is None:  # pragma: no cover - compile_steps gives general steps a fill
                raise ValueError(f"{step.target}: a general step needs a fill")
            scope[f"fill_{n}"] = step.fill
            lines += [
                "    try:",
                f"        value = fill_{n}(event, region)",
                "    except _FIELD_ERRORS as exc:",
                f"        notes.append(field_note({step.target!r}, exc))",
                "    else:",
                "        if value is not MISSING:",
                f"            sections[{step.slot}][{step.name!r}] = value",
            ]
    lines.append("    return None")
    # repr: a name may hold any character, and compile() refuses a file name with a NUL.
    name = f"<steps {', '.join(repr(_label(step)) for step in steps)}>"
    exec(compile("\n".join(lines), name, "exec"), scope)
    return scope["run"]


def _label(step: Step) -> str:
    """What a step reads, to name the generated code after (profiles show it)."""
    if step.kind in (SIBLINGS, PLAIN):
        where = step.detail[0]
        return where if isinstance(where, str) else ".".join(where)
    return step.target


def _siblings_code(
    n: int, head: str, fields: tuple[SiblingField, ...], scope: dict[str, Any]
) -> list[str]:
    """A siblings step's block: one block of code per field, in order (unpacking each field's
    spec and testing its kind, per field and per event, was some 4% of a dry run)."""
    scope[f"fields_{n}"] = fields
    if SIBLINGS_LOOP:
        scope["fill_siblings"] = fill_siblings
        return [
            f"    box = event.get({head!r})",
            "    if type(box) is dict:",
            f"        fill_siblings(fields_{n}, box, region, sections[1], notes)",
            "    elif box is not None:  # not a dict: each field the general way",
            f"        _fill_each(fields_{n}, event, region, sections, notes)",
        ]
    lines = [
        f"    box = event.get({head!r})",
        "    if type(box) is dict:",
        "        user_data = sections[1]",
    ]
    for k, field in enumerate(fields):
        tag = f"{n}_{k}"
        scope[f"put_{tag}"] = field.put
        put = f"put_{tag}(box, region, user_data, notes)"
        if field.rule is not None:
            # Most values: text in the first key, to normalize and hash right here (not a
            # digest already: those are 64 characters long). The rest is put's, which meets
            # the same error as the rule, if any, and notes it.
            scope[f"rule_{tag}"] = field.rule
            # external_id is hashed as it is (trimmed): no call to a rule that changes nothing.
            rule = "text" if field.rule is external_id_rule else f"rule_{tag}(text, value, region)"
            lines += [
                f"        value = box.get({field.key!r})",
                "        if type(value) is str and (text := value.strip()) and len(text) != 64:",
                "            try:",
                f"                user_data[{field.name!r}] = "
                f"[sha256({rule}.encode()).hexdigest()]",
                "            except _FIELD_ERRORS:",
                f"                {put}",
                "        else:",
                f"            {put}",
            ]
        elif field.memo is not None:
            # A field that remembers digests: its value found as put finds it (the first
            # sibling neither null nor ""), and looked up right here (the memo holds digests
            # of text only).
            scope[f"memo_{tag}"] = field.memo
            seen = "(value, region)" if field.regional else "value"
            first, *rest = field.keys
            lines.append(f"        value = box.get({first!r})")
            for key in rest:
                lines += [
                    '        if value is None or value == "":',
                    f"            value = box.get({key!r})",
                ]
            lines += [
                f"        if type(value) is str and "
                f"(digest := memo_{tag}.get({seen})) is not None:",
                f"            user_data[{field.name!r}] = [digest]",
                "        else:",
                f"            {put}",
            ]
        else:
            lines.append(f"        {put}")
    lines += [
        "    elif box is not None:  # not a dict: each field the general way",
        f"        _fill_each(fields_{n}, event, region, sections, notes)",
    ]
    return lines


def _plain_code(
    n: int, path: tuple[str, ...], fields: tuple[PlainField, ...], scope: dict[str, Any]
) -> list[str]:
    """A plain step's block: its object looked up key by key (most events lack it: a few
    look-ups), its fields read by ``_plain``; anything on the way that is not a dict (nor
    null) takes each field the general way."""
    scope[f"fields_{n}"] = fields
    if len(path) > _NESTED_PATH:  # a loop: Python allows 100 levels of indentation, no more
        scope[f"path_{n}"] = path
        return [
            "    box = event",
            f"    for key in path_{n}:",
            "        if type(box) is not dict:",
            "            break",
            "        box = box.get(key)",
            "    if type(box) is dict:",
            f"        _plain(fields_{n}, box, sections, notes)",
            "    elif box is not None:  # not a dict: each field the general way",
            f"        _fill_each(fields_{n}, event, region, sections, notes)",
        ]
    if path:
        reads = [f"box = event.get({path[0]!r})", *(f"box = box.get({k!r})" for k in path[1:])]
    else:
        reads = ["box = event"]
    lines = []
    for depth, read in enumerate(reads):
        pad = "    " * (depth + 1)
        lines += [pad + read, pad + "if type(box) is dict:"]
    lines.append("    " * (len(reads) + 1) + f"_plain(fields_{n}, box, sections, notes)")
    for depth in reversed(range(len(reads))):
        pad = "    " * (depth + 1)
        lines += [
            pad + "elif box is not None:  # not a dict: each field the general way",
            pad + f"    _fill_each(fields_{n}, event, region, sections, notes)",
        ]
    return lines


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
    scope: dict[str, Any] = {}
    # Not named region_of: that is the general reader the lines call for an event whose object
    # is not a dict, and the function defined here took its place in ``scope`` (it called
    # itself for good: an event with no "user" object ended in RecursionError).
    lines = ["def read_region(event):", *_region_code(country, scope), "    return region"]
    exec(compile("\n".join(lines), f"<region of {country.source!r}>", "exec"), scope)
    read_region: Callable[[Mapping[str, Any]], str | None] = scope["read_region"]
    return read_region


def _region_code(country: Plan, scope: dict[str, Any]) -> list[str]:
    """Lines that set ``region`` to the event's region: ``region_hint`` of what ``country``
    reads (None for anything but text). Read in place for the prebuilt COALESCE of sibling keys,
    which ``region_hint``'s memo mostly answers (looked up without the call)."""
    read = country.read

    def region_of(event: Mapping[str, Any]) -> str | None:
        try:
            value = read(event)
        except EvaluationError:
            return None
        return region_hint(value) if isinstance(value, str) else None

    scope.update(region_of=region_of, region_hint=region_hint, SEEN_REGIONS=SEEN_REGIONS)
    if country.siblings is None:
        return ["    region = region_of(event)"]
    head, keys = country.siblings
    lines = [f"    box = event.get({head!r})", "    if type(box) is dict:"]
    # The first sibling neither null nor "" (else None), a test per key...
    lines.append(f"        region = box.get({keys[0]!r})")
    for key in keys[1:]:
        lines += [
            '        if region is None or region == "":',
            f"            region = box.get({key!r})",
        ]
    lines += [
        '        if region == "":',
        "            region = None",
        # ... then region_hint's answer, looked up in its memo without the call when it can be.
        "        if type(region) is str and region in SEEN_REGIONS:",
        "            region = SEEN_REGIONS[region]",
        "        elif region is not None:",
        "            region = region_hint(region) if isinstance(region, str) else None",
        "    else:",
        "        region = region_of(event)",
    ]
    return lines
