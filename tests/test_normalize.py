"""Customer-information normalization and hashing, as Meta specifies it (CIP) and users expect."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadrelay.meta import geo
from leadrelay.meta.normalize import (
    HASHED_FIELDS,
    NormalizeError,
    hasher,
    is_sha256,
    normalizer,
    region_hint,
    sha256_hex,
)

# Meta's published examples (customer-information-parameters page); the SDK reproduces them too.
EMAIL_DIGEST = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
PHONE_DIGEST = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
MARY_DIGEST = "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
US_DIGEST = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"

TODAY = datetime.now(UTC).date()
HEX64 = re.compile(r"[0-9a-f]{64}")


class Err:
    """Expected NormalizeError reason in a table row."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Err({self.reason})"


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        (sha256_hex("john_smith@gmail.com"), EMAIL_DIGEST),
        (sha256_hex("16505551212"), PHONE_DIGEST),
        (sha256_hex("mary"), MARY_DIGEST),
        (sha256_hex("us"), US_DIGEST),
    ],
)
def test_metas_published_digests(digest: str, expected: str) -> None:
    assert digest == expected


@pytest.mark.parametrize(
    ("field", "value", "region", "expected"),
    [
        ("em", "john_smith@gmail.com", None, EMAIL_DIGEST),
        ("em", " John_Smith@Gmail.com ", None, EMAIL_DIGEST),
        ("ph", "16505551212", None, PHONE_DIGEST),
        ("ph", "(650) 555-1212", "US", PHONE_DIGEST),
        ("ph", "+1 650-555-1212", None, PHONE_DIGEST),
        ("ph", 16505551212, "us", PHONE_DIGEST),
        ("fn", "Mary", None, MARY_DIGEST),
        ("ln", " MARY ", None, MARY_DIGEST),
        ("country", "US", None, US_DIGEST),
        ("country", "USA", None, US_DIGEST),
        ("country", "United States", None, US_DIGEST),
        ("country", "us", None, US_DIGEST),
    ],
)
def test_spellings_of_the_same_person_hash_to_metas_digest(
    field: str, value: Any, region: str | None, expected: str
) -> None:
    assert hasher(field)(value, region) == expected


NEXT_YEAR = TODAY.year + 1

