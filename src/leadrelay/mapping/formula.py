"""Formulas (``=LOWER(TRIM(user.email))``): parsed once into nested closures.

Grammar: a formula is ``=`` then one value. A value is a function call ``NAME(value, ...)`` (names
case-insensitive), a bare property path (``user.email``, ``items.0.id``) or ``{{path}}``, a string
in single or double quotes with backslash escapes, a number (``12`` stays an exact int, ``1.5`` is a
float) or ``true``/``false``/``null`` (``null`` is ``MISSING``). There are no operators: comparison
is ``EQUALS(a, b)`` and joining text is ``CONCAT(...)``.

Every mistake is an ``ExpressionError`` with the exact position. Calls whose arguments are all
constants are evaluated at compile time, so ``NUMBER("abc")`` is a config error, not a run-time one.

The function library lives in ``functions`` (house rule: modules under ~300 lines); ``FUNCTIONS``
is re-exported here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from string import hexdigits
from typing import Any, Final, NoReturn

from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    ExpressionError,
    Getter,
    compile_path,
    path_problem,
    read_braced_path,
)
from leadrelay.mapping.functions import FUNCTIONS
from leadrelay.mapping.functions import Function as _Function
from leadrelay.mapping.lazy_functions import Node as _Node
from leadrelay.mapping.lazy_functions import const as _const

__all__ = ["FUNCTIONS", "compile_formula"]

_MAX_DEPTH: Final = 32
_WORD: Final = re.compile(r"[\w$@.\-]+")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_LITERALS: Final[dict[str, Any]] = {"true": True, "false": False, "null": MISSING}
_OPERATORS: Final = "=<>!+*/&|"
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "/": "/", "n": "\n", "r": "\r", "t": "\t"}


def _strict(impl: Callable[..., Any], args: list[_Node]) -> _Node:
    runs = tuple(node.run for node in args)
    if len(runs) == 1:
        (arg,) = args
        base = arg.base if arg.base is not None else arg.run
        chain = (impl, *arg.chain)
        return _Node(_unary_chain(chain, base), chain=chain, base=base)
    if len(runs) == 2:
        a, b = runs
        return _Node(lambda event: impl(a(event), b(event)))
    if len(runs) == 3:
        a, b, c = runs
        return _Node(lambda event: impl(a(event), b(event), c(event)))
    return _Node(lambda event: impl(*[run(event) for run in runs]))


def _unary_chain(chain: tuple[Callable[[Any], Any], ...], base: Getter) -> Getter:
    if len(chain) == 1:
        (f,) = chain
        return lambda event: f(base(event))
    if len(chain) == 2:
        f, g = chain
        return lambda event: f(g(base(event)))
    if len(chain) == 3:
        f, g, h = chain
        return lambda event: f(g(h(base(event))))
    inner_first = chain[::-1]

    def run(event: Mapping[str, Any]) -> Any:
        value = base(event)
        for function in inner_first:
            value = function(value)
        return value

    return run


# ---------------------------------------------------------------------------- parser


def compile_formula(
    source: str, *, key: str
) -> tuple[Getter, tuple[str, ...], tuple[str, tuple[str, ...]] | None]:
    """Compile ``=...`` into an evaluator, the paths it reads (in order of appearance) and, for a
    ``COALESCE`` of sibling paths, their shared first segment and last segments (see
    ``Expression.siblings``)."""
    parser = _Parser(source, key)
    node = parser.parse()
    return node.run, tuple(parser.paths), node.siblings


class _Parser:
    def __init__(self, source: str, key: str) -> None:
        self.source = source
        self.key = key
        self.at = 1  # after "="
        self.depth = 0
        self.paths: dict[str, None] = {}  # ordered set

    def fail(self, position: int, message: str) -> NoReturn:
        raise ExpressionError(message, key=self.key, position=position, source=self.source)

    def skip_space(self) -> None:
        source, at = self.source, self.at
        while at < len(source) and source[at].isspace():
            at += 1
        self.at = at

    def parse(self) -> _Node:
        self.skip_space()
        if self.at >= len(self.source):
            self.fail(self.at, "empty formula; write a function call, a path or a value after '='")
        node = self.value()
        self.skip_space()
        if self.at < len(self.source):
            char = self.source[self.at]
            if char == ")":
                self.fail(self.at, "unexpected ')' with no matching '('")
            if char in _OPERATORS:
                self.fail(self.at, _unexpected(char))
            self.fail(
                self.at,
                f"unexpected {char!r} after the end of the formula; "
                "a formula is a single value or function call",
            )
        return node

    def value(self) -> _Node:
        source, start = self.source, self.at
        if start >= len(source):
            self.fail(start, "the formula ends where a value was expected")
        char = source[start]
        if char in "\"'":
            return self.string()
        if source.startswith("{{", start):
            path, self.at = read_braced_path(source, start, key=self.key)
            return self.path(path)
        match = _WORD.match(source, start)
        if match is None:
            self.fail(start, _unexpected(char))
        word = match.group()
        self.at = match.end()
        self.skip_space()
        if self.at < len(source) and source[self.at] == "(":
            return self.call(word, start)
        if (literal := word.lower()) in _LITERALS:
            return _const(_LITERALS[literal])
        if _NUMBER.fullmatch(word):
            return _const(float(word) if "." in word else int(word))
        problem = path_problem(word)
        if problem is not None:
            self.fail(start + problem[0], problem[1])
        return self.path(word)

    def path(self, path: str) -> _Node:
        self.paths[path] = None
        return _Node(compile_path(path, key=self.key), path=tuple(path.split(".")))

    def string(self) -> _Node:
        source, opening = self.source, self.at
        quote, at = source[opening], opening + 1
        out: list[str] = []
        while at < len(source):
            char = source[at]
            if char == quote:
                self.at = at + 1
                return _const("".join(out))
            if char == "\\":
                escape = source[at + 1 : at + 2]
                if escape in _ESCAPES:
                    out.append(_ESCAPES[escape])
                    at += 2
                    continue
                if escape == "u":
                    digits = source[at + 2 : at + 6]
                    if len(digits) != 4 or not all(d in hexdigits for d in digits):
                        self.fail(at, "'\\u' must be followed by 4 hex digits")
                    out.append(chr(int(digits, 16)))
                    at += 6
                    continue
                if escape:
                    self.fail(at, f"unknown escape '\\{escape}' in a string; write '\\\\' for '\\'")
            out.append(char)
            at += 1
        self.fail(opening, f"string is never closed; add a closing {quote}")

    def call(self, word: str, start: int) -> _Node:
        source, name = self.source, word.upper()
        if not _NAME.fullmatch(word):
            self.fail(start, f"{word!r} is not a function name, so it cannot be followed by '('")
        function = FUNCTIONS.get(name)
        if function is None:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else "known: " + ", ".join(FUNCTIONS)
            self.fail(start, f"unknown function {word}; {hint}")
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail(start, f"formula nested more than {_MAX_DEPTH} calls deep")
        opening = self.at
        self.at += 1
        args: list[_Node] = []
        starts: list[int] = []
        self.skip_space()
        if self.at < len(source) and source[self.at] == ")":
            self.at += 1
        else:
            while True:
                self.skip_space()
                if self.at >= len(source):
                    self.fail(opening, f"'(' of {name} is never closed; add ')'")
                starts.append(self.at)
                args.append(self.value())
                self.skip_space()
                if self.at >= len(source):
                    self.fail(opening, f"'(' of {name} is never closed; add ')'")
                char = source[self.at]
                self.at += 1
                if char == ")":
                    break
                if char in _OPERATORS:
                    self.fail(self.at - 1, _unexpected(char))
                if char != ",":
                    self.fail(self.at - 1, f"expected ',' or ')' in {name}(...), found {char!r}")
        self.depth -= 1
        return self.apply(name, function, args, starts, start)

    def apply(
        self, name: str, function: _Function, args: list[_Node], starts: list[int], start: int
    ) -> _Node:
        most = function.max_args
        if len(args) < function.min_args or (most is not None and len(args) > most):
            wanted = (
                f"{function.min_args} or more"
                if most is None
                else f"{most}"
                if most == function.min_args
                else f"{function.min_args} to {most}"
            )
            plural = "" if wanted == "1" else "s"
            where = starts[most] if most is not None and len(args) > most else self.at - 1
            self.fail(
                where,
                f"{name} takes {wanted} argument{plural}, got {len(args)}; usage: {function.usage}",
            )
        for index, check in function.checks:
            if index < len(args) and args[index].constant:
                try:
                    check(args[index].value)
                except EvaluationError as exc:
                    self.fail(starts[index], exc.message)
        if function.build is not None:
            return function.build(args)
        assert function.impl is not None
        if all(node.constant for node in args):
            try:
                return _const(function.impl(*[node.value for node in args]))
            except EvaluationError as exc:
                self.fail(start, exc.message)
        return _strict(function.impl, args)


def _unexpected(char: str) -> str:
    if char in "),":
        return f"expected a value before {char!r}"
    if char in "=<>!":
        return f"unexpected {char!r}: there are no comparison operators; use EQUALS(a, b)"
    if char in "+*/&|":
        return f"unexpected {char!r}: there are no operators; use CONCAT(...) to join text"
    return f"unexpected {char!r}; expected a path, a quoted string, a number or a function call"
