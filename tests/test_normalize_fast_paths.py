"""Fast paths of normalization give exactly what the general way gives: national phone numbers
validated with compiled metadata, birthdates read with one look-up, NDJSON split in blocks."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber

from leadrelay.events import ndjson
from leadrelay.events.records import SourceRecord
from leadrelay.meta import dates, field_rules, normalize, phone
from leadrelay.meta.normalize import normalizer
from leadrelay.meta.phone_valid import is_valid


def _national_numbers(seed: int) -> list[tuple[int, str]]:
    """Random national numbers of every calling code, and changed example numbers (mostly
    valid, some one digit off)."""
    rng = random.Random(seed)
    cases = []
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(40):
            size = rng.randint(2, 14)
            digits = rng.choice("123456789") + "".join(rng.choices("0123456789", k=size - 1))
            cases.append((code, digits))
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        example = phonenumbers.example_number(region)
        if example is None or example.country_code is None:
            continue
        national = str(example.national_number)
        cases.append((example.country_code, national))
        for _ in range(5):
            changed = list(national)
            changed[rng.randrange(len(changed))] = rng.choice("0123456789")
            if changed[0] != "0":
                cases.append((example.country_code, "".join(changed)))
    return cases


@pytest.mark.parametrize("seed", [1, 2])
def test_national_numbers_are_valid_exactly_when_phonenumbers_says_so(seed: int) -> None:
    cases = _national_numbers(seed)
    valid = 0
    for code, national in cases:
        number = PhoneNumber(country_code=code, national_number=int(national))
        expected = phonenumbers.is_valid_number(number)
        valid += expected
        assert is_valid(code, national) == expected, (code, national)
    assert valid > len(cases) // 20  # the cases hold valid numbers too, not only invalid ones


def _example_numbers() -> list[str]:
    """Example numbers of every region and common type, written as CRMs keep them: "+33612345678"
    and "+33 6 12 34 56 78"."""
    kinds = (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
    )
    formats = (phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    texts = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                texts += [phonenumbers.format_number(example, f) for f in formats]
    return texts


def _e164(text: str) -> str:
    return phone._e164_digits(phonenumbers.parse(text, None))


def test_international_numbers_read_directly_are_what_phonenumbers_reads() -> None:
    """A number with its "+" is read without phonenumbers when it is plainly international: a
    calling code, then a national number of a length the code has. Real numbers of every region
    come out as phonenumbers reads them."""
    read, texts = normalizer("ph"), _example_numbers()
    assert len(texts) > 1000
    for text in texts:
        assert read(text, None) == _e164(text), text


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("+7 8 912 345 67 89", "79123456789"),  # a trunk prefix kept after the code
        ("+1 1 650 555 1212", "16505551212"),
        ("+44 (0)20 7946 0958", "442079460958"),
        ("+54 11 15 2345 6789", "5491123456789"),  # Argentina's old mobile "15"
        ("+39 06 1234 5678", "390612345678"),  # Italy keeps its 0
    ],
)
def test_international_numbers_with_a_trunk_prefix_are_read_by_phonenumbers(
    text: str, digits: str
) -> None:
    """Once, "+7 8 912 345 67 89" came out as 789123456789: digits after the code were taken as
    they were whenever the first was not a 0."""
    assert normalizer("ph")(text, None) == digits


@pytest.mark.parametrize("seed", [1, 2])
def test_random_digits_read_directly_are_never_longer_than_phonenumbers_reads(seed: int) -> None:
    """Random digits after every calling code: those read directly are as long as a number of
    the code is, so phonenumbers reads the same digits (or strips a carrier code or trunk
    prefix it knows of, in a few of them: CN, BY, BR), and never refuses them."""
    rng, read, direct = random.Random(seed), normalizer("ph"), 0
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(40):
            text = f"+{code}" + "".join(rng.choices("0123456789", k=rng.randint(4, 13)))
            if not phone._international(text[1:]):
                continue
            direct += 1
            expected = _e164(text)
            assert read(text, None) == text[1:]
            assert expected == text[1:] or len(expected) < len(text) - 1, text
    assert direct > 500


@pytest.mark.parametrize(
    ("value", "region", "digits"),
    [
        ("06 12 34 56 78", "FR", "33612345678"),
        ("0612345678", "FR", "33612345678"),
        ("(415) 555-2671", "US", "14155552671"),
        ("07911 123456", "GB", "447911123456"),
        ("0151 23456789", "DE", "4915123456789"),
        ("020 7946 0958", "GB", "442079460958"),
    ],
)
def test_national_numbers_of_the_event_region(value: str, region: str, digits: str) -> None:
    assert normalizer("ph")(value, region) == digits


_DATES = st.one_of(
    st.builds(
        "{}-{}-{}".format,
        st.sampled_from(["1899", "1900", "1950", "2025", "2026", "2999", "19a0", "１９５０"]),
        st.sampled_from(["00", "01", "02", "09", "12", "13", "1"]),
        st.sampled_from(["00", "01", "28", "29", "30", "31", "32", "1"]),
    ),
    st.text(alphabet="0123456789-/.T:Z ", max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(text=_DATES)
def test_birthdates_read_in_one_look_up_are_read_as_before(text: str) -> None:
    try:
        fast: str | tuple[str, str] = dates.birthdate_rule(text, text, None)
    except ValueError as exc:
        fast = ("error", str(exc))
    try:
        slow: str | tuple[str, str] = dates._birthdate(text, text, "year-first")
    except ValueError as exc:
        slow = ("error", str(exc))
    assert fast == slow


_NAME_CHARS = st.sampled_from(list("aZéÉïß-- '.\u0301\u00a0İ1_·"))


@settings(max_examples=500, deadline=None)
@given(text=st.text(_NAME_CHARS, min_size=1, max_size=12).map(str.strip).filter(bool))
def test_hyphenated_names_are_cleaned_as_before(text: str) -> None:
    """Letters and hyphens skip the general cleaning; the name comes out the same."""
    try:
        fast: str | tuple[str, str] = normalize.text_rule("ln")(text, text, None)
    except ValueError as exc:
        fast = ("error", str(exc))
    general = " ".join(field_rules.clean(text.lower(), field_rules.PUNCTUATION).split())
    assert fast == (general or ("error", f"last name {text!r} has nothing left once cleaned"))


@settings(max_examples=500, deadline=None)
@given(text=st.text(st.sampled_from(list("0123456789 +-().\u00a0٣x")), max_size=20))
def test_phone_digits_are_the_digits(text: str) -> None:
    assert phone._digits_of(text) == phone._NON_DIGITS.sub("", text)


def _lines_one_by_one(data: bytes) -> list[SourceRecord]:
    """The records of ``data`` read as one chunk per byte: every boundary there is."""
    return list(ndjson.read_ndjson([data[n : n + 1] for n in range(len(data))], "f"))


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from([b'{"a":1}', b"", b"  ", b"\r", b"{bad", b"[1]", b'{"k":"xxxxxxxxxx"}']),
        max_size=8,
    ),
    newline_at_end=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=6),
)
def test_lines_split_in_blocks_are_the_lines(
    lines: list[bytes], newline_at_end: bool, cuts: list[int]
) -> None:
    data = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    points = sorted({c for c in cuts if c < len(data)})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    records = list(ndjson.read_ndjson([c for c in chunks if c], "f"))
    expected = list(ndjson.parse_lines(data.split(b"\n"), "f", 0))
    assert records == expected


def test_a_line_too_long_is_an_error_record_whatever_the_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ndjson, "MAX_ELEMENT_BYTES", 10)
    data = b'{"a":1}\n{"b":"' + b"x" * 30 + b'"}\n{"c":3}\n'
    records = _lines_one_by_one(data)
    assert [r.where for r in records] == ["f line 1", "f line 2", "f line 3"]
    assert records[1].event is None and "larger than" in (records[1].error or "")
    assert records[2].event == {"c": 3}
