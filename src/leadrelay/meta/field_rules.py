"""The contract between ``normalize`` and its per-field rule modules (``phone``, ``dates``),
and the error type every field rule raises (``meta.rules`` too).

Kept apart so the rule modules can share the error type and rule signatures without importing
``normalize`` (which imports them). Everything here is re-exported by ``normalize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Normalizer = Callable[[Any, str | None], str]
# A field's rule given the trimmed, non-empty text of a value; the value itself comes along for
# error messages and for the few checks that depend on its type (a negative number).
TextRule = Callable[[str, Any, str | None], str]
# The event's country hint (or None) -> the region to read values in (or None).
Resolver = Callable[[str | None], str | None]


class FieldProblem(ValueError):
    """A value that cannot be used for a field: ``reason`` is a code, ``message`` is for people.

    Every field rule raises it: the normalizers here (as ``NormalizeError``) and Meta's lead_id
    and event_time rules (``meta.rules``), so callers catch one type.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


NormalizeError = FieldProblem


def show(value: Any) -> str:
    """``repr`` of a value for error messages, truncated so a long value cannot flood a log."""
    text = repr(value)
    return text if len(text) <= 42 else text[:39] + "..."
