"""Property paths (``user.email``, ``items.0.product.id``): checked and compiled once into
getters that read an event's value, or ``MISSING`` for a missing step, a step through a
non-container or a JSON null."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from leadrelay.mapping.values import MISSING, ExpressionError, Getter


def path_problem(text: str) -> tuple[int, str] | None:
    """Offset and description of what is wrong with a dotted path, or None when it is valid."""
    if not text:
        return 0, "empty property path; write one such as user.email"
    after_dot = True
    for offset, char in enumerate(text):
        if char == ".":
            if after_dot:
                what = "starts with '.'" if offset == 0 else "has an empty segment ('..')"
                return offset, f"property path {text!r} {what}"
            after_dot = True
        elif char.isalnum() or char in "_-$@":
            after_dot = False
        else:
            return offset, f"{char!r} cannot appear in a property path"
    if after_dot:
        return len(text) - 1, f"property path {text!r} ends with '.'"
    return None


def compile_path(path: str, *, key: str = "path") -> Getter:
    """A fast getter for a dotted path; it returns ``MISSING`` when the value is absent or null.

    Raises ``ExpressionError`` (under ``key``) when the path is malformed.
    """
    problem = path_problem(path)
    if problem is not None:
        raise ExpressionError(problem[1], key=key, position=problem[0], source=path)
    keys = tuple(path.split("."))
    steps = tuple((k, int(k) if k.isascii() and k.isdigit() else None) for k in keys)
    walk = _walker(steps)
    if any(index is not None for _, index in steps) or len(keys) > 3:
        return walk
    # The common shapes read dicts only; anything else (lists, other Mappings) takes the walk.
    if len(keys) == 1:
        (a,) = keys

        def get1(event: Mapping[str, Any]) -> Any:
            value = event.get(a)
            return MISSING if value is None else value

        return get1
    if len(keys) == 2:
        a, b = keys

        def get2(event: Mapping[str, Any]) -> Any:
            value = event.get(a)
            if type(value) is dict:
                value = value.get(b)
                return MISSING if value is None else value
            return MISSING if value is None else walk(event)

        return get2
    a, b, c = keys

    def get3(event: Mapping[str, Any]) -> Any:
        value = event.get(a)
        if type(value) is dict:
            value = value.get(b)
            if type(value) is dict:
                value = value.get(c)
                return MISSING if value is None else value
        return MISSING if value is None else walk(event)

    return get3


def _walker(steps: tuple[tuple[str, int | None], ...]) -> Getter:
    def walk(event: Mapping[str, Any]) -> Any:
        current: Any = event
        for name, index in steps:
            kind = type(current)
            if kind is dict:
                current = current.get(name)
            elif index is not None and (kind is list or isinstance(current, (list, tuple))):
                current = current[index] if index < len(current) else None
            elif isinstance(current, Mapping):
                current = current.get(name)
            else:
                return MISSING
            if current is None:
                return MISSING
        return current

    return walk


@lru_cache(maxsize=1024)
def _cached_getter(path: str) -> Getter:
    return compile_path(path)


def read_path(event: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in ``event``, or ``MISSING`` (same rules as ``compile_path``)."""
    return _cached_getter(path)(event)
