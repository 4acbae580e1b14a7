"""Sibling fields (the prebuilt customer information) set in place give exactly what each
field's general way gives (its ``fill``: read the expression, then ``hasher``): the same digests,
the same notes, the same fields left out, whatever the values, the region and the memo holds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_settings
from leadrelay.mapping.expressions import MISSING
from leadrelay.mapping.filling import step_runner
from leadrelay.mapping.plans import compile_plans, reading_of
from leadrelay.mapping.sibling_loop import fill_siblings
from leadrelay.mapping.siblings import FIELD_ERRORS, field_note
from leadrelay.mapping.steps import SIBLINGS, Step, compile_steps
from leadrelay.meta.normalize import sha256_hex

_SPECIAL = {"user_data.lead_id", "event_time", "event_id"}

# What CRMs send (the bench's shapes among them), and what they should not.
_TEXT = st.sampled_from(
    ["Reba.Loba0@example.com", "Kapamivegi.Nupamivegi1@Example.org", " x@EXAMPLE.com ",
     "bad@", "a@b.c@d", "+33623234567", "+15123234567", "06 13 23 45 67", "+44 20 7946 0958",
     "(415) 555-2671", "+330612345678", "Réba", "Loba-Miba", "Kapamivégï", "O'Brien", "-",
     "1950-01-01", "1971-09-07", "2025-12-31", "1899-01-01", "1950-02-30", "19500131",
     "female", "F", "m", "x", "Kaba", "Sopamivégï", "Saint-Étienne", "Île-de-France", "TX",
     "California", "CA", "00013", "07932", "SW2 4AA", "10001-1234", "2108", "FR", "US", "GB",
     "France", "Atlantis", "crm-00000001", "", " ", "a" * 64, "B" * 64, " " + "c" * 64]
)  # fmt: skip
_VALUE = st.one_of(
    _TEXT,
    _TEXT,
    st.none(),
    st.integers(min_value=-5, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(_TEXT, max_size=2),
    st.just({"a": 1}),
)
_KEYS = [
    "email", "phone", "id", "firstname", "lastname", "birthdate", "gender", "city", "state",
    "state_short", "zipcode", "country", "email_sha256", "firstname_sha256", "state_sha256",
    "zipcode_sha256", "country_sha256",
]  # fmt: skip
_USER = st.dictionaries(st.sampled_from(_KEYS), _VALUE, max_size=len(_KEYS))
_REGION = st.sampled_from([None, "FR", "US", "GB", "DE"])


def _step(default_country: str | None) -> Step:
    config = make_settings(default_country=default_country)
    plans = [p for p in compile_plans(config) if p.target not in _SPECIAL]
    (step,) = [s for s in compile_steps(plans, reading_of(config)) if s.kind == SIBLINGS]
    return step


_STEPS = {country: _step(country) for country in (None, "US", "FR")}


def _general(step: Step, user: dict[str, Any], region: str | None) -> tuple[Any, ...]:
    """Each field's ``fill``: what the step gives for an object that is not a dict."""
    user_data: dict[str, Any] = {}
    notes: list[Any] = []
    for field in step.detail[1]:
        try:
            value = field.fill({"user": user}, region)
        except FIELD_ERRORS as exc:
            notes.append(field_note(field.target, exc))
            continue
        if value is not MISSING:
            user_data[field.name] = value
    return list(user_data.items()), notes


def _in_place(step: Step, user: dict[str, Any], region: str | None) -> tuple[Any, ...]:
    user_data: dict[str, Any] = {}
    notes: list[Any] = []
    step_runner(step)({"user": user}, region, ({}, user_data, {}), notes)
    return list(user_data.items()), notes


def _looped(step: Step, user: dict[str, Any], region: str | None) -> tuple[Any, ...]:
    """The loop a compiled build runs in place of the generated blocks (``sibling_loop``)."""
    user_data: dict[str, Any] = {}
    notes: list[Any] = []
    fill_siblings(step.detail[1], user, region, user_data, notes)
    return list(user_data.items()), notes


@pytest.mark.parametrize("default_country", [None, "US", "FR"])
@settings(max_examples=300, deadline=None)
@given(users=st.lists(st.tuples(_USER, _REGION), min_size=1, max_size=8))
def test_fields_set_in_place_are_what_the_general_way_gives(
    default_country: str | None, users: list[tuple[dict[str, Any], str | None]]
) -> None:
    """Twice over the same users: the second time, repeating fields answer from their memo.
    The step as this build runs it (generated blocks, or the compiled loop) and the loop itself,
    whichever the build, give what each field's general way gives."""
    step = _STEPS[default_country]
    assert {f.name for f in step.detail[1]} >= {"em", "ph", "external_id", "st", "country"}
    for _ in range(2):
        for user, region in users:
            general = _general(step, user, region)
            assert _in_place(step, user, region) == general
            assert _looped(step, user, region) == general


@pytest.mark.parametrize(
    ("user", "region", "name", "expected"),
    [
        ({"state": "California"}, "US", "st", "ca"),
        ({"state_short": "", "state": "Texas"}, "US", "st", "tx"),
        ({"state_short": None, "state": "Texas"}, None, "st", "tx"),
        ({"state_short": "NY", "state": "Texas"}, "US", "st", "ny"),
        ({"state": "Île-de-France"}, "FR", "st", "îledefrance"),
        ({"email": "", "email_sha256": "A" * 64}, None, "em", None),
    ],
)  # fmt: skip
def test_the_first_sibling_with_a_value_is_the_one_hashed(
    user: dict[str, Any], region: str | None, name: str, expected: str | None
) -> None:
    for _ in range(2):  # a miss, then a memo hit
        digest = "a" * 64 if expected is None else sha256_hex(expected)
        assert (name, [digest]) in _in_place(_STEPS[None], user, region)[0]
