"""``Mapper.map_body`` (how send's reader, ``--dry-run`` and serve's intake map NDJSON lines)
gives what ``map_parts`` gives, with the server event as the bytes ``orjson.dumps`` makes of its
dict. The compiled build writes those bytes as it reads the fields (``usual.usual_body``); the
mappers here are made to, in either build."""

from __future__ import annotations

import hashlib
from typing import Any
from unittest.mock import patch

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import NOW, make_settings
from leadrelay.config import Settings
from leadrelay.mapping import engine
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.plans import compile_plans, reading_of
from leadrelay.mapping.steps import SIBLINGS, compile_steps
from leadrelay.mapping.usual import usual_body

_MS = int(NOW * 1000)
_MAPPING = {"lead_qualified": "Qualified", "deal_won": "Converted", "lead_created": 'Lead "1"'}


def _body_mapper(settings: Settings) -> Mapper:
    with patch.object(engine, "SIBLINGS_LOOP", True):
        mapper = Mapper(settings, clock=lambda: NOW)
    assert mapper.map_body != mapper.map_parts  # the body way
    return mapper


_PREBUILT = _body_mapper(make_settings(mapping=_MAPPING))
# Steps after the siblings step: plain ones on the event, a general one, one on the event itself.
_SMART = _body_mapper(
    make_settings(
        mapping=_MAPPING,
        smart_mapping={
            "user_data.fbp": "{{partners.facebook.fbp}}",
            "user_data.subscription_id": "=UPPER(crm_stage)",
            "event_source_url": "{{page}}",
        },
    )
)
# The region read from the country's first sibling that is neither null nor "".
_REGIONAL = _body_mapper(
    make_settings(
        mapping=_MAPPING,
        smart_mapping={"user_data.country": "=COALESCE(user.country, user.country_name)"},
    )
)

_DIGEST = "A" * 64
_TEXT = st.sampled_from(
    ["Léa", "", " ", "F", "m", "CA", "FR", "us", "Atlantis", "75011", "a\"b\\c", "x@example.com",
     " X@Example.COM ", "+33 6 12 34 56 78", "06 12 34 56 78", "1950-02-30", "1950-01-31",
     "Ελλάς", "\u2028", _DIGEST, "g" * 64, "crm-1"]
)  # fmt: skip
_VALUE = st.one_of(_TEXT, st.none(), st.integers(-3, 10), st.lists(_TEXT, max_size=2))
_USER_KEYS = [
    "email", "email_sha256", "phone", "id", "firstname", "lastname", "birthdate", "gender",
    "city", "state", "state_short", "zipcode", "country", "country_sha256", "country_name",
]  # fmt: skip
_EVENT = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["lead_qualified", "deal_won", "lead_created", "nope"]),
        "facebook_lead_id": st.sampled_from([123456789012345, "123456789012346", "12"]),
        "user": st.one_of(st.dictionaries(st.sampled_from(_USER_KEYS), _VALUE), _VALUE),
        "context": st.fixed_dictionaries(
            {
                "event_id": st.sampled_from(["e-1", ' "e\\2" ', "é-3", "\u2028", " ", 5]),
                "event_timestamp": st.sampled_from([_MS - 5000, str(_MS), "x"]),
                "device": st.one_of(
                    st.dictionaries(st.sampled_from(["ip", "user_agent"]), _VALUE), _VALUE
                ),
            }
        ),
        "partners": st.one_of(
            st.fixed_dictionaries(
                {"facebook": st.dictionaries(st.sampled_from(["fbc", "fbp"]), _VALUE)}
            ),
            _VALUE,
        ),
        "crm_stage": _VALUE,
        "page": st.one_of(st.none(), _TEXT),
    }
)
_USUAL: dict[str, Any] = {
    "event_name": "lead_created",
    "facebook_lead_id": 123456789012345,
    "user": {"email": "A@b.co", "phone": "06 12 34 56 78", "country": "FR", "gender": "F"},
    "context": {"event_id": 'e-"1"', "event_timestamp": _MS - 5000},
    "partners": None,
    "crm_stage": None,
    "page": None,
}


def _same(mapper: Mapper, event: dict[str, Any]) -> bool:
    """``map_body`` gives what ``map_parts`` gives, the server event encoded; True when the
    event's body was written (bytes)."""
    body, parts = mapper.map_body(event), mapper.map_parts(event)
    if type(parts) is not tuple:
        assert body == parts
        return False
    assert type(body) is tuple
    assert body[:5] == parts[:5] and body[6] == parts[6]
    data = body[5]
    assert (data if type(data) is bytes else orjson.dumps(data)) == orjson.dumps(parts[5])
    return type(data) is bytes


