"""Phone numbers normalized to the E.164 digits (no ``+``) that Meta hashes.

Split out of ``normalize`` (house rule: modules under ~300 lines); ``normalize`` builds the ``ph``
rule with ``phone_rule``.

"+33 6 12 34 56 78"-style values (``+`` or ``00``, digits, separators, a known country code, a
length the code's numbers have, no trunk prefix) are read directly, without ``phonenumbers``,
because that is most of the traffic.
Everything else goes through ``phonenumbers`` with the event's region (else ``default_country``).
We prefer a *valid* number (its range is assigned, per phonenumbers' metadata) and fall back to a
*possible* one (right length for the country; a national number, read in a region the event or
the config gave, must also fit that region's numbering plan: "06 12 34 56 78" is no US number):
the metadata lags new ranges, and Meta only needs the digits to match what the person gave
Facebook. Digits without ``+`` are ambiguous, as Meta's own format has no ``+`` either; they are
read, in this order, as the region's own number in Meta's format ("33612345678" for FR), as a
national number of the region ("0612345678", "612345678"), then as any other country's number in
Meta's format; each reading must be valid. With no region at all only that last reading is
tried. So a foreign number written without its ``+`` can be taken for a national one when both
readings are valid (DE and AT accept almost any length): the ``+`` is what makes a number
unambiguous.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber

from leadrelay.meta.field_rules import NormalizeError, Resolver, TextRule, float_digits
from leadrelay.meta.field_rules import show as _show
from leadrelay.meta.phone_plan import national_digits
from leadrelay.meta.places import RESOLVED

_PHONE_MARKS: Final = b" .-()/\t"
_NON_DIGITS: Final = re.compile(r"[^0-9]+")
_NOT_DIGIT_BYTES: Final = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)


def _digits_of(text: str) -> str:
    """``text`` without anything but the ASCII digits 0-9."""
    if text.isascii():  # bytes.translate: a third of the time of the regular expression
        return text.encode("ascii").translate(None, _NOT_DIGIT_BYTES).decode("ascii")
    return _NON_DIGITS.sub("", text)


_CALLING_CODES: Final = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
# Calling codes are prefix-free, so the first three digits of a number tell its code's length.
_CALLING_CODE_SIZE: Final = {
    f"{n:03d}": size
    for n in range(1000)
    for size in (1, 2, 3)
    if f"{n:03d}"[:size] in _CALLING_CODES
}


# The first three digits of a number (after "+") -> the lengths its numbers have in all, the
# calling code included: the possible lengths of national numbers in the code's main region (US
# for +1, GB for +44), which phonenumbers checks a number against. Filled on first sight
# (``_lengths``): loading every region's metadata up front would cost each start-up 30 ms or more.
# A number of another length is no plain international number: "+7 8 912 345 67 89" and
# "+1 1 650 555 1212" carry a trunk prefix, "+54 11 15 ..." Argentina's old mobile "15", and
# "+48 24475" is too short. phonenumbers then reads it, or says it is not a number.
_LENGTHS: Final[dict[str, frozenset[int]]] = {}


def _lengths(head: str) -> frozenset[int]:
    """``_LENGTHS[head]``, found in phonenumbers' metadata and kept."""
    code = head[: _CALLING_CODE_SIZE.get(head, 0)]
    lengths: frozenset[int] = frozenset()
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code), ()) if code else ()
    if regions:
        metadata = (
            PhoneMetadata.metadata_for_nongeo_region(int(code), None)
            if regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
            else PhoneMetadata.metadata_for_region(regions[0], None)
        )
        general = metadata.general_desc if metadata is not None else None
        if general is not None:  # not the local-only lengths: those lack the area code
            local = set(general.possible_length_local_only or ())
            lengths = frozenset(len(code) + n for n in general.possible_length if n not in local)
    _LENGTHS[head] = lengths
    return lengths


def _international(digits: str) -> bool:
    """Whether ``digits`` (after "+" or "00") are a plainly international number: a calling code
    then a national number of a length it has, not starting with 0 (a trunk prefix, as in
    "+44 (0)20 ...", though Italy keeps its 0: phonenumbers knows which)."""
    size = _CALLING_CODE_SIZE.get(head := digits[:3], 0)
    return (
        bool(size) and digits[size] != "0" and len(digits) in (_LENGTHS.get(head) or _lengths(head))
    )


_E164: Final = phonenumbers.PhoneNumberFormat.E164
_IS_POSSIBLE: Final = phonenumbers.ValidationResult.IS_POSSIBLE


def _fast_phone(text: str) -> str | None:
    """Digits of a plainly international number ("+33 6 12..."), or None to ask phonenumbers."""
    if not text.isascii():
        text = text.replace("\u00a0", " ").replace("\u202f", " ")  # French typography
        if not text.isascii():
            return None
    if text[0] == "+" and text[1:].isdigit():  # E.164 as CRMs store it: nothing to drop
        digits = text[1:]
    else:
        # bytes.translate is the fastest way to drop the separators.
        digits = text.encode("ascii").translate(None, _PHONE_MARKS).decode("ascii")
        if digits[0] == "+":
            digits = digits[1:]
        elif digits.startswith("00"):
            digits = digits[2:]
    if not (digits.isdigit() and 7 <= len(digits) <= 15):
        return None
    return digits if _international(digits) else None


def _parse(text: str, region: str | None) -> PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _valid(number: PhoneNumber) -> bool:
    return bool(phonenumbers.is_valid_number(number))


