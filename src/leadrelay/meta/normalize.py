"""Customer information normalized and SHA-256 hashed exactly as Meta's Conversions API expects.

Meta matches ``user_data`` on SHA-256 digests of *normalized* values, so every spelling of the same
email, phone or name must give the same digest (reference: Meta spec section 4). ``normalizer`` and
``hasher`` compile one function per field, once; the mapping engine calls the returned functions
per event. They raise ``NormalizeError`` (a ``ValueError`` with a machine ``reason`` and a
``message`` for people that shows the value truncated and never a hash).

Phone numbers: "+33 6 12 34 56 78"-style values (``+`` or ``00``, digits, separators, a known
country code) are read directly, without ``phonenumbers``, because that is most of the traffic.
Everything else goes through ``phonenumbers`` with the event's region (else ``default_country``).
We prefer a *valid* number (its range is assigned, per phonenumbers' metadata) and fall back to a
*possible* one (right length for the country): the metadata lags new ranges, and Meta only needs
the digits to match what the person gave Facebook. Digits without ``+`` are ambiguous, as Meta's
own format has no ``+`` either; they are read, in this order, as the region's own number in
Meta's format ("33612345678" for FR), as a national number of the region ("0612345678",
"612345678"), then as any other country's number in Meta's format; each reading must be valid.
With no region at all only that last reading is tried. So a foreign number written without its
``+`` can be taken for a national one when both readings are valid (DE and AT accept almost any
length): the ``+`` is what makes a number unambiguous.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber

from leadrelay.meta import geo

HASHED_FIELDS: Final[frozenset[str]] = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
)

Normalizer = Callable[[Any, str | None], str]
# A field's rule given the trimmed, non-empty text of a value; the value itself comes along for
# error messages and for the few checks that depend on its type (a negative number).
TextRule = Callable[[str, Any, str | None], str]


class NormalizeError(ValueError):
    """A value that cannot be used for a field: ``reason`` is a code, ``message`` is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 42 else text[:39] + "..."


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_SHA256: Final = re.compile(r"[0-9a-fA-F]{64}")


def is_sha256(text: str) -> bool:
    """True if ``text`` is exactly 64 hexadecimal characters (any case), i.e. already a digest."""
    return isinstance(text, str) and len(text) == 64 and _SHA256.fullmatch(text) is not None


_REGIONS: Final[dict[str, str | None]] = {}  # memo: events spell their countries a few ways
_REGIONS_KEPT: Final = 1024


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


def _text(value: Any, label: str, *, numbers: bool = False) -> str:
    """The trimmed text of a value; whole numbers are accepted where a field can be numeric."""
    if isinstance(value, str):
        text = value.strip()
    elif numbers and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        kinds = "text or a whole number" if numbers else "text"
        raise NormalizeError(
            "invalid_type", f"{label} must be {kinds}, got {type(value).__name__} {_show(value)}"
        )
    if not text:
        raise NormalizeError("empty", f"{label} is empty")
    return text


class _Deleter(dict[int, int | None]):
    """``str.translate`` table deleting characters of the given Unicode major categories.

    Filled on first sight of each character, so we never build a table for all of Unicode.
    """

    __slots__ = ("_categories", "ascii")

    def __init__(self, categories: str) -> None:
        super().__init__()
        self._categories = categories
        # The same deletions for ASCII text, for bytes.translate (several times faster).
        self.ascii = bytes(c for c in range(128) if unicodedata.category(chr(c))[0] in categories)

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.category(chr(code))[0] in self._categories else code
        self[code] = kept
        return kept


_PUNCTUATION: Final = _Deleter("PS")  # punctuation and symbols
_COMPACT: Final = _Deleter("PSZC")  # ... and spaces, controls
_CITY: Final = _Deleter("PSZCN")  # ... and digits


_nfc: Final = unicodedata.normalize


