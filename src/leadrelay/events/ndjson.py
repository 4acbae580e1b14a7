"""NDJSON (JSON Lines): one event per line, read line by line; a bad line does not stop the rest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from io import BytesIO

import orjson

from leadrelay.events.records import (
    MAX_ELEMENT_BYTES,
    SourceRecord,
    batch_of,
    json_error,
    record,
    too_large,
)

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def read_ndjson(chunks: Iterable[bytes], name: str, line_no: int = 0) -> Iterator[SourceRecord]:
    """The records of the lines in ``chunks``; ``line_no`` lines came before them.

    Blank lines are skipped, CRLF is fine, and a line holding a batch envelope gives its events
    (``name line 3 item 2``).
    """
    for piece in split_ndjson(chunks, name, line_no):
        if isinstance(piece, SourceRecord):
            yield piece
        else:
            yield from parse_lines(piece[1], name, piece[0])


def split_ndjson(
    chunks: Iterable[bytes], name: str, line_no: int = 0
) -> Iterator[tuple[int, list[bytes]] | SourceRecord]:
    """The lines of ``chunks``, unparsed, each with its newline (the input's last line may have
    none): ``(lines before them, the lines)`` about a chunk at a time.

    ``parse_lines`` turns them into records anywhere (another process), numbered as
    ``read_ndjson`` numbers them. A line too long to keep comes as its error record.
    """
    parts: list[bytes] = []  # the start of a line whose end has not been read yet
    size = 0
    skipping = False  # inside a line too long to keep: drop bytes until its end
    for chunk in chunks:
        nl = chunk.find(b"\n")
        if nl < 0:
            if not skipping:
                parts.append(chunk)
                size += len(chunk)
                if size > MAX_ELEMENT_BYTES:
                    skipping, parts, size = True, [], 0
            continue
        begin = 0
        if skipping:
            line_no += 1
            yield too_large(f"{name} line {line_no}")
            skipping, begin = False, nl + 1
        end = chunk.rfind(b"\n") + 1
        if begin < end:
            block = b"".join((*parts, chunk[begin:end])) if parts else chunk[begin:end]
            # Split as BytesIO reads lines, finding each newline with memchr: bytes.split and
            # bytes.count test every byte in turn (counting was 1.6% of a dry run's instructions).
            lines = BytesIO(block).readlines()
            yield line_no, lines
            line_no += len(lines)
        tail = chunk[end:]
        parts, size = ([tail], len(tail)) if tail else ([], 0)
    if skipping:
        yield too_large(f"{name} line {line_no + 1}")
    elif parts:
        yield line_no, [b"".join(parts)]


def parse_lines(lines: list[bytes], name: str, line_no: int) -> Iterator[SourceRecord]:
    """The records of NDJSON ``lines`` (with or without their newline) that come after
    ``line_no`` lines of ``name``."""
    for line in lines:
        line_no += 1
        try:
            value = _loads(line)
        except _JSONDecodeError:
            if line.strip():  # blank lines (and a lone CR) are not records
                yield _invalid(line.removesuffix(b"\n"), f"{name} line {line_no}")
            continue
        if type(value) is dict and "batch" not in value:
            yield SourceRecord(f"{name} line {line_no}", value)
        elif (batch := batch_of(value)) is not None:
            for n, item in enumerate(batch, 1):
                yield record(f"{name} line {line_no} item {n}", item)
        else:
            yield record(f"{name} line {line_no}", value)


def _invalid(line: bytes, where: str) -> SourceRecord:
    """The error record of a line that is not JSON, as told of the line without its newline
    (orjson says otherwise of some: an open string is cut short, not holding a control
    character)."""
    try:
        value = _loads(line)
    except _JSONDecodeError as exc:
        msg, pos = json_error(exc, line)
        return SourceRecord(where, None, f"{where}: invalid JSON at column {pos + 1}: {msg}")
    return record(where, value)  # pragma: no cover - a newline does not make JSON invalid
