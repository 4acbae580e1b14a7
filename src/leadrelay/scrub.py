"""Emails and phone numbers out of text that may be shown or shared: the dashboard's messages
and the examples of the diagnostics report. A value refused by our rules is quoted in its
message, so that it can be found; when it is customer information (a lead id mapped to the
email field), it must not travel with the page.

Lead ids (15-17 digits) and timestamps are plain digit runs and stay visible: a phone number is
recognised by a leading ``+`` or by its separators, not by digits alone.
"""

from __future__ import annotations

import re
from typing import Final

from leadrelay.delivery.store_encoding import REDACTED

__all__ = ["scrub_text"]

# A quote inside a name (o'brien) is part of it; around the address, it is the message's own.
_EMAIL: Final = re.compile(
    r"(?:[^\s@\"'<>(),;:]|\b'\b)+@[^\s@\"'<>(),;:]+\.[^\W\d_]{2,}"  # any script: .рф
)
# A run of digits with separators or a leading +; checked further in _phone.
_PHONE_LIKE: Final = re.compile(r"\+?\(?\d[\d ().\-]{6,}\d")
_US_PHONE: Final = re.compile(r"\(?\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}")
_DAY: Final = r"(?:0?[1-9]|[12]\d|3[01])"  # a day, or a month: 1 to 31
_DATE: Final = re.compile(
    rf"\d{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])|{_DAY}[-./]{_DAY}[-./](?:\d{{4}}|\d{{2}})"
)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    separated = any(c in " ().-" for c in text.lstrip("+("))  # a bracket before is not one
    if not 8 <= digits <= 15 or _DATE.fullmatch(text[:10]) or _DATE.fullmatch(text):
        return text
    if text.startswith("+") or separated or _US_PHONE.fullmatch(text):
        return REDACTED
    return text


def scrub_text(text: str) -> str:
    """``text`` with email addresses and phone numbers replaced by ``[redacted]``."""
    if "@" in text:
        text = _EMAIL.sub(REDACTED, text)
    return _PHONE_LIKE.sub(_phone, text)
