"""A siblings step's fields in one loop: what the code ``filling`` generates for the step does,
field after field, for the compiled build.

Interpreted, the generated code is faster (a block per field, nothing unpacked per event);
compiled with mypyc (a ``LEADRELAY_COMPILE=1`` build), this loop is, by 4-5% of a dry run, and
``filling`` calls it in place of the blocks. The tests hold both to each field's general way.
``fill_fragments`` is the same loop writing the fields' JSON text (``usual.usual_body``); both
find a field's digest through ``digest_in``.
"""

from __future__ import annotations

from typing import Any

from orjson import dumps

from leadrelay.mapping.siblings import FIELD_ERRORS
from leadrelay.mapping.steps import SiblingField
from leadrelay.meta.normalize import sha256
from leadrelay.meta.person import external_id_rule
from leadrelay.outcome import FieldNote


def fill_siblings(
    fields: tuple[SiblingField, ...],
    box: dict[str, Any],
    region: str | None,
    user_data: dict[str, Any],
    notes: list[FieldNote],
) -> None:
    """Set ``fields`` of ``box`` (a dict) in ``user_data``, noting in ``notes`` those left out:
    the digest ``digest_in`` finds, else by the field's ``put``."""
    for field in fields:
        digest = digest_in(field, box, region)
        if digest is not None:
            user_data[field.name] = [digest]
        else:
            field.put(box, region, user_data, notes)


def fill_fragments(
    fields: tuple[SiblingField, ...],
    heads: tuple[str, ...],
    box: dict[str, Any],
    region: str | None,
    parts: list[str],
    notes: list[FieldNote],
) -> None:
    """``fill_siblings`` writing user_data's JSON text instead of its dict: each field set adds
    ``,"name":`` (``heads``, one per field) and its value to ``parts``, in order. A digest,
    hashed here or remembered, is lowercase hex: written as it is; any other value (``put``'s:
    a list of values, a digest given by the event) through orjson."""
    for n, field in enumerate(fields):
        digest = digest_in(field, box, region)
        if digest is not None:
            parts.append(heads[n])
            parts.append('["')
            parts.append(digest)
            parts.append('"]')
            continue
        put: dict[str, Any] = {}
        field.put(box, region, put, notes)
        if put:
            parts.append(heads[n])
            parts.append(dumps(put[field.name]).decode())


def digest_in(field: SiblingField, box: dict[str, Any], region: str | None) -> str | None:
    """The field's digest found the short way, or None for ``put`` to take the field the
    general way (which meets the same error, if any, and notes it): text in the first key
    normalized and hashed (not a digest already: those are 64 characters long), or a repeating
    field's digest looked up in its memo."""
    rule = field.rule
    if rule is not None:
        value = box.get(field.key)
        if type(value) is str:
            text = value.strip()
            if text and len(text) != 64:
                try:
                    normal = text if rule is external_id_rule else rule(text, value, region)
                    return sha256(normal.encode()).hexdigest()
                except FIELD_ERRORS:
                    return None
    elif field.memo is not None:
        keys = field.keys
        value = box.get(keys[0])
        for key in keys[1:]:
            if value is None or value == "":
                value = box.get(key)
        if type(value) is str:
            return field.memo.get((value, region) if field.regional else value)
    return None
