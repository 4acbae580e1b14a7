"""Whether a national number is valid, as ``phonenumbers.is_valid_number`` says, faster.

Split out of ``phone`` (house rule: modules under ~300 lines). ``is_valid_number`` compiles (or
looks up in ``re``'s cache) each metadata pattern it tries, on every call: most of the time it
takes for a national number ("06 12 34 56 78"). Here the same patterns are compiled once per
region, and those that apply to a number of one length are joined into one pattern, so a number
is checked with one match; the steps and the answer are the same (the tests compare both on
numbers of every calling code).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = ["is_valid", "validator"]

_NON_GEO: Final = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY

# A pattern of phonenumbers' metadata, with the lengths it is tried on (any length when empty).
_Desc = tuple[frozenset[int], str]
_Match = Callable[[str], "re.Match[str] | None"]
# The number types phonenumbers' is_valid_number accepts (mobile only when its pattern is not
# the fixed-line one): any one will do.
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
    return frozenset(desc.possible_length), desc.national_number_pattern


def _joined(general: str, types: Iterable[str]) -> _Match | None:
    """One pattern that fully matches what ``general`` and at least one of ``types`` fully match.

    A lookahead tries the whole number against ``general``, an alternation tries each type: a
    full match of the joined pattern exists exactly when both full matches do (the metadata's
    patterns use no back-references or flags that the joining could change)."""
    alternatives = "|".join(f"(?:{pattern})" for pattern in types)
    if not alternatives:
        return None
    # ASCII: the numbers are ASCII digits, for which \d means the same, checked faster.
    return re.compile(f"(?=(?:{general})\\Z)(?:{alternatives})", re.ASCII).fullmatch


def _no_match(national: str) -> None:
    return None


class _Region:
    """What phonenumbers checks to call a national number valid in one region: the joined
    pattern for a length is compiled for the first number of that length (a region names up to
    a dozen lengths, a send mostly meets one or two, and each compile takes a millisecond or
    more: 16 of them were a tenth of a short send)."""

    __slots__ = ("_general", "_types", "by_length", "country_code", "leading")

    def __init__(
        self,
        country_code: int,
        leading: re.Pattern[str] | None,
        general: _Desc | None,
        types: tuple[_Desc, ...],
    ) -> None:
        self.country_code = country_code
        self.leading = leading  # picks the region among those sharing a calling code
        self._general = general
        self._types = types
        # The joined pattern for numbers of each length met so far (_no_match: none valid).
        self.by_length: dict[int, _Match] = {}

    def accepts(self, national: str) -> bool:
        """phonenumbers' ``_number_type_helper(national, metadata) != UNKNOWN``: the general
        pattern (with its lengths) matches, and so does one type's pattern (with its lengths)."""
        match = self.by_length.get(len(national))
        if match is None:
            match = self._compile(len(national))
        return match(national) is not None

    def _compile(self, size: int) -> _Match:
        joined = None
        if self._general is not None:
            lengths, pattern = self._general
            if not lengths or size in lengths:
                kept = (text for sizes, text in self._types if not sizes or size in sizes)
                joined = _joined(pattern, kept)
        match = self.by_length[size] = _no_match if joined is None else joined
        return match


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
    types = tuple(desc for desc in descs if desc is not None)
    return _Region(
        int(metadata.country_code or 0),
        re.compile(metadata.leading_digits, re.ASCII) if metadata.leading_digits else None,
        _desc(metadata.general_desc),
        types,
    )


def _shared(country_code: int, start: int, national: str) -> bool:
    """The region of a shared calling code the number belongs to (from the ``start``-th on: the
    first whose leading digits match or, without those, which accepts it) accepts it."""
    for code in _region_codes(country_code)[start:]:
        region = _region(country_code, code, False)
        if region is None:
            continue
        if region.leading is not None:
            if region.leading.match(national) is not None:
                return region.country_code == country_code and region.accepts(national)
        elif region.accepts(national):
            return region.country_code == country_code
    return False


def _never(national: str) -> bool:
    return False


@lru_cache(maxsize=512)
def validator(country_code: int) -> Callable[[str], bool]:
    """``is_valid`` for one calling code, looked up once: ``validator(33)("612345678")``."""
    codes = _region_codes(country_code)
    if len(codes) == 1:
        found = _region(country_code, codes[0], True)
        if found is None or found.country_code != country_code:
            return _never
        return found.accepts
    first = _region(country_code, codes[0], False) if codes else None
    if first is None or first.leading is not None:
        return partial(_shared, country_code, 0)
    # The main region (US for +1, GB for +44) has no leading digits and comes first: a number
    # it accepts is decided without looking at the others.
    accepts, same, rest = first.accepts, first.country_code == country_code, 1

    def valid(national: str) -> bool:
        return same if accepts(national) else _shared(country_code, rest, national)

    return valid


def is_valid(country_code: int, national: str) -> bool:
    """``phonenumbers.is_valid_number`` of the number ``+<country_code> <national>`` (national:
    ASCII digits, no leading zero), with the metadata's patterns compiled once instead of on
    every call. The same steps: the region the number belongs to (the only one of its calling
    code; else the first whose leading digits match or, without those, which accepts it), then
    whether that region accepts it."""
    return validator(country_code)(national)
