"""Cheaper field rules give exactly what the general way gives: emails with their whitespace
dropped by one split, and zip codes of ASCII digits taken as they are."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.meta import geo
from leadrelay.meta.field_rules import COMPACT, NormalizeError, clean, emptied
from leadrelay.meta.person import email_rule
from leadrelay.meta.places import resolver, zip_rule

_EMAIL = re.compile(r"[^@]+@[^@.][^@]*\.[^@.]+")


def _general_email(text: str, value: Any) -> str:
    """The ``em`` rule written plainly: look for whitespace, then drop it; drop invisible
    characters (Cf) but the joiners; then the address, or the one in "Jane <jane@x.com>",
    "mailto:jane@x.com" or "jane@x.com." (never the wrapped text itself)."""
    if " " in text or not text.isprintable():
        text = "".join(text.split())
    email = text.lower()
    if not email.isascii():
        kept = (c for c in email if unicodedata.category(c) != "Cf" or c in "\u200c\u200d")
        email = unicodedata.normalize("NFC", "".join(kept))

    def address(text: str) -> bool:  # no "mailto:" first, no ">" in the last label
        last_label = text.rpartition(".")[2]
        return (
            bool(_EMAIL.fullmatch(text))
            and not text.startswith("mailto:")
            and ">" not in last_label
        )

    if address(email):
        return email
    if email.startswith("mailto:"):
        inner = email[len("mailto:") :]
    elif email.endswith(">") and "<" in email:
        inner = email[email.rindex("<") + 1 : -1]
        inner = "" if ">" in inner else inner  # not one address in "< >"
    else:
        inner = email.rstrip(".")
    if inner != email and address(inner):
        return inner
    raise NormalizeError("invalid_email", f"email {value!r} is not an address")


def _general_zip(text: str, value: Any, region: str | None) -> str:
    """The ``zp`` rule as it was written before: every value compacted."""
    if not isinstance(value, str) and value < 0:
        raise NormalizeError("invalid_zip", "negative")
    if isinstance(value, str) and text[-2:] == ".0" and text[:-2].isdigit():  # pandas' float
        text = text[:-2]
    lowered = text.lower()
    if lowered.isalnum():
        zipcode = lowered if lowered.isascii() else unicodedata.normalize("NFC", lowered)
    else:
        zipcode = clean(lowered, COMPACT)
    if not zipcode:
        raise emptied("zip code", value)
    country = resolver(None)(region)
    if country == "US":
        if zipcode.isascii() and zipcode.isdigit():
            if len(zipcode) in (5, 9):
                return zipcode[:5]
            if len(zipcode) in (3, 4):
                return zipcode.zfill(5)
        raise NormalizeError("invalid_zip", "not a US ZIP code")
    if country == "FR" and re.fullmatch("[0-9]{3,4}", zipcode):  # codes of five digits
        return zipcode.zfill(5)
    if country is None:
        plus4 = re.fullmatch(r"(\d{5})-\d{4}", text, re.ASCII)
        if plus4 is not None:
            return plus4[1]
    return zipcode


def _outcome(rule: Any, *args: Any) -> tuple[str, str]:
    try:
        return ("ok", rule(*args))
    except NormalizeError as exc:
        return ("error", exc.reason)


# Whitespace of every kind str.split() drops (ASCII controls \x1c-\x1f too, and Unicode spaces),
# the characters the address pattern cares about, and letters that lower() or NFC change.
_EMAIL_CHARS = st.sampled_from(
    [
        *"aZ9@.@._-+ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2003\u3000\x00",
        *("É", "é", "e\u0301", "İ", "ß", "Σ", "ﬃ", "\u200b", "😀"),
    ]
)
_EMAILS = st.one_of(
    st.lists(_EMAIL_CHARS, max_size=14).map("".join),
    st.text(max_size=14),
    st.tuples(st.text(max_size=5), st.text(max_size=5), st.text(max_size=4)).map(
        lambda parts: f"{parts[0]}@{parts[1]}.{parts[2]}"
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_EMAILS)
def test_email_rule_gives_what_the_general_way_gives(value: str) -> None:
    text = value.strip()
    if not text:
        return  # callers never pass empty text
    assert _outcome(email_rule, text, value, None) == _outcome(_general_email, text, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Reba.Loba0@Example.com", "reba.loba0@example.com"),
        ("re ba@exa\tmple.com", "reba@example.com"),
        ("reba@exa\x1cmple.com", "reba@example.com"),  # a separator str.split() drops
        ("réba@exa\u00a0mple.fr", "réba@example.fr"),  # a no-break space, dropped too
        ("Re\u0301ba@example.fr", "réba@example.fr"),  # composed once the spaces are gone
    ],
)
def test_email_rule_drops_whitespace_anywhere(value: str, expected: str) -> None:
    assert email_rule(value.strip(), value, None) == expected


@pytest.mark.parametrize(
    "value", ["reba@example", "reba@.example.com", "re@ba@example.com", "@x.y"]
)
def test_email_rule_rejects_what_is_not_an_address(value: str) -> None:
    with pytest.raises(NormalizeError, match=r"not an address like name@example\.com"):
        email_rule(value, value, None)


_ZIP_CHARS = st.sampled_from([*"0123456789-  aB.\t", "٣", "²", "１", "é", "Ⅻ"])
_ZIPS = st.one_of(
    st.lists(_ZIP_CHARS, min_size=1, max_size=11).map("".join),
    st.text(alphabet="0123456789", min_size=1, max_size=10),
    st.integers(min_value=-100, max_value=10**10),
)
_REGIONS = st.sampled_from([None, "US", "FR", "GB", "usa", "Atlantis"])


@settings(max_examples=3000, deadline=None)
@given(_ZIPS, _REGIONS)
def test_zip_rule_gives_what_the_general_way_gives(value: str | int, region: str | None) -> None:
    text = value.strip() if isinstance(value, str) else str(value)
    if not text:
        return  # callers never pass empty text
    fast = zip_rule(resolver(None))
    expected = _outcome(_general_zip, text, value, region)
    assert _outcome(fast, text, value, geo.country_code(region) if region else None) == expected
    assert _outcome(fast, text, value, region) == expected


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("00013", "FR", "00013"),
        ("2108", "US", "02108"),
        ("021081234", "US", "02108"),
        ("10001-1234", None, "10001"),
        ("٣٣٠٠٠", "FR", "٣٣٠٠٠"),  # digits, not ASCII ones: compacted the general way
        ("SW2 4AA", "GB", "sw24aa"),
        (75001, "FR", "75001"),
    ],
)
def test_zip_rule_reads_common_zip_codes(value: str | int, region: str, expected: str) -> None:
    text = value.strip() if isinstance(value, str) else str(value)
    assert zip_rule(resolver(None))(text, value, region) == expected
