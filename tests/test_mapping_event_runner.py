"""The field loop written out as code (``filling.steps_runner`` and ``event_runner``) gives what
filling each field the general way gives (its ``fill``, plan by plan): the same fields, in the
same sections and order, the same notes; and ``event_runner`` reads the event's region as
``region_hint`` reads the country, whatever the objects and values are."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_settings
from leadrelay.mapping.engine import Mapper
from leadrelay.mapping.expressions import MISSING
from leadrelay.mapping.filling import event_runner, steps_runner
from leadrelay.mapping.plans import compile_plans, field_fill, reading_of
from leadrelay.mapping.siblings import FIELD_ERRORS, field_note
from leadrelay.mapping.steps import compile_steps
from leadrelay.meta.normalize import region_hint, sha256
from leadrelay.outcome import Payload

_SPECIAL = {"user_data.lead_id", "event_time", "event_id"}
_SLOTS = {"user_data": 1, "custom_data": 2}
# Every kind of step: a constant, the customer fields, plain fields one, two and three keys
# deep and on the event itself, and general ones (a template, a formula).
_SETTINGS = make_settings(
    smart_mapping={
        "custom_data.stage": "{{crm_stage}}",
        "custom_data.score": "{{crm.score}}",
        "custom_data.first": "{{crm.0}}",  # an index: lists are read the general way
        "custom_data.deal": "{{crm.deal.stage}}",
        "custom_data.owner": "{{crm.deal.owner.name}}",
        "custom_data.label": "{{crm_stage}}-{{crm.deal.stage}}",
        "event_source_url": "{{page}}",
        "user_data.fbp": "{{partners.facebook.fbp}}",
        "custom_data.value": "=UPPER(crm_stage)",
    }
)
_PLANS = [p for p in compile_plans(_SETTINGS) if p.target not in _SPECIAL]
_STEPS = compile_steps(_PLANS, reading_of(_SETTINGS))
_COUNTRY = next(p for p in _PLANS if p.target == "user_data.country")

_LEAF = st.one_of(
    st.none(),
    st.sampled_from(["", " x ", "fb.1.2", "Réba", "+33 6 12 34 56 78", "06 13 23 45 67"]),
    st.sampled_from(["FR", "fr", " FRA ", "France", "Atlantis", "GB", "usa", "California"]),
    st.integers(),
    st.lists(st.none(), max_size=1),
)
_USER = st.one_of(
    _LEAF,
    st.dictionaries(
        st.sampled_from(["email", "phone", "firstname", "state", "zipcode", "country",
                         "country_sha256"]),
        _LEAF,
    ),
)  # fmt: skip
_INNER = st.one_of(_LEAF, st.dictionaries(st.sampled_from(["fbp", "stage", "owner"]), _LEAF))
_OUTER = st.one_of(
    _LEAF,
    st.lists(st.sampled_from([" a ", 1, None]), min_size=1, max_size=2),
    st.dictionaries(
        st.sampled_from(["facebook", "deal", "device", "score"]),
        st.one_of(_INNER, st.fixed_dictionaries({"owner": st.dictionaries(
            st.just("name"), _LEAF)})),
    ),
)  # fmt: skip
_EVENT = st.fixed_dictionaries(
    {},
    optional={
        "user": _USER,
        "partners": _OUTER,
        "context": _OUTER,
        "crm": _OUTER,
        "crm_stage": _LEAF,
        "page": _LEAF,
    },
)


def _region(event: dict[str, Any]) -> str | None:
    """The region the prebuilt country mapping gives: region_hint of its first sibling that is
    neither null nor "" (None for anything but text)."""
    user = event.get("user")
    if not isinstance(user, dict):
        return None
    found = (user.get(key) for key in ("country", "country_sha256"))
    value = next((v for v in found if v is not None and v != ""), None)
    return region_hint(value) if isinstance(value, str) else None


def _general(event: dict[str, Any], region: str | None) -> tuple[Any, ...]:
    """Each plan's ``fill``, in order: what the field loop must give."""
    sections: tuple[dict[str, Any], ...] = ({}, {}, {})
    notes: list[Any] = []
    for plan in _PLANS:
        try:
            value = field_fill(plan, reading_of(_SETTINGS))(event, region)
        except FIELD_ERRORS as exc:
            notes.append(field_note(plan.target, exc))
            continue
        if value is not MISSING:
            sections[_SLOTS.get(plan.section or "", 0)][plan.name] = value
    return tuple(list(section.items()) for section in sections), notes