CASES: list[tuple[str, Any, str | None, Any]] = [
    # em: trim, lowercase, no whitespace, local@domain.tld
    ("em", " John_Smith@Gmail.com ", None, "john_smith@gmail.com"),
    ("em", "jane . doe @ example.com", None, "jane.doe@example.com"),
    ("em", "José@Exemple.FR", None, "josé@exemple.fr"),
    ("em", "first.last+crm@mail.example.co.uk", None, "first.last+crm@mail.example.co.uk"),
    # The address in what mail clients and exports wrap it in, or with a sentence's dot after it.
    ("em", "Jane Doe <Jane.Doe@Example.com>", None, "jane.doe@example.com"),
    ("em", "mailto:Jane.Doe@example.com", None, "jane.doe@example.com"),
    ("em", "jane.doe@example.com.", None, "jane.doe@example.com"),
    ("em", "Jane <not an address>", None, Err("invalid_email")),
    ("em", "john.smith", None, Err("invalid_email")),
    ("em", "a@b@example.com", None, Err("invalid_email")),
    ("em", "@example.com", None, Err("invalid_email")),
    ("em", "john@", None, Err("invalid_email")),
    ("em", "john@localhost", None, Err("invalid_email")),
    ("em", "john@example.", None, Err("invalid_email")),
    ("em", "john@.com", None, Err("invalid_email")),
    ("em", "   ", None, Err("empty")),
    ("em", 42, None, Err("invalid_type")),
    # ph: digits with the country code, no "+", no leading zeros
    ("ph", "+33 6 12 34 56 78", None, "33612345678"),
    ("ph", "+33612345678", "DE", "33612345678"),
    ("ph", "+33\u00a06\u00a012\u00a034\u00a056\u00a078", None, "33612345678"),
    ("ph", "+33.6.12.34.56.78", None, "33612345678"),
    ("ph", "(+33) 6 12 34 56 78", None, "33612345678"),
    ("ph", "0033612345678", None, "33612345678"),
    ("ph", "00 33 6 12 34 56 78", "US", "33612345678"),
    ("ph", "+44 (0)20 7946 0958", None, "442079460958"),
    ("ph", "+44 020 7946 0958", None, "442079460958"),
    ("ph", "+33 (0)6 12 34 56 78", None, "33612345678"),
    ("ph", "+39 06 6982 1234", None, "390669821234"),  # Italy keeps its leading 0
    ("ph", "+1 650 555 1212 ext. 123", None, "16505551212"),
    ("ph", "(650) 555-1212", "US", "16505551212"),
    ("ph", "(650) 555-1212", "usa", "16505551212"),
    ("ph", "650.555.1212", "US", "16505551212"),
    ("ph", "650/555-1212", "US", "16505551212"),
    ("ph", "06 12 34 56 78", "FR", "33612345678"),
    ("ph", "06 12 34 56 78", "fra", "33612345678"),
    ("ph", "06-12-34-56-78", "France", "33612345678"),
    ("ph", "020 7946 0958", "GB", "442079460958"),
    ("ph", "33612345678", "FR", "33612345678"),  # already Meta's format
    ("ph", "16505551212", "US", "16505551212"),
    ("ph", "16505551212", None, "16505551212"),
    ("ph", "4915123456789", "DE", "4915123456789"),  # must not become 49 49...
    ("ph", "612345678", "FR", "33612345678"),  # leading 0 lost in a spreadsheet
    ("ph", 612345678, "FR", "33612345678"),
    # Mexico's numbers written as dialled before 2019 are the same numbers now (not a US number:
    # "1 55 1234 5678" in MX came out as 15512345678, New Jersey).
    ("ph", "1 55 1234 5678", "MX", "525512345678"),
    ("ph", "044 55 1234 5678", "MX", "525512345678"),
    ("ph", "01 55 1234 5678", "MX", "525512345678"),
    ("ph", "+52 1 55 1234 5678", None, "525512345678"),
    ("ph", "0052 1 55 1234 5678", None, "525512345678"),
    ("ph", "+1 551 234 5678", "MX", "15512345678"),
    ("ph", 33612345678, None, "33612345678"),
    ("ph", "06 12 34 56 78", None, Err("phone_without_country")),
    ("ph", "6505551212", None, Err("phone_without_country")),
    ("ph", "+33 6 12", None, Err("invalid_phone")),
    ("ph", "+999 123 456 789", None, Err("invalid_phone")),
    ("ph", "12", "FR", Err("invalid_phone")),
    ("ph", "not a phone", "US", Err("invalid_phone")),
    ("ph", -33612345678, None, Err("invalid_phone")),
    ("ph", "  ", "FR", Err("empty")),
    ("ph", 3.3612345678e10, None, "33612345678"),  # a whole number, written as a float
    ("ph", 3.36123456785e10, None, Err("invalid_type")),
    # fn, ln: lowercase, no punctuation or symbols, single spaces, accents kept
    ("fn", "Mary", None, "mary"),
    ("fn", "Éloïse", None, "éloïse"),
    ("fn", "E\u0301loi\u0308se", None, "éloïse"),  # decomposed accents, as macOS writes them
    ("ln", "O'Brien-Smith", None, "obriensmith"),
    ("fn", "Jean Pierre", None, "jean pierre"),
    ("fn", "  Jean \t  Pierre ", None, "jean pierre"),
    ("ln", "Smith Jr.", None, "smith jr"),
    ("fn", "J.R.R.", None, "jrr"),
    ("ln", "Müller", None, "müller"),
    ("ln", "Łukasiewicz", None, "łukasiewicz"),
    ("fn", "李", None, "李"),
    ("fn", "☺ Anna ★", None, "anna"),
    ("fn", "'-.", None, Err("empty")),
    ("ln", "", None, Err("empty")),
    ("fn", 12, None, Err("invalid_type")),
    # Invisible characters pasted along (a byte-order mark, a zero-width space, direction marks, a
    # soft hyphen) are not what the person typed into Facebook: dropped, in every field. Not the
    # zero-width non-joiner, which Persian names are written with.
    ("em", "\ufeffjohn@example.com", None, "john@example.com"),
    ("em", "john\u200b@example.com", None, "john@example.com"),
    ("fn", "Mary\u200b", None, "mary"),
    ("fn", "\u200fMary", None, "mary"),
    ("fn", "Anne\u00adMarie", None, "annemarie"),
    ("ln", "Smith-Jones\u200b", None, "smithjones"),
    (
        "fn",
        "\u0645\u0631\u06cc\u0645\u200c\u0633\u0627\u062f\u0627\u062a",
        None,
        "\u0645\u0631\u06cc\u0645\u200c\u0633\u0627\u062f\u0627\u062a",
    ),
    ("ge", "\ufeffF", None, "f"),
    ("country", "FR\u200b", None, "fr"),
    ("db", "\ufeff1997-02-16", None, "19970216"),
    ("ct", "Paris\u200b", None, "paris"),
    ("zp", "75011\u200b", None, "75011"),
    # db: YYYYMMDD, real date, 1900 to today
    ("db", "1985-04-12", None, "19850412"),
    ("db", "19850412", None, "19850412"),
    ("db", "1985/04/12", None, "19850412"),
    ("db", "1985.04.12", None, "19850412"),
    ("db", "1985-4-2", None, "19850402"),
    ("db", "1985-04-12T00:00:00Z", None, "19850412"),
    ("db", "1985-04-12T23:30:00.000+02:00", None, "19850412"),
    ("db", "1985-04-12 08:00:00", None, "19850412"),
    ("db", 19850412, None, "19850412"),
    ("db", date(1985, 4, 12), None, "19850412"),
    ("db", "1900-01-01", None, "19000101"),
    # The year last: read when only one reading is a date (Meta's own example, 2/16/1997).
    ("db", "2/16/1997", None, "19970216"),
    ("db", "02/16/1997", None, "19970216"),
    ("db", "16/02/1997", None, "19970216"),
    ("db", "16.02.1997", None, "19970216"),
    ("db", "16-02-1997", None, "19970216"),
    ("db", "16/02/1997 08:30", None, "19970216"),
    ("db", "04/04/1990", None, "19900404"),
    ("db", "29/02/2000", None, "20000229"),
    ("db", "1997 02 16", None, "19970216"),
    ("db", "12/04/1985", None, Err("invalid_birthdate")),  # 12 April or December 4
    ("db", "04/12/1985", None, Err("invalid_birthdate")),
    ("db", "12.04.1985", None, Err("invalid_birthdate")),
    ("db", "13/13/1985", None, Err("invalid_birthdate")),
    ("db", "0/5/1985", None, Err("invalid_birthdate")),
    ("db", "31/02/1985", None, Err("invalid_birthdate")),
    ("db", "16/02/85", None, Err("invalid_birthdate")),  # which century
    ("db", "1985-04/12", None, Err("invalid_birthdate")),
    ("db", "1985-02-30", None, Err("invalid_birthdate")),
    ("db", "19851304", None, Err("invalid_birthdate")),
    ("db", "1899-12-31", None, Err("invalid_birthdate")),
    ("db", f"{NEXT_YEAR}-01-01", None, Err("invalid_birthdate")),
    ("db", "tomorrow", None, Err("invalid_birthdate")),  # its date, as the test runs
    ("db", 1985, None, Err("invalid_birthdate")),
    ("db", "yesterday", None, Err("invalid_birthdate")),
    ("db", 1985.0, None, Err("invalid_birthdate")),
    # ge: f or m
    ("ge", "f", None, "f"),
    ("ge", "F", None, "f"),
    ("ge", "Frau", None, "f"),
    ("ge", "Hombre", None, "m"),
    ("ge", "Féminin", None, "f"),
    ("ge", "Mrs.", None, "f"),
    ("ge", "M.", None, "m"),
    ("ge", "Mr", None, "m"),
    ("ge", " Female ", None, "f"),
    ("ge", "woman", None, "f"),
    ("ge", "W", None, "f"),
    ("ge", "femme", None, "f"),
    ("ge", "m", None, "m"),
    ("ge", "MALE", None, "m"),
    ("ge", "Man", None, "m"),
    ("ge", "H", None, "m"),
    ("ge", "x", None, Err("invalid_gender")),
    ("ge", "non-binary", None, Err("invalid_gender")),
    ("ge", 1, None, Err("invalid_type")),
    ("ge", True, None, Err("invalid_type")),
    # ct: lowercase, no punctuation, no digits, no spaces
    ("ct", "New York", None, "newyork"),
    ("ct", "Saint-Étienne", None, "saintétienne"),
    ("ct", "  LOS ANGELES ", None, "losangeles"),
    ("ct", "St. Louis", None, "stlouis"),
    ("ct", "Paris 11", None, "paris"),
    # A district's ordinal and a CEDEX are no part of the city's name ("Paris 11e" gave "parise").
    ("ct", "Paris 11e", None, "paris"),
    ("ct", "Lyon 3e Arrondissement", None, "lyon"),
    ("ct", "Marseille 1er", None, "marseille"),
    ("ct", "Paris CEDEX 08", None, "paris"),
    ("ct", "Paris 11ème arr.", None, "paris"),
    ("ct", "Paris, 11e", None, "paris"),
    ("ct", "Paris (11 ème)", None, "paris"),
    ("ct", "Paris 8e Cedex", None, "paris"),
    ("ct", "Paris-11e", None, "paris"),
    ("ct", "Paris 11e\u0300me".replace("e\u0300me", "e\u0300me"), None, "paris"),  # decomposed è
    ("ct", "Odoorn 2e Exlo\u00ebrmond", "NL", "odoorneexlo\u00ebrmond"),  # a Dutch village
    ("ct", "Zone 3 E", None, "zonee"),  # a letter of its own, no ordinal
    ("ct", "6th of October City", None, "thofoctobercity"),  # a name: its letters stay
    ("ct", "Station 4 St Louis", None, "stationstlouis"),
    # A British postcode, or its district, after the city ("London EC1" gave "londonec").
    ("ct", "London EC1", "GB", "london"),
    ("ct", "London SW1A 1AA", "GB", "london"),
    ("ct", "LONDON, ec1a1bb", "GB", "london"),
    ("ct", "Manchester M1", None, "manchester"),
    ("ct", "St Peter Port GY1", "GG", "stpeterport"),
    ("ct", "Newcastle upon Tyne NE1 4ST", "UK", "newcastleupontyne"),
    ("ct", "M1 Manchester", "GB", "mmanchester"),  # never first
    ("ct", "Kaba EC1", "CI", "kabaec"),  # elsewhere a place's letters stay
    ("ct", "'' -", None, Err("empty")),
    ("ct", 75011, None, Err("invalid_type")),
    # st: US names to 2-letter codes; elsewhere lowercase without punctuation or spaces
    ("st", "California", "US", "ca"),
    ("st", "US-CA", "US", "ca"),  # ISO 3166-2
    ("st", "Puerto Rico", "PR", "pr"),  # a US territory: a USPS code, as its ZIP codes are US
    ("st", "US-NY", None, "ny"),
    ("st", "Usak", None, "usak"),  # a Turkish province, not "US-AK"
    ("st", "US_CA", None, "ca"),
    ("st", "US \u2013 CA", None, "ca"),
    ("st", "US/CA", None, "ca"),
    ("st", "CA", "US", "ca"),
    ("st", "new-york", "US", "ny"),
    ("st", "Texas", "USA", "tx"),
    ("st", "District of Columbia", "us", "dc"),
    ("st", "New York", None, "ny"),
    ("st", "ny", None, "ny"),
    ("st", "Île-de-France", "FR", "îledefrance"),
    ("st", "New York", "FR", "newyork"),
    ("st", "Ontario", "CA", "ontario"),
    ("st", "75", "FR", "75"),
    ("st", "  ", "US", Err("empty")),
    # zp: lowercase, no spaces or dashes; US: first 5 digits
    ("zp", "94025-1234", "US", "94025"),
    ("zp", "00901-1234", "PR", "00901"),  # US territories have US ZIP codes
    ("zp", "901", "PR", "00901"),
    ("zp", "96910 1234", "GU", "96910"),
    ("zp", "94025 1234", "US", "94025"),
    ("zp", "94025-1234", None, "94025"),
    ("zp", "94025", None, "94025"),
    ("zp", "02134", "US", "02134"),
    ("zp", 2134, "US", "02134"),
    ("zp", "2134", "US", "02134"),
    ("zp", 2134, None, "2134"),
    # Where codes are all digits and may start with 0, the zeros a spreadsheet dropped are back.
    ("zp", 2134, "FR", "02134"),
    ("zp", "6000", "FR", "06000"),
    ("zp", "1067", "DE", "01067"),
    ("zp", 100, "IT", "00100"),
    ("zp", 1310100, "BR", "01310100"),
    ("zp", "150", "NO", "0150"),
    ("zp", "12", "FR", "12"),  # not a code that lost its zeros
    ("zp", "6000", None, "6000"),  # no region: no telling
    # Whole numbers written as floats (pandas, spreadsheets): the number.
    ("zp", 75011.0, "FR", "75011"),
    ("zp", "75011.0", "FR", "75011"),
    ("ph", "33612345678.0", None, "33612345678"),
    ("ph", "612345678.0", "FR", "33612345678"),
    ("db", "19900304.0", None, "19900304"),
    ("zp", 2134.0, "US", "02134"),
    ("zp", 75011.5, "FR", Err("invalid_type")),
    ("db", 19850412.0, None, "19850412"),
    ("zp", 75011, None, "75011"),
    ("zp", 75011, "FR", "75011"),
    ("zp", "M1 1AE", "GB", "m11ae"),
    ("zp", "SW1A 1AA", None, "sw1a1aa"),
    ("zp", "01310-100", "BR", "01310100"),
    ("zp", "ABC 123", "US", Err("invalid_zip")),
    ("zp", "1234567", "US", Err("invalid_zip")),
    ("zp", -5, None, Err("invalid_zip")),
    ("zp", " - ", None, Err("empty")),
    # country: ISO alpha-2, lowercase
    ("country", "US", None, "us"),
    ("country", "fr", None, "fr"),
    ("country", "FRA", None, "fr"),
    ("country", "deu", None, "de"),
    ("country", "France", None, "fr"),
    ("country", "United States", None, "us"),
    ("country", "United States of America", None, "us"),
    ("country", "United Kingdom", None, "gb"),
    ("country", "UK", None, "gb"),
    ("country", "GBR", None, "gb"),
    ("country", "Deutschland", None, "de"),
    ("country", "Côte d'Ivoire", None, "ci"),
    ("country", "the Netherlands", None, "nl"),
    ("country", "Narnia", None, Err("invalid_country")),
    ("country", "XX", None, Err("invalid_country")),
    ("country", "ZZZ", None, Err("invalid_country")),
    ("country", "", None, Err("empty")),
    ("country", 33, None, Err("invalid_type")),
    # Greek capitals lowercase as Python does: a sigma ending a word is "ς" (mypyc's own
    # lowercasing, in a compiled build, gave "σ": another digest for every such name)
    ("fn", "ΟΔΥΣΣΕΑΣ", None, "οδυσσεας"),
    ("ln", "ΠΑΠΑΔΟΠΟΥΛΟΣ", None, "παπαδοπουλος"),
    ("ct", "ΠΕΙΡΑΙΑΣ", "GR", "πειραιας"),
    ("st", "ΑΤΤΙΚΗΣ", "GR", "αττικης"),
    ("em", "A@A.Σ", None, "a@a.ς"),
    # external_id: trimmed only
    ("external_id", " crm-88231 ", None, "crm-88231"),
    ("external_id", "AbC-12", None, "AbC-12"),
    ("external_id", 88231, None, "88231"),
    ("external_id", "", None, Err("empty")),
    ("external_id", True, None, Err("invalid_type")),
    ("external_id", 1.5, None, Err("invalid_type")),
    ("external_id", None, None, Err("invalid_type")),
    ("external_id", ["a"], None, Err("invalid_type")),
]


