"""Telling the format of input with no known extension (stdin, most often) by its first lines.
Split out of ``leadrelay.events`` (house rule: modules under ~300 lines)."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Final

import orjson

BOM: Final = codecs.BOM_UTF8
_NON_SPACE: Final = re.compile(rb"[^ \t\r\n]")


_SNIFFED_LINE_MAX: Final = 1 << 20


# Lines after the first looked at: a CSV read from a live pipe waits for as many rows.
_SNIFFED_LINES: Final = 2


def sniffed(head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, str]:
    """The format of input with no known extension (stdin, most often), by its first lines:
    JSON when the first starts with ``[`` or ``{``; NDJSON when one of the next few is a JSON
    object or array (after stray lines: an error message, a log line), or when the input is one
    line with no comma, semicolon or tab, which the NDJSON reader says is not JSON; else CSV (a
    header of columns; a row such as "[VIP] Jane,..." is no JSON).
    Taken for CSV, "Internal Server Error" was a header of one column and the input had no
    events ("read 0", exit 0), and NDJSON after a stray line gave one error per event. Returns
    ``head`` with what was read to see the lines whole (blank ones do not count)."""
    first = _NON_SPACE.search(head)
    if first is None:
        return head, "csv"  # blank: no events, whatever the format
    if head[first.start()] in b"[{":
        return head, "json"
    start, ended = first.start(), False
    while len(_lines(head[start:])) <= _SNIFFED_LINES and len(head) - start < _SNIFFED_LINE_MAX:
        chunk = next(chunks, None)
        if chunk is None:
            ended = True
            break
        head += chunk
    # Not empty: the first line is not blank (else it is longer than what is read to see it).
    line, *after = _lines(head[start:], ended=ended) or [b""]
    if any(_json_line(other) for other in after[:_SNIFFED_LINES]):
        return head, "ndjson"
    if not after and not any(c in line for c in (b",", b";", b"\t")):
        return head, "ndjson"
    return head, "csv"


def _json_line(line: bytes) -> bool:
    """Whether ``line`` is a JSON object or array (not a CSV row such as "[VIP] Jane,...")."""
    if line[:1] not in (b"{", b"["):
        return False
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _lines(data: bytes, *, ended: bool = False) -> list[bytes]:
    """The lines of ``data`` that are not blank, stripped; the last one only once it is whole
    (or the input ``ended``)."""
    lines = data.split(b"\n")
    if not ended:
        lines.pop()  # what follows the last newline: not a whole line yet
    return [line.strip() for line in lines if line.strip()]


def head_of(chunks: Iterator[bytes]) -> bytes:
    """The first bytes up to a non-blank one, without a UTF-8 BOM, to tell the format by."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(BOM) and _NON_SPACE.search(head.removeprefix(BOM)):
            break
    return head.removeprefix(BOM)
