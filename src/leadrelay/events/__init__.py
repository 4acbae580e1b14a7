"""Reading Commanders Act events from files, stdin and HTTP bodies, streaming.

An event is one flat JSON object (``event_name``, ``user``, ``context`` ...). Inputs hold them as
NDJSON, a JSON array, the HTTP Tracking API envelope ``{"batch": [...]}``, single or concatenated
objects, or CSV with dotted column names. Memory stays flat whatever the input size: NDJSON goes
line by line and JSON arrays element by element, so a 5 GB export reads like a 5 kB one.

Every event comes out as a ``SourceRecord`` that says where it came from; an unreadable one comes
out as a record with an ``error`` instead of stopping the run, so nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import os
import stat
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import BinaryIO, Literal, TypeVar, cast

import orjson

from leadrelay.events.csvfile import read_csv
from leadrelay.events.ndjson import parse_lines, read_ndjson, split_ndjson
from leadrelay.events.records import (
    MAX_ELEMENT_BYTES,
    InputError,
    ReadError,
    SourceRecord,
    batch_of,
    record,
)
from leadrelay.events.scanner import read_json
from leadrelay.events.sniff import BOM, head_of, sniffed

__all__ = [
    "MAX_ELEMENT_BYTES",
    "Format",
    "InputError",
    "LineBatch",
    "SourceRecord",
    "check_inputs",
    "is_stream",
    "parse_body",
    "read_events",
    "read_pieces",
]

Format = Literal["auto", "ndjson", "json", "csv"]

_Item = TypeVar("_Item")
_FORMATS = ("auto", "ndjson", "json", "csv")
_BY_EXTENSION = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}
_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


@dataclass(frozen=True, slots=True)
class LineBatch:
    """NDJSON ``lines`` of ``name`` not parsed yet, after ``line_no`` lines: work to hand
    elsewhere. The lines are as read, each with its newline (the input's last line may have
    none); nothing changes the list."""

    name: str
    line_no: int
    lines: list[bytes]

    @property
    def size(self) -> int:
        """How many lines."""
        return len(self.lines)

    def records(self) -> Iterator[SourceRecord]:
        """The records of these lines, exactly as ``read_events`` would give them."""
        return parse_lines(self.lines, self.name, self.line_no)


def read_events(
    source: str | os.PathLike[str],
    *,
    fmt: Format = "auto",
    stdin: BinaryIO | None = None,
    chunk_size: int = 1 << 16,
) -> Iterator[SourceRecord]:
    """Stream the events of a file (``.gz`` decompressed on the fly) or of stdin (``"-"``).

    ``fmt="auto"`` goes by extension (``.ndjson``/``.jsonl``, ``.json``, ``.csv``, after
    ``.gz``), else by its first lines (``sniff.sniffed``): ``[`` or ``{`` first is JSON (an array, a
    batch envelope, one or several objects, NDJSON), a stray line before ``{`` is NDJSON (the
    line said not JSON), else CSV. A UTF-8 BOM is ignored.
    Raises ``InputError`` here, before the first record, when the input cannot be opened or
    read at all or its CSV header is unusable; later problems come out as error records.
    """
    return _read(source, fmt, stdin, chunk_size, _records)


def read_pieces(
    source: str | os.PathLike[str],
    *,
    fmt: Format = "auto",
    stdin: BinaryIO | None = None,
    chunk_size: int = 1 << 16,
) -> Iterator[SourceRecord | LineBatch]:
    """``read_events`` for parallel work: NDJSON comes as unparsed ``LineBatch`` es (about a chunk
    of lines each; ``batch.records()`` parses them, anywhere), other formats as records."""
    return _read(source, fmt, stdin, chunk_size, _pieces)


def _records(kind: str, data: Iterator[bytes], name: str) -> Iterator[SourceRecord]:
    if kind == "ndjson":
        return read_ndjson(data, name)
    if kind == "json":
        return read_json(data, name)
    return read_csv(data, name)


def _pieces(kind: str, data: Iterator[bytes], name: str) -> Iterator[SourceRecord | LineBatch]:
    if kind == "ndjson":
        return _batches(split_ndjson(data, name), name)
    return _records(kind, data, name)


def is_stream(path: str | os.PathLike[str]) -> bool:
    """A FIFO, a character device, a socket: read as a stream, not as a file (a missing path
    is not: an input error, said when it is opened)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def check_inputs(sources: Sequence[str]) -> None:
    """``InputError`` for the first input that cannot be opened (missing, a directory, not
    readable), before any is read: a send of two files, the second misspelt, had delivered the
    first when it said so. Standard input and streams (a FIFO: opening it would wait for a
    writer) are left to the reader."""
    for path in sources:
        if path == "-" or is_stream(path):
            continue
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise _cannot_open(path, exc) from exc


def _cannot_open(path: str, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot open: {exc.strerror or exc}")


def _read(
    source: str | os.PathLike[str],
    fmt: Format,
    stdin: BinaryIO | None,
    chunk_size: int,
    reader: Callable[[str, Iterator[bytes], str], Iterator[_Item]],
) -> Iterator[_Item | SourceRecord]:
    """Open and sniff the input, then ``reader(kind, chunks, name)`` reads it."""
    path = os.fspath(source)
    if fmt not in _FORMATS:
        raise InputError(f"{path}: unknown format {fmt!r} (use one of {', '.join(_FORMATS)})")
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    stream: BinaryIO
    gzipped = path.lower().endswith(".gz")
    if path == "-":
        name, (stream, owned) = "stdin", (stdin, False) if stdin is not None else _stdin()
    else:
        name, owned = path, True
        try:
            opened = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise _cannot_open(path, exc) from exc
        stream = cast(BinaryIO, opened)
    try:
        chunks = _chunks(stream, chunk_size, name)
        head = head_of(chunks)
        kind: str = fmt
        if kind == "auto":
            extension = os.path.splitext(path[:-3] if gzipped else path)[1].lower()
            kind = _BY_EXTENSION.get(extension, "")
            if not kind:
                head, kind = sniffed(head, chunks)
        records = reader(kind, chain((head,), chunks), name)
    except BaseException as exc:
        if owned:
            stream.close()
        if isinstance(exc, ReadError):
            raise InputError(str(exc)) from exc
        raise
    return _guarded(records, name, stream if owned else None)


def parse_body(
    body: bytes, *, content_type: str | None = None, label: str = "request"
) -> list[SourceRecord]:
    """The events of an HTTP request body: one event object (``request``), an array of them or
    a batch envelope ``{"batch": [...]}`` (``request item 2``), or NDJSON (``request line 2``:
    by content type ``application/x-ndjson`` or ``application/jsonl``, or when the body holds
    several objects). Problems come out as error records, never as exceptions.
    """
    body = body.removeprefix(BOM)
    if not body.strip():
        return [SourceRecord(label, None, f"{label}: the body is empty")]
    mime = (content_type or "").partition(";")[0].strip().lower()
    if mime in _NDJSON_TYPES:
        return list(read_ndjson((body,), label))
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Several top-level values (NDJSON without its content type), or an error to locate.
        return list(read_json(iter((body,)), label))
    if type(value) is list:
        items = value
    elif (batch := batch_of(value)) is not None:
        items = batch
    else:
        return [record(label, value)]
    return [record(f"{label} item {n}", item) for n, item in enumerate(items, 1)]


def _stdin() -> tuple[BinaryIO, bool]:
    """Standard input, read from a copy of its descriptor rather than through
    ``sys.stdin.buffer``, and whether the caller closes it. A thread blocked reading a quiet pipe
    then holds no lock the interpreter takes when it exits (it aborted with "Fatal Python error:
    _enter_buffered_busy", see ``send_delivery._in_daemon_thread``)."""
    try:
        fd = os.dup(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor: replaced, or closed
        return sys.stdin.buffer, False
    return cast(BinaryIO, os.fdopen(fd, "rb", buffering=0)), True


def _chunks(stream: BinaryIO, size: int, name: str) -> Iterator[bytes]:
    # read1 hands over what a pipe holds now instead of waiting for a whole chunk.
    read = getattr(stream, "read1", stream.read)
    offset = 0
    while True:
        try:
            chunk: bytes = read(size)
        except EOFError as exc:
            raise ReadError(f"{name}: the file is truncated after byte {offset} ({exc})") from exc
        except (OSError, zlib.error) as exc:
            raise ReadError(f"{name}: cannot read after byte {offset}: {exc}") from exc
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _batches(
    pieces: Iterator[tuple[int, list[bytes]] | SourceRecord], name: str
) -> Iterator[SourceRecord | LineBatch]:
    for piece in pieces:
        yield piece if isinstance(piece, SourceRecord) else LineBatch(name, *piece)


def _guarded(
    records: Iterator[_Item], name: str, owned: BinaryIO | None
) -> Iterator[_Item | SourceRecord]:
    try:
        yield from records
    except ReadError as exc:
        yield SourceRecord(name, None, str(exc))
    finally:
        if owned is not None:
            owned.close()