@settings(max_examples=2000, deadline=None)
@given(event=_EVENT)
@example(event=_USUAL)
@example(event={**_USUAL, "user": {**_USUAL["user"], "email": ["a@b.co", 'x"y']}})
@example(event={**_USUAL, "user": {**_USUAL["user"], "email_sha256": _DIGEST, "email": " "}})
@example(event={**_USUAL, "partners": {"facebook": {"fbp": 'fb.1."2"', "fbc": "é"}}})
@example(event={**_USUAL, "page": "https://example.com/a?b=\u2028"})
@example(event={**_USUAL, "crm_stage": "won"})
@example(event={**_USUAL, "user": "not an object"})
@example(event={**_USUAL, "user": {"phone": "06 12 34 56 78", "country": "", "country_name": "FR"}})
def test_the_body_is_the_bytes_of_the_parts(event: dict[str, Any]) -> None:
    _same(_PREBUILT, event)
    _same(_SMART, event)
    _same(_REGIONAL, event)


def test_the_usual_event_is_written_and_so_are_the_other_steps_fields() -> None:
    assert _same(_PREBUILT, _USUAL)
    assert _same(_SMART, _USUAL)
    # fbp and subscription_id after the siblings' fields, in user_data, as a dict has them
    with_more = {**_USUAL, "partners": {"facebook": {"fbp": "fb.1.2"}}, "crm_stage": "won"}
    assert _same(_SMART, with_more)
    found = _SMART.map_body(with_more)
    assert type(found) is tuple and type(found[5]) is bytes
    user_data = orjson.loads(found[5])["user_data"]
    assert list(user_data)[-2:] == ["fbp", "subscription_id"]
    assert user_data["subscription_id"] == "WON"
    # a field of the event itself is the general way's (event_source_url)
    assert not _same(_SMART, {**_USUAL, "page": "https://example.com"})


def test_what_other_steps_write_where_the_body_has_it_takes_the_general_way() -> None:
    settings_ = make_settings(mapping=_MAPPING)
    plans = [
        p
        for p in compile_plans(settings_)
        if p.target not in {"user_data.lead_id", "event_time", "event_id"}
    ]
    first = next(s for s in compile_steps(plans, reading_of(settings_)) if s.kind == SIBLINGS)
    event = {"user": {"email": "a@b.co"}}
    written = [{0: {"event_source_url": "u"}}, {1: {"em": ["x"]}}, {2: {"k": 1}}, {1: {"fbp": 1}}]
    found = []
    for writes in written:

        def then(_: Any, region: Any, sections: Any, notes: Any, writes: Any = writes) -> None:
            for slot, items in writes.items():
                sections[slot].update(items)

        body = usual_body(
            head=lambda _: ("deal_won", "Converted", "e-1", 123456789012345, int(NOW)),
            region_of=lambda _: None,
            region_keys=None,
            first=first,
            then=then,
            then_reads=None,
            custom={"event_source": "crm"},
            action_source="system_generated",
            otherwise=lambda e: ("general", e),  # type: ignore[arg-type,return-value]
        )
        found.append(body(event))
    assert found[:3] == [("general", event)] * 3
    assert type(found[3]) is tuple and type(found[3][5]) is bytes
    assert orjson.loads(found[3][5]) == {
        "event_name": "Converted",
        "event_time": int(NOW),
        "action_source": "system_generated",
        "event_id": "e-1",
        "user_data": {
            "lead_id": 123456789012345,
            "em": [hashlib.sha256(b"a@b.co").hexdigest()],
            "fbp": 1,
        },
        "custom_data": {"event_source": "crm"},
    }


def test_what_orjson_cannot_encode_is_left_to_the_general_way() -> None:
    # a lone surrogate (no JSON reader gives one; a caller's dict may): the dict, for the caller
    # to find unencodable as it finds any other
    odd = {**_USUAL, "context": {**_USUAL["context"], "event_id": "e-\ud800"}}
    assert _PREBUILT.map_body(odd) == _PREBUILT.map_parts(odd)
    crm = {**_USUAL, "crm_stage": "w\ud800"}  # UPPER keeps it, in a field of a later step
    found = _SMART.map_body(crm)
    assert found == _SMART.map_parts(crm) and type(found) is tuple and type(found[5]) is dict
