"""``Mapper.map_parts`` (what the bulk encoder of ``--dry-run`` maps NDJSON lines with) gives
the fields of the payload ``Mapper.map`` gives, so encoding lines gives what encoding the same
events one outcome at a time gives: the same bodies, rows and count."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NOW, make_settings
from leadrelay.events import LineBatch
from leadrelay.events.ndjson import parse_lines
from leadrelay.mapping.encode import encode_unit
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import BodyWriter
from leadrelay.outcome import Payload

_MAPPER = Mapper(
    make_settings(mapping={"lead_qualified": "Qualified", "deal_won": "Converted"}),
    clock=lambda: NOW,
)
_MS = int(NOW * 1000)
_TEXT = st.sampled_from(
    ["Léa", "", " ", "F", "x", "CA", "FR", "Atlantis", "75011", "bad", "x@example.com",
     "+33 6 12 34 56 78", "06 12 34 56 78", "1950-02-30", "1950-01-31"]
)  # fmt: skip
_USER = st.dictionaries(
    st.sampled_from(["email", "phone", "gender", "state", "zipcode", "country", "birthdate"]),
    st.one_of(_TEXT, st.none(), st.integers(-3, 10), st.lists(_TEXT, max_size=2)),
)
_EVENT = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["lead_qualified", "deal_won", "nope", None]),
        "facebook_lead_id": st.sampled_from([123456789012345, "123456789012346", "12", None]),
        "user": _USER,
        "context": st.fixed_dictionaries(
            {
                "event_id": st.sampled_from(["e-1", None, 5]),
                "event_timestamp": st.sampled_from([_MS - 5000, str(_MS), "x", _MS + 10**9]),
            }
        ),
    }
)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_EVENT, max_size=8), every_payload=st.booleans())
def test_encoding_lines_gives_what_encoding_each_outcome_gives(
    events: list[dict[str, Any]], every_payload: bool
) -> None:
    lines = b"".join(orjson.dumps(e) + b"\n" for e in events)
    by_lines = encode_unit(_MAPPER, [LineBatch("f", 0, len(events), lines)], every_payload)
    records = [(f"f line {n}", e, None) for n, e in enumerate(events, 1)]
    by_outcomes = encode_unit(_MAPPER, list(records), every_payload)
    assert by_lines == by_outcomes


@settings(max_examples=200, deadline=None)
@given(event=_EVENT)
def test_the_parts_are_the_payload_fields(event: dict[str, Any]) -> None:
    outcome = _MAPPER.map(event)
    parts = _MAPPER.map_parts(event)
    if isinstance(outcome, Payload):
        assert Payload(*parts) == outcome  # type: ignore[misc]
    else:
        assert parts == outcome


_GENERAL = Mapper(
    _MAPPER_SETTINGS := make_settings(mapping={"deal_won": "Converted"}), clock=lambda: NOW
)
_GENERAL._lead_key = None  # lead_id read by its plan's getter: the general way
_FAST = Mapper(_MAPPER_SETTINGS, clock=lambda: NOW)
_LEAD = st.one_of(
    st.sampled_from([123456789012345, "123456789012345", "12", "", None, [1], {"a": 1}]),
    st.integers(),
)


@settings(max_examples=200, deadline=None)
@given(lead=_LEAD, present=st.booleans())
def test_lead_ids_read_in_place_are_what_the_getter_reads(lead: Any, present: bool) -> None:
    event: dict[str, Any] = {
        "event_name": "deal_won",
        "context": {"event_id": "e-1", "event_timestamp": _MS},
    }
    if present:
        event["facebook_lead_id"] = lead
    assert _FAST._lead_key == "facebook_lead_id"
    assert _FAST.map(event) == _GENERAL.map(event)


@settings(max_examples=100, deadline=None)
@given(
    units=st.lists(st.lists(st.binary(min_size=1, max_size=5), max_size=7), max_size=6),
    size=st.integers(min_value=1, max_value=5),
)
def test_bodies_taken_are_the_bodies_added(units: list[list[bytes]], size: int) -> None:
    added, taken = io.BytesIO(), io.BytesIO()
    adding = BodyWriter(added, batch_size=size, test_event_code=None)
    taking = BodyWriter(taken, batch_size=size, test_event_code=None)
    for unit in units:
        adding.add(unit)
        events = list(unit)
        taking.take(events)
        assert events == []  # the writer holds the only references
    adding.close()
    taking.close()
    assert taken.getvalue() == added.getvalue()


_LINE = st.one_of(
    _EVENT.map(orjson.dumps),
    st.sampled_from(
        [b"", b"\r", b" ", b"{bad", b"[1]", b"5", b'{"batch": [1, {"event_name": "x"}]}']
    ),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_LINE, max_size=6), crlf=st.booleans(), ends=st.booleans())
def test_encoding_any_lines_gives_what_reading_them_gives(
    lines: list[bytes], crlf: bool, ends: bool
) -> None:
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if ends and lines else b"")
    batch = LineBatch("f", 3, len(lines), data)
    records = [(r.where, r.event, r.error) for r in parse_lines(batch.lines(), "f", 3)]
    assert encode_unit(_MAPPER, [batch], True) == encode_unit(_MAPPER, list(records), True)
