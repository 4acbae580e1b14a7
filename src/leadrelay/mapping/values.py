"""What Smart Mapping's expressions give and raise: ``MISSING`` (no value), the errors of a config
(``ExpressionError``) and of a value (``EvaluationError``), and how a value is shown in them.
``leadrelay.mapping.expressions`` says them to the rest of the project."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final

Getter = Callable[[Mapping[str, Any]], Any]
"""What a compiled path or expression is: the event in, the value (or ``MISSING``) out."""


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""The one "no value" marker: absent path, JSON null, or a function with nothing to return."""


def only_spaces(value: Any) -> bool:
    """Text of only spaces: no value, as "" is, to COALESCE and ISEMPTY and to the prebuilt
    customer information read from sibling keys (a CRM export's blank cell: an email of spaces
    does not hide ``email_sha256``). One definition, so both ways of reading agree."""
    return type(value) is str and value.isspace()


_EXCERPT = 24


class ExpressionError(ValueError):
    """A config error in an expression, with the config key and the 0-based problem offset."""

    def __init__(self, message: str, *, key: str, position: int, source: str) -> None:
        self.key = key
        self.position = position
        self.message = message
        self.source = source
        before = source[max(0, position - _EXCERPT) : position]
        after = source[position : position + _EXCERPT]
        if position > _EXCERPT:
            before = "..." + before
        if position + _EXCERPT < len(source):
            after += "..."
        excerpt = repr(before + ">>>" + after)
        super().__init__(f"{key}: {message} (at position {position}: {excerpt})")


class EvaluationError(ValueError):
    """A formula function got a value it cannot use, e.g. ``NUMBER("abc")``.

    ``message`` names the function, what was wrong and the (clipped) value; ``reason`` is a short
    machine-readable code for delivery notes.
    """

    def __init__(self, message: str, *, reason: str = "expression_error") -> None:
        self.message = message
        self.reason = reason
        super().__init__(message)


def clip(value: Any, limit: int = 60) -> str:
    """A value as shown in error messages: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
