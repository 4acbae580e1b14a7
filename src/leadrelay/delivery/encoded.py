"""A payload read back from a store, kept as the JSON bytes it was stored as.

Delivery sends what the store holds byte for byte: ``orjson.dumps(orjson.loads(b)) == b`` for any
``b`` that ``orjson.dumps`` wrote, so decoding a stored payload only to encode it again for the
request is pure cost (most of a claim's). ``EncodedPayload`` is a ``Payload`` whose ``data`` is
decoded on first read only; the dispatcher takes ``body`` as it is.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from leadrelay.outcome import FieldNote, Filtered, Payload, Rejected

# The slot behind ``Payload.data``: the property below stores the decoded dict in it.
_DATA: Final[Any] = Payload.__dict__["data"]
_set_data: Final[Any] = _DATA.__set__


class EncodedPayload(Payload):
    """A ``Payload`` whose ``data`` is kept encoded (``body``) until something reads it.

    It compares equal to a ``Payload`` with the same fields. Setting ``data`` drops ``body``
    (it no longer says the same), so ``request_body`` encodes the new data instead; changing the
    decoded dict in place is not seen by ``body`` (nothing does: payloads are replaced whole).
    """

    __slots__ = ("body",)

    def __init__(
        self,
        key: str,
        source_event: str,
        event_name: str,
        lead_id: int,
        event_time: int,
        body: bytes,
        notes: tuple[FieldNote, ...] = (),
    ) -> None:
        # One per event claimed: the fields are set here rather than through Payload's
        # __init__, whose ``self.data = ...`` would go through the property below.
        self.key = key
        self.source_event = source_event
        self.event_name = event_name
        self.lead_id = lead_id
        self.event_time = event_time
        self.notes = notes
        _set_data(self, None)  # not decoded yet
        self.body: bytes | None = body

    @property
    def data(self) -> dict[str, Any]:
        """The server event, decoded from ``body`` on first read."""
        data: dict[str, Any] | None = _DATA.__get__(self)
        if data is None:
            assert self.body is not None
            data = orjson.loads(self.body)
            _DATA.__set__(self, data)
        return data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self.body = None
        _DATA.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Payload):
            return NotImplemented
        return (
            self.key == other.key
            and self.source_event == other.source_event
            and self.event_name == other.event_name
            and self.lead_id == other.lead_id
            and self.event_time == other.event_time
            and self.notes == other.notes
            and self.data == other.data
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like Payload


def compact(body: bytes) -> bytes:
    """``body`` copied to a block of its own size: for what ``orjson.dumps`` made that is kept a
    while (the payloads waiting in memory in ``send``).

    ``orjson.dumps`` returns its write buffer shrunk in place, and kept, those buffers fragment the
    heap: 10,000 payloads of about 600 bytes waiting held some 4 KB of memory each. A send of
    300,000 events to a sandbox answering in 100 ms peaked at 237 MB; with copies, 141 MB.
    """
    return memoryview(body).tobytes()


def request_body(payload: Payload) -> bytes:
    """``payload.data`` as the JSON bytes a request carries (raises ``orjson.JSONEncodeError``)."""
    if type(payload) is EncodedPayload and payload.body is not None:
        return payload.body
    return orjson.dumps(payload.data)


def fits_int64(o: Payload) -> bool:
    """Whether a payload's lead_id and event_time fit SQLite's 64-bit integers; the store keeps
    one that does not rejected (``unencodable``), never sent."""
    lead_id, event_time = o.lead_id, o.event_time  # _int64's test, inline: once per event
    return (
        lead_id is not None
        and event_time is not None
        and -(2**63) <= lead_id < 2**63
        and -(2**63) <= event_time < 2**63
    )


def storable(outcome: Payload | Filtered | Rejected) -> EncodedPayload | None:
    """A payload as delivery sends it and the store keeps it (write-behind holds it so in
    memory); None for what is not a payload, and for a payload the store cannot keep as it is
    (not plain JSON, or a number past 64 bits: the store keeps it rejected, ``unencodable``)."""
    if type(outcome) is EncodedPayload:  # encoded as mapped (NDJSON lines; all with --jobs)
        return outcome if fits_int64(outcome) else None
    if not isinstance(outcome, Payload) or not fits_int64(outcome):
        return None
    try:  # a record of one process (a JSON array, CSV, a batch envelope): not encoded yet
        body = compact(orjson.dumps(outcome.data))  # it waits in memory
    except TypeError:
        return None
    return EncodedPayload(
        outcome.key,
        outcome.source_event,
        outcome.event_name,
        outcome.lead_id,
        outcome.event_time,
        body,
        outcome.notes,
    )