@pytest.mark.parametrize(("field", "value", "region", "expected"), CASES)
def test_normalize(field: str, value: Any, region: str | None, expected: Any) -> None:
    if value == "tomorrow":  # now, not when the cases were collected (it may be past midnight)
        value = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    normalize = normalizer(field)
    if isinstance(expected, Err):
        with pytest.raises(NormalizeError) as info:
            normalize(value, region)
        assert info.value.reason == expected.reason
        assert info.value.message == str(info.value)
        assert not HEX64.search(info.value.message)
    else:
        assert normalize(value, region) == expected
        assert hasher(field)(value, region) == sha256_hex(expected)


def test_every_field_has_cases() -> None:
    assert {field for field, *_ in CASES} == HASHED_FIELDS


@pytest.mark.parametrize(
    ("field", "value", "region", "expected"),
    [
        ("ph", "06 12 34 56 78", None, "33612345678"),
        ("ph", "(650) 555-1212", "US", "16505551212"),  # the event's region wins
        ("ph", "06 12 34 56 78", "Narnia", "33612345678"),  # an unknown region is no region
        ("zp", 2134, None, "2134"),  # no zeros put back by a default: it may be Belgian
        ("st", "Bretagne", None, "bretagne"),
    ],
)
def test_default_country_stands_in_for_a_missing_region(
    field: str, value: Any, region: str | None, expected: str
) -> None:
    assert normalizer(field, default_country="FR")(value, region) == expected


