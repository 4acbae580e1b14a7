"""Rules for the fields about places: city, state, zip code, country; and ``region_hint``, the
event's country as the region other fields are read in.

Split out of ``normalize`` (house rule: modules under ~300 lines), which compiles them per field
and re-exports what callers use. Each rule takes the trimmed, non-empty text of a value (and the
value, for messages) and returns what Meta hashes, or raises ``NormalizeError``; the regional
ones (state, zip) are built with a ``Resolver`` that turns the event's country hint into a region.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from leadrelay.meta import geo
from leadrelay.meta.field_rules import (
    CITY,
    COMPACT,
    NormalizeError,
    Resolver,
    TextRule,
    clean,
    emptied,
    float_digits,
    lower,
    nfc,
)
from leadrelay.meta.field_rules import show as _show

_REGIONS: Final[dict[str, str | None]] = {}  # memo: events spell their countries a few ways
_REGIONS_KEPT: Final = 1024
SEEN_REGIONS: Final[Mapping[str, str | None]] = _REGIONS
"""What ``region_hint`` said of the texts it has seen (read-only): for the mapping's hot loop
to look them up without the call."""


def region_hint(country_value: Any) -> str | None:
    """ISO alpha-2 (upper case) for a country code or name ("fr", "FRA", "France"), else None."""
    if not isinstance(country_value, str):
        return None
    try:
        return _REGIONS[country_value]
    except KeyError:
        region = geo.country_code(country_value)
        if len(_REGIONS) < _REGIONS_KEPT:
            _REGIONS[country_value] = region
        return region


RESOLVED: Final = geo.ALPHA2
"""Regions that ``resolver`` gives back as they are: what ``region_hint`` gives. The mapping's
regions already are one of them, so rules read them directly instead of resolving them again
(``region if region in RESOLVED else resolve(region)``: the same region, no call)."""


def resolver(default: str | None) -> Resolver:
    """The region of an event's country hint, ``default`` without one (or an unknown one)."""

    def resolve(region: str | None) -> str | None:
        if region is None:
            return default
        return region_hint(region) or default

    return resolve


# What a French postal address's city line holds that is no part of the city's name: the
# district's number as an ordinal ("Paris 11e", "Paris, 11e", "Paris (11 ème)", "Lyon 3e
# arrondissement", "Marseille 1er"), and a CEDEX (business mail) with what follows it. The digits
# go anyway; the letters of "11e" stayed ("parise"). French ordinals only, and never first:
# "6th of October City" and "Station 4 St Louis" keep their letters.
_ADDRESS_PARTS: Final = re.compile(
    r"(?<=\W)\d{1,2}(?:\s*(?:ème|eme|ère|er|re)|e|è|ᵉʳ|ᵉ)"
    r"(?:\s*arr(?:ondissement\b|\.|\b))?(?=\W|$)"
    r"|\bcedex\b.*"
)
# Where a city's line may hold them: France and Monaco, or an event of no known country (the
# Dutch "2e Exloërmond" is a village's name).
_FRENCH_ADDRESSES: Final = frozenset({None, "FR", "MC"})
# A British postcode after the city's name, or its district alone ("London EC1", "London SW1A
# 1AA", "Manchester M1"): the digits went anyway, the letters stayed ("londonec"). Never first,
# and letters then a digit: a city's own words have no digit in them.
_UK_POSTCODE: Final = re.compile(r"(?<=\W)[a-z]{1,2}\d[a-z\d]?(?:\s*\d[a-z]{2})?(?=\W|$)")
# The UK and the Crown Dependencies (their postcodes are British: GY, JE, IM), or no country.
_UK_ADDRESSES: Final = frozenset({None, "GB", "GG", "JE", "IM"})


def city_rule(text: str, value: Any, region: str | None) -> str:
    """The ``ct`` rule: lower case letters only (no spaces, punctuation or digits)."""
    lowered = lower(text)
    if lowered.isalpha():
        return lowered if lowered.isascii() else nfc("NFC", lowered)
    country = region_hint(region)
    if country in _FRENCH_ADDRESSES:
        # Composed first: a decomposed "è" (macOS) would leave its accent behind.
        composed = lowered if lowered.isascii() else nfc("NFC", lowered)
        lowered = _ADDRESS_PARTS.sub(" ", composed)
    if country in _UK_ADDRESSES:
        lowered = _UK_POSTCODE.sub(" ", lowered)
    city = clean(lowered, CITY)
    if not city:
        raise emptied("city", value)
    return city


def _compact(text: str) -> str:
    """Lower case without punctuation, symbols, spaces or controls (letters and digits only)."""
    lowered = lower(text)
    if lowered.isalnum():
        return lowered if lowered.isascii() else nfc("NFC", lowered)
    return clean(lowered, COMPACT)


