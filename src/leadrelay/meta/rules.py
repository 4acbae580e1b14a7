"""Meta's Conversion Leads rules for the two fields that decide whether an event can be sent.

``lead_id``: 15 to 17 digits, sent as an exact JSON integer (never through a float), never hashed.
``event_time``: whole Unix seconds, at most 7 days old, not in the future (a minute of clock skew).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Final

from leadrelay.meta.field_rules import FLOAT_EXACT as _FLOAT_EXACT
from leadrelay.meta.field_rules import FieldProblem as FieldProblem  # re-exported: one error type
from leadrelay.meta.field_rules import float_digits
from leadrelay.meta.field_rules import show as _show

MAX_AGE_S: Final = 7 * 86400
MAX_FUTURE_S: Final = 60
SEND_MARGIN_S: Final = 60
"""What a request may take: an event closer than this to the end of Meta's window when read, or
when its batch goes out, would be too old by the time Meta reads it (the dispatcher's margin)."""
SENDABLE_AGE_S: Final = MAX_AGE_S - SEND_MARGIN_S
"""The oldest an event may be when read and still reach Meta inside its window."""
_LEAD_MIN: Final = 10**14  # smallest 15-digit number
_LEAD_MAX: Final = 10**17  # first 18-digit number
_DIGITS_READ: Final = 40  # longer digit strings are refused before int() reads them
_SCIENTIFIC: Final = re.compile(r"[0-9](?:[.,][0-9]+)?[eE]\+?[0-9]+")  # 1.23457E+15, 1,23457E+15


def parse_lead_id(value: Any) -> int:
    """Return the lead id as an exact int, or raise ``FieldProblem`` saying what is wrong."""
    if isinstance(value, bool):
        raise FieldProblem("invalid_lead_id", f"lead_id must be 15 to 17 digits, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        # A float above 2**53 has already lost digits somewhere upstream; sending it would
        # attribute the event to somebody else's lead.
        if value.is_integer() and abs(value) >= 1e18:  # past 64 bits, JSON's reader gives a
            # float: the integer was too long to be a lead id, whatever its type now
            raise FieldProblem(
                "invalid_lead_id",
                f"lead_id has {len(str(int(abs(value))))} digits (read as {value!r}); Meta lead "
                "ids have 15 to 17",
            )
        if not value.is_integer() or abs(value) >= _FLOAT_EXACT:
            raise FieldProblem(
                "invalid_lead_id",
                f"lead_id {value!r} arrived as a floating-point number and may have lost digits; "
                "send it as a string or an integer",
            )
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text[:2] in ("l:", "L:"):  # Meta's CSV export labels the id column this way
            text = text[2:]
        if (digits := float_digits(text)) is not None:
            # pandas writes a column of ids with blanks as floats: "1234567890123456.0" holds
            # every digit below 2**53, not above (the float rounded it already).
            if len(digits) <= _DIGITS_READ and int(digits) < _FLOAT_EXACT:
                text = digits
            else:
                raise FieldProblem(
                    "invalid_lead_id",
                    f"lead_id {_show(value)} was written as a floating-point number (pandas "
                    "does so for a column with blanks) and may have lost digits; export the "
                    "column as text",
                )
        elif _SCIENTIFIC.fullmatch(text) is not None:
            raise FieldProblem(
                "invalid_lead_id",
                f"lead_id {_show(value)} is in scientific notation, as a spreadsheet shows a "
                "long number: its digits are lost; format the column as text and export again",
            )
        if not text.isascii() or not text.isdigit():
            raise FieldProblem(
                "invalid_lead_id", f"lead_id {_show(value)} is not a number of 15 to 17 digits"
            )
        if len(text) > _DIGITS_READ:  # int() refuses thousands of digits; none is a lead id
            raise FieldProblem(
                "invalid_lead_id", f"lead_id has {len(text)} digits; Meta lead ids have 15 to 17"
            )
        number = int(text)
    else:
        raise FieldProblem(
            "invalid_lead_id", f"lead_id must be 15 to 17 digits, got {type(value).__name__}"
        )
    if number < 0:
        raise FieldProblem(
            "invalid_lead_id", f"lead_id {number} is negative; Meta lead ids are 15 to 17 digits"
        )
    if not _LEAD_MIN <= number < _LEAD_MAX:
        # Quoted as sent ("012345678901234" is 15 characters but 14 digits of a number).
        shown = _show(value) if isinstance(value, str) else str(number)
        raise FieldProblem(
            "invalid_lead_id",
            f"lead_id {shown} has {len(str(number))} digits; Meta lead ids have 15 to 17",
        )
    return number


def _from_number(number: float) -> int:
    if not math.isfinite(number) or number < 0:
        raise FieldProblem("invalid_event_time", f"event_time {number!r} is not a valid timestamp")
    # Magnitude tells the unit: seconds stay below 1e11 until the year 5138, milliseconds since
    # 1973 are above it; micro- and nanoseconds are larger still.
    if number >= 1e17:
        return int(number // 1_000_000_000)
    if number >= 1e14:
        return int(number // 1_000_000)
    if number >= 1e11:
        return int(number // 1000)
    return int(number)


def to_seconds(value: Any) -> int:
    """Unix seconds from milliseconds or seconds (number or numeric string) or ISO-8601."""
    if isinstance(value, bool):
        raise FieldProblem("invalid_event_time", f"event_time cannot be {value!r}")
    if isinstance(value, int | float):
        return _from_number(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            if len(text) > _DIGITS_READ:  # int() refuses thousands of digits
                raise FieldProblem(
                    "invalid_event_time", f"event_time {_show(value)} is not a valid timestamp"
                )
            return _from_number(int(text))
        try:
            return _from_number(float(text))
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise FieldProblem(
                "invalid_event_time",
                f"event_time {_show(value)} is neither a Unix timestamp (ms or s) nor ISO-8601",
            ) from None
        return iso_seconds(parsed, value)
    raise FieldProblem(
        "invalid_event_time", f"event_time must be a timestamp, got {type(value).__name__}"
    )


def iso_seconds(parsed: datetime, value: Any) -> int:
    """Unix seconds of an ISO-8601 date-time read from ``value`` (naive means UTC), or
    ``FieldProblem`` for one that has none (the year 1 in a zone ahead of UTC)."""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return int(parsed.timestamp())
    except (OverflowError, ValueError):
        raise FieldProblem(
            "invalid_event_time", f"event_time {_show(value)} is out of range"
        ) from None


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # past the year 9999
        return f"{seconds} (Unix seconds)"


def check_window(seconds: int, now: float) -> int:
    """Raise ``FieldProblem`` unless ``seconds`` is within Meta's window around ``now``."""
    if now - MAX_AGE_S < seconds <= now - SENDABLE_AGE_S:
        # What a send would find as it went out (expired): dry runs and previews say it too.
        raise FieldProblem(
            "event_time_too_old",
            f"event_time {_iso(seconds)} is {seconds - (now - MAX_AGE_S):.0f} s from the end of "
            f"Meta's 7-day window, less than the {SEND_MARGIN_S} s a request may take: Meta "
            "would refuse it as too old",
        )
    if seconds <= now - MAX_AGE_S:
        days = (now - seconds) / 86400
        raise FieldProblem(
            "event_time_too_old",
            f"event_time {_iso(seconds)} is {days:.1f} days old; "
            "Meta accepts events up to 7 days old",
        )
    if seconds > now + MAX_FUTURE_S:
        raise FieldProblem(
            "event_time_in_future",
            f"event_time {_iso(seconds)} is {seconds - now:.0f} s in the future",
        )
    return seconds