def test_default_country_us_applies_us_rules() -> None:
    assert normalizer("zp", default_country="US")(2134, None) == "02134"
    assert normalizer("st", default_country="usa")("California", None) == "ca"
    assert normalizer("ph", default_country="United States")("650 555 1212", None) == "16505551212"


def test_error_messages_name_the_field_and_show_the_value_truncated() -> None:
    long_value = "not-an-email-" + "x" * 200
    with pytest.raises(NormalizeError) as info:
        normalizer("em")(long_value, None)
    message = info.value.message
    assert "email" in message
    assert "'not-an-email-" in message
    assert "..." in message
    assert len(message) < 120

    with pytest.raises(NormalizeError) as info:
        normalizer("ph")("06 12 34 56 78", None)
    assert "'06 12 34 56 78'" in info.value.message
    assert "user.country" in info.value.message
    assert "default_country" in info.value.message

    with pytest.raises(NormalizeError) as info:
        normalizer("db")("April 12th, 1985", None)
    assert "YYYY-MM-DD" in info.value.message
    assert "YYYYMMDD" in info.value.message
    assert "DD/MM/YYYY" in info.value.message


def test_an_ambiguous_birthdate_says_both_readings_and_what_to_write() -> None:
    with pytest.raises(NormalizeError) as info:
        normalizer("db")("03/04/1990", None)
    message = info.value.message
    assert "'03/04/1990'" in message
    assert "3 April" in message and "March 4" in message
    assert "YYYY-MM-DD" in message and "birthdate_order" in message


