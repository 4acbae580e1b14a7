"""A payload claimed from a store is sent as the bytes stored, and still reads as a Payload."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from leadrelay.delivery.encoded import EncodedPayload, request_body
from leadrelay.delivery.store import encode_payload
from leadrelay.outcome import FieldNote, Payload

DATA: dict[str, Any] = {
    "event_name": "Raw Lead",
    "event_time": 1_700_000_000,
    "user_data": {"lead_id": 123456789012345678, "em": ["a" * 64]},
    "custom_data": {"value": 12.5, "ratio": 0.1, "nothing": None, "flags": [True, False]},
}
NOTES = (FieldNote("user_data.ph", "invalid_phone", "not a phone number"),)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def stored(data: dict[str, Any], notes: tuple[FieldNote, ...] = ()) -> EncodedPayload:
    return EncodedPayload(
        "k-1", "lead_created", "Raw Lead", 42, 1_700_000_000, orjson.dumps(data), notes
    )


def test_reads_and_compares_as_the_payload_it_was_stored_from() -> None:
    sent = Payload("k-1", "lead_created", "Raw Lead", 42, 1_700_000_000, DATA, NOTES)
    claimed = stored(DATA, NOTES)
    assert claimed == sent and sent == claimed
    assert claimed.data == DATA
    assert isinstance(claimed, Payload)
    assert claimed != Payload("k-1", "lead_created", "Raw Lead", 42, 1_700_000_000, {}, NOTES)
    assert "Raw Lead" in repr(claimed)


def test_the_request_carries_the_stored_bytes_until_data_is_replaced() -> None:
    claimed = stored(DATA)
    assert request_body(claimed) is claimed.body
    assert claimed.data == DATA  # reading decodes; the bytes stay
    assert request_body(claimed) is claimed.body
    claimed.data = {"event_name": "Converted"}
    assert request_body(claimed) == b'{"event_name":"Converted"}'
    assert claimed.data == {"event_name": "Converted"}


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_stored_bytes_are_what_encoding_the_decoded_data_gives(data: dict[str, Any]) -> None:
    # The premise of sending stored bytes as they are: byte for byte what decoding them and
    # encoding again (what delivery did before) gives.
    claimed = stored(data)
    assert request_body(claimed) == orjson.dumps(claimed.data)
    assert request_body(Payload("k", "e", "n", 1, 2, data)) == claimed.body


def test_the_store_keeps_an_encoded_payload_as_its_bytes_and_a_replaced_one_anew() -> None:
    body = b'{"event_name":"Lead","n":1}'
    note = FieldNote("user_data.ph", "invalid_phone", "not a phone number")
    payload = EncodedPayload("k", "lead", "Lead", 1, 2, body, (note,))
    data, notes = encode_payload(payload)
    assert data is body  # not decoded and encoded again
    assert notes == encode_payload(Payload("k", "lead", "Lead", 1, 2, {}, (note,)))[1]
    payload.data = {"event_name": "Other"}
    assert encode_payload(payload)[0] == b'{"event_name":"Other"}'
