"""The mapping's fast paths give what the general way gives: digests remembered, sibling and
plain steps read in place, the custom_data template, and the bulk encoder of ``--dry-run``."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NOW, make_settings
from leadrelay.events import LineBatch
from leadrelay.mapping import siblings
from leadrelay.mapping.encode import encode_unit
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.parallel import BodyWriter, write_bodies
from leadrelay.meta.normalize import hasher
from leadrelay.outcome import Payload

MAPPING = {"lead_qualified": "Marketing Qualified Lead", "deal_won": "Converted"}


def _mapper(**overrides: Any) -> Mapper:
    return Mapper(make_settings(mapping=MAPPING, **overrides), clock=lambda: NOW)


def _event(user: Any, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "lead_qualified",
        "facebook_lead_id": 123456789012345,
        "context": {"event_id": "e-1", "event_timestamp": int(NOW * 1000) - 5000},
        "user": user,
        **extra,
    }


def _sent(outcome: Any) -> tuple[Any, ...]:
    assert isinstance(outcome, Payload), outcome
    return orjson.dumps(outcome.data), [(n.field, n.reason, n.message) for n in outcome.notes]


# Values of every shape the prebuilt customer information may hold.
_TEXT = st.sampled_from(
    ["Éloïse", "  Léa ", "O'Brien", "", " ", "F", "male", "Paris", "CA", "California", "FR",
     "France", "75011", "10001-1234", "2108", "a" * 64, "B" * 64, "x@example.com", "bad",
     "+33 6 12 34 56 78", "06 12 34 56 78", "(415) 555-2671", "1950-01-31", "1950-02-30"]
)  # fmt: skip
_VALUE = st.one_of(
    _TEXT,
    st.none(),
    st.integers(min_value=-5, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(_TEXT, max_size=3),
    st.just({"a": 1}),
)
_KEYS = [
    "email", "phone", "id", "firstname", "lastname", "birthdate", "gender", "city", "state",
    "state_short", "zipcode", "country", "firstname_sha256", "state_sha256",
]  # fmt: skip
_USER = st.one_of(
    st.dictionaries(st.sampled_from(_KEYS), _VALUE, max_size=len(_KEYS)),
    st.sampled_from([None, "x", [1, 2], 5]),
)


@settings(max_examples=300, deadline=None)
@given(users=st.lists(_USER, min_size=1, max_size=6))
def test_remembered_digests_are_the_digests(users: list[Any]) -> None:
    """A mapper that has seen values before (memo hits) sends what a fresh one sends."""
    warm = _mapper(default_country="US")
    for user in users:
        warm.map(_event(user))
    for user in users:
        fresh = _mapper(default_country="US")
        assert _sent(warm.map(_event(user))) == _sent(fresh.map(_event(user)))


def test_the_same_value_in_another_region_is_another_digest() -> None:
    mapper = _mapper()
    us = mapper.map(_event({"state": "California", "country": "US"}))
    fr = mapper.map(_event({"state": "California", "country": "FR"}))
    assert isinstance(us, Payload) and isinstance(fr, Payload)
    assert us.data["user_data"]["st"] == [hasher("st")("California", "US")]
    assert fr.data["user_data"]["st"] == [hasher("st")("California", "FR")]
    assert us.data["user_data"]["st"] != fr.data["user_data"]["st"]


def test_a_full_memo_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(siblings, "MEMO_SIZE", 3)
    mapper = _mapper()
    digest = hasher("st")
    for n in range(10):
        outcome = mapper.map(_event({"state": f"state{n}"}))
        assert isinstance(outcome, Payload)
        assert outcome.data["user_data"]["st"] == [digest(f"state{n}", None)]
    again = mapper.map(_event({"state": "state0"}))
    assert isinstance(again, Payload) and again.data["user_data"]["st"] == [digest("state0", None)]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"context": {"event_id": "e", "device": {"ip": " 1.2.3.4 ", "user_agent": 7}}},
         {"client_ip_address": "1.2.3.4", "client_user_agent": "7"}),
        ({"context": {"event_id": "e", "device": {"ip": "  ", "user_agent": None}}}, {}),
        ({"context": {"event_id": "e", "device": "phone"}}, {}),
        ({"context": {"event_id": "e", "device": [{"ip": "1.2.3.4"}]}}, {}),
        ({"partners": {"facebook": {"fbc": "fb.1.2.abc"}}}, {"fbc": "fb.1.2.abc"}),
        ({"partners": {"facebook": None}}, {}),
    ],
)  # fmt: skip
def test_plain_fields_read_in_place(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    outcome = _mapper().map(_event({"email": "x@example.com"}, **extra))
    assert isinstance(outcome, Payload)
    plain = {k: v for k, v in outcome.data["user_data"].items() if k in expected or "_" in k}
    assert {k: v for k, v in plain.items() if k != "lead_id"} == expected


def test_a_plain_field_that_is_not_text_is_noted() -> None:
    extra = {"context": {"event_id": "e", "device": {"ip": ["1.2.3.4"]}}}
    outcome = _mapper().map(_event({}, **extra))
    assert isinstance(outcome, Payload)
    assert [(n.field, n.reason) for n in outcome.notes] == [
        ("user_data.client_ip_address", "invalid_type")
    ]


@pytest.mark.parametrize(
    ("smart_mapping", "custom_data"),
    [
        ({}, {"lead_event_source": "In-house CRM", "event_source": "crm"}),
        ({"custom_data.stage": "{{crm_stage}}"},
         {"lead_event_source": "In-house CRM", "stage": "won", "event_source": "crm"}),
        ({"custom_data.stage": "{{crm_stage}}", "custom_data.fixed": "x"},
         {"lead_event_source": "In-house CRM", "stage": "won", "fixed": "x",
          "event_source": "crm"}),
        ({"custom_data.lead_event_source": "{{crm_stage}}"},
         {"lead_event_source": "won", "event_source": "crm"}),
    ],
)  # fmt: skip
def test_custom_data_keeps_its_order(
    smart_mapping: dict[str, str], custom_data: dict[str, Any]
) -> None:
    mapper = _mapper(smart_mapping=smart_mapping)
    for _ in range(2):  # the template is copied, never shared
        outcome = mapper.map(_event({}, crm_stage="won"))
        assert isinstance(outcome, Payload)
        assert list(outcome.data["custom_data"].items()) == list(custom_data.items())
        outcome.data["custom_data"]["changed"] = True


def test_the_bulk_encoder_gives_what_mapping_each_line_gives() -> None:
    mapper = _mapper()
    events = [_event({"email": f"a{n}@example.com", "firstname": "Léa"}) for n in range(5)]
    events[2]["facebook_lead_id"] = "12"  # rejected
    lines = [orjson.dumps(e) for e in events]
    lines[1:1] = [b"", b"{bad", b'{"batch": [1, {"event_name": "deal_won"}]}', b"[1]"]
    batch = LineBatch("f", 10, lines)
    bodies, rows, plain = encode_unit(mapper, [batch], False)
    expected = [mapper.map(e) for e in events]
    assert bodies == [orjson.dumps(o.data) for o in expected if isinstance(o, Payload)]
    assert plain == 4
    assert [row[0] for row in rows] == [
        "f line 13",
        "f line 14 item 1",
        "f line 14 item 2",
        "f line 15",
        "f line 17",
    ]


@settings(max_examples=100, deadline=None)
@given(
    units=st.lists(st.lists(st.binary(min_size=1, max_size=5), max_size=7), max_size=6),
    size=st.integers(min_value=1, max_value=5),
    code=st.sampled_from([None, "TEST1"]),
)
def test_bodies_written_from_joined_units_are_the_same(
    units: list[list[bytes]], size: int, code: str | None
) -> None:
    expected = io.BytesIO()
    write_bodies(
        [e for unit in units for e in unit], expected, batch_size=size, test_event_code=code
    )
    out = io.BytesIO()
    writer = BodyWriter(out, batch_size=size, test_event_code=code)
    for n, unit in enumerate(units):
        if n % 2:
            writer.add(unit)
        else:
            bounds = [-1]
            for event in unit:
                bounds.append(bounds[-1] + len(event) + 1)
            writer.add_joined(b",".join(unit), bounds)
    writer.close()
    assert out.getvalue() == expected.getvalue()
