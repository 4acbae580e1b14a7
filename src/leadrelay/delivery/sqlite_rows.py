"""The SQLite store's rows: events encoded as the parameters of ``sqlite_schema``'s statements,
and its rows decoded as claimed events and records. Split out of ``sqlite_schema`` (house rule:
modules under ~300 lines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

from leadrelay.delivery.encoded import EncodedPayload, fits_int64
from leadrelay.delivery.sqlite_schema import (
    INSERT,
    INSERT_DELIVERED,
    INSERT_QUEUED,
    INSERT_SETTLED,
)
from leadrelay.delivery.store import (
    FINAL_DELIVERY_STATES,
    Claimed,
    EventRecord,
    Incoming,
    OriginalPolicy,
    decode_notes,
    encode_payload,
    keep_original,
)
from leadrelay.outcome import Delivery, Filtered, Payload, State


def _int64(v: int | None) -> int | None:
    # SQLite integers are 64-bit; a wild lead id on a rejected event must not fail the batch
    return v if v is None or -(2**63) <= v < 2**63 else None


# fmt: off
# Row layout of INSERT after the id: key, state, source_event, event_name, lead_id, event_time,
# received_at, updated_at, next_attempt_at, reason, message, field, value, code, subcode,
# fbtrace_id. INSERT_QUEUED: key, source_event, event_name, lead_id, event_time, received_at.
# INSERT_SETTLED: key, state, source_event, event_name, lead_id, event_time, received_at,
# updated_at, next_attempt_at, attempts, reason, message, code, subcode, fbtrace_id, response.
# INSERT_DELIVERED: key, source_event, event_name, lead_id, event_time, received_at, updated_at,
# attempts, message, fbtrace_id.
# INSERT_BODY: payload, notes, original.
Row = tuple[str, tuple[Any, ...], tuple[Any, ...] | None]
"""The statement storing an event, its parameters after the id, and those of its body (if any)."""


def _body(original: bytes | None) -> tuple[Any, ...] | None:  # of an event with no payload
    return None if original is None else (None, None, original)


def _payload_row(o: Payload, original: bytes | None, at: float) -> Row:
    try:
        data, notes = encode_payload(o)
        if not fits_int64(o):
            raise TypeError("lead_id or event_time does not fit in 64 bits")
    except TypeError as exc:  # not plain JSON: say so on the event instead of failing the batch
        message = f"the mapped event cannot be encoded as JSON ({exc}); it was not sent"
        return INSERT, (o.key, "rejected", o.source_event, o.event_name, _int64(o.lead_id),
                        _int64(o.event_time), at, at, None, "unencodable", message, None, None,
                        None, None, None), _body(original)
    return (INSERT_QUEUED, (o.key, o.source_event, o.event_name, o.lead_id, o.event_time, at),
            (data, notes, original))


def encode_row(item: Incoming, policy: OriginalPolicy) -> Row:
    """How to store an incoming outcome: statement and parameters (see ``Row``)."""
    o, at = item.outcome, item.received_at
    original = keep_original(item.original, policy)
    if isinstance(o, Payload):
        return _payload_row(o, original, at)
    if isinstance(o, Filtered):
        return INSERT, (o.key, "filtered", o.source_event, None, None, None, at, at, None,
                        o.reason, o.message, None, None, None, None, None), _body(original)
    return INSERT, (o.key, "rejected", o.source_event, o.event_name, _int64(o.lead_id), None, at,
                    at, None, o.reason, o.message, o.field, o.value, o.code, o.subcode,
                    o.fbtrace_id), _body(original)


def encode_settled_rows(
    settled: Sequence[tuple[Incoming, Delivery]],
    now: float,
    policy: OriginalPolicy,
    drop_delivered: bool,
    due: float | None = None,
) -> list[Row]:
    """How to store payloads with what their delivery made of them, one row each (``record``),
    as ``add`` then ``complete`` would leave them (QUEUED ones due at ``due``, default ``now``,
    as ``retry_later`` leaves them). ``ValueError`` for a state ``complete`` refuses, and for
    what ``add`` would have stored rejected (``unencodable``): such a payload is never sent.
    Each distinct outcome is encoded once, as in ``encode_completions``."""
    rows: list[Row] = []
    encoded: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    delivered = State.DELIVERED
    for item, d in settled:
        o = item.outcome
        if not isinstance(o, Payload):
            raise ValueError(f"event {o.key!r}: only a payload has a delivery to record")
        if not fits_int64(o):
            raise ValueError(f"event {o.key!r}: lead_id or event_time does not fit in 64 bits")
        if (
            drop_delivered
            and d.state is delivered
            and d.reason is None
            and d.code is None
            and d.subcode is None
            and not d.extra
        ):  # most rows: six columns fewer to bind, left NULL (a sixth of what a row costs)
            rows.append((INSERT_DELIVERED, (o.key, o.source_event, o.event_name, o.lead_id,
                         o.event_time, item.received_at, now, d.attempts, d.message,
                         d.fbtrace_id), None))
            continue
        values = _completion(0, d, now, encoded)
        row = (o.key, values[0], o.source_event, o.event_name, o.lead_id, o.event_time,
               item.received_at, now, values[2] if due is None or values[2] is None else due,
               d.attempts, *values[4:])
        if drop_delivered and d.state is State.DELIVERED:
            rows.append((INSERT_SETTLED, row, None))
        else:  # sent or about to be: it encodes
            data, notes = encode_payload(o)
            rows.append((INSERT_SETTLED, row, (data, notes, keep_original(item.original, policy))))
    return rows


def encode_completion(id_: int, d: Delivery, now: float) -> tuple[Any, ...]:
    """The ``UPDATE`` parameters completing event ``id_``, but the id (so that events completed
    alike share them: one statement for a whole delivered batch); ``ValueError`` for a
    non-final state."""
    if d.state not in FINAL_DELIVERY_STATES and d.state is not State.QUEUED:
        raise ValueError(f"event {id_}: cannot complete with state {d.state.value!r}")
    return (d.state.value, now, now if d.state is State.QUEUED else None, d.attempts, d.reason,
            d.message, d.code, d.subcode, d.fbtrace_id,
            orjson.dumps(d.extra) if d.extra else None)
# fmt: on


def encode_completions(
    results: Sequence[tuple[int, Delivery]], now: float
) -> list[tuple[Any, ...]]:
    """The ``COMPLETE`` parameters for ``results``: one row per distinct outcome, its ids last
    (a JSON array), so events completed alike (a delivered batch: all of it) share a statement.
    Each outcome is encoded once; a result with ``extra`` (rare) is encoded on its own."""
    alike: dict[tuple[Any, ...], list[int]] = {}
    encoded: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for id_, d in results:
        alike.setdefault(_completion(id_, d, now, encoded), []).append(id_)
    return [(*values, orjson.dumps(ids)) for values, ids in alike.items()]


def _completion(
    id_: int, d: Delivery, now: float, encoded: dict[tuple[Any, ...], tuple[Any, ...]]
) -> tuple[Any, ...]:
    """``encode_completion`` of ``d``, each distinct outcome encoded once (``encoded`` keeps
    them for the caller's batch); a result with ``extra`` (rare) is encoded on its own."""
    if d.extra:
        return encode_completion(id_, d, now)
    seen = (d.state, d.attempts, d.reason, d.message, d.code, d.subcode, d.fbtrace_id)
    return encoded.get(seen) or encoded.setdefault(seen, encode_completion(id_, d, now))


def decode_claimed(
    rows: list[tuple[Any, ...]], bodies: dict[int, tuple[bytes, bytes | None]]
) -> list[Claimed]:
    """The ``Claimed`` of rows returned by ``CLAIM`` (in order), their payloads from ``bodies``
    (by id). A payload stays encoded: delivery sends these very bytes (``EncodedPayload``)."""
    claimed = []
    for r in rows:
        data, notes = bodies[r[1]]
        payload = EncodedPayload(r[2], r[3], r[4], r[5], r[6], data, decode_notes(notes))
        claimed.append(Claimed(r[1], payload, r[7]))
    return claimed


_STATES: Final = {s.value: s for s in State}  # a lookup: State(text) costs a call each


# fmt: off
def decode_record(r: tuple[Any, ...]) -> EventRecord:
    """The ``EventRecord`` of a row selected with ``RECORD`` (or ``RECORD_LEAN``: a rerun reads
    one per event it finds stored, so the columns without a value are not decoded)."""
    payload, original, response, notes = r[16], r[17], r[18], r[20]
    return EventRecord(
        r[0], r[1], _STATES[r[2]], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
        r[13], r[14], r[15],
        None if payload is None else orjson.loads(payload),
        None if original is None else orjson.loads(original),
        None if response is None else orjson.loads(response),
        r[19], decode_notes(notes) if notes else (), r[21],
    )
# fmt: on
