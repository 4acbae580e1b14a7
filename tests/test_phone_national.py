"""National phone numbers ("06 12 34 56 78" with FR) read without ``phonenumbers.parse`` give
exactly what the general way (parse, is_valid_number, format E.164) gives: the same digits, the
same errors and messages, for realistic numbers of many regions and for odd text."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber, PhoneNumberFormat, PhoneNumberType

from leadrelay.meta import phone, phone_plan
from leadrelay.meta.field_rules import NormalizeError
from leadrelay.meta.phone_valid import is_valid, validator
from leadrelay.meta.places import resolver

_RULE = phone.phone_rule(resolver(None))
# Regions with a national prefix (FR, DE, GB...), without (ES, IT), sharing a calling code (US,
# CA, GB, GG, IT, VA), with a prefix pattern (BR, AR: parse only), of any length (DE, AT).
_REGIONS = [
    *("FR", "US", "DE", "GB", "ES", "IT", "BE", "CH", "NL", "CA", "GG", "VA", "AT", "AU"),
    *("JP", "BR", "AR", "MX", "IN", "CN", "RU", "SE", "PL", "KZ", "SG", "NZ", "ZA", "MC"),
]
_TYPES = [PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE]
_EXAMPLES = [
    (region, number)
    for region in _REGIONS
    for kind in _TYPES
    if (number := phonenumbers.example_number_for_type(region, kind)) is not None
]


def _outcome(call: Any, *args: Any) -> tuple[str, str]:
    try:
        return ("ok", str(call(*args)))
    except NormalizeError as exc:
        return (exc.reason, str(exc))


def _general(text: str, value: Any, region: str | None) -> tuple[str, str]:
    """The ``ph`` rule the general way, all through phonenumbers (no fast path), for numbers
    written without "+" or "00" (those have their own short way, not compared here)."""
    if text.startswith(("+", "00")) or (not isinstance(value, str) and text[0] == "-"):
        return _outcome(_RULE, text, value, region)
    return _outcome(phone._phone_digits, text, resolver(None)(region), value)


@st.composite
def _national_texts(draw: st.DrawFn) -> tuple[str, str | None]:
    """An example number with some digits changed (valid or not, any length), written as a
    person would: nationally formatted, with or without the national prefix, other separators,
    sometimes with junk around it."""
    region, example = draw(st.sampled_from(_EXAMPLES))
    digits = phonenumbers.national_significant_number(example)
    kept = draw(st.integers(0, len(digits)))
    size = len(digits) - kept
    tail = draw(st.text("0123456789", min_size=max(size - 1, 0), max_size=size + 1))
    digits = digits[:kept] + tail
    style = draw(st.sampled_from(["national", "prefixed", "bare", "spaced"]))
    if style == "national" and digits:
        number = PhoneNumber(country_code=example.country_code, national_number=int(digits))
        text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    elif style == "prefixed":
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
        text = (metadata.national_prefix or "") + digits if metadata is not None else digits
    elif style == "spaced":
        marks = st.sampled_from(["", "", " ", "-", ".", "/", "(", ")", "\t", "\u00a0"])
        text = "".join(char + draw(marks) for char in digits)
    else:
        text = digits
    junk = st.sampled_from(["", "", "", "x", "ext. 12", "tel:", "+", "00", "0", "٣", "a", ")"])
    text = (draw(junk) + text + draw(junk)).strip()
    return text or "0", draw(st.sampled_from([region, region.lower(), None, "Narnia", "FR"]))


@settings(max_examples=3000, deadline=None)
@given(_national_texts())
def test_national_numbers_read_as_the_general_way_reads_them(case: tuple[str, str | None]) -> None:
    text, region = case
    assert _outcome(_RULE, text, text, region) == _general(text, text, region)


@settings(max_examples=500, deadline=None)
@given(st.text("0123456789 .-()/+x\u00a0٣０", min_size=1, max_size=20), st.sampled_from(_REGIONS))
def test_odd_text_is_read_as_the_general_way_reads_it(text: str, region: str) -> None:
    text = text.strip() or "0"
    assert _outcome(_RULE, text, text, region) == _general(text, text, region)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**17), 10**17), st.sampled_from([*_REGIONS, None]))
def test_whole_numbers_are_read_as_the_general_way_reads_them(
    value: int, region: str | None
) -> None:
    assert _outcome(_RULE, str(value), value, region) == _general(str(value), value, region)


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("06 13 23 45 67", "FR", ("ok", "33613234567")),
        ("(415) 555-2671", "US", ("ok", "14155552671")),
        ("0179 33221410", "DE", ("ok", "4917933221410")),
        ("020 7946 0958", "GB", ("ok", "442079460958")),
        ("(613) 555-0123", "CA", ("ok", "16135550123")),  # +1, read by CA's metadata
        ("612 34 56 78", "ES", ("ok", "34612345678")),
        ("06 13 23 45", "FR", ("invalid_phone", "")),  # too short
        ("06 13 23 45 67 89 01", "FR", ("invalid_phone", "")),  # too long
        ("(415) 555-267", "US", ("invalid_phone", "")),
        ("0613 abc", "FR", ("invalid_phone", "")),
        # A French mobile in a US default: ten digits, but no US area code starts with 0 or 1
        # (it was sent as 10612345678, a number no one has).
        ("06 12 34 56 78", "US", ("invalid_phone", "")),
        ("(161) 234-5678", "US", ("invalid_phone", "")),
        # An area code not assigned yet fits the plan: kept, as the metadata may lag.
        ("(999) 555-0123", "US", ("ok", "19995550123")),
    ],
)
def test_national_numbers_of_the_event_region(
    text: str, region: str, expected: tuple[str, str]
) -> None:
    reason, found = _outcome(_RULE, text, text, region)
    assert (reason, found if reason == "ok" else "") == expected
    assert (reason, found) == _general(text, text, region)


@pytest.mark.parametrize(("region", "example"), _EXAMPLES)
def test_example_numbers_written_nationally_take_the_short_way(
    region: str, example: PhoneNumber
) -> None:
    """Valid national numbers of regions with simple rules never need the full parse."""
    text = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
    expected = phonenumbers.format_number(example, PhoneNumberFormat.E164)[1:]
    # Not where the national prefix is rewritten (JP, BR, AR, GG), nor kept leading zeros (IT).
    simple = region not in ("JP", "BR", "AR", "GG") and not example.italian_leading_zero
    found = phone_plan.national_digits(text, region)
    assert found == (expected if simple else found)
    assert _outcome(_RULE, text, text, region) == ("ok", expected)


@st.composite
def _calling_code_numbers(draw: st.DrawFn) -> tuple[int, str]:
    code = draw(st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)))
    first = draw(st.sampled_from("123456789"))
    return code, first + draw(st.text("0123456789", max_size=draw(st.integers(0, 15))))


@settings(max_examples=3000, deadline=None)
@given(_calling_code_numbers())
def test_validity_is_phonenumbers_validity(case: tuple[int, str]) -> None:
    code, national = case
    number = PhoneNumber(country_code=code, national_number=int(national))
    assert is_valid(code, national) == phonenumbers.is_valid_number(number)
    assert validator(code)(national) == phonenumbers.is_valid_number(number)


@pytest.mark.parametrize("meta_format", [False, True])
def test_shared_calling_codes_pick_the_region_as_phonenumbers_does(meta_format: bool) -> None:
    """+1, +44... numbers of every region that shares them, valid ones and one digit off,
    written nationally or in Meta's format ("14155552671")."""
    checked = 0
    for code in (1, 44, 39, 7, 61, 262, 590):
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]:
            for kind in _TYPES:
                example = phonenumbers.example_number_for_type(region, kind)
                if example is None:
                    continue
                national = phonenumbers.national_significant_number(example)
                for digits in (national, national[:-1] + str((int(national[-1]) + 1) % 10)):
                    if digits[0] == "0":
                        continue
                    number = PhoneNumber(country_code=code, national_number=int(digits))
                    assert is_valid(code, digits) == phonenumbers.is_valid_number(number)
                    checked += 1
                    text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
                    if meta_format:
                        text = phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
                    assert _outcome(_RULE, text, text, region) == _general(text, text, region)
    assert checked > 100