def _clean(lowered: str, table: _Deleter) -> str:
    if lowered.isascii():
        return lowered.encode("ascii").translate(None, table.ascii).decode("ascii")
    cleaned = lowered.translate(table)
    # Composed last: deleting a character can bring a letter and an accent together.
    return cleaned if cleaned.isascii() else _nfc("NFC", cleaned)


def _emptied(label: str, value: Any) -> NormalizeError:
    return NormalizeError("empty", f"{label} {_show(value)} has nothing left once cleaned")


_EMAIL: Final = re.compile(r"[^@]+@[^@.][^@]*\.[^@.]+")


def _email(text: str, value: Any, region: str | None) -> str:
    # Every whitespace character but the space is unprintable, so most addresses skip the split.
    if " " in text or not text.isprintable():
        text = "".join(text.split())
    email = text.lower()
    if not email.isascii():
        email = _nfc("NFC", email)
    if _EMAIL.fullmatch(email) is None:
        raise NormalizeError(
            "invalid_email", f"email {_show(value)} is not an address like name@example.com"
        )
    return email


# Letters only (most names and cities): nothing to delete, no spaces to squeeze.
def _name(label: str) -> TextRule:
    def normalize(text: str, value: Any, region: str | None) -> str:
        lowered = text.lower()
        if lowered.isalpha():
            return lowered if lowered.isascii() else _nfc("NFC", lowered)
        name = " ".join(_clean(lowered, _PUNCTUATION).split())
        if not name:
            raise _emptied(label, value)
        return name

    return normalize


def _city(text: str, value: Any, region: str | None) -> str:
    lowered = text.lower()
    if lowered.isalpha():
        return lowered if lowered.isascii() else _nfc("NFC", lowered)
    city = _clean(lowered, _CITY)
    if not city:
        raise _emptied("city", value)
    return city


def _compact(text: str) -> str:
    """Lower case without punctuation, symbols, spaces or controls (letters and digits only)."""
    lowered = text.lower()
    if lowered.isalnum():
        return lowered if lowered.isascii() else _nfc("NFC", lowered)
    return _clean(lowered, _COMPACT)


_DATE: Final = re.compile(
    r"(\d{4})(?:(\d{2})(\d{2})|([-/.])(\d{1,2})\4(\d{1,2}))"
    r"(?:[T ][0-9:.,]+(?:Z|[+-][0-9:]+)?)?",
    re.ASCII,
)
_DATE_FORMATS: Final = "YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, YYYY.MM.DD or an ISO date-time"


_EPOCH: Final = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=1)
def _today(day: int) -> date:
    """The UTC date of day ``day`` since the epoch; cached, as date.today() costs a syscall."""
    return date.fromordinal(_EPOCH + day)


