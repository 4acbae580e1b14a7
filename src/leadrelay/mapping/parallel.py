"""``send --dry-run`` on every core: input files read, mapped and encoded in worker processes.

``map_records`` reads and maps in this process. ``dry_run_parallel`` is ``send --dry-run`` on any
number of processes (see ``pool``): workers map and encode, this process only counts the
problems and writes bytes, identical whatever the number of workers. (A real send's mapping
processes: ``send_input``.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from typing import IO, Any, Final, NamedTuple

import orjson

from leadrelay.config import Settings
from leadrelay.events import SourceRecord, read_pieces
from leadrelay.events.ndjson import parse_lines
from leadrelay.mapping.encode import Row, encode_unit, mapped_records
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.pool import (
    UNIT_EVENTS,
    encode_unit_task,
    in_workers,
    units,
)
from leadrelay.outcome import FieldNote, Outcome, Payload
from leadrelay.summary import Tally

__all__ = [
    "UNIT_EVENTS",
    "BodyWriter",
    "Mapped",
    "default_workers",
    "dry_run_parallel",
    "map_records",
    "write_bodies",
]


class Mapped(NamedTuple):
    """One input record and what became of it.

    ``outcome`` is None when the record could not be read; ``error`` then says why (and where).
    """

    where: str
    outcome: Outcome | None
    error: str | None = None


def map_records(files: Sequence[str], mapper: Mapper) -> Iterator[Mapped]:
    """Read and map every event of ``files`` in this process (``send --dry-run`` on one core).

    Raises ``InputError`` (as ``read_events`` does) when a file cannot be opened at all.
    """
    loads = orjson.loads
    map_event = mapper.map
    for name in files:
        for piece in read_pieces(name):
            if isinstance(piece, SourceRecord):
                yield from _as_mapped(mapped_records(mapper, (piece,)))
                continue
            # Inline for the common line (one event object): this runs per event.
            line_no = piece.line_no
            for line in piece.lines:
                line_no += 1
                try:
                    event = loads(line)
                except orjson.JSONDecodeError:
                    event = None
                if type(event) is dict and "batch" not in event:
                    yield Mapped(f"{name} line {line_no}", map_event(event))
                else:  # blank, invalid, a batch envelope, not an object: as parse_lines says
                    records = parse_lines([line], name, line_no - 1)
                    yield from _as_mapped(mapped_records(mapper, records))


def _as_mapped(items: Iterable[tuple[str, Outcome | None, str | None, Any]]) -> Iterator[Mapped]:
    for where, outcome, error, _ in items:
        yield Mapped(where, outcome, error)


def dry_run_parallel(
    files: Sequence[str],
    settings: Settings,
    out: IO[bytes],
    tally: Tally,
    *,
    workers: int,
    unit_events: int = UNIT_EVENTS,
) -> None:
    """``send --dry-run`` on ``workers`` processes: the same bodies, byte for byte, and the same
    tally as ``dry_run(settings, payloads(files, ...), out, tally)``.

    Workers also encode the payloads, so only their JSON comes back, with what the tally needs:
    the outcomes that are not plain payloads (rejected, filtered, unreadable, payloads with
    notes), in order, and how many plain payloads there were. Without a report file that is all
    the tally uses; with one, every payload comes back for its row. The tally sees payloads
    without their ``data`` (it never reads it).
    """
    d = settings.delivery
    every_payload = tally.report is not None
    writer = BodyWriter(out, batch_size=d.batch_size, test_event_code=settings.test_event_code)
    if workers <= 1:
        mapper = Mapper(settings)
        for unit in units(files, unit_events):
            bodies, rows, plain = encode_unit(mapper, unit, every_payload)
            _tally(tally, rows, plain)
            writer.take(bodies)
    else:
        tasks = in_workers(files, settings, workers, unit_events, encode_unit_task, every_payload)
        # Closed explicitly: a Ctrl-C while this process writes or counts (not waiting on the
        # workers) must shut the pool down here, not when the interpreter collects it.
        with closing(tasks):
            for joined, bounds, rows, plain in tasks:
                _tally(tally, rows, plain)
                writer.add_joined(joined, bounds)
    writer.close()


def write_bodies(
    encoded: Iterable[bytes], out: IO[bytes], *, batch_size: int, test_event_code: str | None
) -> None:
    """Write request bodies (``{"data": [...]}`` and the test code), one per line, from server
    events already encoded as JSON, ``batch_size`` events per body."""
    writer = BodyWriter(out, batch_size=batch_size, test_event_code=test_event_code)
    batch: list[bytes] = []
    for item in encoded:
        batch.append(item)
        if len(batch) == batch_size:
            writer.add(batch)
            batch = []
    writer.add(batch)
    writer.close()


class BodyWriter:
    """``write_bodies`` for server events that come a unit at a time: as a list, or joined by
    commas with where each ends (see ``pool.encode_unit_task``)."""

    def __init__(self, out: IO[bytes], *, batch_size: int, test_event_code: str | None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._out = out
        self._size = batch_size
        code = b"" if test_event_code is None else orjson.dumps(test_event_code)
        self._tail = b"]" + (b',"test_event_code":' + code if code else b"") + b"}\n"
        # The body being filled: events, or runs of events.
        self._pieces: list[bytes | memoryview] = []
        self._count = 0  # events in it

    def add(self, events: Sequence[bytes]) -> None:
        """Add events, each encoded on its own."""
        done = 0
        while done < len(events):
            take = min(self._size - self._count, len(events) - done)
            self._pieces += events[done : done + take]
            self._filled(take)
            done += take

    def take(self, events: list[bytes]) -> None:
        """``add``, emptying ``events``: then the writer holds the only references, and each
        body's events are freed right after it is written, while still in the cache, instead
        of all at once when the caller lets go of the list."""
        events.reverse()  # taken from the end: deleting from the front moves all the rest
        while events:
            take = min(self._size - self._count, len(events))
            body = events[-take:]
            del events[-take:]
            body.reverse()
            self._pieces += body
            self._filled(take)

    def add_joined(self, joined: bytes, bounds: Sequence[int]) -> None:
        """Add the events of ``joined``: ``joined[bounds[n] + 1 : bounds[n + 1]]`` is one."""
        done, total = 0, len(bounds) - 1
        view = memoryview(joined)  # slices of it are not copies
        while done < total:
            take = min(self._size - self._count, total - done)
            self._pieces.append(view[bounds[done] + 1 : bounds[done + take]])
            self._filled(take)
            done += take

    def _filled(self, count: int) -> None:
        self._count += count
        if self._count == self._size:
            self._write()

    def _write(self) -> None:
        pieces, out = self._pieces, self._out
        out.write(b'{"data":[')
        if len(pieces) == self._count:  # one per event: joined in one go
            out.writelines(_slices(b",".join(pieces)))
        else:  # runs of events, each already joined: written as they are
            for piece in _between(pieces, b","):
                out.writelines(_slices(piece))
        out.write(self._tail)
        self._pieces, self._count = [], 0

    def close(self) -> None:
        """Write what is left (a last, shorter body) and flush."""
        if self._count:
            self._write()
        self._out.flush()


def default_workers() -> int:
    """The cores this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_NO_DATA: Final[dict[str, Any]] = {}


