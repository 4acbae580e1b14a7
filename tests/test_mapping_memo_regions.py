"""The section loop's remembered digests (few-valued fields looked up in place, see
``filling.py``) are remembered per region: a state's digest depends on the event's country."""

from __future__ import annotations

from typing import Any

from conftest import NOW, make_settings
from leadrelay.mapping.engine import Mapper
from leadrelay.meta.normalize import hasher
from leadrelay.meta.places import region_hint


def _event(user: Any) -> dict[str, Any]:
    return {
        "event_name": "deal_won",
        "facebook_lead_id": 123456789012345,
        "user": user,
        "context": {"event_id": "e-1", "event_timestamp": int(NOW * 1000)},
    }


def test_remembered_digests_are_remembered_per_region() -> None:
    # A US state name is sent as its code, a French one as it is: the loop that looks
    # remembered digests up keys them by value and region.
    mapper = Mapper(make_settings(mapping={"deal_won": "Converted"}), clock=lambda: NOW)
    digest = hasher("st")
    assert digest("California", "US") != digest("California", "FR")
    for country in ("US", "FR", "US", None, "FR", "US"):
        found = mapper.map_parts(_event({"state": "California", "country": country}))
        assert isinstance(found, tuple)
        region = None if country is None else region_hint(country)
        assert found[5]["user_data"]["st"] == [digest("California", region)]
