"""Formulas (``=LOWER(TRIM(user.email))``): parsed once into nested closures.

Grammar: a formula is ``=`` then one value. A value is a function call ``NAME(value, ...)`` (names
case-insensitive), a bare property path (``user.email``, ``items.0.id``) or ``{{path}}``, a string
in single or double quotes with backslash escapes, a number (``12`` stays an exact int, ``1.5`` is a
float) or ``true``/``false``/``null`` (``null`` is ``MISSING``). There are no operators: comparison
is ``EQUALS(a, b)`` and joining text is ``CONCAT(...)``.

Every mistake is an ``ExpressionError`` with the exact position. Calls whose arguments are all
constants are evaluated at compile time, so ``NUMBER("abc")`` is a config error, not a run-time one.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import hexdigits
from typing import Any, Final, NoReturn

from leadrelay.mapping.expressions import (
    MISSING,
    EvaluationError,
    ExpressionError,
    Getter,
    clip,
    compile_path,
    path_problem,
    read_braced_path,
    render,
)

__all__ = ["FUNCTIONS", "compile_formula"]

_MAX_DEPTH: Final = 32
_WORD: Final = re.compile(r"[\w$@.\-]+")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_INT: Final = re.compile(r"[+-]?[0-9]+")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_LITERALS: Final[dict[str, Any]] = {"true": True, "false": False, "null": MISSING}
_OPERATORS: Final = "=<>!+*/&|"
_ESCAPES: Final = {"\\": "\\", '"': '"', "'": "'", "/": "/", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True, slots=True)
class _Node:
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


def _const(value: Any) -> _Node:
    return _Node(lambda event: value, True, value)


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
    return value is MISSING or (isinstance(value, str | list | tuple | dict) and not value)


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


def _build_if(args: list[_Node]) -> _Node:
    cond, then = args[0], args[1]
    other = args[2] if len(args) > 2 else _const(MISSING)
    if cond.constant:
        return then if cond.value else other
    test, yes, no = cond.run, then.run, other.run
    # Truthy unless MISSING, "", false, 0 or an empty list/object (MISSING's bool is False).
    return _Node(lambda event: yes(event) if test(event) else no(event))


def _sibling_keys(args: list[_Node]) -> tuple[str, tuple[str, ...]] | None:
    """The shared first segment and the last segments when every argument is a path like
    ``user.email`` under the same object (the prebuilt mapping's ``COALESCE``), else None."""
    if not all(len(node.path) == 2 for node in args):
        return None
    heads = {node.path[0] for node in args}
    keys = tuple(node.path[1] for node in args)
    if len(heads) != 1 or any(key.isascii() and key.isdigit() for key in keys):
        return None
    return heads.pop(), keys


def _build_coalesce(args: list[_Node]) -> _Node:
    runs = tuple(node.run for node in args)
    siblings = _sibling_keys(args)
    if siblings is not None:
        run = _coalesce_siblings(*siblings, _build_coalesce_runs(runs))
        return _Node(run, siblings=siblings)
    return _Node(_build_coalesce_runs(runs))


def _coalesce_siblings(head: str, keys: tuple[str, ...], otherwise: Getter) -> Getter:
    # One look-up of the shared object instead of one walk per argument.
    def coalesce(event: Mapping[str, Any]) -> Any:
        box = event.get(head)
        if type(box) is dict:
            for key in keys:
                value = box.get(key)
                if value is not None and value != "":
                    return value
            return MISSING
        return otherwise(event)

    return coalesce


def _build_coalesce_runs(runs: tuple[Getter, ...]) -> Getter:
    if len(runs) == 2:
        first, second = runs

        def coalesce2(event: Mapping[str, Any]) -> Any:
            value = first(event)
            if value is MISSING or value == "":
                value = second(event)
                return MISSING if value == "" else value
            return value

        return coalesce2

    def coalesce(event: Mapping[str, Any]) -> Any:
        for run in runs:
            value = run(event)
            if value is not MISSING and value != "":
                return value
        return MISSING

    return coalesce


@dataclass(frozen=True, slots=True)
class _Function:
    usage: str
    min_args: int
    max_args: int | None
    impl: Callable[..., Any] | None = None  # strict: called with the argument values
    build: Callable[[list[_Node]], _Node] | None = None  # lazy: decides what to evaluate
    checks: tuple[tuple[int, Callable[[Any], Any]], ...] = ()  # applied to constant arguments


FUNCTIONS: Final[dict[str, _Function]] = {
    "COALESCE": _Function("COALESCE(value, fallback, ...)", 1, None, build=_build_coalesce),
    "CONCAT": _Function("CONCAT(value, ...)", 1, None, _concat),
    "EQUALS": _Function("EQUALS(a, b)", 2, 2, _equals),
    "IF": _Function("IF(condition, then, [else])", 2, 3, build=_build_if),
    "ISEMPTY": _Function("ISEMPTY(value)", 1, 1, _isempty),
    "LEFT": _Function("LEFT(text, n)", 2, 2, _left, checks=((1, _left_count),)),
    "LENGTH": _Function("LENGTH(value)", 1, 1, _length),
    "LOWER": _Function("LOWER(text)", 1, 1, _lower),
    "MD5": _Function("MD5(text)", 1, 1, _digest("MD5", hashlib.md5)),
    "NUMBER": _Function("NUMBER(value)", 1, 1, _number),
    "REPLACE": _Function("REPLACE(text, search, replacement)", 3, 3, _replace),
    "RIGHT": _Function("RIGHT(text, n)", 2, 2, _right, checks=((1, _right_count),)),
    "SHA256": _Function("SHA256(text)", 1, 1, _digest("SHA256", hashlib.sha256)),
    "SPLIT": _Function(
        "SPLIT(text, separator, index)", 3, 3, _split, checks=((1, _separator), (2, _split_index))
    ),
    "STRING": _Function("STRING(value)", 1, 1, _string),
    "SUBSTRING": _Function(
        "SUBSTRING(text, start, [length])",
        2,
        3,
        _substring,
        checks=((1, _substring_start), (2, _substring_length)),
    ),
    "TRIM": _Function("TRIM(text)", 1, 1, _trim),
    "UPPER": _Function("UPPER(text)", 1, 1, _upper),
}


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