@pytest.mark.parametrize(
    ("order", "value", "expected"),
    [
        ("day-first", "03/04/1990", "19900403"),
        ("month-first", "03/04/1990", "19900304"),
        ("day-first", "03.04.1990", "19900403"),
        ("day-first", "2/16/1997", "19970216"),  # only one reading is a date: that one
        ("month-first", "16/02/1997", "19970216"),
        ("day-first", "1990-04-03", "19900403"),  # year first: as it is
        ("day-first", "13/13/1990", Err("invalid_birthdate")),
    ],
)
def test_birthdate_order_reads_the_dates_that_read_both_ways(
    order: Any, value: str, expected: Any
) -> None:
    """A French CRM writes 03/04/1990 for 3 April: with birthdate_order = "day-first" it is
    read so, where by default it is left out (which one was meant is not in the date)."""
    normalize = normalizer("db", birthdate_order=order)
    if isinstance(expected, Err):
        with pytest.raises(NormalizeError) as info:
            normalize(value, None)
        assert info.value.reason == expected.reason
    else:
        assert normalize(value, None) == expected
        assert hasher("db", birthdate_order=order)(value, None) == sha256_hex(expected)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="gender"):
        normalizer("ge")("unknown", None)


@pytest.mark.parametrize("field", ["lead_id", "fbc", "email", "", "EM"])
def test_unknown_field_is_a_programming_error(field: str) -> None:
    with pytest.raises(ValueError, match="not a hashed user_data field"):
        normalizer(field)
    with pytest.raises(ValueError, match="not a hashed user_data field"):
        hasher(field)


