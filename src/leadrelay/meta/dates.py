"""Birthdates normalized to the ``YYYYMMDD`` that Meta hashes for ``db``.

Split out of ``normalize`` (house rule: modules under ~300 lines); ``normalize`` uses
``birthdate_rule`` for the ``db`` field. Year-first dates are read as they are. A date with the
year last (``16/02/1997``, ``2/16/1997``, ``16.02.1997``) is read when it can only be one date: its
day is over 12, or day and month are the same number, as Meta's own example ("2/16/1997" ->
"19970216"). ``03/04/1990`` could be 3 April or March 4: it is refused (which one a CRM meant is
not in the date), and the message says so, unless the config's ``birthdate_order`` says how the
CRM writes dates (``BirthdateOrder``). The fast path reads ``YYYY-MM-DD`` without a regular
expression and without converting surely-valid dates, since that is what CRMs export.
"""

from __future__ import annotations

import re
import time
from datetime import date
from functools import lru_cache
from typing import Any, Final, Literal

from leadrelay.meta.field_rules import NormalizeError, TextRule, float_digits, visible
from leadrelay.meta.field_rules import show as _show

_TIME: Final = r"(?:[T ][0-9:.,]+(?:Z|[+-][0-9:]+)?)?"  # a time after the date, left out
_DATE: Final = re.compile(
    r"(\d{4})(?:(\d{2})(\d{2})|([-/. ])(\d{1,2})\4(\d{1,2}))" + _TIME, re.ASCII
)
# The year last: day and month in either order (which one, the numbers may tell).
_YEAR_LAST: Final = re.compile(r"(\d{1,2})([-/. ])(\d{1,2})\2(\d{4})" + _TIME, re.ASCII)
_DATE_FORMATS: Final = (
    "YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, YYYY.MM.DD, an ISO date-time, or DD/MM/YYYY or "
    "MM/DD/YYYY when the day is over 12"
)
_MONTHS: Final = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip


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
# Those years as text, 1900 on: "is it four ASCII digits, from 1900, in the past" in one look-up.
_PAST_YEARS: Final = frozenset(f"{year:04d}" for year in range(1900, _PAST_YEARS_END))


_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # not a leap year
# "-MM-DD" -> "MMDD" for the month-days every year has (all but February 29th): with a year
# before this one, surely a real date in the past.
_MONTH_DAYS: Final = {
    f"-{month:02d}-{day:02d}": f"{month:02d}{day:02d}"
    for month in range(1, 13)
    for day in range(1, _DAYS_IN_MONTH[month - 1] + 1)
}


BirthdateOrder = Literal["year-first", "day-first", "month-first"]
"""How a date with the year last is read when both readings are dates (``03/04/1990``): not at
all (year-first, the default: which one a CRM meant is not in the date), or as the config's
``birthdate_order`` says the CRM writes them."""


def birthdate_rule_for(order: BirthdateOrder) -> TextRule:
    """The ``db`` rule: ``YYYYMMDD`` of a real date from 1900 to today (UTC), else an error."""

    def birthdate_rule(text: str, value: Any, region: str | None) -> str:
        # YYYY-MM-DD, what CRMs export, for most dates: two look-ups (both keys are ASCII, so
        # the whole text is).
        month_day = _MONTH_DAYS.get(text[4:])
        if month_day is not None and (year := text[:4]) in _PAST_YEARS:
            return year + month_day
        return _birthdate(text, value, order)

    return birthdate_rule


birthdate_rule: Final = birthdate_rule_for("year-first")


def _birthdate(text: str, value: Any, order: BirthdateOrder) -> str:
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
    elif match := _DATE.fullmatch(text):
        year = int(match[1])
        month, day = int(match[2] or match[5]), int(match[3] or match[6])
    elif match := _YEAR_LAST.fullmatch(text):
        year, day, month = int(match[4]), *_day_month(int(match[1]), int(match[3]), value, order)
    elif (seen := visible(text)) != text:  # a date with invisible characters (field_rules)
        return _birthdate(seen, value, order)
    elif (digits := float_digits(text)) is not None:  # YYYYMMDD, written as a float
        return _birthdate(digits, value, order)
    else:
        raise NormalizeError(
            "invalid_birthdate",
            f"birthdate {_show(value)} is not in an accepted format ({_DATE_FORMATS})",
        )
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


def _day_month(first: int, second: int, value: Any, order: BirthdateOrder) -> tuple[int, int]:
    """(day, month) of a date written with its year last, when only one reading is a date, or
    as ``order`` says when both are."""
    if not (first and second) or min(first, second) > 12:  # no month at all
        raise NormalizeError(
            "invalid_birthdate", f"birthdate {_show(value)} is not a real calendar date"
        )
    if first > 12 or first == second:  # 16/02/1997: day first
        return first, second
    if second > 12 or order == "month-first":  # 2/16/1997: month first
        return second, first
    if order == "day-first":
        return first, second
    raise NormalizeError(
        "invalid_birthdate",
        f"birthdate {_show(value)} could be {first} {_MONTHS[second - 1]} or "
        f"{_MONTHS[first - 1]} {second}: write it year first (YYYY-MM-DD), or set "
        "birthdate_order in the config to the order your CRM writes dates in",
    )
