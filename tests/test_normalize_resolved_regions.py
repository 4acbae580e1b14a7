"""Rules read a region that is already resolved (an alpha-2 code, as the mapping gives them)
directly: the answer is the one resolving it gives (the same region in lower case, which is
resolved)."""

from __future__ import annotations

from typing import Any

import pytest

from leadrelay.meta import geo
from leadrelay.meta.normalize import NormalizeError, normalizer

_VALUES: dict[str, list[Any]] = {
    "zp": ["75011", "10001-1234", "2108", "SW2 4AA", "123", 12345, -5, "--"],
    "ph": ["06 12 34 56 78", "(415) 555-2671", "0170 24992518", "612345678", "+33 6 12 34 56 78",
           "33612345678", "12", 4155552671, -3],
}  # fmt: skip


def _answer(field: str, value: Any, region: str, default: str | None) -> tuple[str, str]:
    try:
        return "value", normalizer(field, default_country=default)(value, region)
    except NormalizeError as exc:
        return exc.reason, exc.message


@pytest.mark.parametrize("field", sorted(_VALUES))
@pytest.mark.parametrize("default", [None, "US", "FR"])
def test_a_resolved_region_gives_what_resolving_it_gives(field: str, default: str | None) -> None:
    for region in sorted(geo.ALPHA2):
        for value in _VALUES[field]:
            assert _answer(field, value, region, default) == _answer(
                field, value, region.lower(), default
            ), (region, value)