def _possible(number: PhoneNumber) -> bool:
    # Not is_possible_number(): that also accepts local-only numbers, which lack the area code.
    return bool(phonenumbers.is_possible_number_with_reason(number) == _IS_POSSIBLE)


def _in_plan(number: PhoneNumber, region: str) -> bool:
    """Whether a national number fits ``region``'s numbering plan: phonenumbers' general
    description of its numbers, which covers ranges not assigned yet, but no US area code
    starting with 0 or 1 ("06 12 34 56 78" is no US number, whatever its length)."""
    metadata = PhoneMetadata.metadata_for_region(region, None)
    general = metadata.general_desc if metadata is not None else None
    pattern = general.national_number_pattern if general is not None else None
    national = phonenumbers.national_significant_number(number)
    return not pattern or re.fullmatch(pattern, national) is not None


@lru_cache(maxsize=512)
def _calling_code(region: str) -> str:
    return str(phonenumbers.country_code_for_region(region))


def _e164_digits(number: PhoneNumber) -> str:
    return str(phonenumbers.format_number(number, _E164))[1:]


# Mexico's numbers as dialled before its 2019 change, still in CRMs: mobiles with a "1" after
# the calling code, or "044"/"045" before the area code; long distance with "01".
_MX_OLD_NATIONAL: Final = ("044", "045", "01", "1")


def _current_mexican(text: str, country: str | None) -> str | None:
    """The number now ("+52" and ten digits) of a Mexican number written the old way
    ("+52 1 55 1234 5678", "1 55 1234 5678", "044 55 1234 5678" in MX), else None."""
    digits = _digits_of(text)
    if text.startswith(("+52", "0052")):
        national = digits[2:] if text[0] == "+" else digits[4:]
        return "+52" + national[1:] if len(national) == 11 and national[0] == "1" else None
    if country == "MX" and text[0] != "+":
        for prefix in _MX_OLD_NATIONAL:
            if len(digits) == len(prefix) + 10 and digits.startswith(prefix):
                return "+52" + digits[len(prefix) :]
    return None


def _phone_digits(text: str, country: str | None, value: Any) -> str:
    """The phonenumbers path: E.164 digits without the "+"."""
    if (country == "MX" or text.startswith(("+52", "0052"))) and (
        current := _current_mexican(text, country)
    ):
        found = _parse(current, None)
        if found is not None and _valid(found):
            return _e164_digits(found)
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        found = _parse(text, None)
        if found is None or not _possible(found):
            raise NormalizeError(
                "invalid_phone", f"phone number {_show(value)} is not a valid international number"
            )
        return _e164_digits(found)
    digits = _digits_of(text)
    # Digits may already be international, the way Meta writes them ("33612345678").
    plus = "+" + digits if digits[:1] not in ("", "0") else None
    national = None
    if country is not None:
        # The region's own number in Meta's format is read as such first: in countries with
        # numbers of varying length (DE, SE, ID...) the same digits also pass as a national number.
        if plus is not None and digits.startswith(_calling_code(country)):
            found = _parse(plus, None)
            if found is not None and _valid(found):
                return _e164_digits(found)
        national = _parse(text, country)
        if national is not None and _valid(national):
            return _e164_digits(national)
    if plus is not None:
        found = _parse(plus, None)
        if found is not None and _valid(found):
            return _e164_digits(found)
    if country is None:
        raise NormalizeError(
            "phone_without_country",
            f"phone number {_show(value)} has no country code, and the event no country to "
            "read it in: write it as +33..., or set user.country on the event (an ISO code such "
            "as FR, or a country's name) or default_country in the config",
        )
    if national is not None and _possible(national) and _in_plan(national, country):
        return _e164_digits(national)
    raise NormalizeError(
        "invalid_phone", f"phone number {_show(value)} is not a valid {country} number"
    )


def phone_rule(resolve: Resolver) -> TextRule:
    """Compile the ``ph`` rule; ``resolve`` turns the event's country hint into a region."""

    def normalize(text: str, value: Any, region: str | None) -> str:
        if isinstance(value, str):
            if text[0] == "+" or text.startswith("00"):
                digits = text[1:]
                if (
                    text[0] == "+"
                    and (digits.isdigit() or (digits := digits.replace(" ", "")).isdigit())
                    and digits.isascii()
                    and 7 <= len(digits) <= 15
                ):
                    # E.164 as CRMs store it, most numbers, or spaced out ("+33 6 12 34 56 78"):
                    # _fast_phone's answer without its call (it drops the same spaces), and
                    # _international's, without its call either.
                    size = _CALLING_CODE_SIZE.get(head := digits[:3], 0)
                    if (
                        size
                        and digits[size] != "0"
                        and len(digits) in (_LENGTHS.get(head) or _lengths(head))
                    ):
                        return digits
                else:
                    found = _fast_phone(text)
                    if found is not None:
                        return found
                return _phone_digits(text, region if region in RESOLVED else resolve(region), value)
            text = float_digits(text) or text  # 33612345678.0: the number
        elif text[0] == "-":
            raise NormalizeError("invalid_phone", f"phone number {_show(value)} is negative")
        country = region if region in RESOLVED else resolve(region)
        # A national number (neither "+" nor "00": whole numbers neither), as most are written.
        if country is not None and (found := national_digits(text, country)) is not None:
            return found
        return _phone_digits(text, country, value)

    return normalize
