"""Reading ``send``'s input into the store: every event read, mapped, counted and stored.

One job reads, maps and encodes here, a piece of input at a time; more jobs do it on other
processes, a unit at a time (``store_unit``), and this one only wraps, counts and stores what
they made. Either way each event reaches the store with its original as received (the line, for
NDJSON) and its payload encoded once, and the tally counts it once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any, cast

import orjson
from rich.progress import Progress

from leadrelay.config import Settings
from leadrelay.delivery.encoded import EncodedPayload, compact
from leadrelay.delivery.intake import ChunkedIntake
from leadrelay.delivery.store import Incoming
from leadrelay.events import SourceRecord, read_pieces
from leadrelay.events.ndjson import parse_lines
from leadrelay.mapping.encode import mapped_records
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.pool import UNIT_EVENTS, in_workers, store_unit_task, unpickled
from leadrelay.mapping.store_unit import PLAIN
from leadrelay.outcome import FieldNote, Filtered, Outcome, Payload, Rejected
from leadrelay.summary import Tally


def read_into_store(
    files: Sequence[str],
    settings: Settings,
    jobs: int,
    tally: Tally,
    intake: ChunkedIntake,
    stop: threading.Event,
    progress: Progress | None,
) -> None:
    """Read and map every event (on ``jobs`` processes), count it, and hand it with its
    original to the store."""
    if jobs <= 1:
        _read_here(files, Mapper(settings), tally, intake, stop, progress)
    else:
        _read_in_workers(files, settings, jobs, tally, intake, stop, progress)


def _read_in_workers(
    files: Sequence[str],
    settings: Settings,
    jobs: int,
    tally: Tally,
    intake: ChunkedIntake,
    stop: threading.Event,
    progress: Progress | None,
) -> None:
    """``read_into_store`` on ``jobs`` mapping processes: they read, map and encode a unit of
    input at a time (``store_unit``), and this process wraps what they made, counts it and
    hands it to the store, a unit at a time, as ``_read_here`` does a piece at a time."""
    task = progress.add_task("events", total=None) if progress is not None else None
    read_at = tally.read_at if tally.report is not None else None  # see Tally.read_at
    count = tally.outcome
    tasks = in_workers(files, settings, jobs, UNIT_EVENTS, store_unit_task, read_at is not None)
    with closing(tasks):
        for blob in tasks:
            if stop.is_set():
                break  # what was read is stored (flushed below)
            entries, wheres = unpickled(blob)
            at = time.time()  # when this unit came back
            items: list[Incoming] = []
            add = items.append
            places = iter(wheres) if read_at is not None and wheres is not None else None
            plain = 0
            for entry in entries:
                if len(entry) == PLAIN:
                    key, source, name, lead_id, seconds, body, original = entry
                    payload = EncodedPayload(key, source, name, lead_id, seconds, body)
                    item = Incoming(payload, original, at)
                    plain += 1
                    if places is not None and read_at is not None:
                        read_at[id(item)] = next(places)
                    add(item)
                    continue
                where, packed, error, original = entry
                if packed is None:
                    tally.unreadable(where, error or "unreadable")
                    continue
                outcome = _unpacked(packed)
                count(where, outcome)
                item = Incoming(outcome, original, at)
                if read_at is not None:
                    read_at[id(item)] = where
                add(item)
            tally.plain_payloads(plain)
            intake.put_many(items)
            if progress is not None and task is not None:
                progress.advance(task, len(entries))
    intake.flush()


def _unpacked(packed: Any) -> Payload | Filtered | Rejected:
    """What a mapping process packed (see ``store_unit``) as the outcome the store takes."""
    if type(packed) is not tuple:
        return cast("Filtered | Rejected", packed)
    key, source, name, lead_id, seconds, body, notes = packed
    notes = tuple(FieldNote(*n) for n in notes)
    if type(body) is bytes:
        return EncodedPayload(key, source, name, lead_id, seconds, body, notes)
    return Payload(key, source, name, lead_id, seconds, body, notes)  # not plain JSON


def _read_here(
    files: Sequence[str],
    mapper: Mapper,
    tally: Tally,
    intake: ChunkedIntake,
    stop: threading.Event,
    progress: Progress | None,
) -> None:
    """``read_into_store`` in this process: what ``map_records`` gives, handed over a piece of input
    at a time (a piece is in memory, so waiting for more input never holds events back).

    Payloads without notes are counted in one go (``Tally.plain_payloads``), their ``where``
    never made: the tally does nothing else with them outside a dry run.
    """
    task = progress.add_task("events", total=None) if progress is not None else None
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    map_body = mapper.map_body
    count = tally.outcome
    read = tally.read  # records read (unreadable ones too) that the progress bar has seen
    read_at = tally.read_at if tally.report is not None else None  # see Tally.read_at
    for name in files:
        for piece in read_pieces(name):
            items: list[Incoming] = []
            add = items.append
            at = time.time()  # when this piece was read
            plain = 0
            if isinstance(piece, SourceRecord):
                others = [piece]
            else:
                others = []
                line_no = piece.line_no
                for line in piece.lines:
                    line_no += 1
                    if stop.is_set():
                        break
                    try:
                        event = loads(line)
                    except decode_error:
                        event = None
                    if type(event) is not dict or "batch" in event:
                        # Blank, invalid, a batch envelope, not an object: as parse_lines says.
                        _add_records(
                            mapped_records(mapper, parse_lines([line], name, line_no - 1)),
                            tally,
                            add,
                            at,
                            read_at,
                        )
                        continue
                    original = line.removesuffix(b"\n")  # the event as received
                    found = map_body(event)
                    outcome: Outcome
                    if isinstance(found, tuple):
                        key, source, event_name, lead_id, event_time, data, notes = found
                        try:  # encoded once, here, as the store keeps it (or as mapped)
                            # it may wait in memory a while: copied to a block of its size
                            body = data if type(data) is bytes else compact(dumps(data))
                            outcome = EncodedPayload(
                                key, source, event_name, lead_id, event_time, body, notes
                            )
                        except TypeError:  # not plain JSON: the store says it is unencodable
                            outcome = Payload(*found)
                        if not notes:  # counted at once (a report's row comes at delivery)
                            plain += 1
                            item = Incoming(outcome, original, at)
                            if read_at is not None:
                                read_at[id(item)] = f"{name} line {line_no}"
                            add(item)
                            continue
                    else:
                        outcome = found
                    where = f"{name} line {line_no}"
                    count(where, outcome)
                    item = Incoming(outcome, original, at)
                    if read_at is not None:
                        read_at[id(item)] = where
                    add(item)
            if others and not stop.is_set():
                _add_records(mapped_records(mapper, others), tally, add, at, read_at)
            tally.plain_payloads(plain)
            intake.put_many(items)  # what was read is stored, also when told to stop
            if stop.is_set():
                intake.flush()
                return
            if progress is not None and task is not None:
                progress.advance(task, tally.read - read)
                read = tally.read
    intake.flush()


def _add_records(
    records: Iterator[tuple[str, Outcome | None, str | None, dict[str, Any] | None]],
    tally: Tally,
    add: Callable[[Incoming], None],
    at: float,
    read_at: dict[int, str] | None,
) -> None:
    """Count and collect mapped records (see ``mapped_records``) as ``read_into_store`` does."""
    for where, outcome, error, event in records:
        if outcome is None:
            tally.unreadable(where, error or "unreadable")
            continue
        tally.outcome(where, outcome)
        original = None if event is None else compact(orjson.dumps(event))  # it may wait a while
        item = Incoming(outcome, original, at)
        if read_at is not None:
            read_at[id(item)] = where
        add(item)