def _tally(tally: Tally, rows: list[Row], plain: int) -> None:
    """Count a unit's outcomes (see ``Encoded``)."""
    tally.plain_payloads(plain)
    for row in rows:
        if len(row) == 7:  # a payload
            where, key, source, name, lead_id, seconds, notes = row
            notes = tuple(FieldNote(*n) for n in notes)
            tally.outcome(where, Payload(key, source, name, lead_id, seconds, _NO_DATA, notes))
        elif row[1] is None:
            tally.unreadable(row[0], row[2])
        else:
            tally.outcome(row[0], row[1])


_SLICE: Final = 1 << 18
"""Bytes per write of a body. A body of 1,000 events is about 1 MB, as much as a pipe holds at
most (64 KB by default): written whole, it waited for the reader every time (200 times in a dry
run of 200,000 events, 70 ms); in slices, the reader empties the pipe while the rest goes in."""


def _slices(data: bytes | memoryview) -> Iterator[bytes | memoryview]:
    if len(data) <= _SLICE:
        yield data
        return
    view = memoryview(data)
    for start in range(0, len(view), _SLICE):
        yield view[start : start + _SLICE]


def _between(pieces: list[Any], separator: bytes) -> Iterator[Any]:
    yield pieces[0]
    for piece in pieces[1:]:
        yield separator
        yield piece
