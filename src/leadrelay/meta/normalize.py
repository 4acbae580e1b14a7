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
from datetime import date
from functools import lru_cache
from typing import Any, Final

import phonenumbers
from phonenumbers import PhoneNumber

from leadrelay.meta import geo

HASHED_FIELDS: Final[frozenset[str]] = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
)

Normalizer = Callable[[Any, str | None], str]


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


@lru_cache(maxsize=1024)
def _region_of(text: str) -> str | None:
    return geo.country_code(text)


def region_hint(country_value: Any) -> str | None:
    """ISO alpha-2 (upper case) for a country code or name ("fr", "FRA", "France"), else None."""
    return _region_of(country_value) if isinstance(country_value, str) else None


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

    __slots__ = ("_categories",)

    def __init__(self, categories: str) -> None:
        super().__init__()
        self._categories = categories

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.category(chr(code))[0] in self._categories else code
        self[code] = kept
        return kept


_PUNCTUATION: Final = _Deleter("PS")  # punctuation and symbols
_COMPACT: Final = _Deleter("PSZC")  # ... and spaces, controls
_CITY: Final = _Deleter("PSZCN")  # ... and digits


def _clean(text: str, table: _Deleter) -> str:
    cleaned = text.lower().translate(table)
    # Composed last: deleting a character can bring a letter and an accent together.
    return cleaned if cleaned.isascii() else unicodedata.normalize("NFC", cleaned)


def _emptied(label: str, value: Any) -> NormalizeError:
    return NormalizeError("empty", f"{label} {_show(value)} has nothing left once cleaned")


_EMAIL: Final = re.compile(r"[^@]+@[^@.][^@]*\.[^@.]+")


def _email(value: Any, region: str | None) -> str:
    email = "".join(_text(value, "email").split()).lower()
    if not email.isascii():
        email = unicodedata.normalize("NFC", email)
    if _EMAIL.fullmatch(email) is None:
        raise NormalizeError(
            "invalid_email", f"email {_show(value)} is not an address like name@example.com"
        )
    return email


def _name(label: str) -> Normalizer:
    def normalize(value: Any, region: str | None) -> str:
        name = " ".join(_clean(_text(value, label), _PUNCTUATION).split())
        if not name:
            raise _emptied(label, value)
        return name

    return normalize


def _city(value: Any, region: str | None) -> str:
    city = _clean(_text(value, "city"), _CITY)
    if not city:
        raise _emptied("city", value)
    return city


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


