"""Map and encode a unit of input as ``send`` stores it: the work of ``send --jobs N``'s mapping
processes, in the shape that travels back to the sending process cheaply.

``send`` on one core reads, maps and encodes each event in its reader thread and hands the store
an ``Incoming`` per event: the payload encoded once (``EncodedPayload``) and the event as read.
Its mapping processes now do all of that but make the objects: ``store_unit`` gives, in input
order, one plain tuple per event, made only of strings, numbers and bytes (pickle reads those in C,
without a class to look up per object), so that the sending process only wraps them.

- a payload without notes (nearly every event): ``(key, source, name, lead_id, seconds, body,
  original)``, ``body`` its server event as JSON (what the store keeps and the request carries);
- anything else: ``(where, packed, error, original)``: ``packed`` a payload with notes as
  ``(key, source, name, lead_id, seconds, body, notes)``, notes as ``(field, reason, message)``
  tuples (``body`` is the server event itself, a dict, when it is not plain JSON: the store calls
  that payload unencodable), a filtered or rejected event as it is, or None with ``error`` for a
  record that could not be read.

``original`` is the line as read, without its newline (a record of another format: the event as
JSON), as the one-core reader keeps it. With ``wheres``, where each payload without notes was
read comes apart, in order (a report's rows say it); the others carry theirs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from leadrelay.events import LineBatch, SourceRecord
from leadrelay.events.ndjson import parse_lines
from leadrelay.mapping.encode import Unit, mapped_records
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Outcome, Payload

__all__ = ["PLAIN", "StoreUnit", "store_unit"]

PLAIN = 7
"""How long the tuple of a payload without notes is (any other entry has 4 items)."""

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


class StoreUnit(NamedTuple):
    """What ``store_unit`` made of a unit: ``entries`` in input order (see the module) and, when
    asked for, ``wheres``: where each payload without notes was read, in order."""

    entries: list[tuple[Any, ...]]
    wheres: list[str] | None


def store_unit(mapper: Mapper, unit: Unit, wheres: bool) -> StoreUnit:
    """Map and encode every event of ``unit`` as ``send`` stores it (see the module)."""
    entries: list[tuple[Any, ...]] = []
    places: list[str] | None = [] if wheres else None
    for piece in unit:
        if isinstance(piece, LineBatch):
            _lines(mapper, piece, entries, places)
        else:
            _records(mapper, [SourceRecord(*piece)], entries, places)
    return StoreUnit(entries, places)


def _lines(
    mapper: Mapper, batch: LineBatch, entries: list[tuple[Any, ...]], places: list[str] | None
) -> None:
    """``store_unit`` of NDJSON lines: the one-core reader's loop (``send_input._read_here``)."""
    map_body = mapper.map_body
    add = entries.append
    name, line_no = batch.name, batch.line_no
    for line in batch.lines:
        line_no += 1
        try:
            event = _loads(line)
        except _JSONDecodeError:
            event = None
        if type(event) is not dict or "batch" in event:
            # Blank, invalid, a batch envelope, not an object: as parse_lines says.
            _records(mapper, parse_lines([line], name, line_no - 1), entries, places)
            continue
        original = line.removesuffix(b"\n")  # the event as received
        found = map_body(event)
        if type(found) is not tuple:  # filtered or rejected
            add((f"{name} line {line_no}", found, None, original))
            continue
        key, source, event_name, lead_id, seconds, data, notes = found
        try:
            body: Any = data if type(data) is bytes else _dumps(data)
        except TypeError:  # not plain JSON: the store says it is unencodable
            body = data
        else:
            if not notes:
                add((key, source, event_name, lead_id, seconds, body, original))
                if places is not None:
                    places.append(f"{name} line {line_no}")
                continue
        packed = (key, source, event_name, lead_id, seconds, body, _notes(notes))
        add((f"{name} line {line_no}", packed, None, original))


def _records(
    mapper: Mapper,
    records: Any,
    entries: list[tuple[Any, ...]],
    places: list[str] | None,
) -> None:
    """``store_unit`` of records already read (another format, or an odd line): entries of 4."""
    for where, outcome, error, event in mapped_records(mapper, records):
        original = None if event is None else _dumps(event)
        entries.append((where, _packed(outcome), error, original))


def _packed(outcome: Outcome | None) -> Any:
    """A payload as the tuple of the module (its body encoded when it can be), else as it is."""
    if type(outcome) is not Payload:
        return outcome  # filtered or rejected (a few), None for a record that could not be read
    try:
        body: Any = _dumps(outcome.data)
    except TypeError:
        body = outcome.data
    return (
        outcome.key,
        outcome.source_event,
        outcome.event_name,
        outcome.lead_id,
        outcome.event_time,
        body,
        _notes(outcome.notes),
    )


def _notes(notes: Any) -> tuple[tuple[str, str, str], ...]:
    return tuple((n.field, n.reason, n.message) for n in notes)
