"""Whether a national number is valid, as ``phonenumbers.is_valid_number`` says, faster.

Split out of ``phone`` (house rule: modules under ~300 lines). ``is_valid_number`` compiles (or
looks up in ``re``'s cache) each metadata pattern it tries, on every call: most of the time it
takes for a national number ("06 12 34 56 78"). Here the same patterns are compiled once per
calling code and tried in the same way, so the answer is the same (the tests compare both on
numbers of every calling code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = ["is_valid"]

_NON_GEO: Final = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY

# A pattern of phonenumbers' metadata, with the lengths it is tried on (any length when empty).
_Desc = tuple[frozenset[int], re.Pattern[str]]
# The number types phonenumbers' is_valid_number accepts (mobile only when its pattern is not
# the fixed-line one): any one will do, so the common ones come first.
_TYPES: Final = (
    "fixed_line",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _desc(desc: Any) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None  # phonenumbers: matches nothing
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern)


@dataclass(frozen=True, slots=True)
class _Region:
    """What phonenumbers checks to call a national number valid in one region, compiled."""

    country_code: int
    leading: re.Pattern[str] | None  # picks the region among those sharing a calling code
    general: _Desc | None
    types: tuple[_Desc, ...]

    def accepts(self, national: str) -> bool:
        """phonenumbers' ``_number_type_helper(national, metadata) != UNKNOWN``."""
        size = len(national)
        if self.general is None:
            return False
        lengths, pattern = self.general
        if (lengths and size not in lengths) or pattern.fullmatch(national) is None:
            return False
        for lengths, pattern in self.types:  # a loop, not any(): no generator per call
            if (not lengths or size in lengths) and pattern.fullmatch(national) is not None:
                return True
        return False


@lru_cache(maxsize=512)
def _region_codes(country_code: int) -> tuple[str, ...]:
    return tuple(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ()))


@lru_cache(maxsize=1024)
def _region(country_code: int, code: str, alone: bool) -> _Region | None:
    """The region ``code`` of ``country_code`` (``alone``: the only one), compiled on first use:
    a calling code is shared by up to 25 regions (+1), most never asked about."""
    if code == _NON_GEO and alone:  # +800 and the like: validated by calling code
        metadata = PhoneMetadata.metadata_for_nongeo_region(country_code, None)
    else:
        metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
    if metadata is None:
        return None
    names = _TYPES if metadata.same_mobile_and_fixed_line_pattern else ("mobile", *_TYPES)
    descs = (_desc(getattr(metadata, name)) for name in names)
    return _Region(
        int(metadata.country_code or 0),
        re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        _desc(metadata.general_desc),
        tuple(desc for desc in descs if desc is not None),
    )


def is_valid(country_code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number`` of the number ``+<country_code> <national>`` (national:
    ASCII digits, no leading zero), with the metadata's patterns compiled once instead of on
    every call. The same steps: the region the number belongs to (the only one of its calling
    code; else the first whose leading digits match or, without those, which accepts it), then
    whether that region accepts it."""
    codes = _region_codes(country_code)
    if len(codes) == 1:
        found = _region(country_code, codes[0], True)
    else:
        for code in codes:
            region = _region(country_code, code, False)
            if region is None:
                continue
            if region.leading is not None:
                if region.leading.match(national) is not None:
                    found = region
                    break
            elif region.accepts(national):
                return region.country_code == country_code
        else:
            return False
    return found is not None and found.country_code == country_code and found.accepts(national)
