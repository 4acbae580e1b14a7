"""The formula function library (``LOWER``, ``COALESCE``, ``SHA256``...) and the node it builds.

Split out of ``formula`` (house rule: modules under ~300 lines): ``formula`` parses and checks
calls, this module says what each function does. ``FUNCTIONS`` maps each name to a ``Function``:
strict functions get their argument values (``impl``), lazy ones (``IF``, ``COALESCE``, in
``lazy_functions``) get the argument nodes and decide what to evaluate (``build``). Functions
return ``MISSING`` for a missing input rather than raising, and raise ``EvaluationError`` naming
the function for a bad argument.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    clip,
    only_spaces,
    render,
)
from leadrelay.mapping.lazy_functions import Node, build_coalesce, build_if

_INT: Final = re.compile(r"[+-]?[0-9]+")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


# ---------------------------------------------------------------------------- functions


def _text(value: Any) -> str:
    return value if type(value) is str else render(value)


def _whole(function: str, what: str, *, minimum: int | None = None) -> Callable[[Any], int]:
    """A checker turning an argument into an int (``3``, ``3.0``, ``"3"``) or saying why not."""

    def check(value: Any) -> int:
        number: int | None = None
        if type(value) is int:
            number = value
        elif type(value) is float and value.is_integer():
            number = int(value)
        elif type(value) is str and _INT.fullmatch(value.strip()):
            try:
                number = int(value)
            except ValueError:  # more digits than Python will read
                number = None
        if number is None:
            got = "no value" if value is MISSING else clip(value)
            raise EvaluationError(
                f"{function}: {what} must be a whole number, got {got}", reason="invalid_argument"
            )
        if minimum is not None and number < minimum:
            raise EvaluationError(
                f"{function}: {what} must be {minimum} or more, got {number}",
                reason="invalid_argument",
            )
        return number

    return check


def _split_index(value: Any) -> int:
    number = _whole("SPLIT", "index")(value)
    if number == 0:
        raise EvaluationError(
            "SPLIT: index counts from 1 (use -1 for the last part), got 0",
            reason="invalid_argument",
        )
    return number


def _separator(value: Any) -> str:
    text = "" if value is MISSING else _text(value)
    if not text:
        raise EvaluationError("SPLIT: the separator is empty", reason="invalid_argument")
    return text


_substring_start = _whole("SUBSTRING", "start (counted from 1)", minimum=1)
_substring_length = _whole("SUBSTRING", "length", minimum=0)
_left_count = _whole("LEFT", "the number of characters", minimum=0)
_right_count = _whole("RIGHT", "the number of characters", minimum=0)


def _lower(value: Any) -> Any:
    if type(value) is str:
        return value.lower()
    return MISSING if value is MISSING else render(value).lower()


def _upper(value: Any) -> Any:
    if type(value) is str:
        return value.upper()
    return MISSING if value is MISSING else render(value).upper()


def _trim(value: Any) -> Any:
    if type(value) is str:
        return value.strip()
    return MISSING if value is MISSING else render(value).strip()


def _string(value: Any) -> Any:
    return MISSING if value is MISSING else _text(value)


def _concat(*values: Any) -> str:
    return "".join([_text(value) for value in values])


def _replace(text: Any, search: Any, replacement: Any) -> Any:
    if text is MISSING:
        return MISSING
    old = _text(search)
    # An empty search would insert the replacement between every character.
    return _text(text).replace(old, _text(replacement)) if old else _text(text)


def _substring(text: Any, start: Any, length: Any = None) -> Any:
    begin = _substring_start(start) - 1
    count = None if length is None else _substring_length(length)
    if text is MISSING:
        return MISSING
    value = _text(text)
    return value[begin:] if count is None else value[begin : begin + count]


def _left(text: Any, count: Any) -> Any:
    n = _left_count(count)
    return MISSING if text is MISSING else _text(text)[:n]


def _right(text: Any, count: Any) -> Any:
    n = _right_count(count)
    if text is MISSING:
        return MISSING
    value = _text(text)
    return value[max(len(value) - n, 0) :]


def _length(value: Any) -> Any:
    if value is MISSING:
        return MISSING
    if isinstance(value, str | list | tuple | dict):
        return len(value)
    return len(render(value))


def _number(value: Any) -> Any:
    kind = type(value)
    if value is MISSING or kind is int or kind is float:
        return value
    if kind is bool:
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return MISSING
        try:
            # Integers never go through float: a 17-digit id must stay exact.
            if _INT.fullmatch(text):
                return int(text)
            if _DECIMAL.fullmatch(text) and math.isfinite(number := float(text)):
                return number
        except ValueError:  # more digits than Python will read
            pass
        raise EvaluationError(f"NUMBER: not a number: {clip(value)}", reason="invalid_number")
    raise EvaluationError(
        f"NUMBER: cannot turn a {kind.__name__} into a number: {clip(value)}",
        reason="invalid_number",
    )


def _isempty(value: Any) -> bool:
    return (
        value is MISSING
        or (isinstance(value, str | list | tuple | dict) and not value)
        or only_spaces(value)
    )


def _equals(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    if type(a) is type(b):
        return bool(a == b)
    return _text(a) == _text(b)


def _digest(name: str, algorithm: Callable[[bytes], Any]) -> Callable[[Any], Any]:
    def digest(value: Any) -> Any:
        if value is MISSING:
            return MISSING
        try:
            data = (value if type(value) is str else render(value)).encode()
        except UnicodeEncodeError:
            raise EvaluationError(
                f"{name}: text is not valid Unicode: {clip(value)}", reason="invalid_value"
            ) from None
        return algorithm(data).hexdigest()

    return digest


def _split(text: Any, separator: Any, index: Any) -> Any:
    sep = _separator(separator)
    position = _split_index(index)
    if text is MISSING:
        return MISSING
    parts = _text(text).split(sep)
    if position > 0:
        return parts[position - 1] if position <= len(parts) else MISSING
    return parts[position] if -position <= len(parts) else MISSING


@dataclass(frozen=True, slots=True)
class Function:
    """One library function: its usage text, arity and how it is applied."""

    usage: str
    min_args: int
    max_args: int | None
    impl: Callable[..., Any] | None = None  # strict: called with the argument values
    build: Callable[[list[Node]], Node] | None = None  # lazy: decides what to evaluate
    checks: tuple[tuple[int, Callable[[Any], Any]], ...] = ()  # applied to constant arguments


FUNCTIONS: Final[dict[str, Function]] = {
    "COALESCE": Function("COALESCE(value, fallback, ...)", 1, None, build=build_coalesce),
    "CONCAT": Function("CONCAT(value, ...)", 1, None, _concat),
    "EQUALS": Function("EQUALS(a, b)", 2, 2, _equals),
    "IF": Function("IF(condition, then, [else])", 2, 3, build=build_if),
    "ISEMPTY": Function("ISEMPTY(value)", 1, 1, _isempty),
    "LEFT": Function("LEFT(text, n)", 2, 2, _left, checks=((1, _left_count),)),
    "LENGTH": Function("LENGTH(value)", 1, 1, _length),
    "LOWER": Function("LOWER(text)", 1, 1, _lower),
    "MD5": Function("MD5(text)", 1, 1, _digest("MD5", hashlib.md5)),
    "NUMBER": Function("NUMBER(value)", 1, 1, _number),
    "REPLACE": Function("REPLACE(text, search, replacement)", 3, 3, _replace),
    "RIGHT": Function("RIGHT(text, n)", 2, 2, _right, checks=((1, _right_count),)),
    "SHA256": Function("SHA256(text)", 1, 1, _digest("SHA256", hashlib.sha256)),
    "SPLIT": Function(
        "SPLIT(text, separator, index)", 3, 3, _split, checks=((1, _separator), (2, _split_index))
    ),
    "STRING": Function("STRING(value)", 1, 1, _string),
    "SUBSTRING": Function(
        "SUBSTRING(text, start, [length])",
        2,
        3,
        _substring,
        checks=((1, _substring_start), (2, _substring_length)),
    ),
    "TRIM": Function("TRIM(text)", 1, 1, _trim),
    "UPPER": Function("UPPER(text)", 1, 1, _upper),
}
