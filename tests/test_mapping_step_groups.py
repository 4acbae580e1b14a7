"""All the steps run as one closure (``steps_runner``) give what running each step's own
closure gives: the same fields, in the same sections and order, and the same notes, whatever
the objects they read are (absent, null, dicts, not dicts)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_settings
from leadrelay.mapping.filling import region_reader, step_runner, steps_runner
from leadrelay.mapping.plans import compile_plans, reading_of
from leadrelay.mapping.steps import compile_steps
from leadrelay.meta.normalize import region_hint

_SPECIAL = {"user_data.lead_id", "event_time", "event_id"}
_SETTINGS = make_settings(
    smart_mapping={
        "custom_data.stage": "{{crm.deal.stage}}",
        "custom_data.score": "{{crm.deal.score}}",
        "user_data.fbp": "{{partners.facebook.fbp}}",
    }
)
_STEPS = compile_steps(
    [p for p in compile_plans(_SETTINGS) if p.target not in _SPECIAL], reading_of(_SETTINGS)
)
_LEAF = st.one_of(
    st.none(), st.sampled_from(["", " x ", "fb.1.2", "1.2.3.4"]), st.integers(), st.lists(st.none())
)
_INNER = st.one_of(_LEAF, st.dictionaries(st.sampled_from(
    ["fbc", "fbp", "ip", "user_agent", "stage", "score"]), _LEAF))  # fmt: skip
_OUTER = st.one_of(_LEAF, st.dictionaries(st.sampled_from(["facebook", "device", "deal"]), _INNER))
_EVENT = st.dictionaries(st.sampled_from(["partners", "context", "crm"]), _OUTER)


def _run(runs: Any, event: dict[str, Any]) -> tuple[Any, ...]:
    sections: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
    notes: list[Any] = []
    for run in runs:
        run(event, None, sections, notes)
    return tuple(list(section.items()) for section in sections), notes


@settings(max_examples=400, deadline=None)
@given(event=_EVENT)
def test_the_steps_together_give_what_each_step_gives(event: dict[str, Any]) -> None:
    assert len(_STEPS) > 3  # plain steps of several objects, a constant, the customer fields
    assert _run([steps_runner(_STEPS)], event) == _run([step_runner(s) for s in _STEPS], event)


_COUNTRIES = ["FR", "fr", " FRA ", "France", "Atlantis", "", "  ", "GB", "UK", "usa", 12, None]


@settings(max_examples=200, deadline=None)
@given(
    user=st.dictionaries(
        st.sampled_from(["country", "country_sha256"]), st.sampled_from(_COUNTRIES)
    )
)
def test_regions_remembered_are_what_region_hint_says(user: dict[str, Any]) -> None:
    country = next(p for p in compile_plans(_SETTINGS) if p.target == "user_data.country")
    region_of = region_reader(country)
    found = (user.get(key) for key in ("country", "country_sha256"))
    value = next((v for v in found if v is not None and v != ""), None)
    expected = region_hint(value) if isinstance(value, str) else None
    # The first time through region_hint, then from what it remembered: the same answer.
    assert region_of({"user": user}) == expected
    assert region_of({"user": user}) == expected


@pytest.mark.parametrize("event", [{}, {"user": None}, {"user": "FR"}, {"user": ["FR"]}])
def test_the_region_of_an_event_without_a_user_object_is_none(event: dict[str, Any]) -> None:
    """The general reader takes those: the reader's own function took its name and called
    itself (RecursionError; preview and the playground read the region so)."""
    country = next(p for p in compile_plans(_SETTINGS) if p.target == "user_data.country")
    assert region_reader(country)(event) is None