def test_unknown_default_country_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="default_country 'Narnia'"):
        hasher("ph", default_country="Narnia")


@pytest.mark.parametrize("field", sorted(HASHED_FIELDS))
def test_bool_none_fractions_and_objects_are_invalid_types(field: str) -> None:
    for value in (True, False, None, 1.5, {"a": 1}):
        with pytest.raises(NormalizeError) as info:
            hasher(field)(value, None)
        assert info.value.reason == "invalid_type", (field, value)


@pytest.mark.parametrize("field", sorted(HASHED_FIELDS))
def test_a_digest_passes_through_lowercased(field: str) -> None:
    assert hasher(field)(f"  {EMAIL_DIGEST.upper()}\n", "US") == EMAIL_DIGEST


def test_almost_a_digest_is_hashed_like_any_value() -> None:
    not_quite = EMAIL_DIGEST[:63]
    assert hasher("external_id")(not_quite, None) == sha256_hex(not_quite)
    assert hasher("external_id")(EMAIL_DIGEST + "0", None) == sha256_hex(EMAIL_DIGEST + "0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EMAIL_DIGEST, True),
        (EMAIL_DIGEST.upper(), True),
        (EMAIL_DIGEST[:63], False),
        (EMAIL_DIGEST + "a", False),
        (" " + EMAIL_DIGEST, False),
        ("g" * 64, False),
        ("", False),
    ],
)
def test_is_sha256(text: str, expected: bool) -> None:
    assert is_sha256(text) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FR", "FR"),
        ("fr", "FR"),
        (" FRA ", "FR"),
        ("France", "FR"),
        ("united kingdom", "GB"),
        ("UK", "GB"),
        ("USA", "US"),
        ("États-Unis", "US"),
        ("XK", "XK"),
        ("Narnia", None),
        ("", None),
        (None, None),
        (250, None),
    ],
)
def test_region_hint(value: Any, expected: str | None) -> None:
    assert region_hint(value) == expected


