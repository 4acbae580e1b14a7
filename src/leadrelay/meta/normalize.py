"""Customer information normalized and SHA-256 hashed exactly as Meta's Conversions API expects.

Meta matches ``user_data`` on SHA-256 digests of *normalized* values, so every spelling of the same
email, phone or name must give the same digest (reference: Meta spec section 4). ``normalizer`` and
``hasher`` compile one function per field, once; the mapping engine calls the returned functions
per event. They raise ``NormalizeError`` (a ``ValueError`` with a machine ``reason`` and a
``message`` for people that shows the value truncated and never a hash).

The rules themselves live by field family (house rule: modules under ~300 lines): ``person``
(email, names, gender, external_id), ``places`` (city, state, zip code, country, and
``region_hint``), ``phone`` and ``dates``; the shared error type and rule signatures live in
``field_rules``. What callers use is re-exported here, so they keep importing from
``normalize``.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, NamedTuple, cast

from leadrelay.meta.dates import BirthdateOrder, birthdate_rule, birthdate_rule_for
from leadrelay.meta.field_rules import (
    FLOAT_EXACT,
    NormalizeError,
    Normalizer,
    Resolver,
    TextRule,
    lower,
)
from leadrelay.meta.field_rules import show as _show
from leadrelay.meta.person import email_rule, external_id_rule, gender_rule, name_rule
from leadrelay.meta.phone import phone_rule
from leadrelay.meta.places import (
    city_rule,
    country_rule,
    region_hint,
    resolver,
    state_rule,
    zip_rule,
)

__all__ = [
    "HASHED_FIELDS",
    "REGIONAL_FIELDS",
    "REPEATING_FIELDS",
    "BirthdateOrder",
    "NormalizeError",
    "Normalizer",
    "Reading",
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


def _text(value: Any, label: str, *, numbers: bool = False) -> str:
    """The trimmed text of a value; whole numbers are accepted where a field can be numeric."""
    if isinstance(value, str):
        text = value.strip()
    elif numbers and isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif numbers and isinstance(value, float) and value.is_integer() and abs(value) < FLOAT_EXACT:
        text = str(int(value))  # 75011.0: a whole number a spreadsheet or pandas wrote as float
    else:
        kinds = "text or a whole number" if numbers else "text"
        raise NormalizeError(
            "invalid_type", f"{label} must be {kinds}, got {type(value).__name__} {_show(value)}"
        )
    if not text:
        raise NormalizeError("empty", f"{label} is empty")
    return text


@dataclass(frozen=True, slots=True)
class _Field:
    label: str  # for messages
    numbers: bool  # whole numbers are accepted as well as text
    dates: bool  # date objects are accepted as well
    build: Callable[[Resolver], TextRule]


_FIELDS: Final[dict[str, _Field]] = {
    "em": _Field("email", False, False, lambda resolve: email_rule),
    "ph": _Field("phone number", True, False, phone_rule),
    "fn": _Field("first name", False, False, lambda resolve: name_rule("first name")),
    "ln": _Field("last name", False, False, lambda resolve: name_rule("last name")),
    "db": _Field("birthdate", True, True, lambda resolve: birthdate_rule),
    "ge": _Field("gender", False, False, lambda resolve: gender_rule),
    "ct": _Field("city", False, False, lambda resolve: city_rule),
    "st": _Field("state", False, False, state_rule),
    "zp": _Field("zip code", True, False, zip_rule),
    "country": _Field("country", False, False, lambda resolve: country_rule),
    "external_id": _Field("external_id", True, False, lambda resolve: external_id_rule),
}


def _as_text(value: Any, field: _Field) -> str:
    """The text of a value that is not a non-blank string (or the error saying why not)."""
    if field.dates and isinstance(value, date):
        return value.isoformat()  # read back by birthdate_rule exactly as the date it is
    return _text(value, field.label, numbers=field.numbers)


class Reading(NamedTuple):
    """The config's settings on how values are read: ``default_country`` stands in for an
    event's missing country, ``birthdate_order`` says how the CRM writes dates with the year
    last (``BirthdateOrder``). As keyword arguments: ``hasher(field, **reading._asdict())``."""

    default_country: str | None = None
    birthdate_order: BirthdateOrder = "year-first"


def _compile(
    field: str, default_country: str | None, birthdate_order: BirthdateOrder = "year-first"
) -> tuple[_Field, TextRule]:
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
    if field == "db" and birthdate_order != "year-first":
        return spec, birthdate_rule_for(birthdate_order)
    return spec, spec.build(resolver(default))


def normalizer(
    field: str,
    *,
    default_country: str | None = None,
    birthdate_order: BirthdateOrder = "year-first",
) -> Normalizer:
    """Compile ``f(value, region) -> normalized text`` (not hashed) for a ``user_data`` field.

    ``region`` is the event's country hint (alpha-2 or alpha-3, any case, or None); it decides how
    national phone numbers and US zip and state values are read, and ``default_country`` stands in
    when it is missing; ``birthdate_order`` (``Reading``) how ``03/04/1990`` is read. ``f`` raises
    ``NormalizeError``. An unknown ``field`` or ``default_country`` raises ``ValueError`` here,
    since that is a programming or configuration error.
    """
    spec, rule = _compile(field, default_country, birthdate_order)

    def normalize(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if text:
                return rule(text, value, region)
        return rule(_as_text(value, spec), value, region)

    return normalize


def hasher(
    field: str,
    *,
    default_country: str | None = None,
    birthdate_order: BirthdateOrder = "year-first",
) -> Normalizer:
    """Compile ``f(value, region) -> lowercase SHA-256 hex`` of the normalized value.

    A value that already is a SHA-256 digest (64 hex characters once trimmed) is passed through
    lowercased, never hashed twice, so hashing is idempotent. Otherwise as ``normalizer``.
    """
    spec, rule = _compile(field, default_country, birthdate_order)
    is_digest = _SHA256.fullmatch
    sha256 = _sha256

    def digest(value: Any, region: str | None) -> str:
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 64 and is_digest(text) is not None:
                return lower(text)
            if text:
                return sha256(rule(text, value, region).encode("utf-8")).hexdigest()
        return sha256(rule(_as_text(value, spec), value, region).encode("utf-8")).hexdigest()

    return digest


def text_rule(
    field: str,
    *,
    default_country: str | None = None,
    birthdate_order: BirthdateOrder = "year-first",
) -> TextRule:
    """``f(text, value, region) -> normalized text`` (not hashed) for a trimmed, non-empty
    string ``text`` (``value`` as given, for error messages): what ``text_hasher`` hashes, for
    callers that hash themselves (``sha256_hex``, after ``is_sha256``)."""
    return _compile(field, default_country, birthdate_order)[1]


def text_hasher(
    field: str,
    *,
    default_country: str | None = None,
    birthdate_order: BirthdateOrder = "year-first",
) -> TextRule:
    """``hasher`` for a string value already trimmed, and not empty, by the caller.

    ``f(text, value, region)``: ``text`` is ``value.strip()``, ``value`` the string as given (for
    error messages). The same digest as ``hasher(field)(value, region)``, one call fewer.
    """
    _, rule = _compile(field, default_country, birthdate_order)
    is_digest = _SHA256.fullmatch
    sha256 = _sha256

    def digest(text: str, value: Any, region: str | None) -> str:
        if len(text) == 64 and is_digest(text) is not None:
            return lower(text)
        return sha256(rule(text, value, region).encode("utf-8")).hexdigest()

    return digest
