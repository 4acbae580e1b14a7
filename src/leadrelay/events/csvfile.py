"""CSV with dotted column names (``user.email``, ``items.0.product.id``) read as nested events,
separated by commas, semicolons or tabs (as its header line says).

Cells stay strings (the mapping layer parses numbers and timestamps) and empty cells are left
out, so a sparse spreadsheet gives the same events as sparse JSON.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any, Final, TypeAlias

from leadrelay.events.records import MAX_ELEMENT_BYTES, InputError, ReadError, SourceRecord

_Node: TypeAlias = int | tuple[bool, list[tuple[Any, "_Node"]]]  # a column, or (is_list, children)
_CONTAINER = {True: "list", False: "object"}
_ARTICLE = {"value": "a", "list": "a", "object": "an"}


def read_csv(chunks: Iterator[bytes], name: str) -> Iterator[SourceRecord]:
    """Read the header now, so a bad one raises ``InputError`` before any record; the rows are
    then read as they are asked for (``name row 7``, counting the header as row 1, as a
    spreadsheet shows it). Rows of empty cells are skipped; a row longer than the header is an
    error record."""
    lines = _text_lines(chunks, name)
    head: list[str] = []  # up to the header, the first line not blank
    for line in lines:
        head.append(line)
        if line.strip():
            break
    reader = csv.reader(chain(head, lines), delimiter=delimiter_of(head[-1] if head else ""))
    try:
        header = next(reader, None)
        while header is not None and not "".join(header).strip():  # blank lines before it
            header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{name}: cannot read the CSV header: {exc}") from exc
    if header is None:
        return iter(())
    return _rows(reader, _compile_header(header, name), len(header), name)


def delimiter_of(header: str) -> str:
    """The delimiter a CSV header line uses: a comma, else a semicolon (what a spreadsheet writes
    where the comma is the decimal mark: France, Germany...), else a tab. Column names hold none
    of them."""
    unquoted = _QUOTED.sub("", header)  # "Nom, prénom" is one column's name
    for delimiter in (",", ";", "\t"):
        if delimiter in unquoted:
            return delimiter
    return ","


_QUOTED: Final = re.compile(r'"[^"]*"')


def _rows(
    reader: Iterator[list[str]], build: Callable[[Sequence[str]], Any], width: int, name: str
) -> Iterator[SourceRecord]:
    row_no = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row_no += 1
            yield SourceRecord(f"{name} row {row_no}", None, f"{name} row {row_no}: {exc}")
            continue
        row_no += 1
        where = f"{name} row {row_no}"
        if len(row) > width:
            problem = f"has {len(row)} cells but the header has {width} columns"
            yield SourceRecord(where, None, f"{where}: {problem}")
        elif any(row):  # rows of empty cells are spreadsheet leftovers, not events
            yield SourceRecord(where, build(row))


def _text_lines(chunks: Iterator[bytes], name: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending, offset = "", 0
    for chunk in chain(chunks, (None,)):
        held = len(decoder.getstate()[0])  # bytes of a character split across chunks
        try:
            text = decoder.decode(chunk or b"", final=chunk is None)
        except UnicodeDecodeError as exc:
            raise ReadError(
                f"{name}: not UTF-8 text at byte {offset - held + exc.start} (from a "
                'spreadsheet, save it as "CSV UTF-8")'
            ) from None
        offset += len(chunk or b"")
        lines = (pending + text).split("\n")
        pending = lines.pop()
        if len(pending) > MAX_ELEMENT_BYTES:
            raise ReadError(f"{name}: a line before byte {offset} is longer than 16 MB")
        for line in lines:
            yield line + "\n"
    if pending:
        yield pending


def _compile_header(header: Sequence[str], name: str) -> Callable[[Sequence[str]], Any]:
    """Turn dotted column names into a builder of nested events (numeric parts: list indices)."""
    claims: dict[tuple[Any, ...], tuple[str, int]] = {}  # path -> (kind, column that set it)
    root: dict[Any, Any] = {}
    columns = [raw.strip() for raw in header]
    for col, column in enumerate(columns):
        parts = column.split(".")
        if not column:
            raise InputError(f"{name}: column {col + 1} of the header has no name")
        if not all(parts):
            raise InputError(f"{name}: column {column!r} has an empty name part")
        path = tuple(int(p) if p.isascii() and p.isdigit() else p for p in parts)
        if type(path[0]) is int:
            raise InputError(f"{name}: column {column!r} cannot start with a list index")
        for depth in range(1, len(path) + 1):
            want = "value" if depth == len(path) else _CONTAINER[type(path[depth]) is int]
            have, by = claims.setdefault(path[:depth], (want, col))
            if by == col or have == want != "value":
                continue
            if have == want:
                raise InputError(f"{name}: column {column!r} appears twice")
            raise InputError(
                f"{name}: columns {columns[by]!r} and {column!r} conflict: "
                f"{'.'.join(parts[:depth])!r} cannot be both {_ARTICLE[have]} {have} "
                f"and {_ARTICLE[want]} {want}"
            )
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = col
    compiled = _compile_node(root)

    def build(row: Sequence[str]) -> Any:
        return _build(compiled, row) or {}

    return build


def _compile_node(node: dict[Any, Any]) -> _Node:
    is_list = type(next(iter(node))) is int
    children = sorted(node.items()) if is_list else list(node.items())
    return is_list, [(k, v if type(v) is int else _compile_node(v)) for k, v in children]


def _build(node: _Node, row: Sequence[str]) -> Any:
    if isinstance(node, int):
        return (row[node] or None) if node < len(row) else None
    is_list, children = node
    if is_list:  # empty items drop out, so the list closes up
        items = [v for _, child in children if (v := _build(child, row)) is not None]
        return items or None
    obj = {k: v for k, child in children if (v := _build(child, row)) is not None}
    return obj or None
