"""Smart Mapping expressions: where the value of one Facebook field comes from.

Commanders Act's "dynamic text input" has four forms, and so do we:

- ``Lead form``: a static value, sent as written.
- ``{{user.email}}``: exactly one property path; the value keeps its JSON type.
- ``Stage: {{stage}} ({{context.event_id}})``: a template, rendered to text. If any path in it
  has no value, the whole template has none (we never send ``"Stage: "``).
- ``=SHA256(LOWER(TRIM(user.email)))``: a formula (see ``leadrelay.mapping.formula``). A value
  that must start with ``=`` is written as a formula string literal: ``="=x"``.

Paths are dotted, with numeric segments indexing lists (``items.0.product.id``). A missing step, a
step through a non-container or a JSON null all read as ``MISSING``. Everything is compiled once
into plain closures; evaluating never parses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from leadrelay.mapping.paths import compile_path, path_problem, read_path
from leadrelay.mapping.values import (
    MISSING,
    EvaluationError,
    ExpressionError,
    Getter,
    clip,
    only_spaces,
)

# What the rest of the project imports from here: the expressions, and the values they give.
__all__ = [
    "MISSING",
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "Getter",
    "clip",
    "compile_expression",
    "compile_path",
    "only_spaces",
    "path_problem",
    "read_path",
    "render",
]


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression. ``evaluate(event)`` returns the value or ``MISSING``.

    ``siblings`` is ``(head, keys)`` for ``=COALESCE(user.email, user.email_sha256)``-like
    formulas: whenever ``event[head]`` is a dict, the value is the first of its ``keys`` that is
    neither null nor ``""`` (else MISSING). The engine reads those without a call.
    """

    source: str
    kind: Literal["static", "path", "template", "formula"]
    paths: tuple[str, ...]
    evaluate: Getter
    siblings: tuple[str, tuple[str, ...]] | None = None


# ---------------------------------------------------------------------------- rendering


def render(value: Any) -> str:
    """A value as text, the way templates, ``STRING`` and ``CONCAT`` show it.

    Strings as they are, ints exactly, floats without exponent (``1.0`` -> ``1``), booleans as
    ``true``/``false``, lists and objects as compact JSON, ``MISSING`` as the empty string.
    """
    cls = type(value)
    if cls is str:
        return value  # type: ignore[no-any-return]
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        return _int_text(value)
    if cls is float:
        return _float_text(value)
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(int(value))
    if isinstance(value, float):
        return _float_text(float(value))
    if isinstance(value, list | tuple | dict):
        return _json_text(value)
    return str(value)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # Python refuses to print ints of more than 4300 digits
        raise EvaluationError("integer too large to show as text", reason="invalid_value") from None


def _float_text(value: float) -> str:
    if value.is_integer():
        return str(int(value))
    text = repr(value)
    if "e" in text:
        text = format(Decimal(text), "f")
    return text


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # ints over 64 bits, lone surrogates, deep nesting: the slow encoder copes
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        raise EvaluationError(
            f"cannot show {clip(value)} as JSON", reason="invalid_value"
        ) from None


# ---------------------------------------------------------------------------- expressions


def compile_expression(source: str, *, key: str) -> Expression:
    """Compile a Smart Mapping value (static, ``{{path}}``, template or ``=formula``) once.

    ``key`` names the config entry in error messages. Raises ``ExpressionError`` on any mistake.
    """
    if source.startswith("="):
        # Imported here because the formula module builds on the names defined above.
        from leadrelay.mapping.formula import compile_formula

        run, paths, siblings = compile_formula(source, key=key)
        return Expression(source, "formula", paths, run, siblings)
    if "{{" not in source:
        _no_stray_close(source, (), key=key)
        return Expression(source, "static", (), lambda event: source)
    pieces: list[tuple[str, str]] = []  # (text before, path)
    placeholders: list[tuple[int, int]] = []  # where each {{...}} is in source
    done = 0
    while (start := source.find("{{", done)) >= 0:
        path, end = read_braced_path(source, start, key=key)
        pieces.append((source[done:start], path))
        placeholders.append((start, end))
        done = end
    tail = source[done:]
    _no_stray_close(source, placeholders, key=key)
    paths = tuple(dict.fromkeys(path for _, path in pieces))
    if len(pieces) == 1 and not pieces[0][0] and not tail:
        return Expression(source, "path", paths, compile_path(paths[0], key=key))
    return Expression(source, "template", paths, _template(pieces, tail, key))


def _no_stray_close(source: str, placeholders: Sequence[tuple[int, int]], *, key: str) -> None:
    """Raise for a '}}' that closes no '{{' in the text around the placeholders: a typo, which
    was sent as it is ("{{stage}}}" as the Facebook event name "Won}", "stage}}"). Braces of
    the text's own ('{"a":{"b":1}}', '[CRM] {x}') are counted, so JSON-like text keeps them; a
    lone '}' is text."""
    depth, after = 0, -1  # after: where the last placeholder ended
    bounds = iter(placeholders)
    ahead = next(bounds, None)
    i = 0
    while i < len(source):
        if ahead is not None and i == ahead[0]:
            i = after = ahead[1]
            ahead = next(bounds, None)
            continue
        c = source[i]
        if c == "{":
            depth += 1
        elif c == "}":
            if depth:
                depth -= 1
            elif i == after:
                raise ExpressionError(
                    "one '}' too many after '}}'", key=key, position=i, source=source
                )
            elif source.startswith("}}", i) or source[i - 1 : i + 1] == "}}":
                raise ExpressionError(
                    "'}}' closes no '{{'; write {{path}} to read a property",
                    key=key,
                    position=i if source.startswith("}}", i) else i - 1,
                    source=source,
                )
        i += 1


def read_braced_path(source: str, start: int, *, key: str) -> tuple[str, int]:
    """The validated path in the ``{{ ... }}`` opening at ``start``, and the offset after ``}}``."""
    end = source.find("}}", start + 2)
    if end < 0:
        raise ExpressionError(
            "'{{' is never closed; add '}}' after the property path",
            key=key,
            position=start,
            source=source,
        )
    inner = source[start + 2 : end]
    path = inner.strip()
    offset = start + 2 + (len(inner) - len(inner.lstrip()))
    if not path:
        raise ExpressionError(
            "empty '{{ }}'; put a property path inside, e.g. {{user.email}}",
            key=key,
            position=start,
            source=source,
        )
    problem = path_problem(path)
    if problem is not None:
        raise ExpressionError(problem[1], key=key, position=offset + problem[0], source=source)
    return path, end + 2


def _template(pieces: list[tuple[str, str]], tail: str, key: str) -> Getter:
    parts = tuple((text, compile_path(path, key=key)) for text, path in pieces)
    if len(parts) == 1:
        ((head, get),) = parts

        def one(event: Mapping[str, Any]) -> Any:
            value = get(event)
            if type(value) is str:
                return head + value + tail
            return MISSING if value is MISSING else head + render(value) + tail

        return one

    def evaluate(event: Mapping[str, Any]) -> Any:
        out: list[str] = []
        for text, get in parts:
            value = get(event)
            if value is MISSING:
                return MISSING
            out.append(text)
            out.append(value if type(value) is str else render(value))
        out.append(tail)
        return "".join(out)

    return evaluate