def test_geo_has_every_iso_3166_country() -> None:
    assert len(geo.ALPHA2) == 250  # 249 ISO 3166-1 entries and Kosovo's XK
    assert len(geo.ALPHA3_TO_ALPHA2) == 250
    assert set(geo.ALPHA3_TO_ALPHA2.values()) == geo.ALPHA2
    # phonenumbers keeps its own region list: every ISO region it knows must be in ours.
    assert set(phonenumbers.SUPPORTED_REGIONS) - geo.ALPHA2 <= {"AC", "TA"}


@pytest.mark.parametrize(
    ("alpha3", "alpha2"),
    [("FRA", "FR"), ("DEU", "DE"), ("CHE", "CH"), ("ESP", "ES"), ("AUT", "AT"), ("IRL", "IE"),
     ("GBR", "GB"), ("USA", "US"), ("ZAF", "ZA"), ("SGS", "GS"), ("MYT", "YT"), ("SPM", "PM"),
     ("VGB", "VG"), ("VIR", "VI"), ("ATF", "TF"), ("KOR", "KR"), ("PRK", "KP"), ("COD", "CD")],
)  # fmt: skip
def test_alpha3_codes(alpha3: str, alpha2: str) -> None:
    assert geo.ALPHA3_TO_ALPHA2[alpha3] == alpha2


def test_no_country_name_shadows_another_countrys_code() -> None:
    for key, code in geo.COUNTRY_NAMES.items():
        upper = key.upper()
        if upper in geo.ALPHA2:
            assert upper == code, key
        if upper in geo.ALPHA3_TO_ALPHA2:
            assert geo.ALPHA3_TO_ALPHA2[upper] == code, key


def test_us_states() -> None:
    assert len(geo.US_STATE_CODES) == 56  # 50 states, DC and 5 inhabited territories
    assert geo.us_state_code("West Virginia") == "WV"
    assert geo.us_state_code("wv") == "WV"
    assert geo.us_state_code("Bavaria") is None


# ---- properties on realistic generated values ----

PHONE_REGIONS = ["FR", "US", "GB", "DE", "ES", "IT", "BE", "CH", "NL", "BR", "JP", "IN", "AU", "SE"]
PHONE_TYPES = [
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
]
EXAMPLE_PHONES = [
    (region, number)
    for region in PHONE_REGIONS
    for kind in PHONE_TYPES
    if (number := phonenumbers.example_number_for_type(region, kind)) is not None
]


def region_spelling(region: str) -> st.SearchStrategy[str]:
    alpha3 = next(a3 for a3, a2 in geo.ALPHA3_TO_ALPHA2.items() if a2 == region)
    return st.sampled_from([region, region.lower(), alpha3, alpha3.lower()])


@st.composite
def phones(draw: st.DrawFn) -> tuple[str | int, str | None, str]:
    """(value as a CRM might hold it, region hint, expected digits)."""
    region, number = draw(st.sampled_from(EXAMPLE_PHONES))
    digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    form = draw(st.sampled_from(["e164", "international", "00", "national", "digits", "int"]))
    forms: dict[str, str | int] = {
        "e164": "+" + digits,
        "international": international,
        "00": "00" + international[1:],
        "national": national,
        "digits": digits,
        "int": int(digits),
    }
    value = forms[form]
    if isinstance(value, str):
        value = draw(st.sampled_from(["", " ", "\t"])) + value + draw(st.sampled_from(["", " "]))
    if form == "national":
        hint: str | None = draw(region_spelling(region))
    else:
        hint = draw(st.none() | region_spelling(region))
    return value, hint, digits


