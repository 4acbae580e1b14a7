"""lead_id and event_time as CRMs send them (digits as text, too) are read by ``Mapper.map``
without calling their finishers: the outcome is what the finishers give."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NOW, make_settings
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.rules import FieldProblem
from leadrelay.outcome import Payload, Rejected

_MAPPER = Mapper(make_settings(mapping={"deal_won": "Converted"}), clock=lambda: NOW)
_PLANS = {plan.target: plan for plan in _MAPPER.plans}
_MS = int(NOW * 1000)

_DIGITS = st.text(st.sampled_from("0123456789"), min_size=10, max_size=19)
_ODD = st.sampled_from(["١٢٣٤٥٦٧٨٩٠١٢٣٤٥", "²" * 15, " 123456789012345", "0" * 15, "", "x"])
_LEAD = st.one_of(_DIGITS, _ODD, st.integers(10**14 - 2, 10**14 + 2).map(str))
_TIME = st.one_of(
    st.integers(_MS - 8 * 86_400_000, _MS + 600_000).map(str),
    _DIGITS,
    _ODD,
    st.sampled_from([f"0{_MS}", f"{_MS}0", str(_MS // 1000), f"{_MS:,}"]),
)


def _event(lead: Any, timestamp: Any) -> dict[str, Any]:
    return {
        "event_name": "deal_won",
        "facebook_lead_id": lead,
        "context": {"event_id": "e-1", "event_timestamp": timestamp},
    }


def _expected(plan: str, value: Any) -> tuple[str, Any]:
    try:
        return ("value", _PLANS[plan].finish(value, None))
    except (FieldProblem, ValueError) as exc:
        return ("error", getattr(exc, "reason", type(exc).__name__))


@settings(max_examples=400, deadline=None)
@given(lead=_LEAD)
def test_lead_ids_as_text_are_what_the_finisher_gives(lead: str) -> None:
    outcome = _MAPPER.map(_event(lead, _MS))
    if isinstance(outcome, Payload):
        assert _expected("user_data.lead_id", lead) == ("value", outcome.lead_id)
    else:
        assert isinstance(outcome, Rejected) and outcome.field == "user_data.lead_id"
        assert _expected("user_data.lead_id", lead) == ("error", outcome.reason)


@settings(max_examples=400, deadline=None)
@given(timestamp=_TIME)
def test_timestamps_as_text_are_what_the_finisher_gives(timestamp: str) -> None:
    expected = _expected("event_time", timestamp)
    try:
        outcome = _MAPPER.map(_event(123456789012345, timestamp))
    except ValueError as exc:  # the finisher's own crash, if any, is kept as it is
        assert expected == ("error", type(exc).__name__)
        return
    if isinstance(outcome, Payload):
        assert expected == ("value", outcome.event_time)
    else:
        assert isinstance(outcome, Rejected) and outcome.field == "event_time"
        if expected[0] == "value":  # a time read, but outside Meta's window
            assert outcome.reason in ("event_time_too_old", "event_time_in_future")
        else:
            assert expected == ("error", outcome.reason)