def country_rule(text: str, value: Any, region: str | None) -> str:
    """The ``country`` rule: the ISO alpha-2 code, lower case."""
    code = geo.country_code(text)
    if code is None:
        raise NormalizeError(
            "invalid_country",
            f"country {_show(value)} is not an ISO 3166 code or a known country name "
            "(use e.g. FR, FRA or France)",
        )
    return lower(code)


# "US-CA", "US CA", "US_CA", "US.CA", "US – CA": with a separator, which "Usak" (a Turkish
# province) has not.
_ISO_US_STATE: Final = re.compile(
    r"US(?:\s*[-_./\u2010-\u2015\u2212\uff0d]\s*|\s+)([A-Za-z]{2})", re.IGNORECASE
)


def state_rule(resolve: Resolver) -> TextRule:
    """The ``st`` rule: compact lower case; a US state's two-letter code where it is one."""

    def normalize(text: str, value: Any, region: str | None) -> str:
        state = _compact(text)
        if not state:
            raise emptied("state", value)
        country = resolve(region)
        # Without a region, a full US state name is still unmistakable ("California"). The US
        # territories have USPS codes too ("Puerto Rico" is pr, as its ZIP codes are US ones).
        if country in _USPS or (country is None and len(state) > 2):
            code = geo.US_STATE_NAMES.get(state)
            if code is not None:
                return lower(code)
            # ISO 3166-2: "US-CA" is CA (not "Usak", a Turkish province).
            iso = _ISO_US_STATE.fullmatch(text)
            if iso is not None and iso[1].upper() in geo.US_STATE_CODES:
                return lower(iso[1])
        return state

    return normalize


_ZIP_PLUS4: Final = re.compile(r"(\d{5})-\d{4}", re.ASCII)
# Where addresses have US ZIP codes: the US and its territories (Puerto Rico 006-009, the Virgin
# Islands, Guam, American Samoa, the Northern Mariana Islands).
_USPS: Final = frozenset({"US", "PR", "VI", "GU", "AS", "MP"})
# Where postal codes are all digits, of one length, and may start with 0 (Nice 06000, Dresden
# 01067, Rome 00100, Sao Paulo 01310-100, Oslo 0150): a spreadsheet that took them for numbers
# dropped those zeros ("6000"), which the code then gets back, as US ZIP codes do.
_ZERO_LED_DIGITS: Final = {
    **dict.fromkeys(("FR", "DE", "IT", "ES", "MX", "FI", "KR", "TR", "UA", "DZ", "PL"), 5),
    **dict.fromkeys(("AU", "NZ", "NO", "DK", "ZA"), 4),
    **dict.fromkeys(("CN", "SG", "CO"), 6),
    "JP": 7,
    "BR": 8,
}


def zip_rule(resolve: Resolver) -> TextRule:
    """The ``zp`` rule: compact lower case; the five digits of a US ZIP code (also in the US
    territories, whose addresses have them); the leading zeros a spreadsheet dropped, where
    codes have them (``_ZERO_LED_DIGITS``)."""

    def normalize(text: str, value: Any, region: str | None) -> str:
        if isinstance(value, str):
            # ASCII digits, most zip codes, are their own compact lower case: no _compact call.
            if text.isascii() and text.isdigit():
                zipcode = text
            elif (digits := float_digits(text)) is not None:  # 75011.0: the number
                zipcode = digits
            else:
                zipcode = _compact(text)
        elif value < 0:
            raise NormalizeError("invalid_zip", f"zip code {_show(value)} is negative")
        else:
            zipcode = _compact(text)
        if not zipcode:
            raise emptied("zip code", value)
        country = region if region in RESOLVED else resolve(region)
        if country in _USPS:
            if zipcode.isascii() and zipcode.isdigit():
                if len(zipcode) in (5, 9):
                    return zipcode[:5]
                if len(zipcode) in (3, 4):
                    # Spreadsheets drop the leading zeros of New England and New Jersey zips.
                    return zipcode.zfill(5)
            raise NormalizeError(
                "invalid_zip", f"zip code {_show(value)} is not a US ZIP code (5 digits or ZIP+4)"
            )
        # The event's own country only: default_country stands in for phone numbers, and a
        # 4-digit code under a French default may be Belgian, Swiss or Austrian.
        size = _ZERO_LED_DIGITS.get(country, 0) if region is not None else 0  # type: ignore[arg-type]
        if size > len(zipcode) >= size - 2 and zipcode.isascii() and zipcode.isdigit():
            return zipcode.zfill(size)
        if country is None:
            plus4 = _ZIP_PLUS4.fullmatch(text)
            if plus4 is not None:
                return plus4[1]
        return zipcode

    return normalize