def _birthdate(value: Any, region: str | None) -> str:
    if isinstance(value, date):
        year, month, day = value.year, value.month, value.day
    else:
        match = _DATE.fullmatch(_text(value, "birthdate", numbers=True))
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
    today = _today(int(time.time() // 86400))
    if year < 1900 or born > today:
        raise NormalizeError(
            "invalid_birthdate",
            f"birthdate {_show(value)} is out of range "
            f"(year 1900 to {today.year}, not in the future)",
        )
    return f"{year:04d}{month:02d}{day:02d}"


# French forms included: Commanders Act's customers often keep "H"/"F" (homme/femme).
_GENDERS: Final = {
    **dict.fromkeys(("f", "female", "woman", "w", "femme"), "f"),
    **dict.fromkeys(("m", "male", "man", "h", "homme"), "m"),
}


def _gender(value: Any, region: str | None) -> str:
    gender = _GENDERS.get(_text(value, "gender").lower())
    if gender is None:
        raise NormalizeError(
            "invalid_gender", f"gender {_show(value)} is not one of f, m, female, male"
        )
    return gender


def _country(value: Any, region: str | None) -> str:
    code = geo.country_code(_text(value, "country"))
    if code is None:
        raise NormalizeError(
            "invalid_country",
            f"country {_show(value)} is not an ISO 3166 code or a known country name "
            "(use e.g. FR, FRA or France)",
        )
    return code.lower()


def _external_id(value: Any, region: str | None) -> str:
    return _text(value, "external_id", numbers=True)


Resolver = Callable[[str | None], str | None]


def _resolver(default: str | None) -> Resolver:
    def resolve(region: str | None) -> str | None:
        if region is None:
            return default
        return region_hint(region) or default

    return resolve


def _state(resolve: Resolver) -> Normalizer:
    def normalize(value: Any, region: str | None) -> str:
        state = _clean(_text(value, "state"), _COMPACT)
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


def _zip(resolve: Resolver) -> Normalizer:
    def normalize(value: Any, region: str | None) -> str:
        text = _text(value, "zip code", numbers=True)
        if isinstance(value, int) and value < 0:
            raise NormalizeError("invalid_zip", f"zip code {_show(value)} is negative")
        zipcode = _clean(text, _COMPACT)
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
_E164: Final = phonenumbers.PhoneNumberFormat.E164
_IS_POSSIBLE: Final = phonenumbers.ValidationResult.IS_POSSIBLE


def _fast_phone(text: str) -> str | None:
    """Digits of a plainly international number ("+33 6 12..."), or None to ask phonenumbers."""
    if not text.isascii():
        text = text.replace("\u00a0", " ").replace("\u202f", " ")  # French typography
        if not text.isascii():
            return None
    # bytes.translate is the fastest way to drop the separators (a few hundred ns saved per event).
    digits = text.encode("ascii").translate(None, _PHONE_MARKS).decode("ascii")
    if digits[0] == "+":
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not (digits.isdigit() and 7 <= len(digits) <= 15):
        return None
    for size in (1, 2, 3):  # calling codes are prefix-free
        if digits[:size] in _CALLING_CODES:
            # A 0 after the country code is usually a trunk prefix ("+44 (0)20 ..."), but Italy
            # keeps it; phonenumbers knows which.
            return None if digits[size] == "0" else digits
    return None


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


def _phone(resolve: Resolver) -> Normalizer:
    def normalize(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("+", "00")):
                digits = _fast_phone(text)
                if digits is not None:
                    return digits
        else:
            text = _text(value, "phone number", numbers=True)
            if text[0] == "-":
                raise NormalizeError("invalid_phone", f"phone number {_show(value)} is negative")
        if not text:
            raise NormalizeError("empty", "phone number is empty")
        return _phone_digits(text, resolve(region), value)

    return normalize


_BUILDERS: Final[dict[str, Callable[[Resolver], Normalizer]]] = {
    "em": lambda resolve: _email,
    "ph": _phone,
    "fn": lambda resolve: _name("first name"),
    "ln": lambda resolve: _name("last name"),
    "db": lambda resolve: _birthdate,
    "ge": lambda resolve: _gender,
    "ct": lambda resolve: _city,
    "st": _state,
    "zp": _zip,
    "country": lambda resolve: _country,
    "external_id": lambda resolve: _external_id,
}


def normalizer(field: str, *, default_country: str | None = None) -> Normalizer:
    """Compile ``f(value, region) -> normalized text`` (not hashed) for a ``user_data`` field.

    ``region`` is the event's country hint (alpha-2 or alpha-3, any case, or None); it decides how
    national phone numbers and US zip and state values are read, and ``default_country`` stands in
    when it is missing. ``f`` raises ``NormalizeError``. An unknown ``field`` or ``default_country``
    raises ``ValueError`` here, since that is a programming or configuration error.
    """
    if field not in _BUILDERS:
        raise ValueError(
            f"{field!r} is not a hashed user_data field; expected one of {sorted(HASHED_FIELDS)}"
        )
    default = None
    if default_country is not None:
        default = region_hint(default_country)
        if default is None:
            raise ValueError(f"default_country {default_country!r} is not a country code")
    return _BUILDERS[field](_resolver(default))


def hasher(field: str, *, default_country: str | None = None) -> Normalizer:
    """Compile ``f(value, region) -> lowercase SHA-256 hex`` of the normalized value.

    A value that already is a SHA-256 digest (64 hex characters once trimmed) is passed through
    lowercased, never hashed twice, so hashing is idempotent. Otherwise as ``normalizer``.
    """
    normalize = normalizer(field, default_country=default_country)
    is_digest = _SHA256.fullmatch
    sha256 = hashlib.sha256

    def digest(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 64 and is_digest(text) is not None:
                return text.lower()
        return sha256(normalize(value, region).encode("utf-8")).hexdigest()

    return digest
