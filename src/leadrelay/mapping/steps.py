"""The ordinary fields of a config as ``Mapper.map`` runs them: a short tuple of steps.

Split out of ``plans`` (house rule: modules under ~300 lines). Everything here runs once per
config; ``filling`` turns each step into the closure that runs it per event. A step is one of:

- a *constant*: a static text or native value (``lead_event_source``), known before any event;
- *siblings*: consecutive hashed fields read as ``COALESCE`` of sibling keys of one object (the
  prebuilt customer information: ``user.email``, ``user.phone`` ...), so the object is looked
  up once per event and each field costs a few dict look-ups;
- *plain*: consecutive text or native fields read from keys of one object
  (``{{context.device.ip}}``, ``{{context.device.user_agent}}``): an event without that object
  costs one look-up for all of them;
- any other field: its ``fill(event, region)`` closure.

Steps keep the order of the plans, so the payload's keys come out in the same order as ever.

Sibling fields are closures (``siblings``), and remember the digests of values that repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from leadrelay.mapping.expressions import compile_expression
from leadrelay.mapping.fields import Treatment
from leadrelay.mapping.plans import Fill, Plan, field_fill
from leadrelay.mapping.siblings import Put, sibling_put
from leadrelay.meta.normalize import (
    REGIONAL_FIELDS,
    REPEATING_FIELDS,
    Reading,
    TextRule,
    text_rule,
)

# Step kinds.
CONSTANT: Final = 0
SIBLINGS: Final = 1
PLAIN: Final = 2
GENERAL: Final = 3

_SLOTS: Final = {"user_data": 1, "custom_data": 2}


class SiblingField(NamedTuple):
    """One field of a siblings step: the first non-empty of sibling keys of the step's object,
    normalized and hashed."""

    name: str
    target: str
    put: Put  # sets the field from the object (see ``siblings``)
    fill: Fill  # the general way, for events whose object is not a dict
    key: str  # the first sibling key
    # Normalizes the first key's text, for the step's loop to hash without calling ``put``
    # (see ``filling``); None for fields that remember digests (the loop looks them up first).
    rule: TextRule | None
    # Fields that remember digests: the memo ``put`` fills, for the step's loop to look the
    # value up in without calling ``put`` (keyed by (value, region) when ``regional``), and
    # all the sibling keys, in order (the state's first key is mostly absent). None else.
    memo: dict[Any, str] | None = None
    keys: tuple[str, ...] = ()
    regional: bool = False


class PlainField(NamedTuple):
    """One field of a plain step: the value of ``key`` in the step's object."""

    slot: int  # where the value goes: 0 the server event, 1 user_data, 2 custom_data
    name: str
    target: str
    key: str
    text: bool  # sent as trimmed text (else as it is)
    fill: Fill  # the general way, for events whose object is not a dict


class Step(NamedTuple):
    """One step of the field loop (see the module docstring)."""

    kind: int
    slot: int  # where values go (constant and general steps)
    name: str
    target: str
    fill: Fill | None  # general steps
    # CONSTANT: the value. SIBLINGS: (head, fields). PLAIN: (path of the object, fields).
    detail: Any


def compile_steps(plans: Sequence[Plan], reading: Reading) -> tuple[Step, ...]:
    """The steps for ``plans`` (the ordinary ones: not lead_id, event_time or event_id)."""
    steps: list[Step] = []
    for plan in plans:
        slot = _SLOTS.get(plan.section or "", 0)
        constant = _constant(plan)
        if constant is not None:
            steps.append(Step(CONSTANT, slot, plan.name, plan.target, None, constant))
            continue
        grouped = _sibling(plan, reading) or _plain(plan, slot, reading)
        if grouped is None:
            fill = field_fill(plan, reading)
            steps.append(Step(GENERAL, slot, plan.name, plan.target, fill, None))
            continue
        kind, where, field = grouped
        last = steps[-1] if steps else None
        if last is not None and last.kind == kind and last.detail[0] == where:
            steps[-1] = last._replace(detail=(where, (*last.detail[1], field)))
        else:
            steps.append(Step(kind, slot, "", "", None, (where, (field,))))
    return tuple(steps)


def sections_of(step: Step) -> frozenset[int]:
    """The sections (``Step.slot`` numbers) ``step`` may write to."""
    if step.kind == SIBLINGS:
        return frozenset({1})
    if step.kind == PLAIN:
        return frozenset(field.slot for field in step.detail[1])
    return frozenset({step.slot})


def _constant(plan: Plan) -> Any:
    """The value a static text or native field always has (None when it is not one, or has no
    value: an empty text is never sent)."""
    if plan.kind != "static" or plan.treatment not in (Treatment.TEXT, Treatment.NATIVE):
        return None
    value = plan.read({})
    if plan.treatment is Treatment.TEXT:
        value = value.strip() if isinstance(value, str) else value
    return value if isinstance(value, str) and value else None


def _sibling(plan: Plan, reading: Reading) -> tuple[int, str, SiblingField] | None:
    if plan.treatment is not Treatment.HASHED or plan.siblings is None:
        return None
    head, keys = plan.siblings
    field = plan.target.rpartition(".")[2]
    rule = text_rule(field, **reading._asdict())
    repeating = field in REPEATING_FIELDS
    memo: dict[Any, str] | None = {} if repeating else None
    regional = field in REGIONAL_FIELDS
    put = sibling_put(plan.name, plan.target, keys, rule, plan.finish, memo=memo, regional=regional)
    fill = field_fill(plan, reading)
    return (
        SIBLINGS,
        head,
        SiblingField(
            plan.name,
            plan.target,
            put,
            fill,
            keys[0],
            None if repeating else rule,
            memo,
            keys,
            regional,
        ),
    )


def _plain(
    plan: Plan, slot: int, reading: Reading
) -> tuple[int, tuple[str, ...], PlainField] | None:
    if plan.kind != "path" or plan.treatment not in (Treatment.TEXT, Treatment.NATIVE):
        return None
    (path,) = compile_expression(plan.source, key=plan.target).paths
    keys = tuple(path.split("."))
    text = plan.treatment is Treatment.TEXT
    fill = field_fill(plan, reading)
    return PLAIN, keys[:-1], PlainField(slot, plan.name, plan.target, keys[-1], text, fill)