emails = st.builds(
    lambda local, domain, tld, pad: f"{pad}{local}@{domain}.{tld}{pad}",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,19}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,14}(\.[A-Za-z0-9-]{1,10})?", fullmatch=True),
    st.sampled_from(["com", "fr", "co.uk", "DE", "io"]),
    st.sampled_from(["", " ", "  "]),
)
name_letters = st.characters(
    codec="utf-8", categories=["Lu", "Ll", "Mn", "Pd", "Po", "Zs", "Nd", "So", "Lo"]
)
names = st.text(alphabet=name_letters, min_size=1, max_size=30).filter(
    lambda text: any(ch.isalpha() for ch in text)
)
dates = st.builds(
    lambda born, fmt: fmt.format(d=born),
    st.dates(min_value=date(1900, 1, 1), max_value=TODAY),
    st.sampled_from(
        ["{d:%Y-%m-%d}", "{d:%Y%m%d}", "{d:%Y/%m/%d}", "{d:%Y.%m.%d}", "{d:%Y-%m-%d}T00:00:00Z"]
    ),
) | st.dates(min_value=date(1900, 1, 1), max_value=TODAY).map(lambda born: int(f"{born:%Y%m%d}"))
countries = st.sampled_from(sorted(geo.ALPHA2)).flatmap(
    lambda code: st.sampled_from(
        [code, code.lower(), *(a3 for a3, a2 in geo.ALPHA3_TO_ALPHA2.items() if a2 == code)]
    )
) | st.sampled_from(["France", "United States", "United Kingdom", "UK", "Deutschland", "España"])
us_zips = st.from_regex(r"[0-9]{5}(-[0-9]{4})?", fullmatch=True)
other_zips = st.from_regex(r"[A-Za-z0-9]{2,4}[ -]?[A-Za-z0-9]{2,4}", fullmatch=True)
states = st.sampled_from(
    ["California", "CA", "New York", "ny", "Texas", "Île-de-France", "Bavaria", "Ontario"]
)
genders = st.sampled_from(["f", "F", " female", "Woman", "m", "MALE", "man ", "H"])
external_ids = st.text(min_size=1, max_size=40).filter(str.strip) | st.integers(min_value=0)
regions = st.none() | st.sampled_from(["US", "FR", "GB", "de", "USA"])

REALISTIC: dict[str, st.SearchStrategy[tuple[Any, str | None]]] = {
    "em": st.tuples(emails, regions),
    "fn": st.tuples(names, regions),
    "ln": st.tuples(names, regions),
    "db": st.tuples(dates, regions),
    "ge": st.tuples(genders, regions),
    "ct": st.tuples(names, regions),
    "st": st.tuples(states | names, regions),
    "zp": st.tuples(us_zips, st.sampled_from([None, "US", "usa"]))
    | st.tuples(other_zips | st.integers(0, 99999), st.sampled_from([None, "FR", "GB", "de"])),
    "country": st.tuples(countries, regions),
    "external_id": st.tuples(external_ids, regions),
}
values = st.sampled_from(sorted(REALISTIC)).flatmap(
    lambda field: st.tuples(st.just(field), REALISTIC[field])
) | phones().map(lambda phone: ("ph", (phone[0], phone[1])))


def test_every_field_has_a_generator() -> None:
    assert {*REALISTIC, "ph"} == HASHED_FIELDS


@settings(max_examples=600, deadline=None)
@given(values)
def test_normalization_is_stable(case: tuple[str, tuple[Any, str | None]]) -> None:
    field, (value, region) = case
    normalize = normalizer(field)
    once = normalize(value, region)  # realistic values must all normalize
    assert normalize(once, region) == once
    if field != "external_id":
        assert once == once.lower()


@settings(max_examples=600, deadline=None)
@given(values)
def test_hashing_is_idempotent_lowercase_hex(case: tuple[str, tuple[Any, str | None]]) -> None:
    field, (value, region) = case
    digest = hasher(field)
    once = digest(value, region)
    assert re.fullmatch(r"[0-9a-f]{64}", once)
    assert digest(once, region) == once
    assert once == sha256_hex(normalizer(field)(value, region))


@settings(max_examples=300, deadline=None)
@given(phones())
def test_phone_numbers_come_out_as_e164_digits(phone: tuple[str | int, str | None, str]) -> None:
    value, region, digits = phone
    assert normalizer("ph")(value, region) == digits


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["fn", "ln", "ct", "st", "zp", "country", "em", "ge", "external_id"]),
    st.text(max_size=30),
    regions,
)
def test_any_text_either_normalizes_stably_or_says_why(
    field: str, text: str, region: str | None
) -> None:
    normalize = normalizer(field)
    try:
        once = normalize(text, region)
    except NormalizeError as exc:
        assert exc.reason in {
            "empty", "invalid_email", "invalid_gender", "invalid_country", "invalid_zip",
        }  # fmt: skip
        return
    assert normalize(once, region) == once
