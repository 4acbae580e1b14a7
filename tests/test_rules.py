"""Meta's lead_id and event_time rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from leadrelay.meta.rules import FieldProblem, check_window, parse_lead_id, to_seconds

NOW = 1767800000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (123456789012345, 123456789012345),
        ("123456789012345", 123456789012345),
        (" 1234567890123456 ", 1234567890123456),
        ("98765432109876543", 98765432109876543),
        (98765432109876543, 98765432109876543),
        ("l:1234567890123456", 1234567890123456),
        (123456789012345.0, 123456789012345),
        ("1234567890123456.0", 1234567890123456),  # pandas' text of a float column
        (" l:123456789012345.0", 123456789012345),
    ],
)
def test_lead_id_accepted(value: Any, expected: int) -> None:
    assert parse_lead_id(value) == expected
    assert type(parse_lead_id(value)) is int


@pytest.mark.parametrize(
    "value",
    [
        "12345",
        "12345678901234",
        "123456789012345678",
        "12345678901234a",
        "",
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥",
        True,
        None,
        [123456789012345],
        1.2345678901234568e16,
        123456789012345.5,
        -123456789012345,
    ],
)
def test_lead_id_rejected(value: Any) -> None:
    with pytest.raises(FieldProblem) as info:
        parse_lead_id(value)
    assert info.value.reason == "invalid_lead_id"


def test_lead_id_messages_say_what_is_wrong() -> None:
    with pytest.raises(FieldProblem, match="is negative"):
        parse_lead_id(-1234567890123456)
    with pytest.raises(FieldProblem, match="has 5000 digits"):  # more than int() reads
        parse_lead_id("1" * 5000)
    # A JSON integer past 64 bits is read as a float: its length is what is wrong ("arrived as
    # a floating-point number" sent the user looking for a float they never wrote).
    big = orjson.loads(b"123456789012345678901234")
    with pytest.raises(FieldProblem, match=r"lead_id has 24 digits .* 15 to 17"):
        parse_lead_id(big)
    # pandas writes an id column with blanks as floats: exact below 2**53, not above, and a
    # spreadsheet's scientific notation has lost the digits (both were "not a number").
    with pytest.raises(FieldProblem, match=r"floating-point number .* export the column as text"):
        parse_lead_id("12345678901234567.0")
    with pytest.raises(FieldProblem, match=r"scientific notation.*format the column as text"):
        parse_lead_id("1.23457E+15")
    # Quoted as sent: the leading zero is in the input, not in the number.
    with pytest.raises(FieldProblem, match="lead_id '012345678901234' has 14 digits"):
        parse_lead_id("012345678901234")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1767709812000, 1767709812),
        ("1767709812000", 1767709812),
        (1767709812, 1767709812),
        ("1767709812", 1767709812),
        (1767709812.5, 1767709812),
        (1767709812123456, 1767709812),
        ("2026-01-06T14:30:12Z", 1767709812),
        ("2026-01-06T15:30:12.000+01:00", 1767709812),
        ("2026-01-06T14:30:12", 1767709812),
    ],
)
def test_event_time_formats(value: Any, seconds: int) -> None:
    assert to_seconds(value) == seconds


@pytest.mark.parametrize("value", ["yesterday", "", "nan", "inf", True, {"t": 1}, -5, "9" * 5000])
def test_event_time_invalid(value: Any) -> None:
    with pytest.raises(FieldProblem) as info:
        to_seconds(value)
    assert info.value.reason == "invalid_event_time"


def test_window_edges() -> None:
    week = 7 * 86400
    # The last minute of Meta's window is less than a request may take: a dry run said such an
    # event was ready to send, and the send then found it expired.
    assert check_window(int(NOW) - week + 61, NOW) == int(NOW) - week + 61
    with pytest.raises(FieldProblem, match="30 s from the end of Meta's 7-day window") as edge:
        check_window(int(NOW) - week + 30, NOW)
    assert edge.value.reason == "event_time_too_old"
    assert check_window(int(NOW) + 60, NOW) == int(NOW) + 60
    with pytest.raises(FieldProblem, match="days old") as old:
        check_window(int(NOW) - week, NOW)
    assert old.value.reason == "event_time_too_old"
    with pytest.raises(FieldProblem) as future:
        check_window(int(NOW) + 61, NOW)
    assert future.value.reason == "event_time_in_future"
    # Past the year 9999 there is no date to show: the message says the seconds.
    with pytest.raises(FieldProblem, match=r"^event_time 10{21} \(Unix seconds\) is"):
        check_window(to_seconds(10**30), NOW)