def _written_out(event: dict[str, Any], region: str | None) -> tuple[Any, ...]:
    sections: tuple[dict[str, Any], ...] = ({}, {}, {})
    notes: list[Any] = []
    steps_runner(_STEPS)(event, region, sections, notes)  # type: ignore[arg-type]
    return tuple(list(section.items()) for section in sections), notes


def _with_region(event: dict[str, Any]) -> tuple[Any, ...]:
    sections: tuple[dict[str, Any], ...] = ({}, {}, {})
    notes: list[Any] = []
    event_runner(_STEPS, _COUNTRY)(event, sections, notes)  # type: ignore[arg-type]
    return tuple(list(section.items()) for section in sections), notes


def test_every_kind_of_step_is_there() -> None:
    assert {step.kind for step in _STEPS} == {0, 1, 2, 3}
    assert {len(step.detail[0]) for step in _STEPS if step.kind == 2} == {0, 1, 2, 3}


@settings(max_examples=400, deadline=None)
@given(event=_EVENT, region=st.sampled_from([None, "FR", "US", "GB"]))
def test_the_steps_written_out_give_what_each_field_gives(
    event: dict[str, Any], region: str | None
) -> None:
    assert _written_out(event, region) == _general(event, region)


@settings(max_examples=300, deadline=None)
@given(event=_EVENT)
def test_the_region_read_first_is_the_countrys(event: dict[str, Any]) -> None:
    for _ in range(2):  # region_hint's answer, then what it remembered
        assert _with_region(event) == _general(event, _region(event))


def test_without_a_country_plan_there_is_no_region() -> None:
    event = {"user": {"phone": "06 13 23 45 67", "country": "FR"}}
    sections: tuple[dict[str, Any], ...] = ({}, {}, {})
    notes: list[Any] = []
    event_runner(_STEPS, None)(event, sections, notes)  # type: ignore[arg-type]
    # Digits without a country code cannot be read without a region.
    assert "ph" not in sections[1]
    assert [note.reason for note in notes] == ["phone_without_country"]


def _nested(keys: list[str], leaf: Any) -> Any:
    for key in reversed(keys):
        leaf = {key: leaf}
    return leaf


def test_configs_that_code_cannot_spell_plainly_still_map() -> None:
    # A field name with a NUL (compile() refuses one in a file name), a path of 150 keys and a
    # COALESCE of 150 keys (Python allows 100 levels of indentation): each maps as read.
    keys = [f"k{i}" for i in range(150)]
    config = make_settings(
        mapping={"a": "Lead"},
        smart_mapping={
            "custom_data.note\x00": "=UPPER(v)",
            "custom_data.deep": "{{" + ".".join(keys) + "}}",
            "user_data.country": "=COALESCE(" + ", ".join(f"user.c{i}" for i in range(150)) + ")",
        },
    )
    mapper = Mapper(config, clock=lambda: 1795800000.0)
    event = {
        "event_name": "a",
        "facebook_lead_id": 100000000000000,
        "context": {"event_timestamp": 1795800000000},
        "v": "hi",
        "user": {"c149": "FR", "phone": "06 12 34 56 78"},
        **_nested(keys, "v"),
    }
    outcome = mapper.map(event)
    assert isinstance(outcome, Payload), outcome
    assert outcome.data["custom_data"]["note\x00"] == "HI"
    assert outcome.data["custom_data"]["deep"] == "v"
    # The national number took its country from the 150th key.
    assert outcome.data["user_data"]["ph"] == [sha256(b"33612345678").hexdigest()]