def _utc_today() -> date:
    return _today(int(time.time() // 86400))


# Clocks run forward: a birth year before this one is never in the future, so most dates need
# no look at the clock.
_PAST_YEARS_END: Final = _utc_today().year
_PAST_YEARS_TEXT: Final = f"{_PAST_YEARS_END:04d}"


def _birthdate(text: str, value: Any, region: str | None) -> str:
    if (
        len(text) == 10
        and text[4] == "-"
        and text[7] == "-"
        and text.isascii()
        and text[:4].isdigit()
        and text[5:7].isdigit()
        and text[8:].isdigit()
    ):  # YYYY-MM-DD, what CRMs export: the regular expression below, read directly
        y, m, d = text[:4], text[5:7], text[8:]
        # Equal-length digit strings compare like the numbers: a date that is surely real and in
        # range needs no conversion at all.
        if "1900" <= y < _PAST_YEARS_TEXT and "01" <= m <= "12" and "01" <= d <= "28":
            return y + m + d
        year, month, day = int(y), int(m), int(d)
    else:
        match = _DATE.fullmatch(text)
        if match is None:
            raise NormalizeError(
                "invalid_birthdate",
                f"birthdate {_show(value)} is not in an accepted format ({_DATE_FORMATS}); "
                "day-first and month-first dates are ambiguous",
            )
        year = int(match[1])
        month, day = int(match[2] or match[5]), int(match[3] or match[6])
    try:
        born = date(year, month, day)
    except ValueError:
        raise NormalizeError(
            "invalid_birthdate", f"birthdate {_show(value)} is not a real calendar date"
        ) from None
    if year < 1900 or (year >= _PAST_YEARS_END and born > _utc_today()):
        raise NormalizeError(
            "invalid_birthdate",
            f"birthdate {_show(value)} is out of range "
            f"(year 1900 to {_utc_today().year}, not in the future)",
        )
    return f"{year:04d}{month:02d}{day:02d}"


# French forms included: Commanders Act's customers often keep "H"/"F" (homme/femme).
_GENDERS: Final = {
    **dict.fromkeys(("f", "female", "woman", "w", "femme"), "f"),
    **dict.fromkeys(("m", "male", "man", "h", "homme"), "m"),
}


def _gender(text: str, value: Any, region: str | None) -> str:
    gender = _GENDERS.get(text.lower())
    if gender is None:
        raise NormalizeError(
            "invalid_gender", f"gender {_show(value)} is not one of f, m, female, male"
        )
    return gender


def _country(text: str, value: Any, region: str | None) -> str:
    code = geo.country_code(text)
    if code is None:
        raise NormalizeError(
            "invalid_country",
            f"country {_show(value)} is not an ISO 3166 code or a known country name "
            "(use e.g. FR, FRA or France)",
        )
    return code.lower()


def _external_id(text: str, value: Any, region: str | None) -> str:
    return text


Resolver = Callable[[str | None], str | None]


def _resolver(default: str | None) -> Resolver:
    def resolve(region: str | None) -> str | None:
        if region is None:
            return default
        return region_hint(region) or default

    return resolve


def _state(resolve: Resolver) -> TextRule:
    def normalize(text: str, value: Any, region: str | None) -> str:
        state = _compact(text)
        if not state:
            raise _emptied("state", value)
        country = resolve(region)
        # Without a region, a full US state name is still unmistakable ("California").
        if country == "US" or (country is None and len(state) > 2):
            code = geo.US_STATE_NAMES.get(state)
            if code is not None:
                return code.lower()
        return state

    return normalize


_ZIP_PLUS4: Final = re.compile(r"(\d{5})-\d{4}", re.ASCII)


def _zip(resolve: Resolver) -> TextRule:
    def normalize(text: str, value: Any, region: str | None) -> str:
        if not isinstance(value, str) and value < 0:
            raise NormalizeError("invalid_zip", f"zip code {_show(value)} is negative")
        zipcode = _compact(text)
        if not zipcode:
            raise _emptied("zip code", value)
        country = resolve(region)
        if country == "US":
            if zipcode.isascii() and zipcode.isdigit():
                if len(zipcode) in (5, 9):
                    return zipcode[:5]
                if len(zipcode) in (3, 4):
                    # Spreadsheets drop the leading zeros of New England and New Jersey zips.
                    return zipcode.zfill(5)
            raise NormalizeError(
                "invalid_zip", f"zip code {_show(value)} is not a US ZIP code (5 digits or ZIP+4)"
            )
        if country is None:
            plus4 = _ZIP_PLUS4.fullmatch(text)
            if plus4 is not None:
                return plus4[1]
        return zipcode

    return normalize


_PHONE_MARKS: Final = b" .-()/\t"
_NON_DIGITS: Final = re.compile(r"[^0-9]+")
_CALLING_CODES: Final = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
# Calling codes are prefix-free, so the first three digits of a number tell its code's length.
_CALLING_CODE_SIZE: Final = {
    f"{n:03d}": size
    for n in range(1000)
    for size in (1, 2, 3)
    if f"{n:03d}"[:size] in _CALLING_CODES
}
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
    size = _CALLING_CODE_SIZE.get(digits[:3], 0)
    # A 0 after the country code is usually a trunk prefix ("+44 (0)20 ..."), but Italy keeps it;
    # phonenumbers knows which.
    return digits if size and digits[size] != "0" else None


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


@lru_cache(maxsize=512)
def _calling_code(region: str) -> str:
    return str(phonenumbers.country_code_for_region(region))


def _e164_digits(number: PhoneNumber) -> str:
    return str(phonenumbers.format_number(number, _E164))[1:]


@dataclass(frozen=True, slots=True)
class _NationalPlan:
    """What ``phonenumbers.parse`` does with a region's national numbers, where it is simple."""

    country_code: int
    calling_code: str
    international: re.Pattern[str] | None  # the region's international (IDD) prefix
    trunk: re.Pattern[str] | None  # the national prefix, as phonenumbers strips it
    lengths: frozenset[int]  # possible national significant number lengths
    local_only: frozenset[int]  # lengths phonenumbers will not strip the prefix down to


@lru_cache(maxsize=512)
def _national_plan(region: str) -> _NationalPlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    # A transform rule (AR, BR, JP...) rewrites the number; those go through parse().
    if metadata is None or metadata.national_prefix_transform_rule:
        return None
    idd, trunk = metadata.international_prefix, metadata.national_prefix_for_parsing
    general, code = metadata.general_desc, metadata.country_code
    if general is None or code is None:
        return None
    return _NationalPlan(
        code,
        str(code),
        re.compile(idd) if idd else None,
        re.compile(trunk) if trunk else None,
        frozenset(general.possible_length),
        frozenset(general.possible_length_local_only),
    )


_PLAIN_PHONE: Final = re.compile(r"[0-9 .\-()/]{2,40}").fullmatch


def _national_digits(text: str, digits: str, region: str) -> str | None:
    """E.164 digits of a valid national number ("06 12 34 56 78", FR), else None.

    ``phonenumbers.parse`` spends most of its time finding the number in free text; for plain
    digits and separators it comes down to: no international prefix, no leading country code,
    strip the national prefix, keep the rest. When that is unambiguous the number is built here
    and only validated by phonenumbers; anything else (and any invalid number) returns None, so
    the caller takes the full parse and gives the same answer.
    """
    plan = _national_plan(region)
    if (
        plan is None
        or _PLAIN_PHONE(text) is None
        or (plan.international is not None and plan.international.match(digits))
        or digits.startswith(plan.calling_code)
    ):
        return None
    national = digits
    if plan.trunk is not None and (prefix := plan.trunk.match(digits)) is not None:
        national = digits[prefix.end() :]
        if len(national) in plan.local_only:
            return None
    if len(national) not in plan.lengths or national[0] == "0":  # leading zeros: ask parse()
        return None
    number = PhoneNumber(country_code=plan.country_code, national_number=int(national))
    return plan.calling_code + national if phonenumbers.is_valid_number(number) else None


def _phone_digits(text: str, country: str | None, value: Any) -> str:
    """The phonenumbers path: E.164 digits without the "+"."""
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        found = _parse(text, None)
        if found is None or not _possible(found):
            raise NormalizeError(
                "invalid_phone", f"phone number {_show(value)} is not a valid international number"
            )
        return _e164_digits(found)
    digits = _NON_DIGITS.sub("", text)
    if country is not None and (fast := _national_digits(text, digits, country)) is not None:
        return fast
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
            f"phone number {_show(value)} has no country code; write it as +33... or "
            "set user.country on the event or default_country in the config",
        )
    if national is not None and _possible(national):
        return _e164_digits(national)
    raise NormalizeError(
        "invalid_phone", f"phone number {_show(value)} is not a valid {country} number"
    )


def _phone(resolve: Resolver) -> TextRule:
    def normalize(text: str, value: Any, region: str | None) -> str:
        if isinstance(value, str):
            if text.startswith(("+", "00")):
                digits = _fast_phone(text)
                if digits is not None:
                    return digits
        elif text[0] == "-":
            raise NormalizeError("invalid_phone", f"phone number {_show(value)} is negative")
        return _phone_digits(text, resolve(region), value)

    return normalize


@dataclass(frozen=True, slots=True)
class _Field:
    label: str  # for messages
    numbers: bool  # whole numbers are accepted as well as text
    dates: bool  # date objects are accepted as well
    build: Callable[[Resolver], TextRule]


_FIELDS: Final[dict[str, _Field]] = {
    "em": _Field("email", False, False, lambda resolve: _email),
    "ph": _Field("phone number", True, False, _phone),
    "fn": _Field("first name", False, False, lambda resolve: _name("first name")),
    "ln": _Field("last name", False, False, lambda resolve: _name("last name")),
    "db": _Field("birthdate", True, True, lambda resolve: _birthdate),
    "ge": _Field("gender", False, False, lambda resolve: _gender),
    "ct": _Field("city", False, False, lambda resolve: _city),
    "st": _Field("state", False, False, _state),
    "zp": _Field("zip code", True, False, _zip),
    "country": _Field("country", False, False, lambda resolve: _country),
    "external_id": _Field("external_id", True, False, lambda resolve: _external_id),
}


def _as_text(value: Any, field: _Field) -> str:
    """The text of a value that is not a non-blank string (or the error saying why not)."""
    if field.dates and isinstance(value, date):
        return value.isoformat()  # read back by _birthdate exactly as the date it is
    return _text(value, field.label, numbers=field.numbers)


def _compile(field: str, default_country: str | None) -> tuple[_Field, TextRule]:
    if field not in _FIELDS:
        raise ValueError(
            f"{field!r} is not a hashed user_data field; expected one of {sorted(HASHED_FIELDS)}"
        )
    default = None
    if default_country is not None:
        default = region_hint(default_country)
        if default is None:
            raise ValueError(f"default_country {default_country!r} is not a country code")
    spec = _FIELDS[field]
    return spec, spec.build(_resolver(default))


def normalizer(field: str, *, default_country: str | None = None) -> Normalizer:
    """Compile ``f(value, region) -> normalized text`` (not hashed) for a ``user_data`` field.

    ``region`` is the event's country hint (alpha-2 or alpha-3, any case, or None); it decides how
    national phone numbers and US zip and state values are read, and ``default_country`` stands in
    when it is missing. ``f`` raises ``NormalizeError``. An unknown ``field`` or ``default_country``
    raises ``ValueError`` here, since that is a programming or configuration error.
    """
    spec, rule = _compile(field, default_country)

    def normalize(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if text:
                return rule(text, value, region)
        return rule(_as_text(value, spec), value, region)

    return normalize


def hasher(field: str, *, default_country: str | None = None) -> Normalizer:
    """Compile ``f(value, region) -> lowercase SHA-256 hex`` of the normalized value.

    A value that already is a SHA-256 digest (64 hex characters once trimmed) is passed through
    lowercased, never hashed twice, so hashing is idempotent. Otherwise as ``normalizer``.
    """
    spec, rule = _compile(field, default_country)
    is_digest = _SHA256.fullmatch
    sha256 = hashlib.sha256

    def digest(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 64 and is_digest(text) is not None:
                return text.lower()
            if text:
                return sha256(rule(text, value, region).encode("utf-8")).hexdigest()
        return sha256(rule(_as_text(value, spec), value, region).encode("utf-8")).hexdigest()

    return digest


def text_hasher(field: str, *, default_country: str | None = None) -> TextRule:
    """``hasher`` for a string value already trimmed, and not empty, by the caller.

    ``f(text, value, region)``: ``text`` is ``value.strip()``, ``value`` the string as given (for
    error messages). The same digest as ``hasher(field)(value, region)``, one call fewer.
    """
    _, rule = _compile(field, default_country)
    is_digest = _SHA256.fullmatch
    sha256 = hashlib.sha256

    def digest(text: str, value: Any, region: str | None) -> str:
        if len(text) == 64 and is_digest(text) is not None:
            return text.lower()
        return sha256(rule(text, value, region).encode("utf-8")).hexdigest()

    return digest
