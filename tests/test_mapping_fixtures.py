"""Table-driven mapping cases: (config, event) -> exact payload, rejection or filter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import NOW, make_settings
from leadrelay.mapping.engine import Mapper
from leadrelay.outcome import Filtered, Payload, Rejected

CASES = sorted((Path(__file__).parent / "fixtures" / "mapping").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_mapping_case(path: Path) -> None:
    case = _load(path)
    mapper = Mapper(make_settings(**case["config"]), clock=lambda: NOW)
    outcome = mapper.map(case["event"])
    expect = case["expect"]
    if "payload" in expect:
        assert isinstance(outcome, Payload), outcome
        assert outcome.data == expect["payload"]
        assert [[n.field, n.reason] for n in outcome.notes] == expect.get("notes", [])
        if "key" in expect:  # what duplicates are told apart by, and the report's event_id
            assert outcome.key == expect["key"]
    elif "rejected" in expect:
        assert isinstance(outcome, Rejected), outcome
        assert (outcome.reason, outcome.field) == (
            expect["rejected"]["reason"],
            expect["rejected"]["field"],
        )
        assert outcome.message
    else:
        assert isinstance(outcome, Filtered), outcome
        assert outcome.reason == expect["filtered"]


def test_lead_id_is_encoded_as_exact_json_integer() -> None:
    mapper = Mapper(make_settings(), clock=lambda: NOW)
    out = mapper.map({"event_name": "lead_qualified", "facebook_lead_id": "98765432109876543"})
    assert isinstance(out, Payload)
    encoded = orjson.dumps(out.data)
    assert b'"lead_id":98765432109876543' in encoded


def test_fixed_fields_cannot_be_overridden_by_the_event() -> None:
    mapper = Mapper(make_settings(), clock=lambda: NOW)
    out = mapper.map(
        {
            "event_name": "lead_qualified",
            "facebook_lead_id": 123456789012345,
            "action_source": "website",
            "integrations": {"facebook": {"action_source": "website"}},
        }
    )
    assert isinstance(out, Payload)
    assert out.data["action_source"] == "system_generated"
    assert out.data["custom_data"]["event_source"] == "crm"


def test_rejection_names_the_value() -> None:
    mapper = Mapper(make_settings(), clock=lambda: NOW)
    out = mapper.map({"event_name": "lead_qualified", "facebook_lead_id": "12345"})
    assert isinstance(out, Rejected)
    assert "12345" in out.message and "15 to 17" in out.message


@pytest.mark.parametrize("odd_id", ["   ", True, {"id": 1}, ["x"]])
def test_events_whose_ids_are_no_ids_are_never_taken_for_one(odd_id: Any) -> None:
    """The key an event is stored and deduplicated by: for an event_id that is blank or not
    text, the event_id made from lead, name and time, as for an event without one; two such
    events of two leads are two events, not one sent and one skipped as already stored."""
    mapper = Mapper(make_settings(), clock=lambda: NOW)
    keys = []
    for lead in (123456789012345, 123456789012346):
        out = mapper.map(
            {
                "event_name": "lead_qualified",
                "facebook_lead_id": lead,
                "context": {"event_id": odd_id, "event_timestamp": int(NOW) * 1000},
            }
        )
        assert isinstance(out, Payload)
        assert out.key == out.data["event_id"] == f"{lead}:Marketing Qualified Lead:{int(NOW)}"
        keys.append(out.key)
    assert keys[0] != keys[1]


def test_the_key_of_an_id_with_spaces_is_the_id_sent() -> None:
    mapper = Mapper(make_settings(), clock=lambda: NOW)
    out = mapper.map(
        {"event_name": "lead_qualified", "facebook_lead_id": 123456789012345,
         "context": {"event_id": " e-7 ", "event_timestamp": int(NOW) * 1000}}
    )  # fmt: skip
    assert isinstance(out, Payload)
    assert out.key == out.data["event_id"] == "e-7"


def test_an_event_with_neither_id_nor_time_is_known_and_sent_by_its_content() -> None:
    """Its time is when it is read; a resend of the same file later must not count as a new
    event (nor be sent again, nor be taken by Meta for a new one), while another event of the
    lead is another. The event_id sent is its key: it was made from the time, so it changed at
    every resend and was not the event_id the report and the intake's answer said."""
    event = {"event_name": "lead_qualified", "facebook_lead_id": 123456789012345}
    first = Mapper(make_settings(), clock=lambda: NOW).map(event)
    later = Mapper(make_settings(), clock=lambda: NOW + 3600).map(dict(event))
    other = Mapper(make_settings(), clock=lambda: NOW).map({**event, "crm_stage": "won"})
    assert isinstance(first, Payload) and isinstance(later, Payload) and isinstance(other, Payload)
    assert first.data["event_time"] != later.data["event_time"]
    assert first.data["event_id"] == first.key == later.key == later.data["event_id"]
    assert other.key == other.data["event_id"] != first.key
    assert first.key.startswith("123456789012345:Marketing Qualified Lead:")


def test_birthdate_order_of_the_config_reads_dates_that_read_both_ways() -> None:
    """The config's birthdate_order reaches the rules a send runs (the compiled field steps):
    by default 03/04/1990 is left out with a note, day-first it is 3 April."""
    event = {
        "event_name": "lead_qualified",
        "facebook_lead_id": 123456789012345,
        "user": {"birthdate": "03/04/1990", "email": "a@example.com"},
        "context": {"event_id": "e-1", "event_timestamp": int(NOW) * 1000},
    }
    plain = Mapper(make_settings(), clock=lambda: NOW).map(event)
    assert isinstance(plain, Payload) and "db" not in plain.data["user_data"]
    assert [n.field for n in plain.notes] == ["user_data.db"]
    french = Mapper(make_settings(birthdate_order="day-first"), clock=lambda: NOW).map(event)
    assert isinstance(french, Payload) and french.notes == ()
    assert french.data["user_data"]["db"] == [hashlib.sha256(b"19900403").hexdigest()]


def test_explain_says_what_each_digest_is_of() -> None:
    """preview and the playground show the value each digest is of, as normalized: a zip code
    that got its zero back, a phone with its country code, an address in its wrapping."""
    from leadrelay.mapping.explain import explain

    event = {
        "event_name": "lead_qualified",
        "facebook_lead_id": 123456789012345,
        "user": {
            "email": "Jane <Jane.Doe@Example.com>",
            "phone": "06 12 34 56 78",
            "zipcode": "6000",
            "country": "FR",
            "city": "e" * 64,  # already a digest: nothing to say
        },
        "context": {"event_id": "e-1", "event_timestamp": int(NOW) * 1000},
    }
    lines = {f.target: f for f in explain(Mapper(make_settings(), clock=lambda: NOW), event).fields}
    assert lines["user_data.em"].hashed == "jane.doe@example.com"
    assert lines["user_data.ph"].hashed == "33612345678"
    assert lines["user_data.zp"].hashed == "06000"
    assert lines["user_data.zp"].sent == [hashlib.sha256(b"06000").hexdigest()]
    assert lines["user_data.ct"].hashed is None
    assert lines["user_data.lead_id"].hashed is None  # not hashed
