"""The formula node (``Node``), and the functions that get their arguments as nodes and decide
what to read (``IF``, ``COALESCE``). Split out of ``functions`` (house rule: modules under ~300
lines)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leadrelay.mapping.expressions import MISSING, Getter, only_spaces


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled formula value: how to read it from an event, and what is known at compile time."""

    run: Getter
    constant: bool = False
    value: Any = None
    # For nested one-argument calls (SHA256(LOWER(TRIM(x)))): the functions, outermost first,
    # and what feeds the innermost, so the chain runs in one closure instead of one per call.
    chain: tuple[Callable[[Any], Any], ...] = ()
    base: Getter | None = None
    # For a bare property path: its segments (COALESCE reads sibling paths in one go).
    path: tuple[str, ...] = ()
    # For COALESCE of sibling paths: the shared first segment and the last ones.
    siblings: tuple[str, tuple[str, ...]] | None = None


def const(value: Any) -> Node:
    """A node for a value known at compile time."""
    return Node(lambda event: value, True, value)


def build_if(args: list[Node]) -> Node:
    """``IF(condition, then, [else])``: only the branch the condition picks is read."""
    cond, then = args[0], args[1]
    other = args[2] if len(args) > 2 else const(MISSING)
    if cond.constant:
        return then if cond.value else other
    test, yes, no = cond.run, then.run, other.run
    # Truthy unless MISSING, "", false, 0 or an empty list/object (MISSING's bool is False).
    return Node(lambda event: yes(event) if test(event) else no(event))


def _sibling_keys(args: list[Node]) -> tuple[str, tuple[str, ...]] | None:
    """The shared first segment and the last segments when every argument is a path like
    ``user.email`` under the same object (the prebuilt mapping's ``COALESCE``), else None."""
    if not all(len(node.path) == 2 for node in args):
        return None
    heads = {node.path[0] for node in args}
    keys = tuple(node.path[1] for node in args)
    if len(heads) != 1 or any(key.isascii() and key.isdigit() for key in keys):
        return None
    return heads.pop(), keys


def build_coalesce(args: list[Node]) -> Node:
    """``COALESCE(value, fallback, ...)``: the first argument with a value (not MISSING, "" or
    spaces), read one after the other until one has."""
    runs = tuple(node.run for node in args)
    siblings = _sibling_keys(args)
    if siblings is not None:
        run = _coalesce_siblings(*siblings, _build_coalesce_runs(runs))
        return Node(run, siblings=siblings)
    return Node(_build_coalesce_runs(runs))


def _coalesce_siblings(head: str, keys: tuple[str, ...], otherwise: Getter) -> Getter:
    # One look-up of the shared object instead of one walk per argument.
    def coalesce(event: Mapping[str, Any]) -> Any:
        box = event.get(head)
        if type(box) is dict:
            for key in keys:
                value = box.get(key)
                if value is not None and value != "" and not only_spaces(value):
                    return value
            return MISSING
        return otherwise(event)

    return coalesce


def _build_coalesce_runs(runs: tuple[Getter, ...]) -> Getter:
    if len(runs) == 2:
        first, second = runs

        def coalesce2(event: Mapping[str, Any]) -> Any:
            value = first(event)
            if value is MISSING or value == "" or only_spaces(value):
                value = second(event)
                return MISSING if value == "" or only_spaces(value) else value
            return value

        return coalesce2

    def coalesce(event: Mapping[str, Any]) -> Any:
        for run in runs:
            value = run(event)
            if value is not MISSING and value != "" and not only_spaces(value):
                return value
        return MISSING

    return coalesce
