"""Hashed fields read as ``COALESCE`` of sibling keys (the prebuilt customer information), each
compiled into one closure: ``put(box, region, user_data, notes)``.

``box`` is the object the siblings live in (``event["user"]``, a dict). ``put`` sets the field's
digest in ``user_data`` from the first of its keys that is neither null nor ``""``, or adds a
note saying why it cannot; with no such key it does nothing. This is where most of the time of
a mapping goes, so each field gets the closure made for its kind, hashing inline (as
``text_hasher`` does: a value that already is a digest is kept, lowercased). The most common
case of all, text in the first key, is hashed by the step's loop itself (``filling``), without
calling ``put``.

Values of fields that have few (gender, state, country: see ``REPEATING_FIELDS``) are hashed
once: their closures keep a bounded memo of value (and region, where the rule reads it) to
digest, which the step's loop looks up before it calls ``put`` (and ``put`` before it hashes).
Only digests of text are kept, never errors, and a full memo is emptied and filled again, so it
follows what the traffic holds now.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from leadrelay.mapping.expressions import MISSING, EvaluationError, only_spaces
from leadrelay.mapping.plans import Finisher
from leadrelay.meta.field_rules import lower
from leadrelay.meta.normalize import TextRule, sha256
from leadrelay.meta.rules import FieldProblem
from leadrelay.outcome import FieldNote

MEMO_SIZE: Final = 4096
"""Digests kept per repeating field before its memo is emptied."""

Put = Callable[[dict[str, Any], str | None, dict[str, Any], list[FieldNote]], None]

FIELD_ERRORS: Final = (FieldProblem, EvaluationError)

_is_digest: Final = re.compile(r"[0-9a-fA-F]{64}").fullmatch


def field_note(target: str, exc: Exception) -> FieldNote:
    """The note for a field left out because of ``exc``."""
    reason = getattr(exc, "reason", None) or "expression_error"
    message = getattr(exc, "message", None) or str(exc)
    return FieldNote(target, reason, message)


def sibling_put(
    name: str,
    target: str,
    keys: tuple[str, ...],
    rule: TextRule,
    finish: Finisher,
    *,
    memo: dict[Any, str] | None,
    regional: bool,
) -> Put:
    """The closure for one field (see the module docstring). ``rule`` normalizes trimmed,
    non-empty text (see ``text_rule``); ``finish`` takes everything else (lists, numbers, blank
    text). ``memo`` (None for fields whose values do not repeat) keys digests by value, or by
    (value, region) when ``regional``."""
    first, rest = keys[0], keys[1:]

    def put_value(value: Any, region: str | None, user_data: dict[str, Any], notes: Any) -> None:
        """The field from ``value``, the first sibling's that is not blank."""
        try:
            if type(value) is str and (text := value.strip()):
                if memo is not None:
                    seen = (value, region) if regional else value
                    if (digest := memo.get(seen)) is None:
                        digest = _remember(memo, seen, _digest(rule, text, value, region))
                else:
                    digest = _digest(rule, text, value, region)
                user_data[name] = [digest]
            else:
                user_data[name] = finish(value, region)
        except FIELD_ERRORS as exc:
            notes.append(field_note(target, exc))

    def put(box: dict[str, Any], region: str | None, user_data: dict[str, Any], notes: Any) -> None:
        value = box.get(first)
        if _blank(value):
            value = _next_sibling(box, rest)
            if value is MISSING:
                return
        put_value(value, region, user_data, notes)

    return put


def _next_sibling(box: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The first of ``keys`` in ``box`` that is not blank, else MISSING."""
    for key in keys:
        value = box.get(key)
        if not _blank(value):
            return value
    return MISSING


def _blank(value: Any) -> bool:
    """Null, "" or only spaces: no value, so the next sibling's counts (as COALESCE reads
    it: ``only_spaces``)."""
    return value is None or value == "" or only_spaces(value)


def _digest(rule: TextRule, text: str, value: Any, region: str | None) -> str:
    """``text_hasher``'s digest: the value's own when it already is one, else its rule's."""
    if len(text) == 64 and _is_digest(text) is not None:
        return lower(text)
    return sha256(rule(text, value, region).encode()).hexdigest()


def _remember(memo: dict[Any, str], key: Any, digest: str) -> str:
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = digest
    return digest
