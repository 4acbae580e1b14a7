"""Reading ``send``'s input into the store: every event read, mapped, counted and stored.

One job reads and maps here, a piece of input at a time; more jobs map on other processes
(``map_parallel``). Either way each event reaches the store with its original as received, and
the tally counts it once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any

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
from leadrelay.mapping.parallel import map_parallel
from leadrelay.outcome import Outcome, Payload
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
        return
    task = progress.add_task("events", total=None) if progress is not None else None
    report = tally.report is not None  # where each was read is kept (Tally.read_at)
    with closing(map_parallel(files, settings, workers=jobs, originals=True)) as mapped:
        for m in mapped:
            if stop.is_set():
                break  # what was read is stored (flushed below)
            if progress is not None and task is not None:
                progress.advance(task)
            if m.outcome is None:
                tally.unreadable(m.where, m.error or "unreadable")
                continue
            tally.outcome(m.where, m.outcome)
            item = Incoming(m.outcome, m.original, time.time())
            if report:
                tally.read_at[id(item)] = m.where
            intake.put(item)
    intake.flush()


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
    map_parts = mapper.map_parts
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
                    found = map_parts(event)
                    outcome: Outcome
                    if isinstance(found, tuple):
                        key, source, event_name, lead_id, event_time, data, notes = found
                        try:  # encoded once, here, as the store keeps it
                            body = compact(dumps(data))  # it may wait in memory a while
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
