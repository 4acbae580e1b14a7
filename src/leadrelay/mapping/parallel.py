"""Mapping on every core: input files read and mapped in worker processes, in input order.

``map_records`` is the one-process path; ``map_parallel`` gives exactly the same ``Mapped`` items
in exactly the same order, using ``workers`` processes. The parent splits the input into units
of about ``unit_events`` events (NDJSON as raw lines, so parsing happens in the workers too;
other formats as records read in the parent), at most two units per worker are in flight, and
results are yielded in submission order: output is identical whatever the number of workers,
and memory is bounded whatever the input size.

Workers are started with ``forkserver`` (``spawn`` where that does not exist): each builds its
own ``Mapper`` from the settings once. Results travel back pickled as plain tuples (much faster
than the outcome objects) and are unpickled one unit at a time as they are consumed, with the
cyclic garbage collector paused meanwhile: tens of thousands of new containers that are alive
anyway would otherwise trigger collections that scan everything alive, again and again (it
made unpickling five times slower). Mapping creates no reference cycles, so workers collect
once per unit instead of on allocation counts.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import IO, Any, Final, NamedTuple

import orjson

from leadrelay.config import Settings
from leadrelay.events import InputError, LineBatch, SourceRecord, read_events, read_pieces
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import FieldNote, Outcome, Payload
from leadrelay.summary import Tally

UNIT_EVENTS: Final = 2000
"""Events per unit of work: large enough that handing a unit over costs little per event."""


class Mapped(NamedTuple):
    """One input record and what became of it.

    ``outcome`` is None when the record could not be read; ``error`` then says why (and where).
    ``original`` is the event as JSON (``orjson.dumps(event)``) when asked for, else None.
    """

    where: str
    outcome: Outcome | None
    error: str | None = None
    original: bytes | None = None


def map_records(
    files: Sequence[str], mapper: Mapper, *, originals: bool = False
) -> Iterator[Mapped]:
    """Read and map every event of ``files`` in this process.

    Raises ``InputError`` (as ``read_events`` does) when a file cannot be opened at all.
    """
    dumps = orjson.dumps
    for name in files:
        for record in read_events(name):
            event = record.event
            if event is None:
                yield Mapped(record.where, None, record.error or "unreadable")
            else:
                yield Mapped(
                    record.where, mapper.map(event), None, dumps(event) if originals else None
                )


def map_parallel(
    files: Sequence[str],
    settings: Settings,
    *,
    workers: int,
    originals: bool = False,
    unit_events: int = UNIT_EVENTS,
) -> Generator[Mapped, None, None]:
    """``map_records`` with ``workers`` processes: the same items, in the same order.

    ``workers <= 1`` maps in this process. Raises ``InputError`` when a file cannot be opened at
    all, like the one-process path (files are opened in this process, one after the other). The
    workers stop when the iterator is exhausted or closed.
    """
    if workers <= 1:
        yield from map_records(files, Mapper(settings), originals=originals)
        return
    for blob in _in_workers(files, settings, workers, unit_events, _map_unit, originals):
        yield from _unpacked(blob)


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
    encoded: Iterator[bytes]
    if workers <= 1:
        mapper = Mapper(settings)
        encoded = (
            orjson.dumps(m.outcome.data)
            for m in _tallied(map_records(files, mapper), tally)
            if type(m.outcome) is Payload
        )
    else:
        every_payload = tally.report is not None
        blobs = _in_workers(files, settings, workers, unit_events, _encode_unit, every_payload)
        encoded = _tallied_encoded(blobs, tally)
    write_bodies(encoded, out, batch_size=d.batch_size, test_event_code=settings.test_event_code)


def write_bodies(
    encoded: Iterable[bytes], out: IO[bytes], *, batch_size: int, test_event_code: str | None
) -> None:
    """Write request bodies (``{"data": [...]}`` and the test code), one per line, from server
    events already encoded as JSON, ``batch_size`` events per body."""
    head = b'{"data":['
    code = (
        b"" if test_event_code is None else b',"test_event_code":' + orjson.dumps(test_event_code)
    )
    tail = b"]" + code + b"}\n"
    batch: list[bytes] = []
    for item in encoded:
        batch.append(item)
        if len(batch) == batch_size:
            out.writelines((head, b",".join(batch), tail))
            batch = []
    if batch:
        out.writelines((head, b",".join(batch), tail))
    out.flush()


def default_workers() -> int:
    """The cores this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------- parent side


def _in_workers(
    files: Sequence[str],
    settings: Settings,
    workers: int,
    unit_events: int,
    task: Callable[[Unit, bool], bytes],
    flag: bool,
) -> Iterator[bytes]:
    """``task(unit, flag)`` for every unit of the input, in worker processes; results in order."""
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_context(),
        initializer=_start_worker,
        initargs=(settings,),
    )
    pending: deque[Future[bytes]] = deque()
    try:
        try:
            for unit in _units(files, unit_events):
                pending.append(pool.submit(task, unit, flag))
                # Two units per worker keep every worker busy while this process consumes one.
                while len(pending) > 2 * workers:
                    yield pending.popleft().result()
        except InputError:
            # As on one core: what was read before the file that cannot be opened comes first.
            while pending:
                yield pending.popleft().result()
            raise
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


