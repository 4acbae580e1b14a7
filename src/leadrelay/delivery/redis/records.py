"""Events to Redis hash fields and back (the field names are listed in ``lua``).

Everything is stored as strings: ints in decimal (a 17-digit lead id stays exact), floats as
``repr`` (the shortest text that reads back as the same double), JSON as bytes. A field that is
``None`` is simply absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from leadrelay.delivery.encoded import EncodedPayload
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

Value = str | bytes
_QUEUED: Final = State.QUEUED.value


def number(x: float) -> str:
    """A time as the store keeps it: exact, and readable by Lua's ``tonumber``."""
    return repr(float(x))


def _pairs(*fields: tuple[str, Any]) -> list[Value]:
    out: list[Value] = []
    for name, value in fields:
        if value is None:
            continue
        out.append(name)
        out.append(value if isinstance(value, bytes | str) else str(value))
    return out


def payload_fields(p: Payload) -> tuple[bytes, bytes, list[Value]]:
    """A payload's data, its notes (b"" for none) and the hash fields it sets.

    Raises ``TypeError`` when its data is not plain JSON.
    """
    data, notes = encode_payload(p)
    fields = _pairs(
        ("se", p.source_event), ("n", p.event_name), ("l", p.lead_id), ("t", p.event_time)
    )
    return data, notes or b"", fields


def item_args(item: Incoming, policy: OriginalPolicy) -> list[Value]:
    """One item of the ADD script: key, state, reason, received_at, lead, payload, notes,
    original, nfields, fields."""
    o = item.outcome
    at = number(item.received_at)
    original = keep_original(item.original, policy) or b""
    lead, data, notes = "", b"", b""
    if isinstance(o, Payload):
        try:
            data, notes, fields = payload_fields(o)
        except TypeError as exc:  # not plain JSON: say so on the event, not on the batch
            state, reason = State.REJECTED.value, "unencodable"
            message = f"the mapped event cannot be encoded as JSON ({exc}); it was not sent"
            fields = _pairs(
                ("se", o.source_event),
                ("n", o.event_name),
                ("l", o.lead_id),
                ("t", o.event_time),
                ("r", reason),
                ("m", message),
            )
        else:
            state, reason, lead = _QUEUED, "", str(o.lead_id)
            fields += ["na", at]
    elif isinstance(o, Filtered):
        state, reason = State.FILTERED.value, o.reason
        fields = _pairs(("se", o.source_event), ("r", o.reason), ("m", o.message))
    else:
        state, reason = State.REJECTED.value, o.reason
        fields = _pairs(
            ("se", o.source_event),
            ("n", o.event_name),
            ("l", o.lead_id),
            ("r", o.reason),
            ("m", o.message),
            ("f", o.field),
            ("v", o.value),
            ("c", o.code),
            ("sc", o.subcode),
            ("ft", o.fbtrace_id),
        )
    fields = [*_pairs(("k", o.key), ("ra", at), ("ua", at), ("s", state)), *fields]
    return [o.key, state, reason, at, lead, data, notes, original, str(len(fields) // 2), *fields]


def completion_args(id_: int, d: Delivery) -> list[Value]:
    """One result of the COMPLETE script: id, state, attempts, reason, nfields, fields."""
    if d.state not in FINAL_DELIVERY_STATES and d.state is not State.QUEUED:
        raise ValueError(f"event {id_}: cannot complete with state {d.state.value!r}")
    fields = _pairs(
        ("r", d.reason),
        ("m", d.message),
        ("c", d.code),
        ("sc", d.subcode),
        ("ft", d.fbtrace_id),
        ("rs", orjson.dumps(d.extra) if d.extra else None),
    )
    return [
        str(id_),
        d.state.value,
        str(d.attempts),
        d.reason or "",
        str(len(fields) // 2),
        *fields,
    ]


def _text(v: bytes | None) -> str | None:
    return None if v is None else v.decode()


def _int(v: bytes | None) -> int | None:
    return None if v is None else int(v)


def _float(v: bytes | None) -> float | None:
    return None if v is None else float(v)


def _json(v: bytes | None) -> Any:
    return None if v is None else orjson.loads(v)


def claimed(row: Sequence[bytes | None]) -> Claimed:
    """A CLAIM row: id, key, source_event, event_name, lead_id, event_time, attempts, payload,
    notes."""
    id_, key, se, name, lead, t, attempts, data, notes = row
    assert id_ is not None and lead is not None and t is not None and data is not None
    payload = EncodedPayload(  # sent as stored, decoded only if something reads it
        (key or b"").decode(),
        (se or b"").decode(),
        (name or b"").decode(),
        int(lead),
        int(t),
        data,
        decode_notes(notes),
    )
    return Claimed(int(id_), payload, _int(attempts) or 0)


def record(
    id_: int,
    h: Mapping[bytes, bytes],
    payload: bytes | None,
    notes: bytes | None,
    original: bytes | None,
) -> EventRecord:
    """An event (its hash and blobs) as ``status``, ``dead-letters`` and the dashboard show it."""
    g = h.get
    return EventRecord(
        id=id_,
        key=(g(b"k") or b"").decode(),
        state=State(g(b"s", b"").decode()),
        source_event=(g(b"se") or b"").decode(),
        event_name=_text(g(b"n")),
        lead_id=_int(g(b"l")),
        event_time=_int(g(b"t")),
        received_at=float(g(b"ra", b"0")),
        updated_at=float(g(b"ua", b"0")),
        attempts=_int(g(b"a")) or 0,
        reason=_text(g(b"r")),
        message=_text(g(b"m")),
        field=_text(g(b"f")),
        code=_int(g(b"c")),
        subcode=_int(g(b"sc")),
        fbtrace_id=_text(g(b"ft")),
        payload=_json(payload),
        original=_json(original),
        response=_json(g(b"rs")),
        value=_text(g(b"v")),
        notes=decode_notes(notes),
        next_attempt_at=_float(g(b"na")),
    )
