"""The Graph API versions Meta serves, and until when (reference section 1, "Versions").

Meta answers a request to a version past its end with code 2635 ("You are calling a deprecated
version of the Ads API"): the sandbox does the same, and ``validate`` says so ahead of time.
A version newer than the newest one here is not judged (it may have been released since).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

# Major version -> the last day Meta serves it. Versions before the oldest listed had ended
# before it did; v26.0 (released 2026-07-29) has no end date yet.
_ENDS: Final[dict[int, dt.date]] = {
    20: dt.date(2026, 9, 24),
    21: dt.date(2027, 1, 21),
    22: dt.date(2027, 5, 20),
    23: dt.date(2027, 10, 8),
    24: dt.date(2028, 2, 18),
    25: dt.date(2028, 7, 29),
}
_OLDEST: Final = min(_ENDS)
_NEWEST_KNOWN: Final = 26
_VERSION: Final = re.compile(r"v(\d{1,4})\.(\d{1,4})")


def ended(version: str, today: dt.date) -> str | None:
    """When ``version`` (``v25.0``) ended, in words (``v20.0 ended on 2026-09-24``), if it had
    ended by ``today``; None while Meta still serves it, for a version newer than the ones known
    here, and for text that is no version."""
    match = _VERSION.fullmatch(version)
    if match is None or int(match.group(1)) >= _NEWEST_KNOWN:
        return None
    major = int(match.group(1))
    oldest = _ENDS[_OLDEST]
    if major < _OLDEST:  # its end is not listed, but came before the oldest one listed
        return f"{version} ended before {oldest.isoformat()}" if oldest < today else None
    end = _ENDS[major]
    return f"{version} ended on {end.isoformat()}" if end < today else None
