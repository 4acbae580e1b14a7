"""Customer information normalized and SHA-256 hashed exactly as Meta's Conversions API expects.

Meta matches ``user_data`` on SHA-256 digests of *normalized* values, so every spelling of the same
email, phone or name must give the same digest (reference: Meta spec section 4). ``normalizer`` and
``hasher`` compile one function per field, once; the mapping engine calls the returned functions
per event. They raise ``NormalizeError`` (a ``ValueError`` with a machine ``reason`` and a
``message`` for people that shows the value truncated and never a hash).


Phone numbers live in ``phone`` and birthdates in ``dates`` (house rule: modules under ~300
lines); the shared error type and rule signatures live in ``field_rules``. All of them are
re-exported here, so callers keep importing from ``normalize``.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, cast

from leadrelay.meta import geo
from leadrelay.meta.dates import birthdate_rule
from leadrelay.meta.field_rules import NormalizeError, Normalizer, Resolver, TextRule
from leadrelay.meta.field_rules import show as _show
from leadrelay.meta.phone import phone_rule

__all__ = [
    "HASHED_FIELDS",
    "REGIONAL_FIELDS",
    "REPEATING_FIELDS",
    "NormalizeError",
    "Normalizer",
    "Resolver",
    "TextRule",
    "hasher",
    "is_sha256",
    "normalizer",
    "region_hint",
    "sha256",
    "sha256_hex",
    "text_hasher",
    "text_rule",
]

HASHED_FIELDS: Final[frozenset[str]] = frozenset(
    {"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country", "external_id"}
)
# Fields whose normalized value depends on the event's region (national phone numbers, US
# states and zip codes); for every other field it depends on the value alone.
REGIONAL_FIELDS: Final[frozenset[str]] = frozenset({"ph", "st", "zp"})
# Fields with a handful of values (genders, states, countries): worth remembering digests of.
# Names, cities and zip codes are not: they are nearly as many as the people, so a memo of them
# misses about always, and a miss (look-up, insert, emptying when full) costs a third of
# normalizing and hashing the value again. Emails, phone numbers, ids and birthdates neither.
REPEATING_FIELDS: Final[frozenset[str]] = frozenset({"ge", "st", "country"})


def _short_sha256() -> Callable[[bytes], hashlib._Hash]:
    """The SHA-256 to hash short values with: CPython's own (``_sha2`` from 3.12, ``_sha256``
    before), else hashlib's. Both give the same digests; for a value of one 64-byte block, the
    cost is mostly the object's creation, and OpenSSL's costs four times as much."""
    for name in ("_sha2", "_sha256"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "sha256"):
            return cast("Callable[[bytes], hashlib._Hash]", module.sha256)
    return hashlib.sha256


sha256: Final = _short_sha256()
"""``sha256(data)``: a SHA-256 hash object, the cheapest to make for short values."""
_sha256: Final = sha256


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``text``."""
    return _sha256(text.encode("utf-8")).hexdigest()


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
        # Letters and hyphens (double-barrelled names): the hyphens are all _clean deletes.
        joined = lowered.replace("-", "")
        if joined.isalpha():
            return joined if joined.isascii() else _nfc("NFC", joined)
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


@dataclass(frozen=True, slots=True)
class _Field:
    label: str  # for messages
    numbers: bool  # whole numbers are accepted as well as text
    dates: bool  # date objects are accepted as well
    build: Callable[[Resolver], TextRule]


_FIELDS: Final[dict[str, _Field]] = {
    "em": _Field("email", False, False, lambda resolve: _email),
    "ph": _Field("phone number", True, False, phone_rule),
    "fn": _Field("first name", False, False, lambda resolve: _name("first name")),
    "ln": _Field("last name", False, False, lambda resolve: _name("last name")),
    "db": _Field("birthdate", True, True, lambda resolve: birthdate_rule),
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
        return value.isoformat()  # read back by birthdate_rule exactly as the date it is
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
    sha256 = _sha256

    def digest(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 64 and is_digest(text) is not None:
                return text.lower()
            if text:
                return sha256(rule(text, value, region).encode("utf-8")).hexdigest()
        return sha256(rule(_as_text(value, spec), value, region).encode("utf-8")).hexdigest()

    return digest


def text_rule(field: str, *, default_country: str | None = None) -> TextRule:
    """``f(text, value, region) -> normalized text`` (not hashed) for a trimmed, non-empty
    string ``text`` (``value`` as given, for error messages): what ``text_hasher`` hashes, for
    callers that hash themselves (``sha256_hex``, after ``is_sha256``)."""
    return _compile(field, default_country)[1]


def text_hasher(field: str, *, default_country: str | None = None) -> TextRule:
    """``hasher`` for a string value already trimmed, and not empty, by the caller.

    ``f(text, value, region)``: ``text`` is ``value.strip()``, ``value`` the string as given (for
    error messages). The same digest as ``hasher(field)(value, region)``, one call fewer.
    """
    _, rule = _compile(field, default_country)
    is_digest = _SHA256.fullmatch
    sha256 = _sha256

    def digest(text: str, value: Any, region: str | None) -> str:
        if len(text) == 64 and is_digest(text) is not None:
            return text.lower()
        return sha256(rule(text, value, region).encode("utf-8")).hexdigest()

    return digest
