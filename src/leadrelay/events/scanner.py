"""JSON documents streamed element by element: arrays, batch envelopes, concatenated objects.

``json.load`` would hold a whole export in memory. Here a buffer of a chunk or two is scanned
for the end of each top-level element, and only that element's bytes go to ``orjson.loads``.
Finding the end cheaply is what keeps this close to NDJSON speed: first the separator seen
between earlier objects (one ``find``), then bracket counting (``find``/``count``), and only
when strings hold brackets the exact scan that follows strings and escapes token by token.
A guess never needs trusting: the guessed bytes are parsed, and a JSON value that parses
completely cannot be the prefix of a longer one.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from itertools import chain
from typing import Any

import orjson

from leadrelay.events.ndjson import read_ndjson
from leadrelay.events.records import MAX_ELEMENT_BYTES, SourceRecord, batch_of, json_error, record

# Bracket counting is for event-sized elements; past this (a string holding an unbalanced brace
# could make it read far ahead) the exact scanner takes over.
_GUESS_LIMIT = 1 << 16
_DROP_AFTER = 1 << 16  # consumed bytes kept before the buffer is trimmed
_STRUCTURE = re.compile(rb'["{}\[\]]')
_NON_SPACE = re.compile(rb"[^ \t\r\n]")
_SCALAR = re.compile(rb'[^ \t\r\n,:\[\]{}"]+')
_BATCH_HEAD = re.compile(rb'\{[ \t\r\n]*"batch"[ \t\r\n]*:[ \t\r\n]*\[')
_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x7B, 0x7D, 0x5B, 0x5D
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class _ScanError(Exception):
    """The document broke off or went wrong where no later element can be found again."""

    def __init__(self, where: str, problem: str, offset: int) -> None:
        super().__init__(f"{where}: {problem} at byte {offset}; reading stopped there")
        self.where = where


class _Buffer:
    """The bytes read and still needed, and the input offset of the first of them."""

    __slots__ = ("_chunks", "data", "newlines", "offset")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.data = bytearray()
        self.offset = 0
        self.newlines = 0  # in the bytes dropped so far, to number lines if NDJSON turns up

    def more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.data += chunk
        return True

    def drop(self, n: int) -> None:
        """Forget the first ``n`` bytes (indices held by callers shift by ``n``)."""
        self.newlines += self.data.count(b"\n", 0, n)
        del self.data[:n]  # O(1) at the front of a bytearray
        self.offset += n

    def skip_space(self, i: int) -> int:
        """Index of the next non-blank byte at or after ``i``, or -1 at the end of the input."""
        while (m := _NON_SPACE.search(self.data, i)) is None:
            self.drop(len(self.data))
            i = 0
            if not self.more():
                return -1
        return m.start()


def read_json(chunks: Iterator[bytes], name: str) -> Iterator[SourceRecord]:
    """The records of a JSON input: arrays and batch envelopes give one per element (``name item
    3``), other values one each; an input whose first line is a whole object is read as NDJSON.
    A syntax error gives an error record naming the item and byte offset, and ends the input."""
    try:
        yield from _values(_Buffer(chunks), chunks, name)
    except _ScanError as exc:
        yield SourceRecord(exc.where, None, str(exc))


def _values(buf: _Buffer, chunks: Iterator[bytes], name: str) -> Iterator[SourceRecord]:
    n = 0  # elements handed out so far, across arrays and envelopes
    i = buf.skip_space(0)
    while i >= 0:
        c = buf.data[i]
        envelope = _batch_head(buf, i) if c == _LBRACE else -1
        if c == _LBRACKET or envelope > 0:
            n, i = yield from _items(buf, envelope if envelope > 0 else i + 1, n, name)
            if envelope > 0:  # skip the envelope's other keys
                i = _exact_end(buf, i, i, 1, False, f"{name} batch envelope")
        elif n == 0 and c == _LBRACE and _is_line(buf, i):
            first_line = buf.newlines + buf.data.count(b"\n", 0, i)
            yield from read_ndjson(chain((bytes(buf.data[i:]),), chunks), name, first_line)
            return
        else:
            i, value = _value(buf, i, f"{name} item {n + 1}")
            for item in batch if (batch := batch_of(value)) is not None else (value,):
                n += 1
                yield record(f"{name} item {n}", item)
        if i > _DROP_AFTER:
            buf.drop(i)
            i = 0
        i = buf.skip_space(i)


def _items(
    buf: _Buffer, i: int, n: int, name: str
) -> Generator[SourceRecord, None, tuple[int, int]]:
    """Stream the elements of the array whose ``[`` is just before ``i``; return the element
    count so far and the index after the ``]``."""
    sep = b""  # the bytes from one object's "}" to the next one's "{", once seen
    nested = False  # whether objects hold ``sep`` too (lists of objects, such as "items")
    i = buf.skip_space(i)
    if i >= 0 and buf.data[i] == _RBRACKET:
        return n, i + 1
    while True:
        n += 1
        where = f"{name} item {n}"
        if i < 0:
            raise _ScanError(where, "the input ends inside the list (truncated?)", buf.offset)
        data = buf.data
        value, end = None, -1
        if sep and data[i] == _LBRACE:
            value, end = _parse_to(data, i, _after_sep(data, i, sep, nested))
            if end == 0 and not nested:  # the separator occurs inside the object
                nested = True
                value, end = _parse_to(data, i, _after_sep(data, i, sep, True))
        if end <= 0:  # no separator in sight, or a brace in a string fooled the count
            end, value = _value(buf, i, where)
        i = end
        yield record(where, value)
        if sep and data.startswith(sep, i - 1):
            i += len(sep) - 2  # at the next "{"
        else:
            after, offset = i, buf.offset
            i = buf.skip_space(i)
            if i < 0:
                problem = "the input ends inside the list (truncated?)"
                raise _ScanError(f"{name} item {n + 1}", problem, buf.offset)
            c = data[i]
            if c == _RBRACKET:
                return n, i + 1
            if c != _COMMA:
                problem = f"expected ',' or ']' after item {n}, found {chr(c)!r}"
                raise _ScanError(f"{name} item {n + 1}", problem, buf.offset + i)
            i = buf.skip_space(i + 1)
            learn = not sep and buf.offset == offset and after < i < after + 16
            if learn and data[after - 1] == _RBRACE and data[i] == _LBRACE:
                sep = bytes(data[after - 1 : i + 1])
        if i > _DROP_AFTER:
            buf.drop(i)
            i = 0


def _batch_head(buf: _Buffer, i: int) -> int:
    """Index after ``{"batch": [`` when the object at ``i`` opens that way, else -1."""
    while len(buf.data) - i < 64 and buf.more():
        pass
    m = _BATCH_HEAD.match(buf.data, i)
    return m.end() if m is not None else -1


def _is_line(buf: _Buffer, i: int) -> bool:
    """Whether the line from ``i`` is a whole JSON value: then the input is NDJSON."""
    data = buf.data
    while (nl := data.find(b"\n", i)) < 0:
        if len(data) - i > _GUESS_LIMIT or not buf.more():
            nl = len(data)
            break
    try:
        _loads(data[i:nl])
    except _JSONDecodeError:
        return False
    return True


def _value(buf: _Buffer, i: int, where: str) -> tuple[int, Any]:
    """Parse the JSON value starting at ``i``; return the index after it and the value."""
    data = buf.data
    c = data[i]
    if c in (_LBRACE, _LBRACKET):
        end = _guess_end(buf, i)
        if end > 0:
            try:
                return end, _loads(data[i:end])
            except _JSONDecodeError:
                pass  # a bracket inside a string fooled the count, or the element is broken
        end = _exact_end(buf, i, i, 0, False, where)
    elif c == _QUOTE:
        end = _exact_end(buf, i, i + 1, 0, True, where)
    else:
        while (m := _SCALAR.match(data, i)) is not None and m.end() == len(data) and buf.more():
            pass
        if m is None:
            raise _ScanError(where, f"expected a value, found {chr(c)!r}", buf.offset + i)
        end = m.end()
    try:
        return end, _loads(data[i:end])
    except _JSONDecodeError as exc:
        msg, pos = json_error(exc, data[i:end])
        raise _ScanError(where, f"invalid JSON ({msg})", buf.offset + i + pos) from None


def _parse_to(data: bytearray, start: int, end: int) -> tuple[Any, int]:
    """The value in ``data[start:end]`` and ``end``; ``end`` -1 if none given, 0 if not JSON."""
    if end < 0:
        return None, -1
    try:
        return _loads(data[start:end]), end
    except _JSONDecodeError:
        return None, 0


def _after_sep(data: bytearray, start: int, sep: bytes, nested: bool) -> int:
    """Where the object at ``start`` likely ends, seen from the separator that follows it.

    In a uniform export one ``find`` lands on it. When objects hold the separator themselves,
    the first one with balanced braces before it is taken. Returns -1 when none is in sight.
    """
    if not nested:
        j = data.find(sep, start)
        return j + 1 if 0 <= j < start + _GUESS_LIMIT else -1
    opens = closes = 0
    k = start
    while 0 <= (j := data.find(sep, k)) < start + _GUESS_LIMIT:
        opens += data.count(b"{", k, j)
        closes += data.count(b"}", k, j) + 1
        if opens == closes:
            return j + 1
        k = j + 1
    return -1


def _guess_end(buf: _Buffer, start: int) -> int:
    """The end of the object or array at ``start`` if its strings hold no brackets, else -1."""
    data = buf.data
    open_b, close_b = (b"{", b"}") if data[start] == _LBRACE else (b"[", b"]")
    opens = closes = 0
    i = start
    while True:
        j = data.find(close_b, i)
        if j < 0:
            if len(data) - start > _GUESS_LIMIT or not buf.more():
                return -1
            continue
        opens += data.count(open_b, i, j)
        closes += 1
        i = j + 1
        if opens == closes:
            return i


def _exact_end(buf: _Buffer, start: int, i: int, depth: int, in_string: bool, where: str) -> int:
    """The index after the value begun at ``start``, following nesting and escaped strings;
    scanning resumes at ``i`` in the given state, so reading more never rescans."""
    data = buf.data
    while True:
        if in_string:
            k = data.find(b'"', i)
            if k >= 0:
                b = k - 1
                while data[b] == _BACKSLASH:
                    b -= 1
                i = k + 1
                if (k - 1 - b) % 2 == 0:  # an even run of backslashes escapes nothing
                    in_string = False
                    if depth == 0:
                        return i
                continue
        elif (m := _STRUCTURE.search(data, i)) is not None:
            i = m.end()
            c = data[i - 1]
            if c == _QUOTE:
                in_string = True
            elif c in (_LBRACE, _LBRACKET):
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return i
            continue
        i = len(data)
        if i - start > MAX_ELEMENT_BYTES:
            problem = f"larger than {MAX_ELEMENT_BYTES >> 20} MB"
            raise _ScanError(where, problem, buf.offset + start)
        if not buf.more():
            raise _ScanError(where, "the input ends inside it (truncated?)", buf.offset + i)