Unit = list[LineBatch | tuple[str, dict[str, Any] | None, str | None]]


def _units(files: Sequence[str], size: int) -> Iterator[Unit]:
    """The input in units of about ``size`` events, in order."""
    unit: Unit = []
    count = 0
    for name in files:
        try:
            pieces = read_pieces(name)
        except InputError:
            if unit:  # what was read before goes first, as on one core
                yield unit
            raise
        for piece in pieces:
            if isinstance(piece, SourceRecord):
                unit.append((piece.where, piece.event, piece.error))
                count += 1
            else:
                unit.append(piece)
                count += len(piece.lines)
            if count >= size:
                yield unit
                unit, count = [], 0
    if unit:
        yield unit


def _loads(blob: bytes) -> Any:
    collecting = gc.isenabled()
    gc.disable()  # see the module docstring
    try:
        rows = pickle.loads(blob)
    finally:
        if collecting:
            gc.enable()
    return rows


def _unpacked(blob: bytes) -> Iterator[Mapped]:
    for where, packed, error, original in _loads(blob):
        if type(packed) is tuple:  # a Payload, see _packed
            key, source, name, lead_id, seconds, data, notes = packed
            packed = Payload(
                key, source, name, lead_id, seconds, data, tuple(FieldNote(*n) for n in notes)
            )
        yield Mapped(where, packed, error, original)


def _tallied(items: Iterator[Mapped], tally: Tally) -> Iterator[Mapped]:
    for item in items:
        if item.outcome is None:
            tally.unreadable(item.where, item.error or "unreadable")
        else:
            tally.outcome(item.where, item.outcome)
            yield item


_NO_DATA: Final[dict[str, Any]] = {}


def _tallied_encoded(blobs: Iterator[bytes], tally: Tally) -> Iterator[bytes]:
    for blob in blobs:
        encoded, others, plain = _loads(blob)
        tally.plain_payloads(plain)
        for row in others:
            if len(row) == 7:  # a payload, see _encode_unit
                where, key, source, name, lead_id, seconds, notes = row
                notes = tuple(FieldNote(*n) for n in notes)
                tally.outcome(where, Payload(key, source, name, lead_id, seconds, _NO_DATA, notes))
            elif row[1] is None:
                tally.unreadable(row[0], row[2])
            else:
                tally.outcome(row[0], row[1])
        yield from encoded


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # Workers forked from a server that has imported the mapping start in milliseconds.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------------- worker side

_mapper: Mapper | None = None


def _start_worker(settings: Settings) -> None:
    global _mapper
    _mapper = Mapper(settings)
    gc.freeze()  # what is alive now (modules, the mapper) lives as long as the worker
    gc.disable()  # collected after each unit instead (see the module docstring)


def _map_unit(unit: Unit, originals: bool) -> bytes:
    try:
        return pickle.dumps(_mapped_rows(unit, originals), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        gc.collect()


def _encode_unit(unit: Unit, every_payload: bool) -> bytes:
    """Map and encode: (the JSON of each payload, the other rows for the tally, the number of
    plain payloads). Other rows: (where, key, source, name, lead_id, seconds, notes) for a
    payload with notes (or for every payload when ``every_payload``), (where, outcome) for a
    filtered or rejected event, (where, None, error) for an unreadable record."""
    encoded: list[bytes] = []
    others: list[tuple[Any, ...]] = []
    plain = 0
    dumps = orjson.dumps
    try:
        for where, packed, error, _ in _mapped_rows(unit, False):
            if type(packed) is tuple:
                key, source, name, lead_id, seconds, data, notes = packed
                encoded.append(dumps(data))
                if notes or every_payload:
                    others.append((where, key, source, name, lead_id, seconds, notes))
                else:
                    plain += 1
            elif packed is None:
                others.append((where, None, error))
            else:
                others.append((where, packed))
        return pickle.dumps((encoded, others, plain), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        gc.collect()


def _mapped_rows(unit: Unit, originals: bool) -> list[tuple[Any, ...]]:
    mapper = _mapper
    if mapper is None:  # pragma: no cover - the pool always runs the initializer first
        raise RuntimeError("worker started without settings")
    dumps = orjson.dumps
    rows: list[tuple[Any, ...]] = []
    for piece in unit:
        records = piece.records() if isinstance(piece, LineBatch) else (SourceRecord(*piece),)
        for record in records:
            event = record.event
            if event is None:
                rows.append((record.where, None, record.error or "unreadable", None))
            else:
                rows.append(
                    (
                        record.where,
                        _packed(mapper.map(event)),
                        None,
                        dumps(event) if originals else None,
                    )
                )
    return rows


def _packed(outcome: Outcome) -> Any:
    # Plain tuples pickle in C; slotted dataclasses go through copyreg, twice as slow.
    if type(outcome) is Payload:
        notes = tuple((n.field, n.reason, n.message) for n in outcome.notes)
        return (
            outcome.key,
            outcome.source_event,
            outcome.event_name,
            outcome.lead_id,
            outcome.event_time,
            outcome.data,
            notes,
        )
    return outcome  # Filtered and Rejected are few
