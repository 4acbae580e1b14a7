"""Map and encode many events at once: the inner loop of ``send --dry-run``, on any core.

``encode_unit`` turns a unit of input (NDJSON lines not parsed yet, or records another reader
made) into ``Encoded``: each payload's server event as JSON, in order, and one row for each
outcome the tally has to see by itself (problems, payloads with notes). Payloads without notes
are only counted: the tally does the same for each of them, so one number says it all.

The common NDJSON line (one event object) is parsed, mapped and encoded right here, with no
record object and no ``where`` text made for it; any other line (blank, invalid JSON, a batch
envelope, a value that is not an object) goes through ``parse_lines``, so it gives exactly the
records, and messages, that reading the file the ordinary way gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from leadrelay.events import LineBatch, SourceRecord
from leadrelay.events.ndjson import parse_lines
from leadrelay.mapping.engine import Mapper, Parts
from leadrelay.mapping.usual import BodyParts
from leadrelay.outcome import Outcome, Payload

Row = tuple[Any, ...]
Unit = list[LineBatch | tuple[str, dict[str, Any] | None, str | None]]

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


class Encoded(NamedTuple):
    """What became of a unit of input, as the tally and the request bodies need it.

    ``rows``: ``(where, key, source, name, lead_id, seconds, notes)`` for a payload with notes
    (for every payload when asked), notes as ``(field, reason, message)`` tuples;
    ``(where, outcome)`` for a filtered or rejected event; ``(where, None, error)`` for a record
    that could not be read. Plain tuples: they cross process boundaries pickled.
    """

    bodies: list[bytes]  # each payload's server event as JSON, in input order
    rows: list[Row]
    plain: int  # payloads without notes that have no row


def encode_unit(mapper: Mapper, unit: Unit, every_payload: bool) -> Encoded:
    """Map and encode ``unit``; ``every_payload`` gives every payload a row (for a report)."""
    bodies: list[bytes] = []
    rows: list[Row] = []
    plain = 0
    for piece in unit:
        if isinstance(piece, LineBatch):
            plain += _encode_lines(mapper, piece, every_payload, bodies, rows)
        else:
            where, event, error = piece
            if event is None:
                rows.append((where, None, error or "unreadable"))
            else:
                plain += _encode(mapper.map(event), where, every_payload, bodies, rows)
    return Encoded(bodies, rows, plain)


def _encode_lines(
    mapper: Mapper, batch: LineBatch, every_payload: bool, bodies: list[bytes], rows: list[Row]
) -> int:
    """``encode_unit`` for NDJSON lines; returns how many plain payloads they held."""
    map_body = mapper.map_body
    add = bodies.append
    name, line_no = batch.name, batch.line_no
    plain = 0
    for line in batch.lines:
        line_no += 1
        try:
            event = _loads(line)
        except _JSONDecodeError:
            event = None
        if type(event) is not dict or "batch" in event:
            for record in parse_lines([line], name, line_no - 1):
                plain += _encode_record(mapper, record, every_payload, bodies, rows)
            continue
        found = map_body(event)
        if type(found) is tuple:  # a payload's fields (see Mapper.map_body)
            data = found[5]
            add(data if type(data) is bytes else _dumps(data))
            if not (found[6] or every_payload):
                plain += 1
                continue
            rows.append(_parts_row(f"{name} line {line_no}", found))
        else:
            rows.append((f"{name} line {line_no}", found))
    return plain


def mapped_records(
    mapper: Mapper, records: Iterable[SourceRecord]
) -> Iterator[tuple[str, Outcome | None, str | None, dict[str, Any] | None]]:
    """``mapped`` for records already read."""
    for record in records:
        if record.event is None:
            yield record.where, None, record.error or "unreadable", None
        else:
            yield record.where, mapper.map(record.event), None, record.event


def _encode_record(
    mapper: Mapper, record: SourceRecord, every_payload: bool, bodies: list[bytes], rows: list[Row]
) -> int:
    if record.event is None:
        rows.append((record.where, None, record.error or "unreadable"))
        return 0
    return _encode(mapper.map(record.event), record.where, every_payload, bodies, rows)


def _encode(
    outcome: Outcome, where: str, every_payload: bool, bodies: list[bytes], rows: list[Row]
) -> int:
    """Add one outcome; 1 when it is a plain payload (counted, without a row), else 0."""
    if type(outcome) is Payload:
        bodies.append(_dumps(outcome.data))
        if not (outcome.notes or every_payload):
            return 1
    rows.append(_row(where, outcome))
    return 0


def _parts_row(where: str, parts: Parts | BodyParts) -> Row:
    """``_row`` of the payload ``parts`` are the fields of."""
    key, source, name, lead_id, seconds, _, notes = parts
    return (
        where,
        key,
        source,
        name,
        lead_id,
        seconds,
        tuple((n.field, n.reason, n.message) for n in notes),
    )


def _row(where: str, outcome: Outcome) -> Row:
    if type(outcome) is Payload:
        notes = tuple((n.field, n.reason, n.message) for n in outcome.notes)
        return (
            where,
            outcome.key,
            outcome.source_event,
            outcome.event_name,
            outcome.lead_id,
            outcome.event_time,
            notes,
        )
    return (where, outcome)
